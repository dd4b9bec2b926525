//! The login and supervisor-override decisions: pure functions of (state, request, clock).
//!
//! Argon2 and TOTP verification stay outside: the caller verifies and passes the results in
//! ([`LoginAttempt::secret_ok`], [`LoginAttempt::totp`]), so the decision itself is cheap and
//! can be benchmarked alone. The caller stores the returned states and turns the outcome and
//! [`AuthFact`]s into audit events.

use std::time::Duration;

use posguard_proto::event::LoginFailure;
use posguard_proto::text::ClerkId;
use serde::{Deserialize, Serialize};

use super::config::ThrottlePolicy;
use super::roles::{Permission, Role, allows, mfa_mandatory};
use super::throttle::{BudgetExceeded, ClerkThrottle, FailureOutcome, Gate, TerminalBudget};
use super::totp::TotpDecision;

/// What the policy needs to know about an enrolled clerk (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClerkRecord {
    /// The clerk's role.
    pub role: Role,
    /// Disabled clerks cannot log in.
    pub enabled: bool,
    /// A honeypot account: every attempt is refused and raises a critical alert.
    pub honeypot: bool,
    /// Local hours `(start, end)` the clerk may log in: `start <= hour < end`, wrapping past
    /// midnight when `start > end` (`(22, 6)`); `start == end` means all day. `None`: any hour.
    pub allowed_hours: Option<(u8, u8)>,
    /// TOTP required even though the role does not demand it (Admin and SuperAdmin always need it).
    pub totp_required: bool,
}

/// One login attempt as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginAttempt {
    /// Boot-clock time in ns (CLOCK_BOOTTIME).
    pub now_mono: u64,
    /// The local hour (0–23) for the allowed-hours check.
    pub local_hour: u8,
    /// Whether the terminal is in lockdown.
    pub lockdown: bool,
    /// Whether the secret matched (the caller ran [`super::secret::verify_secret`]).
    pub secret_ok: bool,
    /// The TOTP check, when a code was given.
    pub totp: Option<TotpDecision>,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No enrolled clerk has the given id.
    UnknownClerk,
    /// The PIN or password did not match.
    BadSecret,
    /// The clerk is locked out.
    LockedOut {
        /// Until the lockout ends, unless an admin resets it.
        remaining: Duration,
    },
    /// A progressive delay is running for this clerk.
    Throttled {
        /// Until it ends.
        retry_after: Duration,
    },
    /// Outside the clerk's allowed hours.
    OutsideHours,
    /// The clerk is disabled.
    Disabled,
    /// A honeypot account was used.
    Honeypot,
    /// The terminal is in lockdown and the clerk is not a SuperAdmin.
    Lockdown,
    /// The TOTP code was wrong.
    MfaWrong,
    /// The TOTP code's step was already accepted once.
    MfaReplay {
        /// The replayed step.
        step: u64,
    },
    /// The terminal-wide failure budget is exceeded: every login is blocked.
    BudgetExceeded {
        /// Until the block ends, unless an admin resets it.
        retry_after: Duration,
    },
}

impl DenyReason {
    /// The reason for a `LoginFailed` event; `None` for refusals that have their own event kind
    /// (`MfaFailed`, `MfaReplayed`, `HoneypotTriggered`), which the [`AuthFact`]s carry.
    pub fn login_failure(&self) -> Option<LoginFailure> {
        Some(match self {
            DenyReason::UnknownClerk => LoginFailure::UnknownClerk,
            DenyReason::BadSecret => LoginFailure::BadSecret,
            DenyReason::LockedOut { .. } => LoginFailure::LockedOut,
            DenyReason::Throttled { .. } | DenyReason::BudgetExceeded { .. } => {
                LoginFailure::Throttled
            }
            DenyReason::OutsideHours => LoginFailure::OutsideAllowedHours,
            DenyReason::Disabled => LoginFailure::Disabled,
            DenyReason::Lockdown => LoginFailure::Lockdown,
            DenyReason::Honeypot | DenyReason::MfaWrong | DenyReason::MfaReplay { .. } => {
                return None;
            }
        })
    }
}

