//! The kinds of audit event, with their default severity and retention class.
//!
//! The order of variants is the wire format (postcard writes the variant index): new kinds are
//! only ever appended, and existing variants never change shape within a record format.

use serde::{Deserialize, Serialize};

use super::Severity;
use super::auth::{LoginFailure, Role, SessionLimit, ThrottleScope};
use super::ops::{
    CacheRefusal, CommandRef, CommandRefusal, KeyBackend, Overflow, Source, StopReason,
    TamperFinding,
};
use super::pos::PosEvent;
use crate::codec::byte_array;
use crate::text::{ClerkId, SafeText, ShortCode};

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// The agent started.
    AgentStarted {
        /// Agent version (`0.1.0`).
        version: ShortCode,
        /// Key backend in use.
        backend: KeyBackend,
    },
    /// The agent is stopping.
    AgentStopped {
        /// Why.
        reason: StopReason,
    },
    /// A clerk logged in.
    LoginSucceeded {
        /// Who.
        clerk: ClerkId,
        /// With which role.
        role: Role,
        /// Whether a TOTP code was checked.
        mfa: bool,
    },
    /// A login was refused.
    LoginFailed {
        /// The enrolled clerk the attempt named; `None` when it named no enrolled clerk (what was
        /// typed is not recorded: it may be a secret typed into the wrong field).
        clerk: Option<ClerkId>,
        /// Why.
        reason: LoginFailure,
    },
    /// A wrong TOTP code.
    MfaFailed {
        /// Whose.
        clerk: ClerkId,
    },
    /// A TOTP code for a time step that was already accepted once.
    MfaReplayed {
        /// Whose.
        clerk: ClerkId,
        /// The replayed time step (Unix time / 30 s): not the code.
        time_step: u64,
    },
    /// A progressive login delay started or grew.
    Throttled {
        /// For whom.
        scope: ThrottleScope,
        /// Consecutive failures so far.
        failures: u32,
        /// Delay before the next attempt is considered, in milliseconds.
        delay_ms: u64,
    },
    /// A clerk was locked out.
    LockedOut {
        /// Who.
        clerk: ClerkId,
        /// Consecutive failures that caused it.
        failures: u32,
        /// Wall time (Unix ms) the lockout ends; `None` until an admin resets it.
        until_wall_ms: Option<u64>,
    },
    /// The terminal-wide failure budget was exceeded: logins on this terminal are blocked.
    FailureBudgetExceeded {
        /// Failures counted in the window.
        failures: u32,
        /// Length of the window in seconds.
        window_s: u32,
        /// Wall time (Unix ms) the block ends; `None` until an admin resets it.
        until_wall_ms: Option<u64>,
    },
    /// An admin reset a lockout.
    LockoutReset {
        /// Whose; `None` for the terminal-wide block.
        clerk: Option<ClerkId>,
    },
    /// A session ended by timeout.
    SessionExpired {
        /// Whose.
        clerk: ClerkId,
        /// Which limit.
        limit: SessionLimit,
    },
    /// A clerk logged out.
    LoggedOut {
        /// Who.
        clerk: ClerkId,
    },
    /// A supervisor override: `approver` granted `subject` a higher role for an action.
    PrivilegeElevated {
        /// Who approved (a second, different person).
        approver: ClerkId,
        /// Who was elevated.
        subject: ClerkId,
        /// The role granted.
        role: Role,
        /// What for, as a short code (`refund`, `void`).
        purpose: Option<ShortCode>,
    },
    /// A clerk was enrolled.
    ClerkEnrolled {
        /// Who.
        clerk: ClerkId,
        /// With which role.
        role: Role,
        /// Whether TOTP is set up.
        mfa: bool,
    },
    /// A clerk was removed.
    ClerkRemoved {
        /// Who.
        clerk: ClerkId,
    },
    /// A clerk was disabled.
    ClerkDisabled {
        /// Who.
        clerk: ClerkId,
    },
    /// A disabled clerk was enabled again.
    ClerkEnabled {
        /// Who.
        clerk: ClerkId,
    },
    /// A clerk's TOTP seed was replaced.
    TotpSeedRotated {
        /// Whose.
        clerk: ClerkId,
    },
    /// The security policy changed.
    PolicyChanged {
        /// From where.
        source: Source,
        /// The new policy's version.
        version: u64,
        /// SHA-256 of the new policy document.
        #[serde(with = "byte_array")]
        digest: [u8; 32],
    },
    /// The agent's configuration changed.
    ConfigChanged {
        /// SHA-256 of the new configuration file.
        #[serde(with = "byte_array")]
        digest: [u8; 32],
        /// A short note (which keys changed); never values.
        note: Option<SafeText>,
    },
    /// Lockdown mode switched on or off.
    LockdownChanged {
        /// On (`true`) or off.
        enabled: bool,
        /// From where.
        source: Source,
    },
    /// A signed command arrived from the collector.
    CommandReceived {
        /// Which.
        command: CommandRef,
    },
    /// A signed command took effect.
    CommandApplied {
        /// Which.
        command: CommandRef,
    },
    /// A command was refused.
    CommandRefused {
        /// Which, when it could be read.
        command: Option<CommandRef>,
        /// Why.
        reason: CommandRefusal,
    },
    /// A honeypot account was used.
    HoneypotTriggered {
        /// Which honeypot account.
        clerk: ClerkId,
    },
    /// The journal dropped records to stay within its bound.
    JournalOverflow(Overflow),
    /// A tamper check failed.
    TamperDetected {
        /// What was found.
        finding: TamperFinding,
    },
    /// The agent recovered from a tamper finding by moving the old data aside and starting anew.
    TamperRecovered {
        /// What was found.
        finding: TamperFinding,
        /// Where the old data was moved.
        moved_to: Option<SafeText>,
    },
    /// The transaction cache refused a record.
    CacheRecordRefused {
        /// Why.
        reason: CacheRefusal,
    },
    /// Expired records were purged from the transaction cache.
    CachePurged {
        /// How many were removed.
        purged: u64,
        /// How many remain.
        remaining: u64,
    },
    /// A business event from the POS application.
    Pos(PosEvent),
}

