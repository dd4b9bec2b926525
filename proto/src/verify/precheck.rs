//! The checks on records that need no chain state — the record hash, the body decode and the
//! Ed25519 signature — done ahead of the chain walk, in bulk, on any thread.
//!
//! A collector spends most of its ingest time on signatures. [`precheck`] verifies a batch's
//! signatures together (Ed25519 batch verification: one multiscalar multiplication for many
//! signatures, two to three times cheaper per signature than one at a time), so that the
//! sequential part, [`ChainVerifier::push_prechecked`](super::ChainVerifier::push_prechecked),
//! only compares hashes and looks keys up.
//!
//! Nothing here is trusted blindly: a [`Prechecked`] records which public key its signature
//! verified under, and the chain walk accepts it only if that is the key its own key ring (built
//! from certificates verified against the device identity key) holds for the record; otherwise
//! it verifies the signature itself. A group that fails as a whole is verified one signature at
//! a time up to the first bad one, so the records before it keep their verdict and the bad one
//! is named; nothing after it is checked here (the chain walk stops at it, and checks anything
//! it does reach itself).

use ed25519_dalek::{Signature, VerifyingKey};

use crate::cert::JournalKeyCert;
use crate::chain;
use crate::codec::DecodeError;
use crate::event::Event;
use crate::keys::verify_ed25519;
use crate::record::Record;

/// Signatures verified together; a failing group is re-verified one by one, so the group is
/// kept small enough that a forged record costs little extra.
const GROUP: usize = 256;

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
    let keys: Vec<([u8; 8], [u8; 32], Option<VerifyingKey>)> = certs
        .iter()
        .map(|c| {
            let public = c.fields().journal_public_key;
            (
                c.journal_key_id(),
                public,
                VerifyingKey::from_bytes(&public).ok(),
            )
        })
        .collect();
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
    // (index into `out`, public key bytes, parsed key) of every record worth a signature check.
    let mut todo: Vec<(usize, [u8; 32], VerifyingKey)> = Vec::with_capacity(out.len());
    for (i, p) in out.iter().enumerate() {
        if !p.hash_ok {
            continue;
        }
        let id = p.record.journal_key_id();
        if let Some((_, public, Some(vk))) = keys.iter().find(|(k, _, _)| k == id) {
            todo.push((i, *public, *vk));
        }
    }
    for group in todo.chunks(GROUP) {
        let messages: Vec<Vec<u8>> = group
            .iter()
            .filter_map(|(i, _, _)| out.get(*i))
            .map(|p| chain::record_signing_message(p.record.hash()))
            .collect();
        let signatures: Vec<Signature> = group
            .iter()
            .filter_map(|(i, _, _)| out.get(*i))
            .map(|p| Signature::from_bytes(p.record.signature()))
            .collect();
        let vks: Vec<VerifyingKey> = group.iter().map(|(_, _, vk)| *vk).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let all_good = refs.len() == group.len()
            && ed25519_dalek::verify_batch(&refs, &signatures, &vks).is_ok();
        for (n, (i, public, _)) in group.iter().enumerate() {
            let Some(p) = out.get_mut(*i) else { continue };
            let good = all_good
                || messages
                    .get(n)
                    .is_some_and(|m| verify_ed25519(public, m, p.record.signature()));
            if !good {
                // The chain walk stops at this record; checking what follows would be work for
                // nothing (and a batch of forgeries would cost one full verification each).
                return out;
            }
            p.signed_by = Some(*public);
        }
    }
    out
}
