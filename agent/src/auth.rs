//! Clerk authentication policy: pure functions of (state, request, clock) that return decisions.
//! No I/O happens here; the caller reads the clocks and random bytes, verifies secrets off the
//! reactor, persists the returned states and writes the audit events.
//!
//! Modules:
//! - [`roles`]: the four fixed roles and the one permission table ([`roles::allows`]).
//! - [`secret`]: PIN and password rules, Argon2id hashing and verification.
//! - [`totp`]: RFC 6238 codes, seeds in base32, the `otpauth://` URI, replay refusal.
//! - [`throttle`]: per-clerk delay and lockout, the terminal failure budget; restarts never
//!   shorten a lockout.
//! - [`session`]: idle and absolute limits, hashed tokens, rotation on elevation.
//! - [`decide`]: the login and supervisor-override decisions.
//! - [`config`]: the `[auth]` configuration with defaults and validation naming the key.

pub mod config;
pub mod decide;
pub mod roles;
pub mod secret;
pub mod session;
pub mod throttle;
pub mod totp;

#[cfg(test)]
mod proptests;

pub use config::{
    AuthConfig, AuthConfigError, HashParams, HashingLimits, SecretRules, SessionPolicy,
    ThrottlePolicy,
};
pub use decide::{
    AuthFact, ClerkRecord, DenyReason, LoginAttempt, LoginDecision, LoginOutcome, OverrideRefusal,
    UnknownClerkDecision, decide_login, decide_override, decide_unknown_clerk,
};
pub use roles::{Permission, Role, allows};
pub use secret::{Secret, SecretError, check_secret, hash_secret, verify_secret};
pub use session::{Session, SessionState, SessionToken, token_matches};
pub use throttle::{ClerkThrottle, TerminalBudget};
pub use totp::{TotpDecision, TotpSeed};
