//! Parts of clerk-authentication events: roles and the reasons logins and sessions end.

use serde::{Deserialize, Serialize};

use crate::text::ClerkId;

/// A clerk's fixed role, lowest privilege first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Sells.
    Clerk,
    /// Approves overrides (refunds, voids, price changes) for clerks.
    Supervisor,
    /// Manages clerks and policy; needs TOTP.
    Admin,
    /// Everything, including lockdown; the only role that may log in during lockdown; needs TOTP.
    SuperAdmin,
}

/// Why a login was refused.
///
/// A TOTP code that is wrong or replayed has its own event kinds (`MfaFailed`, `MfaReplayed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LoginFailure {
    /// No enrolled clerk has the given id.
    UnknownClerk,
    /// The PIN or password did not match.
    BadSecret,
    /// The role needs a TOTP code and none was given.
    MfaMissing,
    /// The clerk is locked out.
    LockedOut,
    /// The clerk is disabled.
    Disabled,
    /// Outside the clerk's allowed hours.
    OutsideAllowedHours,
    /// The terminal is in lockdown and the clerk is not a SuperAdmin.
    Lockdown,
    /// A progressive delay is still running for this clerk or terminal.
    Throttled,
}

/// Who a throttle applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ThrottleScope {
    /// One clerk.
    Clerk(ClerkId),
    /// Every login on this terminal.
    Terminal,
}

/// Which session limit ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionLimit {
    /// No activity for the role's idle timeout.
    Idle,
    /// The absolute lifetime (12 h by default) ran out.
    Absolute,
}
