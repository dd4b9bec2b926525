//! The `[auth]` configuration: Argon2id parameters, secret rules, throttling and session limits.
//!
//! Every field has a default (FACTS.md, "Auth numbers"); [`AuthConfig::validate`] refuses values
//! weaker than PCI DSS allows, naming the key (`auth.throttle.lockout_minutes`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Seconds as boot-clock nanoseconds, saturating (validated values never come near the limit).
pub(crate) const fn secs_ns(secs: u64) -> u64 {
    secs.saturating_mul(NANOS_PER_SEC)
}

/// A configuration value that is not allowed: `key` is the full dotted key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct AuthConfigError {
    /// The full dotted key, e.g. `auth.throttle.lockout_minutes`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

fn invalid(key: &'static str, problem: impl Into<String>) -> AuthConfigError {
    AuthConfigError {
        key,
        problem: problem.into(),
    }
}

/// `[auth.argon2]`: Argon2id cost parameters for new hashes (OWASP: m=19456 KiB, t=2, p=1).
///
/// Verification reads the parameters from each stored PHC string, so changing these only
/// affects secrets set afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    /// Refuses parameters below the weakest OWASP Argon2id setting (m=7168 KiB, t=5) and ones
    /// Argon2 itself refuses.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if self.m_kib < 7_168 {
            return Err(invalid(
                "auth.argon2.m_kib",
                "must be at least 7168 (OWASP)",
            ));
        }
        if self.t == 0 || u64::from(self.m_kib).saturating_mul(u64::from(self.t)) < 36_864 {
            return Err(invalid(
                "auth.argon2.t",
                "m_kib * t must be at least 36864 (OWASP: m=19456,t=2 or equivalent)",
            ));
        }
        if self.p == 0 || self.p > 16 {
            return Err(invalid("auth.argon2.p", "must be 1 to 16"));
        }
        argon2::Params::new(self.m_kib, self.t, self.p, None)
            .map(|_| ())
            .map_err(|e| invalid("auth.argon2", e.to_string()))
    }
}

/// `[auth.secrets]`: length rules for PINs and passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretRules {
    /// Shortest Clerk PIN (digits only).
    pub clerk_pin_min_len: usize,
    /// Shortest Supervisor PIN (digits only).
    pub supervisor_pin_min_len: usize,
    /// Shortest Admin or SuperAdmin password; never below 12 (PCI DSS 8.3.6).
    pub admin_password_min_len: usize,
}

impl Default for SecretRules {
    fn default() -> Self {
        SecretRules {
            clerk_pin_min_len: 4,
            supervisor_pin_min_len: 6,
            admin_password_min_len: 12,
        }
    }
}

/// Longest secret accepted, in characters (bounds the Argon2 input from outside).
pub const MAX_SECRET_CHARS: usize = 128;

impl SecretRules {
    /// Refuses rules weaker than the defaults' floors.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if !(4..=MAX_SECRET_CHARS).contains(&self.clerk_pin_min_len) {
            return Err(invalid(
                "auth.secrets.clerk_pin_min_len",
                "must be 4 to 128",
            ));
        }
        if !(6..=MAX_SECRET_CHARS).contains(&self.supervisor_pin_min_len) {
            return Err(invalid(
                "auth.secrets.supervisor_pin_min_len",
                "must be 6 to 128",
            ));
        }
        if !(12..=MAX_SECRET_CHARS).contains(&self.admin_password_min_len) {
            return Err(invalid(
                "auth.secrets.admin_password_min_len",
                "must be 12 to 128 (PCI DSS 8.3.6)",
            ));
        }
        Ok(())
    }
}

/// `[auth.throttle]`: progressive delay, lockout and the terminal-wide failure budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottlePolicy {
    /// Consecutive failures of one clerk before each further failure imposes a delay.
    pub delay_after_failures: u32,
    /// First delay in seconds; it doubles with each further failure.
    pub delay_base_secs: u64,
    /// Longest delay in seconds.
    pub delay_max_secs: u64,
    /// Consecutive failures that lock a clerk out (at most 10, PCI DSS 8.3.4).
    pub lockout_failures: u32,
    /// Length of a lockout in minutes (at least 30, PCI DSS 8.3.4); only an admin ends it early.
    pub lockout_minutes: u64,
    /// Failures of all clerks together that the terminal tolerates within the window.
    pub budget_failures: u32,
    /// The sliding window of the terminal budget, in seconds.
    pub budget_window_secs: u64,
    /// How long every login on the terminal is blocked once the budget is exceeded, in minutes.
    pub budget_block_minutes: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            delay_after_failures: 3,
            delay_base_secs: 1,
            delay_max_secs: 30,
            lockout_failures: 10,
            lockout_minutes: 30,
            budget_failures: 20,
            budget_window_secs: 600,
            budget_block_minutes: 15,
        }
    }
}

