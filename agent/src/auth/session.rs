//! Sessions as pure state: idle and absolute limits on the boot clock, and tokens stored only as
//! their SHA-256.
//!
//! Limits are measured on the boot clock, so setting the wall clock extends nothing. An expired
//! session stays expired: [`Session::touch`] only extends an active one, and the I/O layer
//! drops a session the first time [`Session::check`] says it expired. Sessions are revoked at
//! restart (they are not persisted), on logout and on lockdown.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use posguard_proto::event::SessionLimit;
use posguard_proto::text::ClerkId;
use ring::digest;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::config::{SessionPolicy, secs_ns};
use super::roles::Role;

/// Length of a session token in bytes (256 bits).
pub const TOKEN_LEN: usize = 32;

/// A session token as handed to the client; zeroized on drop, never printed.
#[derive(Clone)]
pub struct SessionToken(Zeroizing<[u8; TOKEN_LEN]>);

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// A presented token that is not 32 bytes of base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session token is not 43 characters of base64url")]
pub struct TokenFormatError;

impl SessionToken {
    /// A new token from 32 bytes of the caller's cryptographic random source.
    pub fn from_random(bytes: [u8; TOKEN_LEN]) -> Self {
        SessionToken(Zeroizing::new(bytes))
    }

    /// The token as the client sees it: base64url without padding (43 characters).
    pub fn to_client_string(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64URL_NOPAD.encode(self.0.as_slice()))
    }

    /// Parses a token presented by a client.
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        if text.len() != 43 {
            return Err(TokenFormatError);
        }
        let bytes = Zeroizing::new(
            BASE64URL_NOPAD
                .decode(text.as_bytes())
                .map_err(|_| TokenFormatError)?,
        );
        let array: [u8; TOKEN_LEN] = bytes.as_slice().try_into().map_err(|_| TokenFormatError)?;
        Ok(SessionToken::from_random(array))
    }

    /// SHA-256 of the token: the only form that is stored.
    pub fn hash(&self) -> [u8; 32] {
        let d = digest::digest(&digest::SHA256, self.0.as_slice());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

/// Whether `token` hashes to `stored_hash` (constant-time comparison).
pub fn token_matches(stored_hash: &[u8; 32], token: &SessionToken) -> bool {
    token.hash().ct_eq(stored_hash).into()
}

/// Whether a session is usable at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Usable.
    Active,
    /// Unused for longer than the role's idle limit.
    ExpiredIdle,
    /// Older than the absolute limit.
    ExpiredAbsolute,
}

impl SessionState {
    /// The limit that ended the session, for the `SessionExpired` event.
    pub fn limit(self) -> Option<SessionLimit> {
        match self {
            SessionState::Active => None,
            SessionState::ExpiredIdle => Some(SessionLimit::Idle),
            SessionState::ExpiredAbsolute => Some(SessionLimit::Absolute),
        }
    }
}

/// A logged-in clerk's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who.
    pub clerk: ClerkId,
    /// With which role.
    pub role: Role,
    /// Boot-clock time (ns) of the login; elevation keeps it.
    pub created_mono: u64,
    /// Boot-clock time (ns) of the last activity.
    pub last_seen_mono: u64,
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
}

/// Why a session could not be elevated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElevateError {
    /// The session has expired.
    #[error("session has expired")]
    Expired,
}

impl SessionPolicy {
    /// The idle limit for `role` in ns.
    pub fn idle_ns(&self, role: Role) -> u64 {
        let minutes = match role {
            Role::Clerk | Role::Supervisor => self.idle_clerk_supervisor_minutes,
            Role::Admin | Role::SuperAdmin => self.idle_admin_minutes,
        };
        secs_ns(minutes.saturating_mul(60))
    }

    /// The absolute limit in ns.
    pub fn absolute_ns(&self) -> u64 {
        secs_ns(self.absolute_hours.saturating_mul(3600))
    }
}

impl Session {
    /// A new session for a granted login at `now_mono`.
    pub fn new(clerk: ClerkId, role: Role, token: &SessionToken, now_mono: u64) -> Self {
        Session {
            clerk,
            role,
            created_mono: now_mono,
            last_seen_mono: now_mono,
            token_hash: token.hash(),
        }
    }

    /// The session's state at `now_mono`. The absolute limit wins when both ran out.
    pub fn check(&self, policy: &SessionPolicy, now_mono: u64) -> SessionState {
        if now_mono.saturating_sub(self.created_mono) >= policy.absolute_ns() {
            SessionState::ExpiredAbsolute
        } else if now_mono.saturating_sub(self.last_seen_mono) >= policy.idle_ns(self.role) {
            SessionState::ExpiredIdle
        } else {
            SessionState::Active
        }
    }

    /// Records activity at `now_mono` if the session is still active; returns its state. An
    /// expired session is left as it is: it never revives.
    pub fn touch(&mut self, policy: &SessionPolicy, now_mono: u64) -> SessionState {
        let state = self.check(policy, now_mono);
        if state == SessionState::Active {
            self.last_seen_mono = self.last_seen_mono.max(now_mono);
        }
        state
    }

    /// The session that replaces this one after a privilege change (supervisor override): the
    /// new role, a new token (the old one stops working), the original login time (elevation
    /// never extends the absolute limit).
    pub fn elevate(
        &self,
        policy: &SessionPolicy,
        role: Role,
        new_token: &SessionToken,
        now_mono: u64,
    ) -> Result<Session, ElevateError> {
        if self.check(policy, now_mono) != SessionState::Active {
            return Err(ElevateError::Expired);
        }
        Ok(Session {
            clerk: self.clerk.clone(),
            role,
            created_mono: self.created_mono,
            last_seen_mono: self.last_seen_mono.max(now_mono),
            token_hash: new_token.hash(),
        })
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
