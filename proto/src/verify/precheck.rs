//! The checks on records that need no chain state — the record hash, the body decode and the
//! Ed25519 signature — done ahead of the chain walk, in bulk, on any thread.
//!
//! A collector spends most of its ingest time on signatures. [`precheck`] verifies a batch's
//! signatures together (Ed25519 batch verification: one multiscalar multiplication for many
//! signatures, with the public-key terms of one key folded into one, see [`batch`]), so that
//! the sequential part, [`ChainVerifier::push_prechecked`](super::ChainVerifier::push_prechecked),
//! only compares hashes and looks keys up. Grouped or one by one, every signature is checked
//! under the one rule of [`crate::ed25519`], so a record's verdict does not depend on the group
//! it falls in.
//!
//! Nothing here is trusted blindly: a [`Prechecked`] records which public key its signature
//! verified under, and the chain walk accepts it only if that is the key its own key ring (built
//! from certificates verified against the device identity key) holds for the record; otherwise
//! it verifies the signature itself. A group that fails as a whole is verified one signature at
//! a time up to the first bad one, so the records before it keep their verdict and the bad one
//! is named; nothing after it is checked here (the chain walk stops at it, and checks anything
//! it does reach itself).

mod batch;

pub use batch::{SignedMessage, verify_ed25519_batch, verify_ed25519_batch_checked};

use crate::cert::{JournalKeyCert, VerifiedCert};
use crate::chain;
use crate::codec::DecodeError;
use crate::ed25519::{self, JournalPublicKey};
use crate::event::Event;
use crate::record::Record;

/// Signatures verified together, at most. The cost per signature falls with the group (µs per
/// record, CPU time on a 2-core x86-64 with AVX-512 IFMA, `cargo bench -p posguard-proto --bench
/// verify`: ~7.9 at 8, ~6.3 at 64, ~5.6 at 256, ~5.3 at 1024) and flattens past ~1000, where the multiscalar multiplication
/// uses its widest window; an agent's default batch of 2000 is prepared as one part per core, one group
/// each. A failing group is re-verified one by one up to the bad record (~17 µs each, the
/// rule's single check): an upload of k records ending in a forgery costs about k single
/// verifications, ~3× an honest one whatever the group; a larger group only makes the smallest
/// such upload dearer.
pub(super) const GROUP: usize = 1024;

/// A record with the checks that need no chain state already done.
#[derive(Debug, Clone)]
pub struct Prechecked {
    record: Record,
    hash_ok: bool,
    signed_by: Option<[u8; 32]>,
    event: Result<Event, DecodeError>,
}

impl Prechecked {
    /// The record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Whether the record's hash matches its contents.
    pub(crate) fn hash_ok(&self) -> bool {
        self.hash_ok
    }

    /// The journal public key the record's signature verified under, if it was checked and
    /// verified.
    pub(crate) fn signed_by(&self) -> Option<&[u8; 32]> {
        self.signed_by.as_ref()
    }

    /// The decoded event, or why the body does not decode.
    pub fn event(&self) -> Result<&Event, &DecodeError> {
        self.event.as_ref()
    }
}

/// Prechecks `records`, taking each record's key from the certificate in `certs` whose key id
/// it names (the certificates need not be verified yet: see the module documentation).
pub fn precheck(records: Vec<Record>, certs: &[JournalKeyCert]) -> Vec<Prechecked> {
    precheck_in_groups(records, certs, GROUP)
}