/// Longest configurable lockout or block: one week.
const MAX_MINUTES: u64 = 7 * 24 * 60;

impl ThrottlePolicy {
    /// Refuses a policy weaker than PCI DSS 8.3.4 or out of sensible bounds.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if !(1..=10).contains(&self.lockout_failures) {
            return Err(invalid(
                "auth.throttle.lockout_failures",
                "must be 1 to 10 (PCI DSS 8.3.4)",
            ));
        }
        if !(30..=MAX_MINUTES).contains(&self.lockout_minutes) {
            return Err(invalid(
                "auth.throttle.lockout_minutes",
                "must be at least 30 (PCI DSS 8.3.4) and at most 10080",
            ));
        }
        if self.delay_base_secs == 0 || self.delay_base_secs > self.delay_max_secs {
            return Err(invalid(
                "auth.throttle.delay_base_secs",
                "must be at least 1 and at most delay_max_secs",
            ));
        }
        if self.delay_max_secs > 3600 {
            return Err(invalid(
                "auth.throttle.delay_max_secs",
                "must be at most 3600",
            ));
        }
        if self.budget_failures == 0 || self.budget_failures > 1000 {
            return Err(invalid(
                "auth.throttle.budget_failures",
                "must be 1 to 1000",
            ));
        }
        if !(1..=86_400).contains(&self.budget_window_secs) {
            return Err(invalid(
                "auth.throttle.budget_window_secs",
                "must be 1 to 86400",
            ));
        }
        if !(1..=MAX_MINUTES).contains(&self.budget_block_minutes) {
            return Err(invalid(
                "auth.throttle.budget_block_minutes",
                "must be 1 to 10080",
            ));
        }
        Ok(())
    }

    /// Length of a lockout in boot-clock nanoseconds.
    pub fn lockout_ns(&self) -> u64 {
        secs_ns(self.lockout_minutes.saturating_mul(60))
    }

    /// Length of a terminal block in boot-clock nanoseconds.
    pub fn budget_block_ns(&self) -> u64 {
        secs_ns(self.budget_block_minutes.saturating_mul(60))
    }

    /// The delay imposed after the `failures`-th consecutive failure (zero before the threshold).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let Some(extra) = failures.checked_sub(self.delay_after_failures) else {
            return Duration::ZERO;
        };
        let factor = 1u64.checked_shl(extra).unwrap_or(u64::MAX);
        let secs = self
            .delay_base_secs
            .saturating_mul(factor)
            .min(self.delay_max_secs);
        Duration::from_secs(secs)
    }
}

/// `[auth.session]`: idle and absolute session limits on the boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionPolicy {
    /// Idle limit for Clerk and Supervisor sessions, in minutes (ASVS L2: 30).
    pub idle_clerk_supervisor_minutes: u64,
    /// Idle limit for Admin and SuperAdmin sessions, in minutes; at most 15 (PCI DSS 8.2.8).
    pub idle_admin_minutes: u64,
    /// Absolute limit for every session, in hours (ASVS L2: 12).
    pub absolute_hours: u64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_clerk_supervisor_minutes: 30,
            idle_admin_minutes: 15,
            absolute_hours: 12,
        }
    }
}

impl SessionPolicy {
    /// Refuses an admin idle limit above 15 minutes and limits of zero or above a day.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if !(1..=15).contains(&self.idle_admin_minutes) {
            return Err(invalid(
                "auth.session.idle_admin_minutes",
                "must be 1 to 15 (PCI DSS 8.2.8)",
            ));
        }
        if !(1..=24 * 60).contains(&self.idle_clerk_supervisor_minutes) {
            return Err(invalid(
                "auth.session.idle_clerk_supervisor_minutes",
                "must be 1 to 1440",
            ));
        }
        if !(1..=24).contains(&self.absolute_hours) {
            return Err(invalid("auth.session.absolute_hours", "must be 1 to 24"));
        }
        Ok(())
    }
}