/// The outcome of a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Logged in: the caller opens a session.
    Granted {
        /// With this role.
        role: Role,
        /// Whether a TOTP code was checked.
        mfa_used: bool,
        /// The accepted TOTP step, to store as the clerk's last accepted step.
        totp_step: Option<u64>,
    },
    /// The secret matched but a TOTP code is needed: ask for it and try again with it.
    NeedMfa,
    /// Refused.
    Denied(DenyReason),
}

/// Something to audit besides the outcome itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFact {
    /// A progressive delay started for the clerk.
    ThrottleStarted {
        /// Consecutive failures so far.
        failures: u32,
        /// The delay.
        delay: Duration,
    },
    /// The clerk was locked out.
    LockoutStarted {
        /// Consecutive failures that caused it.
        failures: u32,
        /// Its length.
        duration: Duration,
    },
    /// The terminal-wide failure budget was exceeded (critical).
    BudgetExceeded(BudgetExceeded),
    /// A honeypot account was used (critical).
    HoneypotTriggered,
    /// A wrong TOTP code.
    MfaFailed,
    /// A replayed TOTP code (critical).
    MfaReplayed {
        /// The replayed step.
        step: u64,
    },
}

impl AuthFact {
    /// Whether the fact raises a critical alert.
    pub fn critical(&self) -> bool {
        matches!(
            self,
            AuthFact::BudgetExceeded(_)
                | AuthFact::HoneypotTriggered
                | AuthFact::MfaReplayed { .. }
        )
    }
}

/// A login decision with the states to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginDecision {
    /// What happened.
    pub outcome: LoginOutcome,
    /// The clerk's throttle state to store.
    pub throttle: ClerkThrottle,
    /// The terminal budget to store.
    pub budget: TerminalBudget,
    /// What to audit besides the outcome, in order.
    pub facts: Vec<AuthFact>,
}

/// Whether `hour` lies in the allowed window (see [`ClerkRecord::allowed_hours`]).
fn within_hours((start, end): (u8, u8), hour: u8) -> bool {
    if hour > 23 {
        return false;
    }
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => (start..end).contains(&hour),
        std::cmp::Ordering::Greater => hour >= start || hour < end,
    }
}

/// Decides a login attempt by an enrolled clerk.
///
/// Order: honeypot (always refused, counted, critical); terminal block; lockout; delay; disabled;
/// lockdown (only SuperAdmin); allowed hours; secret; TOTP (mandatory for Admin and SuperAdmin,
/// or when the record requires it). Wrong secrets and wrong or replayed codes count as failures
/// for the clerk and the terminal; refusals before the secret is considered count nothing.
pub fn decide_login(
    policy: &ThrottlePolicy,
    clerk: &ClerkRecord,
    throttle: &ClerkThrottle,
    budget: &TerminalBudget,
    attempt: &LoginAttempt,
) -> LoginDecision {
    let now = attempt.now_mono;
    let mut d = LoginDecision {
        outcome: LoginOutcome::NeedMfa,
        throttle: throttle.clone(),
        budget: budget.clone(),
        facts: Vec::new(),
    };
    d.throttle.refresh(now);
    d.budget.refresh(policy, now);

    if clerk.honeypot {
        d.facts.push(AuthFact::HoneypotTriggered);
        if let Some(exceeded) = d.budget.record_failure(policy, now) {
            d.facts.push(AuthFact::BudgetExceeded(exceeded));
        }
        d.outcome = LoginOutcome::Denied(DenyReason::Honeypot);
        return d;
    }
    let early = if let Some(retry_after) = d.budget.blocked(now) {
        Some(DenyReason::BudgetExceeded { retry_after })
    } else {
        match d.throttle.gate(now) {
            Gate::Locked { remaining } => Some(DenyReason::LockedOut { remaining }),
            Gate::Delayed { retry_after } => Some(DenyReason::Throttled { retry_after }),
            Gate::Open if !clerk.enabled => Some(DenyReason::Disabled),
            Gate::Open if attempt.lockdown && clerk.role != Role::SuperAdmin => {
                Some(DenyReason::Lockdown)
            }
            Gate::Open
                if clerk
                    .allowed_hours
                    .is_some_and(|h| !within_hours(h, attempt.local_hour)) =>
            {
                Some(DenyReason::OutsideHours)
            }
            Gate::Open => None,
        }
    };
    if let Some(reason) = early {
        d.outcome = LoginOutcome::Denied(reason);
        return d;
    }
    if !attempt.secret_ok {
        fail(&mut d, policy, now, DenyReason::BadSecret);
        return d;
    }
    let mfa_needed = mfa_mandatory(clerk.role) || clerk.totp_required;
    match attempt.totp {
        Some(TotpDecision::Wrong) => {
            d.facts.push(AuthFact::MfaFailed);
            fail(&mut d, policy, now, DenyReason::MfaWrong);
        }
        Some(TotpDecision::Replayed { step }) => {
            d.facts.push(AuthFact::MfaReplayed { step });
            fail(&mut d, policy, now, DenyReason::MfaReplay { step });
        }
        None if mfa_needed => d.outcome = LoginOutcome::NeedMfa,
        totp => {
            let totp_step = match totp {
                Some(TotpDecision::Accepted { step }) => Some(step),
                _ => None,
            };
            d.throttle.record_success(now);
            d.outcome = LoginOutcome::Granted {
                role: clerk.role,
                mfa_used: totp_step.is_some(),
                totp_step,
            };
        }
    }
    d
}