/// [`precheck`] with signatures verified `group_size` at a time (tests use small groups to put
/// group boundaries in short runs).
pub(super) fn precheck_in_groups(
    records: Vec<Record>,
    certs: &[JournalKeyCert],
    group_size: usize,
) -> Vec<Prechecked> {
    // The distinct keys that satisfy the signature rule, and for each certificate (in order: a
    // record takes the first one naming its key id) the index of its key among them, if it
    // does. A key the rule refuses verifies nothing, here as in the chain walk.
    let mut keys: Vec<JournalPublicKey> = Vec::new();
    let mut by_id: Vec<([u8; 8], Option<usize>)> = Vec::with_capacity(certs.len());
    for c in certs {
        let public = c.fields().journal_public_key;
        // Checking a key costs a scalar multiplication: once per distinct key.
        let at = keys
            .iter()
            .position(|k| k.as_bytes() == &public)
            .or_else(|| {
                JournalPublicKey::from_bytes(&public).ok().map(|vk| {
                    keys.push(vk);
                    keys.len().saturating_sub(1)
                })
            });
        by_id.push((c.journal_key_id(), at));
    }
    precheck_keyed(records, &keys, &by_id, group_size)
}

/// [`precheck`] with certificates already verified ([`VerifiedCert`]): their keys were checked
/// against the signature rule then, so no key is checked again here (a scalar multiplication
/// per key and call, which a live upload of a few records would feel).
pub fn precheck_verified(records: Vec<Record>, certs: &[VerifiedCert]) -> Vec<Prechecked> {
    let mut keys: Vec<JournalPublicKey> = Vec::new();
    let mut by_id: Vec<([u8; 8], Option<usize>)> = Vec::with_capacity(certs.len());
    for c in certs {
        let key = *c.key();
        let at = keys.iter().position(|k| k == &key).unwrap_or_else(|| {
            keys.push(key);
            keys.len().saturating_sub(1)
        });
        by_id.push((c.cert().journal_key_id(), Some(at)));
    }
    precheck_keyed(records, &keys, &by_id, GROUP)
}

/// The precheck proper: `keys` are the distinct checked keys, `by_id` each certificate's key id
/// (in order) and the index of its key in `keys`, if it has a usable one.
fn precheck_keyed(
    records: Vec<Record>,
    keys: &[JournalPublicKey],
    by_id: &[([u8; 8], Option<usize>)],
    group_size: usize,
) -> Vec<Prechecked> {
    let mut out: Vec<Prechecked> = records
        .into_iter()
        .map(|record| {
            let hash_ok = &record.computed_hash() == record.hash();
            let event = record.event();
            Prechecked {
                record,
                hash_ok,
                signed_by: None,
                event,
            }
        })
        .collect();
    // (index into `out`, index into `keys`) of every record worth a signature check.
    let mut todo: Vec<(usize, usize)> = Vec::with_capacity(out.len());
    for (i, p) in out.iter().enumerate() {
        if !p.hash_ok {
            continue;
        }
        let id = p.record.journal_key_id();
        if let Some((_, Some(key))) = by_id.iter().find(|(k, _)| k == id) {
            todo.push((i, *key));
        }
    }
    for group in todo.chunks(group_size.max(1)) {
        let messages: Vec<Vec<u8>> = group
            .iter()
            .filter_map(|(i, _)| out.get(*i))
            .map(|p| chain::record_signing_message(p.record.hash()))
            .collect();
        let all_good = {
            let signed: Vec<SignedMessage<'_>> = group
                .iter()
                .zip(&messages)
                .filter_map(|((i, key), message)| {
                    out.get(*i).map(|p| SignedMessage {
                        key: *key,
                        message,
                        signature: p.record.signature(),
                    })
                })
                .collect();
            signed.len() == group.len() && batch::verify_batch(keys, &signed)
        };
        for (n, (i, key)) in group.iter().enumerate() {
            let Some(public) = keys.get(*key) else {
                return out; // Indices into `keys` come from its own positions: never taken.
            };
            let Some(p) = out.get_mut(*i) else { continue };
            // The same rule one by one as together (crate::ed25519): the group's verdict on
            // each record is the one it gets alone.
            let good = all_good
                || messages
                    .get(n)
                    .is_some_and(|m| ed25519::verify(public, m, p.record.signature()));
            if !good {
                // The chain walk stops at this record; checking what follows would be work for
                // nothing (and a batch of forgeries would cost one full verification each).
                return out;
            }
            p.signed_by = Some(*public.as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests;
