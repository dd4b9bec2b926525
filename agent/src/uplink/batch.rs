//! Which journal-key certificates a batch carries: exactly those of the keys that signed its
//! records (the collector stores every certificate it verified, per device, and looks up what
//! an earlier batch brought). A batch never names more keys than it may carry: the records are
//! cut before the first one that would need one certificate too many, and the rest goes in the
//! next batch.
//!
//! A record names its key by id; the agent keeps certificates by that id, so finding them is
//! one lookup per key and independent of how many certificates the journal still holds.

use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::record::Record;
use posguard_proto::uplink::{MAX_BATCH_CERTS, MAX_BATCH_CHECKPOINTS};

/// Cuts `records` so that they name at most [`MAX_BATCH_CERTS`] journal keys, and returns
/// those key ids in order of first use.
pub(super) fn cut_to_key_limit(records: &mut Vec<Record>) -> Vec<[u8; 8]> {
    let mut ids: Vec<[u8; 8]> = Vec::new();
    let mut keep = records.len();
    for (i, r) in records.iter().enumerate() {
        let id = *r.journal_key_id();
        // Consecutive records share a key (one per agent start): compare with the last first.
        if ids.last() == Some(&id) || ids.contains(&id) {
            continue;
        }
        if ids.len() >= MAX_BATCH_CERTS {
            keep = i;
            break;
        }
        ids.push(id);
    }
    records.truncate(keep);
    ids
}

/// Cuts `records` (and `checkpoints`, the encoded checkpoints at their seqs, in seq order) so
/// that the batch carries at most [`MAX_BATCH_CHECKPOINTS`]: the records end at the last
/// checkpoint kept. Every start and clean stop writes a checkpoint, so a backlog spanning many
/// short runs can hold more checkpoints than a batch may carry; without the cut the batch would
/// be refused before it is sent, every time.
pub(super) fn cut_to_checkpoint_limit(records: &mut Vec<Record>, checkpoints: &mut Vec<Vec<u8>>) {
    if checkpoints.len() <= MAX_BATCH_CHECKPOINTS {
        return;
    }
    checkpoints.truncate(MAX_BATCH_CHECKPOINTS);
    let last = checkpoints
        .last()
        .and_then(|c| Checkpoint::from_bytes(c).ok())
        .map(|c| c.fields().seq);
    if let Some(last) = last {
        records.retain(|r| r.seq() <= last);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use posguard_proto::chain::ChainHead;
    use posguard_proto::event::{Actor, Event, EventKind, Overflow, Stamp};
    use posguard_proto::text::DeviceId;

    use super::*;

    /// `per_key` records under each of `keys` distinct key ids, chained.
    fn records(keys: usize, per_key: usize) -> Vec<Record> {
        let device = DeviceId::new("term-1").unwrap();
        let mut head = ChainHead::genesis(&device);
        let mut out = Vec::new();
        for k in 0..keys {
            let id = (k as u64).to_be_bytes();
            for _ in 0..per_key {
                let stamp = Stamp {
                    wall_ms: 1,
                    mono_ns: 1,
                    boot_id: [0; 16],
                };
                let kind = EventKind::JournalOverflow(Overflow {
                    first_seq: 1,
                    last_seq: 1,
                    dropped: 1,
                    dropped_critical: 0,
                });
                let e = Event::new(stamp, Actor::System, None, kind);
                let r = Record::build(&head, id, &e, |_| [0u8; 64]).unwrap();
                head = r.head();
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn a_batch_names_only_the_keys_of_its_records() {
        let mut r = records(3, 5);
        let ids = cut_to_key_limit(&mut r);
        assert_eq!(r.len(), 15);
        assert_eq!(
            ids,
            vec![0u64.to_be_bytes(), 1u64.to_be_bytes(), 2u64.to_be_bytes()]
        );
    }

    #[test]
    fn records_past_the_certificate_limit_wait_for_the_next_batch() {
        let mut r = records(MAX_BATCH_CERTS + 10, 2);
        let ids = cut_to_key_limit(&mut r);
        assert_eq!(ids.len(), MAX_BATCH_CERTS);
        assert_eq!(r.len(), MAX_BATCH_CERTS * 2);
        let last = r.last().unwrap();
        assert_eq!(
            *last.journal_key_id(),
            ((MAX_BATCH_CERTS - 1) as u64).to_be_bytes()
        );
    }

    #[test]
    fn an_empty_batch_names_no_key() {
        let mut r = Vec::new();
        assert!(cut_to_key_limit(&mut r).is_empty());
    }

    /// Encoded checkpoints at `seqs` (signature bytes of a plausible length, unchecked here).
    fn checkpoints_at(seqs: impl Iterator<Item = u64>) -> Vec<Vec<u8>> {
        seqs.map(|seq| {
            posguard_proto::checkpoint::UnsignedCheckpoint {
                device_id: DeviceId::new("term-1").unwrap(),
                seq,
                head_hash: [0; 32],
                nv_counter: seq,
                wall_ms: 1,
            }
            .into_checkpoint(vec![0x30; 70])
            .unwrap()
            .as_bytes()
            .to_vec()
        })
        .collect()
    }

    #[test]
    fn records_past_the_checkpoint_limit_wait_for_the_next_batch() {
        // 300 checkpoints among 600 records (many short runs: a start and a stop each).
        let mut r = records(1, 600);
        let mut cps = checkpoints_at((1..=300).map(|i| i * 2));
        cut_to_checkpoint_limit(&mut r, &mut cps);
        assert_eq!(cps.len(), MAX_BATCH_CHECKPOINTS);
        let last_cp = (MAX_BATCH_CHECKPOINTS as u64) * 2;
        assert_eq!(r.last().unwrap().seq(), last_cp);
        assert_eq!(r.len() as u64, last_cp);
        // Within the limit nothing is cut.
        let mut r = records(1, 600);
        let mut cps = checkpoints_at((1..=10).map(|i| i * 2));
        cut_to_checkpoint_limit(&mut r, &mut cps);
        assert_eq!((r.len(), cps.len()), (600, 10));
    }
}
