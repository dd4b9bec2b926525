//! Parts of operational events: signed commands, tamper findings, journal overflow, the
//! transaction cache and the agent's life cycle.

use serde::{Deserialize, Serialize};

use crate::text::ShortCode;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// Someone at the terminal (the event's actor says who).
    Local,
    /// A signed command from the collector.
    Collector,
}

/// A kind of signed command from the collector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandKind {
    /// Enter lockdown.
    Lockdown,
    /// Leave lockdown.
    Unlock,
    /// Replace the policy.
    PolicyUpdate,
    /// A command this list does not name yet.
    Other(ShortCode),
}

/// Which command an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandRef {
    /// The command's sequence number (per device, issued by the collector).
    pub command_seq: u64,
    /// What the command asks for.
    pub kind: CommandKind,
}

/// Why a signed command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandRefusal {
    /// It could not be decoded.
    Malformed,
    /// Its signature did not verify.
    BadSignature,
    /// It names another device.
    WrongDevice,
    /// Its validity window has passed.
    Expired,
    /// Its sequence number was already used.
    Replayed,
    /// This agent does not know the command.
    Unsupported,
}

/// What a tamper check found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TamperFinding {
    /// The database is older than the TPM's monotonic counter says it should be.
    Rollback {
        /// Counter value recorded in the database.
        stored_counter: u64,
        /// Counter value read from the TPM.
        tpm_counter: u64,
    },
    /// The journal's hash chain or a signature is broken at this record.
    BrokenChain {
        /// First bad sequence number.
        seq: u64,
    },
    /// A store could not be read.
    UnreadableDatabase {
        /// Which store (`journal`, `cache`, `clerks`, …).
        store: ShortCode,
    },
    /// Anything else, named by a short code.
    Other(ShortCode),
    /// A store the journal knew of is gone: its directory was deleted or emptied (`journal`,
    /// `clerks`, `cache`). For the journal, the new chain's first record says so.
    StoreMissing {
        /// Which store.
        store: ShortCode,
    },
    /// Another store stands where the journal knew one: a different instance (a fresh store,
    /// another device's, a copy of another terminal's).
    StoreReplaced {
        /// Which store.
        store: ShortCode,
    },
    /// The store is an older copy of itself: its write generation is below the one the journal
    /// last recorded for it.
    StoreOlder {
        /// Which store.
        store: ShortCode,
        /// The generation the journal recorded.
        recorded_generation: u64,
        /// The generation the store holds.
        found_generation: u64,
    },
}

/// Records dropped from the journal because unshipped records would have overflowed its bound.
///
/// Within `first_seq..=last_seq`, `dropped` records were removed (routine ones first); records
/// in that range that are not dropped were kept. A verifier uses this to tell a declared gap from
/// a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Overflow {
    /// Lowest dropped sequence number.
    pub first_seq: u64,
    /// Highest dropped sequence number.
    pub last_seq: u64,
    /// How many records were dropped in that range.
    pub dropped: u64,
    /// How many of those were security-critical (normally 0: they are kept over routine ones).
    pub dropped_critical: u64,
}

/// Why the transaction cache refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CacheRefusal {
    /// The payload held what looks like a card number (the number itself is never recorded).
    CardData,
}

/// Which key backend the agent runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyBackend {
    /// A TPM 2.0.
    Tpm,
    /// Keys in files (development, or machines without a TPM, when the config allows it).
    Software,
}

/// Why the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StopReason {
    /// An orderly shutdown (SIGTERM from systemd, or a request).
    Shutdown,
    /// A fatal error.
    Fatal,
}