/// `[auth.hashing]`: how much Argon2id work runs at once. Each check holds `auth.argon2.m_kib`
/// of memory (19 MiB by default), so these two numbers bound the agent's memory under a login
/// flood (docs/local-api.md, "Password hashing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashingLimits {
    /// Secrets hashed or checked at once (threads, each with its own Argon2 memory).
    pub workers: usize,
    /// Checks waiting for a worker; beyond this a request is answered `busy`.
    pub max_queued: usize,
}

impl Default for HashingLimits {
    fn default() -> Self {
        HashingLimits {
            workers: 1,
            max_queued: 32,
        }
    }
}

impl HashingLimits {
    /// Refuses limits that would not bound memory or would serve nobody.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if !(1..=8).contains(&self.workers) {
            return Err(invalid("auth.hashing.workers", "must be 1 to 8"));
        }
        if !(1..=1024).contains(&self.max_queued) {
            return Err(invalid("auth.hashing.max_queued", "must be 1 to 1024"));
        }
        Ok(())
    }
}

/// `[auth]`: the whole clerk-authentication configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `[auth.argon2]`.
    pub argon2: HashParams,
    /// `[auth.secrets]`.
    pub secrets: SecretRules,
    /// `[auth.throttle]`.
    pub throttle: ThrottlePolicy,
    /// `[auth.session]`.
    pub session: SessionPolicy,
    /// `[auth.hashing]`.
    pub hashing: HashingLimits,
    /// Offset of the shop's local time from UTC, in minutes, for clerks' allowed hours.
    pub utc_offset_minutes: i32,
}

impl AuthConfig {
    /// Validates every section; the error names the first bad key.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err(invalid(
                "auth.utc_offset_minutes",
                "must be between -720 and 840",
            ));
        }
        self.argon2.validate()?;
        self.secrets.validate()?;
        self.throttle.validate()?;
        self.hashing.validate()?;
        self.session.validate()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AuthConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_numbers_and_valid() {
        let c = parse("");
        assert_eq!(c, AuthConfig::default());
        assert_eq!((c.argon2.m_kib, c.argon2.t, c.argon2.p), (19_456, 2, 1));
        assert_eq!(c.throttle.lockout_failures, 10);
        assert_eq!(c.throttle.lockout_minutes, 30);
        assert_eq!(c.session.idle_admin_minutes, 15);
        c.validate().unwrap();
    }

    #[test]
    fn weaker_values_are_refused_naming_the_key() {
        let cases = [
            (
                "[throttle]\nlockout_minutes = 29\n",
                "auth.throttle.lockout_minutes",
            ),
            (
                "[throttle]\nlockout_failures = 11\n",
                "auth.throttle.lockout_failures",
            ),
            (
                "[session]\nidle_admin_minutes = 16\n",
                "auth.session.idle_admin_minutes",
            ),
            (
                "[secrets]\nadmin_password_min_len = 11\n",
                "auth.secrets.admin_password_min_len",
            ),
            ("[argon2]\nm_kib = 4096\n", "auth.argon2.m_kib"),
            ("[hashing]\nworkers = 0\n", "auth.hashing.workers"),
            ("[hashing]\nmax_queued = 0\n", "auth.hashing.max_queued"),
        ];
        for (text, key) in cases {
            let err = parse(text).validate().unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.to_string().starts_with(key), "{err}");
        }
        let longer = parse("[throttle]\nlockout_minutes = 60\n");
        longer.validate().unwrap();
        assert!(toml::from_str::<AuthConfig>("[throttle]\nlockout_minuts = 60\n").is_err());
    }

    #[test]
    fn delay_doubles_from_the_threshold_and_is_capped() {
        let t = ThrottlePolicy::default();
        let secs: Vec<u64> = (0..=12).map(|n| t.delay_after(n).as_secs()).collect();
        assert_eq!(secs, [0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30]);
        assert_eq!(t.delay_after(u32::MAX).as_secs(), 30);
    }
}
