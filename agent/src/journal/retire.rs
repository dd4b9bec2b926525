//! Retiring journal-key certificates that no stored record needs, so that the `certs` tree
//! stays bounded over a terminal's lifetime (every start certifies a new key: ten years of daily
//! restarts plus crashes would otherwise leave thousands of certificates, all read at every
//! start).
//!
//! A start's key signs from its certificate's `first_seq` up to the next start's `first_seq`.
//! Starts that wrote nothing (stopped or killed before their first record) leave several
//! certificates with one `first_seq`; of such a group only the key of the record stored at the
//! group's first stored seq signed anything. So for each group of certificates sharing a
//! `first_seq`, the first stored record in the group's range names the one key to keep; a group
//! whose range holds no stored record (pruned after the collector stored it, dropped by the
//! bound, or never written) keeps nothing. This start's key is always kept. The records that
//! remain verify exactly as before: for each of them the latest group at or below its seq is
//! unchanged and still holds its signer.
//!
//! Cost: one pass over the (bounded) certificates and one range lookup per group; run at start
//! and whenever pruning moved the front of the journal.

use std::ops::Bound;

use posguard_proto::cert::JournalKeyCert;

use super::JournalError;
use super::store::seq_key;
use super::writer::Writer;
use crate::walk::{walk, walk_all};

impl Writer {
    /// Removes the certificates of keys that sign no stored record, except this start's key.
    /// Returns how many were removed.
    pub(super) fn retire_certs(&mut self) -> Result<usize, JournalError> {
        let mut certs: Vec<([u8; 8], u64)> = Vec::new();
        for item in walk_all(&self.store.certs) {
            let (k, v) = item.map_err(db("read certificates"))?;
            // An undecodable certificate is left alone: the start-up check reports it.
            let Ok(id) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            let Ok(cert) = JournalKeyCert::from_bytes(&v) else {
                continue;
            };
            certs.push((id, cert.fields().first_seq));
        }
        certs.sort_by_key(|(_, first)| *first);
        let mut retire = Vec::new();
        let mut i = 0;
        while let Some(&(_, first)) = certs.get(i) {
            let end = certs.get(i..).map_or(0, |rest| {
                rest.iter().take_while(|(_, f)| *f == first).count()
            });
            let group = certs.get(i..i.saturating_add(end)).unwrap_or_default();
            let next = certs.get(i.saturating_add(end)).map(|(_, f)| *f);
            let signer = self.first_signer(first, next)?;
            for (id, _) in group {
                if *id != self.key_id() && Some(*id) != signer {
                    retire.push(*id);
                }
            }
            i = i.saturating_add(end.max(1));
        }
        if retire.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for id in &retire {
            batch.remove(id.as_slice());
        }
        self.store
            .certs
            .apply_batch(batch)
            .map_err(db("retire certificates"))?;
        self.store.make_durable()?;
        tracing::debug!(
            retired = retire.len(),
            kept = certs.len().saturating_sub(retire.len()),
            "journal-key certificates retired"
        );
        Ok(retire.len())
    }

    /// The key id of the first stored record with `first <= seq < next`, if there is one.
    fn first_signer(&self, first: u64, next: Option<u64>) -> Result<Option<[u8; 8]>, JournalError> {
        let lo = seq_key(first);
        let hi = next.map(seq_key);
        let upper = match &hi {
            Some(h) => Bound::Excluded(h.as_slice()),
            None => Bound::Unbounded,
        };
        let Some(item) = walk(&self.store.records, Bound::Included(lo.as_slice()), upper).next()
        else {
            return Ok(None);
        };
        let (_, v) = item.map_err(db("read records"))?;
        // An undecodable record keeps the whole group: nothing is retired on a guess.
        match posguard_proto::record::Record::from_bytes(&v) {
            Ok(r) => Ok(Some(*r.journal_key_id())),
            Err(_) => Err(JournalError::Corrupt {
                what: format!("stored record at or after seq {first} does not decode"),
            }),
        }
    }
}

fn db(context: &'static str) -> impl Fn(sled::Error) -> JournalError {
    move |source| JournalError::Db { context, source }
}

/// How many journal-key certificates a journal directory holds, and how many distinct keys sign
/// its stored records: after retirement the two differ at most by this start's key (which may
/// not have signed yet). Opens the database, so the agent must not be running.
pub fn key_ring(dir: &std::path::Path) -> Result<KeyRing, JournalError> {
    let store = super::store::Store::open(dir, 1024 * 1024)?;
    let mut signers = std::collections::HashSet::new();
    for item in walk_all(&store.records) {
        let (_, v) = item.map_err(db("read records"))?;
        let record =
            posguard_proto::record::Record::from_bytes(&v).map_err(|e| JournalError::Corrupt {
                what: format!("stored record: {e}"),
            })?;
        signers.insert(*record.journal_key_id());
    }
    Ok(KeyRing {
        certificates: store.certs.len(),
        signing_keys: signers.len(),
    })
}

/// What [`key_ring`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRing {
    /// Certificates stored.
    pub certificates: usize,
    /// Distinct journal keys that signed a stored record.
    pub signing_keys: usize,
}
