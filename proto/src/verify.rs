//! Verification of journals: runs of records against the device identity key, the device's
//! journal-key certificates and a trusted starting point.
//!
//! [`verify_run`] checks a whole run at once; [`ChainVerifier`] does the same one record at a
//! time for streams (the journal at start, the collector per batch). Both stop at the first bad
//! record and name it in a [`VerifyError`].

mod chain;
mod gaps;
mod keyring;
mod precheck;

pub use chain::{ChainState, ChainVerifier, GapPolicy};
pub use gaps::{GapRange, MAX_PENDING_GAPS};
pub use keyring::MAX_CERTS;
#[cfg(test)]
use precheck::precheck_in_groups;
pub use precheck::{
    Prechecked, SignedMessage, precheck, precheck_verified, verify_ed25519_batch,
    verify_ed25519_batch_checked,
};

use crate::cert::JournalKeyCert;
use crate::chain::ChainHead;
use crate::codec::DecodeError;
use crate::keys::DikPublicKey;
use crate::record::Record;
use crate::text::DeviceId;

/// A verification failure: the first bad sequence number, where one applies, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyError {
    /// The first bad record's sequence number (or the checkpoint's). `None` when there is none
    /// to name: an undecodable record, a certificate.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: VerifyReason,
}

impl VerifyError {
    pub(crate) fn at(seq: u64, reason: VerifyReason) -> Self {
        Self {
            seq: Some(seq),
            reason,
        }
    }
}

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "at seq {seq}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The reason is already in the message; its own cause (a decode error) comes next.
        std::error::Error::source(&self.reason)
    }
}

/// What a verifier found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyReason {
    /// The record's bytes could not be decoded.
    #[error("record cannot be decoded")]
    Undecodable(#[source] DecodeError),
    /// A sequence number was skipped (records missing).
    #[error("sequence gap: expected seq {expected}")]
    SeqGap {
        /// The sequence number that should have come.
        expected: u64,
    },
    /// The record repeats the sequence number of the one before.
    #[error("duplicate record")]
    Duplicate,
    /// The record's sequence number is lower than the chain has reached.
    #[error("record out of order: expected seq {expected}")]
    Reordered {
        /// The sequence number that should have come.
        expected: u64,
    },
    /// `prev_hash` is not the hash of the record before.
    #[error("prev_hash does not link to the previous record")]
    BrokenLink,
    /// No certified journal key with this key id may sign this sequence number.
    #[error("no certified journal key for this key id and seq")]
    UnknownJournalKey,
    /// The stored hash is not the hash of the record's fields.
    #[error("hash mismatch")]
    HashMismatch,
    /// The journal key's signature does not verify.
    #[error("bad record signature")]
    BadSignature,
    /// The body is not a valid event.
    #[error("body is not a valid event")]
    BadBody(#[source] DecodeError),
    /// The event's boot id is not the boot id its journal key was certified for.
    #[error("event boot id differs from the journal key's")]
    BootIdMismatch,
    /// The chain is at `u64::MAX`.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
    /// A certificate or checkpoint names another device.
    #[error("names another device")]
    WrongDevice,
    /// A certificate's contents are invalid (first_seq 0).
    #[error("invalid journal-key certificate")]
    BadCert,
    /// A certificate certifies a journal key the signature rule refuses (not the canonical
    /// encoding of a point of prime order).
    #[error("journal-key certificate refused: {0}")]
    BadJournalKey(crate::ed25519::Ed25519KeyError),
    /// A certificate's DIK signature does not verify.
    #[error("bad journal-key certificate signature")]
    BadCertSignature,
    /// More certificates than [`MAX_CERTS`].
    #[error("too many journal-key certificates")]
    TooManyCerts,
    /// A checkpoint's DIK signature does not verify.
    #[error("bad checkpoint signature")]
    BadCheckpointSignature,
    /// A checkpoint's head hash is not the record hash at its seq.
    #[error("checkpoint head hash differs from the record at its seq")]
    CheckpointMismatch,
    /// A checkpoint is not at the verifier's head.
    #[error("checkpoint is not at the head (seq {head})")]
    CheckpointNotAtHead {
        /// The verifier's head seq.
        head: u64,
    },
    /// A checkpoint's seq is below the previous checkpoint's.
    #[error("checkpoint seq went back from {previous}")]
    CheckpointRegressed {
        /// The previous checkpoint's seq.
        previous: u64,
    },
    /// A checkpoint's NV counter did not grow: a rollback or a replay.
    #[error("NV counter went from {previous} to {found}")]
    CounterRollback {
        /// The previous checkpoint's counter.
        previous: u64,
        /// This checkpoint's counter.
        found: u64,
    },
    /// Records are missing and no overflow event declared them (`seq` is the first missing).
    #[error("records missing up to seq {last} and not declared dropped")]
    UnexplainedGap {
        /// Last missing seq.
        last: u64,
    },
    /// An overflow event's range or count does not fit the records actually missing.
    #[error("overflow event does not match the missing records")]
    OverflowMismatch,
    /// More separate gaps pending than [`MAX_PENDING_GAPS`].
    #[error("too many pending gaps")]
    TooManyGaps,
    /// A saved [`ChainState`] is inconsistent.
    #[error("inconsistent verifier state")]
    BadState,
}

/// What a verified run covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunSummary {
    /// Records verified.
    pub count: u64,
    /// Sequence number of the first, if any.
    pub first_seq: Option<u64>,
    /// Sequence number of the last, if any.
    pub last_seq: Option<u64>,
    /// Where the chain ended (the anchor if the run was empty).
    pub head: ChainHead,
}

/// Verifies a complete run of records, strictly: every seq from `anchor.seq + 1` on, each
/// linked to the one before, hashed and signed correctly by a key certified in `certs` (each
/// certificate must verify against `dik` and name `device_id`), with a decodable body.
///
/// `anchor` is [`ChainHead::genesis`] or the last record the caller already trusts.
pub fn verify_run(
    dik: &DikPublicKey,
    device_id: &DeviceId,
    certs: &[JournalKeyCert],
    anchor: ChainHead,
    records: &[Record],
) -> Result<RunSummary, VerifyError> {
    let mut v = ChainVerifier::new(dik, device_id, certs, anchor)?;
    for record in records {
        v.push(record)?;
    }
    v.finish()
}

/// [`verify_run`] over encoded records (as stored or shipped): an undecodable record fails with
/// [`VerifyReason::Undecodable`] and `seq: None`.
pub fn verify_encoded_run<B: AsRef<[u8]>>(
    dik: &DikPublicKey,
    device_id: &DeviceId,
    certs: &[JournalKeyCert],
    anchor: ChainHead,
    records: &[B],
) -> Result<RunSummary, VerifyError> {
    let mut v = ChainVerifier::new(dik, device_id, certs, anchor)?;
    for bytes in records {
        v.push_bytes(bytes.as_ref())?;
    }
    v.finish()
}

#[cfg(test)]
mod tests;
