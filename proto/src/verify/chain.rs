//! The incremental verifier: fed one record at a time, it keeps the chain head and stops at the
//! first bad record without moving past it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::gaps::{GapRange, Gaps};
use super::keyring::KeyRing;
use super::precheck::Prechecked;
use super::{RunSummary, VerifyError, VerifyReason};
use crate::cert::{JournalKeyCert, VerifiedCert};
use crate::chain::{self, ChainHead};
use crate::checkpoint::Checkpoint;
use crate::ed25519;
use crate::event::{Event, EventKind};
use crate::keys::DikPublicKey;
use crate::record::Record;
use crate::text::DeviceId;

/// What a verifier does when sequence numbers jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GapPolicy {
    /// Any jump is an error ([`VerifyReason::SeqGap`]).
    #[default]
    Strict,
    /// A jump is accepted provisionally (the record after it is still hashed, signed and
    /// decoded, but its link cannot be checked) and must later be covered by a journal-overflow
    /// event; [`ChainVerifier::finish`] fails on any gap still uncovered.
    AllowDeclared,
}

/// Where a verifier stands, to save between batches and [resume](ChainVerifier::resume) from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// The last verified record.
    pub head: ChainHead,
    /// Gaps seen but not yet declared by an overflow event (only under
    /// [`GapPolicy::AllowDeclared`]).
    pub pending_gaps: Vec<GapRange>,
}

/// Verifies a stream of records; see [`super::verify_run`] for what is checked.
///
/// Each `push` either accepts the record and advances, or returns the error and leaves the
/// verifier as it was, so a caller may report the error and keep the verified prefix.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    keys: KeyRing,
    head: ChainHead,
    gaps: Gaps,
    policy: GapPolicy,
    count: u64,
    first_seq: Option<u64>,
    /// Records below this seq skip the signature check (see `with_signatures_from`).
    signatures_from: u64,
}

impl ChainVerifier {
    /// A verifier trusting `certs` (each verified against `dik` and `device_id`), starting after
    /// `anchor` ([`ChainHead::genesis`] or the last trusted record), with [`GapPolicy::Strict`].
    pub fn new(
        dik: &DikPublicKey,
        device_id: &DeviceId,
        certs: &[JournalKeyCert],
        anchor: ChainHead,
    ) -> Result<Self, VerifyError> {
        let mut keys = KeyRing::new(dik, device_id);
        for cert in certs {
            keys.add(cert)?;
        }
        Ok(Self {
            keys,
            head: anchor,
            gaps: Gaps::default(),
            policy: GapPolicy::Strict,
            count: 0,
            first_seq: None,
            signatures_from: 0,
        })
    }

    /// A verifier continuing from a saved [`ChainState`]. Its policy is
    /// [`GapPolicy::AllowDeclared`] if gaps are pending (they can only have come from one),
    /// [`GapPolicy::Strict`] otherwise; [`Self::with_gap_policy`] changes it.
    pub fn resume(
        dik: &DikPublicKey,
        device_id: &DeviceId,
        certs: &[JournalKeyCert],
        state: ChainState,
    ) -> Result<Self, VerifyError> {
        let mut keys = KeyRing::new(dik, device_id);
        for cert in certs {
            keys.add(cert)?;
        }
        Self::from_keys(keys, state)
    }

    /// [`Self::resume`] with certificates already verified (see [`VerifiedCert`]): those
    /// verified for `dik` and `device_id` are not checked again, any other is.
    pub fn resume_verified(
        dik: &DikPublicKey,
        device_id: &DeviceId,
        certs: &[VerifiedCert],
        state: ChainState,
    ) -> Result<Self, VerifyError> {
        let mut keys = KeyRing::new(dik, device_id);
        for cert in certs {
            keys.add_verified(cert)?;
        }
        Self::from_keys(keys, state)
    }

    fn from_keys(keys: KeyRing, state: ChainState) -> Result<Self, VerifyError> {
        let mut v = Self {
            keys,
            head: state.head,
            gaps: Gaps::default(),
            policy: GapPolicy::Strict,
            count: 0,
            first_seq: None,
            signatures_from: 0,
        };
        v.gaps = Gaps::from_ranges(state.pending_gaps, state.head.seq).ok_or(VerifyError {
            seq: None,
            reason: VerifyReason::BadState,
        })?;
        if !v.gaps.as_slice().is_empty() {
            v.policy = GapPolicy::AllowDeclared;
        }
        Ok(v)
    }