/// Counts a failure for the clerk and the terminal and records what it started.
fn fail(d: &mut LoginDecision, policy: &ThrottlePolicy, now: u64, reason: DenyReason) {
    match d.throttle.record_failure(policy, now) {
        FailureOutcome::Counted { .. } => {}
        FailureOutcome::Delayed { failures, delay } => {
            d.facts.push(AuthFact::ThrottleStarted { failures, delay });
        }
        FailureOutcome::LockedOut { failures, duration } => {
            d.facts
                .push(AuthFact::LockoutStarted { failures, duration });
        }
    }
    if let Some(exceeded) = d.budget.record_failure(policy, now) {
        d.facts.push(AuthFact::BudgetExceeded(exceeded));
    }
    d.outcome = LoginOutcome::Denied(reason);
}

/// A refused attempt naming no enrolled clerk, with the terminal budget to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownClerkDecision {
    /// Always a denial: `UnknownClerk`, or `BudgetExceeded` while the terminal is blocked.
    pub reason: DenyReason,
    /// The terminal budget to store.
    pub budget: TerminalBudget,
    /// What to audit besides the refusal.
    pub facts: Vec<AuthFact>,
}

/// Decides an attempt naming no enrolled clerk: refused, and counted against the terminal.
pub fn decide_unknown_clerk(
    policy: &ThrottlePolicy,
    budget: &TerminalBudget,
    now_mono: u64,
) -> UnknownClerkDecision {
    let mut budget = budget.clone();
    budget.refresh(policy, now_mono);
    if let Some(retry_after) = budget.blocked(now_mono) {
        return UnknownClerkDecision {
            reason: DenyReason::BudgetExceeded { retry_after },
            budget,
            facts: Vec::new(),
        };
    }
    let facts = budget
        .record_failure(policy, now_mono)
        .map(AuthFact::BudgetExceeded)
        .into_iter()
        .collect();
    UnknownClerkDecision {
        reason: DenyReason::UnknownClerk,
        budget,
        facts,
    }
}

/// Why a supervisor override was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverrideRefusal {
    /// The approver is the session holder: segregation of duties needs a second person.
    #[error("the approver must be a different person")]
    SamePerson,
    /// The approver's role lacks `ApproveOverride`.
    #[error("the approver may not approve overrides")]
    NotPermitted,
    /// The role asked for is above the approver's own.
    #[error("the approver cannot grant a role above their own")]
    RoleTooHigh,
}

/// Decides a supervisor override: `approver` (already authenticated by the caller, with
/// `approver_role`) lets the session of `subject` act as `granted`. On success the caller makes
/// the new session with [`super::session::Session::elevate`] (a new token).
pub fn decide_override(
    subject: &ClerkId,
    approver: &ClerkId,
    approver_role: Role,
    granted: Role,
) -> Result<(), OverrideRefusal> {
    // Ids differing only in case are treated as one person: never the weaker reading.
    if subject.as_str().eq_ignore_ascii_case(approver.as_str()) {
        return Err(OverrideRefusal::SamePerson);
    }
    if !allows(approver_role, Permission::ApproveOverride) {
        return Err(OverrideRefusal::NotPermitted);
    }
    if granted > approver_role {
        return Err(OverrideRefusal::RoleTooHigh);
    }
    Ok(())
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
