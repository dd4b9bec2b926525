//! Which journal-key certificates a batch carries: exactly those of the keys that signed its
//! records (the collector stores every certificate it verified, per device, and looks up what
//! an earlier batch brought). A batch never names more keys than it may carry: the records are
//! cut before the first one that would need one certificate too many, and the rest goes in the
//! next batch.
//!
//! A record names its key by id; the agent keeps certificates by that id, so finding them is
//! one lookup per key and independent of how many certificates the journal still holds.

use posguard_proto::record::Record;
use posguard_proto::uplink::MAX_BATCH_CERTS;

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
}