    /// Sets the gap policy.
    #[must_use]
    pub fn with_gap_policy(mut self, policy: GapPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Skips the Ed25519 check of records below `seq` (everything else is still checked).
    ///
    /// Only for a caller that authenticates those records another way: a verified checkpoint
    /// at `seq - 1` signs the head hash that the hash chain links every earlier record to.
    /// The agent uses it at start, where checking every signature of a full journal would take
    /// seconds; offline verification and the collector check every signature.
    #[must_use]
    pub fn with_signatures_from(mut self, seq: u64) -> Self {
        self.signatures_from = seq;
        self
    }

    /// Trusts one more certificate (a new agent start's key), after verifying it.
    pub fn add_cert(&mut self, cert: &JournalKeyCert) -> Result<(), VerifyError> {
        self.keys.add(cert)
    }

    /// Verifies the next record and returns its event.
    pub fn push(&mut self, record: &Record) -> Result<Event, VerifyError> {
        self.push_with(record, None).map(Cow::into_owned)
    }

    /// [`Self::push`] for a record from [`super::precheck`]: the same checks and the same
    /// result, reusing the hash, body and signature work done there. A signature is taken as
    /// verified only if it verified under the very key this verifier trusts for the record.
    /// The event is the one decoded there, not a copy.
    pub fn push_prechecked<'p>(
        &mut self,
        pre: &'p Prechecked,
    ) -> Result<Cow<'p, Event>, VerifyError> {
        self.push_with(pre.record(), Some(pre))
    }

    fn push_with<'p>(
        &mut self,
        record: &Record,
        pre: Option<&'p Prechecked>,
    ) -> Result<Cow<'p, Event>, VerifyError> {
        let seq = record.seq();
        let fail = |reason| VerifyError::at(seq, reason);
        let expected = self
            .head
            .next_seq()
            .ok_or_else(|| fail(VerifyReason::SeqExhausted))?;
        let mut gaps = None;
        if seq < expected {
            return Err(fail(if seq == self.head.seq && seq != 0 {
                VerifyReason::Duplicate
            } else {
                VerifyReason::Reordered { expected }
            }));
        } else if seq > expected {
            if self.policy == GapPolicy::Strict {
                return Err(fail(VerifyReason::SeqGap { expected }));
            }
            let mut g = self.gaps.clone();
            g.push(GapRange {
                first: expected,
                last: seq.saturating_sub(1),
            })
            .map_err(fail)?;
            gaps = Some(g);
        } else if record.prev_hash() != &self.head.hash {
            return Err(fail(VerifyReason::BrokenLink));
        }
        let key = self
            .keys
            .find(record.journal_key_id(), seq)
            .ok_or_else(|| fail(VerifyReason::UnknownJournalKey))?;
        let hash_ok = match pre {
            Some(p) => p.hash_ok(),
            None => &record.computed_hash() == record.hash(),
        };
        if !hash_ok {
            return Err(fail(VerifyReason::HashMismatch));
        }
        let verified_before =
            pre.and_then(Prechecked::signed_by) == Some(key.public_key.as_bytes());
        if seq >= self.signatures_from && !verified_before {
            let message = chain::record_signing_message(record.hash());
            // The rule the precheck applied, one by one (crate::ed25519).
            if !ed25519::verify(&key.public_key, &message, record.signature()) {
                return Err(fail(VerifyReason::BadSignature));
            }
        }
        let event = match pre {
            Some(p) => Cow::Borrowed(
                p.event()
                    .map_err(|e| fail(VerifyReason::BadBody(e.clone())))?,
            ),
            None => Cow::Owned(record.event().map_err(|e| fail(VerifyReason::BadBody(e)))?),
        };
        if event.stamp.boot_id != key.boot_id {
            return Err(fail(VerifyReason::BootIdMismatch));
        }
        if let (EventKind::JournalOverflow(overflow), GapPolicy::AllowDeclared) =
            (&event.kind, self.policy)
        {
            let mut g = gaps.take().unwrap_or_else(|| self.gaps.clone());
            g.explain(overflow, seq).map_err(fail)?;
            gaps = Some(g);
        }
        if let Some(g) = gaps {
            self.gaps = g;
        }
        self.head = record.head();
        self.count = self.count.saturating_add(1);
        self.first_seq.get_or_insert(seq);
        Ok(event)
    }

    /// Decodes and verifies the next record. An undecodable record fails with `seq: None`.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(Record, Event), VerifyError> {
        let record = Record::from_bytes(bytes).map_err(|e| VerifyError {
            seq: None,
            reason: VerifyReason::Undecodable(e),
        })?;
        let event = self.push(&record)?;
        Ok((record, event))
    }

    /// Verifies a checkpoint taken at the current head: its DIK signature, its device, and that
    /// its head hash is the hash of the last verified record. Feed records up to the
    /// checkpoint's seq first.
    pub fn check_checkpoint(
        &self,
        dik: &DikPublicKey,
        device_id: &DeviceId,
        checkpoint: &Checkpoint,
    ) -> Result<(), VerifyError> {
        let seq = checkpoint.fields().seq;
        if seq != self.head.seq {
            return Err(VerifyError::at(
                seq,
                VerifyReason::CheckpointNotAtHead {
                    head: self.head.seq,
                },
            ));
        }
        checkpoint.verify(dik, device_id, Some(&self.head.hash))
    }

    /// The last verified record (the anchor before any).
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Gaps not yet declared by an overflow event.
    pub fn pending_gaps(&self) -> &[GapRange] {
        self.gaps.as_slice()
    }

    /// What to save to resume later.
    pub fn state(&self) -> ChainState {
        ChainState {
            head: self.head,
            pending_gaps: self.gaps.as_slice().to_vec(),
        }
    }

    /// What has been verified so far (pending gaps not considered).
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            count: self.count,
            first_seq: self.first_seq,
            last_seq: self.first_seq.map(|_| self.head.seq),
            head: self.head,
        }
    }

    /// Ends the run: fails with [`VerifyReason::UnexplainedGap`] if a gap is still pending.
    pub fn finish(self) -> Result<RunSummary, VerifyError> {
        if let Some(gap) = self.gaps.first() {
            return Err(VerifyError::at(
                gap.first,
                VerifyReason::UnexplainedGap { last: gap.last },
            ));
        }
        Ok(self.summary())
    }
}