/// Which records a full journal keeps longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Retention {
    /// High-volume, normal operation: dropped first on overflow.
    Routine,
    /// Kept over routine records on overflow.
    SecurityCritical,
}

impl EventKind {
    /// Every [`name`](Self::name), in wire order: what a query may filter on (a new kind is
    /// appended here too; a test checks every generated kind's name is listed).
    pub const NAMES: [&'static str; 31] = [
        "agent_started",
        "agent_stopped",
        "login_succeeded",
        "login_failed",
        "mfa_failed",
        "mfa_replayed",
        "throttled",
        "locked_out",
        "failure_budget_exceeded",
        "lockout_reset",
        "session_expired",
        "logged_out",
        "privilege_elevated",
        "clerk_enrolled",
        "clerk_removed",
        "clerk_disabled",
        "clerk_enabled",
        "totp_seed_rotated",
        "policy_changed",
        "config_changed",
        "lockdown_changed",
        "command_received",
        "command_applied",
        "command_refused",
        "honeypot_triggered",
        "journal_overflow",
        "tamper_detected",
        "tamper_recovered",
        "cache_record_refused",
        "cache_purged",
        "pos",
    ];

    /// A stable snake_case name for queries and logs (`login_failed`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::AgentStarted { .. } => "agent_started",
            Self::AgentStopped { .. } => "agent_stopped",
            Self::LoginSucceeded { .. } => "login_succeeded",
            Self::LoginFailed { .. } => "login_failed",
            Self::MfaFailed { .. } => "mfa_failed",
            Self::MfaReplayed { .. } => "mfa_replayed",
            Self::Throttled { .. } => "throttled",
            Self::LockedOut { .. } => "locked_out",
            Self::FailureBudgetExceeded { .. } => "failure_budget_exceeded",
            Self::LockoutReset { .. } => "lockout_reset",
            Self::SessionExpired { .. } => "session_expired",
            Self::LoggedOut { .. } => "logged_out",
            Self::PrivilegeElevated { .. } => "privilege_elevated",
            Self::ClerkEnrolled { .. } => "clerk_enrolled",
            Self::ClerkRemoved { .. } => "clerk_removed",
            Self::ClerkDisabled { .. } => "clerk_disabled",
            Self::ClerkEnabled { .. } => "clerk_enabled",
            Self::TotpSeedRotated { .. } => "totp_seed_rotated",
            Self::PolicyChanged { .. } => "policy_changed",
            Self::ConfigChanged { .. } => "config_changed",
            Self::LockdownChanged { .. } => "lockdown_changed",
            Self::CommandReceived { .. } => "command_received",
            Self::CommandApplied { .. } => "command_applied",
            Self::CommandRefused { .. } => "command_refused",
            Self::HoneypotTriggered { .. } => "honeypot_triggered",
            Self::JournalOverflow(_) => "journal_overflow",
            Self::TamperDetected { .. } => "tamper_detected",
            Self::TamperRecovered { .. } => "tamper_recovered",
            Self::CacheRecordRefused { .. } => "cache_record_refused",
            Self::CachePurged { .. } => "cache_purged",
            Self::Pos(_) => "pos",
        }
    }

    /// The severity an event of this kind gets unless the writer raises it.
    pub fn default_severity(&self) -> Severity {
        use Severity::{Critical, Info, Notice, Warning};
        match self {
            Self::LoginSucceeded { .. }
            | Self::SessionExpired { .. }
            | Self::LoggedOut { .. }
            | Self::CachePurged { .. }
            | Self::Pos(_) => Info,
            Self::AgentStarted { .. }
            | Self::AgentStopped {
                reason: StopReason::Shutdown,
            }
            | Self::LockoutReset { .. }
            | Self::PrivilegeElevated { .. }
            | Self::ClerkEnrolled { .. }
            | Self::ClerkRemoved { .. }
            | Self::ClerkDisabled { .. }
            | Self::ClerkEnabled { .. }
            | Self::TotpSeedRotated { .. }
            | Self::PolicyChanged { .. }
            | Self::ConfigChanged { .. }
            | Self::LockdownChanged { enabled: false, .. }
            | Self::CommandReceived { .. }
            | Self::CommandApplied { .. } => Notice,
            Self::AgentStopped { .. }
            | Self::LoginFailed { .. }
            | Self::MfaFailed { .. }
            | Self::Throttled { .. }
            | Self::LockedOut { .. }
            | Self::LockdownChanged { enabled: true, .. }
            | Self::CommandRefused { .. }
            | Self::CacheRecordRefused { .. } => Warning,
            Self::MfaReplayed { .. }
            | Self::FailureBudgetExceeded { .. }
            | Self::HoneypotTriggered { .. }
            | Self::JournalOverflow(_)
            | Self::TamperDetected { .. }
            | Self::TamperRecovered { .. } => Critical,
        }
    }

    /// Whether a full journal keeps this kind over routine ones. Routine kinds are the
    /// high-volume records of normal operation: successful logins, logouts, session timeouts,
    /// cache purges and POS business events. Everything else is security-critical.
    pub fn retention(&self) -> Retention {
        match self {
            Self::LoginSucceeded { .. }
            | Self::LoggedOut { .. }
            | Self::SessionExpired { .. }
            | Self::CachePurged { .. }
            | Self::Pos(_) => Retention::Routine,
            // A kind added later is kept unless someone decides otherwise: the safe default.
            _ => Retention::SecurityCritical,
        }
    }
}
