//! Audit events: an envelope (when, who, which process, how severe) around a typed
//! [`EventKind`].
//!
//! The encoded event is the body of a journal [`Record`](crate::record::Record); its layout is
//! fixed by the record's format number.

mod auth;
mod kind;
mod ops;
mod pos;

pub use auth::{LoginFailure, Role, SessionLimit, ThrottleScope};
pub use kind::{EventKind, Retention};
pub use ops::{
    CacheRefusal, CommandKind, CommandRef, CommandRefusal, KeyBackend, Overflow, Source,
    StopReason, TamperFinding,
};
pub use pos::{AmountTooLarge, MinorUnits, Money, PosAction, PosEvent};

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError, MAX_BODY_LEN, byte_array};
use crate::text::ClerkId;

/// How serious an event is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Normal operation.
    Info,
    /// A normal but significant change (enrolment, policy change).
    Notice,
    /// Something failed or was refused.
    Warning,
    /// An attack or loss of integrity is likely.
    Critical,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A clerk (logged in, or the subject of a login attempt).
    Clerk(ClerkId),
    /// The agent itself (timers, checks, start and stop).
    System,
    /// The collector, through a signed command.
    Collector,
}

/// Credentials of the local process that made the request (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerCred {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id.
    pub pid: u32,
}

/// When and where an event happened, as the journal writer's clocks saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// UTC wall time, Unix milliseconds (may jump; for humans).
    pub wall_ms: u64,
    /// Monotonic time since boot, nanoseconds (`CLOCK_BOOTTIME`; orders events within a boot).
    pub mono_ns: u64,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`), which scopes `mono_ns`.
    #[serde(with = "byte_array")]
    pub boot_id: [u8; 16],
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub stamp: Stamp,
    /// Who.
    pub actor: Actor,
    /// Which local process asked, where known.
    pub peer: Option<PeerCred>,
    /// How serious.
    pub severity: Severity,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// An event with its kind's default severity.
    pub fn new(stamp: Stamp, actor: Actor, peer: Option<PeerCred>, kind: EventKind) -> Self {
        Self {
            stamp,
            actor,
            peer,
            severity: kind.default_severity(),
            kind,
        }
    }

    /// Raises the severity to at least `severity` (it is never lowered below the current one).
    #[must_use]
    pub fn at_least(mut self, severity: Severity) -> Self {
        self.severity = self.severity.max(severity);
        self
    }

    /// Whether a full journal keeps this event over routine ones: security-critical kinds, and
    /// any event of severity Warning or above.
    pub fn is_security_critical(&self) -> bool {
        self.kind.retention() == Retention::SecurityCritical || self.severity >= Severity::Warning
    }

    /// The canonical encoding (postcard), as stored in a record's body.
    pub fn to_body_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let bytes = postcard::to_stdvec(self).map_err(EncodeError::Postcard)?;
        if bytes.len() > MAX_BODY_LEN {
            return Err(EncodeError::TooLarge {
                len: bytes.len(),
                max: MAX_BODY_LEN,
            });
        }
        Ok(bytes)
    }

    /// Decodes a record body. Refuses oversized, trailing or non-canonical bytes, and any text
    /// that fails its type's validation.
    pub fn from_body_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::check_len(bytes, MAX_BODY_LEN)?;
        let event: Self = codec::decode_exact(bytes)?;
        let again = postcard::to_stdvec(&event).map_err(|_| DecodeError::NonCanonical)?;
        codec::ensure_canonical(bytes, &again)?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests;
