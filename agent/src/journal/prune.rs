//! Keeping the journal within its bound. Records the collector acknowledged go first; then, only
//! if unshipped records alone would overflow, routine ones before security-critical ones. A
//! signed overflow event naming the range and count is committed *before* anything unshipped is
//! removed, so a kill in between never leaves a silent gap.

use std::ops::Bound;

use posguard_proto::chain::ChainHead;
use posguard_proto::event::{EventKind, Overflow};
use posguard_proto::record::Record;

use super::JournalError;
use super::store::{META_BASE, Store, key_seq, seq_key};
use super::writer::Writer;
use crate::walk::walk;

/// Share of `max_bytes` that live record bytes may use: sled's log needs the rest
/// (segments being rewritten, the page table, the snapshot).
const LIVE_SHARE_PERCENT: u64 = 25;

/// Records removed per sled batch when pruning.
const REMOVE_BATCH: usize = 64;

struct Victim {
    seq: u64,
    len: u64,
    hash: [u8; 32],
    critical: bool,
}

impl Writer {
    fn live_budget(&self) -> u64 {
        self.config.max_bytes / 100 * LIVE_SHARE_PERCENT
    }

    pub(super) fn prune(&mut self) -> Result<(), JournalError> {
        let budget = self.live_budget();
        if self.bytes <= budget {
            return Ok(());
        }
        let target = budget / 10 * 9;
        let mut excess = self.bytes.saturating_sub(target);

        // 1. Shipped and acknowledged records, oldest first.
        let mut shipped = Vec::new();
        for item in walk(
            &self.store.records,
            Bound::Unbounded,
            Bound::Included(&seq_key(self.shipped)),
        ) {
            if excess == 0 {
                break;
            }
            let (k, v) = item.map_err(db("scan records"))?;
            let Some(seq) = key_seq(&k) else { continue };
            let hash = Record::from_bytes(&v)
                .map(|r| *r.hash())
                .unwrap_or_default();
            excess = excess.saturating_sub(v.len() as u64);
            shipped.push(Victim {
                seq,
                len: v.len() as u64,
                hash,
                critical: false,
            });
        }
        self.remove(&shipped)?;
        if excess == 0 {
            return Ok(());
        }

        // 2. and 3. Unshipped: routine first, then critical, oldest first within each.
        let mut routine = Vec::new();
        let mut critical = Vec::new();
        for item in walk(
            &self.store.records,
            Bound::Included(&seq_key(self.shipped.saturating_add(1))),
            Bound::Unbounded,
        ) {
            let (k, v) = item.map_err(db("scan records"))?;
            let Some(seq) = key_seq(&k) else { continue };
            let Ok(record) = Record::from_bytes(&v) else {
                continue;
            };
            let is_critical = record
                .event()
                .map(|e| e.is_security_critical())
                .unwrap_or(true);
            let victim = Victim {
                seq,
                len: v.len() as u64,
                hash: *record.hash(),
                critical: is_critical,
            };
            if is_critical {
                critical.push(victim)
            } else {
                routine.push(victim)
            }
        }
        let mut victims = Vec::new();
        for v in routine.into_iter().chain(critical) {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(v.len);
            victims.push(v);
        }
        if victims.is_empty() {
            return Ok(());
        }
        victims.sort_by_key(|v| v.seq);
        let overflow = Overflow {
            first_seq: victims.first().map_or(0, |v| v.seq),
            last_seq: victims.last().map_or(0, |v| v.seq),
            dropped: victims.len() as u64,
            dropped_critical: victims.iter().filter(|v| v.critical).count() as u64,
        };
        tracing::warn!(
            first = overflow.first_seq,
            last = overflow.last_seq,
            dropped = overflow.dropped,
            critical = overflow.dropped_critical,
            "journal full of unshipped records: dropping, routine ones first"
        );
        let event = self.system_event(EventKind::JournalOverflow(overflow));
        self.append_now(&event)?;
        self.remove(&victims)?;
        self.dropped = self.dropped.saturating_add(overflow.dropped);
        Ok(())
    }

    /// Removes `victims` (sorted by seq); moves the base past those at the front.
    fn remove(&mut self, victims: &[Victim]) -> Result<(), JournalError> {
        if victims.is_empty() {
            return Ok(());
        }
        let first_stored = self
            .store
            .records
            .first()
            .map_err(db("scan records"))?
            .and_then(|(k, _)| key_seq(&k));
        // The base moves first (a kill after it only hides records that were being removed).
        let mut base = None;
        let mut expect = first_stored;
        for v in victims {
            if Some(v.seq) != expect {
                break;
            }
            base = Some(ChainHead {
                seq: v.seq,
                hash: v.hash,
            });
            expect = self.next_stored_after(v.seq)?;
        }
        let front_moved = base.is_some();
        if let Some(base) = base {
            self.store.put(META_BASE, &Store::head_bytes(&base))?;
            let old = walk(
                &self.store.checkpoints,
                Bound::Unbounded,
                Bound::Excluded(&seq_key(base.seq)),
            );
            for item in old {
                let (k, _) = item.map_err(db("scan checkpoints"))?;
                self.store
                    .checkpoints
                    .remove(k)
                    .map_err(db("prune checkpoints"))?;
            }
        }
        // In small batches: sled keeps every leaf version a batch replaces until the batch ends
        // (one epoch guard), and one batch of thousands of removals held tens of MiB at once.
        // Atomicity is not needed here: a kill part way leaves records the overflow event (or the
        // base) already declares gone, which verification accepts ("fewer missing is fine").
        for chunk in victims.chunks(REMOVE_BATCH) {
            let mut batch = sled::Batch::default();
            for v in chunk {
                batch.remove(&seq_key(v.seq));
                self.count = self.count.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(v.len);
            }
            self.store
                .records
                .apply_batch(batch)
                .map_err(db("prune records"))?;
        }
        self.store.make_durable()?;
        if front_moved && let Err(e) = self.retire_certs() {
            tracing::warn!(error = %e, "journal: old certificates not retired");
        }
        Ok(())
    }

    fn next_stored_after(&self, seq: u64) -> Result<Option<u64>, JournalError> {
        Ok(self
            .store
            .records
            .range(seq_key(seq.saturating_add(1))..)
            .next()
            .transpose()
            .map_err(db("scan records"))?
            .and_then(|(k, _)| key_seq(&k)))
    }
}

fn db(context: &'static str) -> impl Fn(sled::Error) -> JournalError {
    move |source| JournalError::Db { context, source }
}
