//! What the journal remembers so that a vanished or replaced store is a finding at start.
//!
//! - The journal itself: a witness file beside its directory (`<dir>.anchor`) names the device
//!   and the TPM counter value when the journal was created. A journal directory that is gone
//!   (or holds a new, empty database) while the witness is there and the TPM counter has moved
//!   past it means checkpoints were made into a journal that no longer exists: `Missing`.
//!   Provisioning increments the counter too (init, self-test), so the counter alone cannot
//!   tell a first start from a deleted journal; the witness can. A wipe of the journal *and* its
//!   witness looks like a first start here — the collector sees that chain restart.
//! - The clerk store and the cache: their anchors ([`crate::anchor`]) are recorded in the
//!   journal's `meta` tree (`store_anchors`) at every checkpoint, where the TPM counter protects
//!   them against rollback; [`Board`] holds the record read at start and the live anchors.
//! - The start's tail: how many records after the last checkpoint the journal held at start,
//!   which no local check can prove complete (the unanchored window).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use posguard_proto::event::{EventKind, TamperFinding};
use posguard_proto::text::{DeviceId, ShortCode};

use super::JournalError;
use super::store::{Store, seq_key};
use crate::anchor::{AnchorCell, AnchorProblem, StoreAnchor};

/// The journal's meta key for the store anchors it recorded.
pub(crate) const META_STORE_ANCHORS: &[u8] = b"store_anchors";

const WITNESS_MAGIC: &str = "posguard-journal-anchor 1";
/// A witness is a few dozen bytes; more is not ours.
const WITNESS_MAX: u64 = 4096;

/// The witness file of the journal at `dir`.
pub(crate) fn witness_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.anchor"))
}

/// What the witness says: `Ok(None)` when there is none, `Ok(Some(None))` when there is one that
/// does not parse (only tampering makes one: it is written atomically), else the TPM counter
/// at the journal's creation.
pub(crate) fn read_witness(
    dir: &Path,
    device_id: &DeviceId,
) -> Result<Option<Option<u64>>, JournalError> {
    let path = witness_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("read", &path, e)),
    };
    let mut text = String::new();
    if file.take(WITNESS_MAX).read_to_string(&mut text).is_err() {
        return Ok(Some(None));
    }
    let mut lines = text.lines();
    let parsed = (|| {
        (lines.next()? == WITNESS_MAGIC).then_some(())?;
        let device = lines.next()?.strip_prefix("device ")?;
        let counter = lines
            .next()?
            .strip_prefix("counter ")?
            .parse::<u64>()
            .ok()?;
        Some((device.to_owned(), counter))
    })();
    Ok(Some(match parsed {
        // Another device's witness says nothing about this device's journal.
        Some((device, _)) if device != device_id.as_str() => return Ok(None),
        Some((_, counter)) => Some(counter),
        None => None,
    }))
}

/// Writes the witness atomically and durably (temporary file, fsync, rename, fsync of the
/// directory).
pub(crate) fn write_witness(
    dir: &Path,
    device_id: &DeviceId,
    tpm_counter: u64,
) -> Result<(), JournalError> {
    let path = witness_path(dir);
    let tmp = path.with_extension("anchor.tmp");
    let body = format!("{WITNESS_MAGIC}\ndevice {device_id}\ncounter {tpm_counter}\n");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| JournalError::io("write", &path, e))
}

/// The start-up check of a journal that holds nothing yet: `Some(witnessed counter)` when a
/// journal existed here before and checkpoints were made since (the counter moved past the
/// witness). `Some(None)`: the witness was there but unreadable.
pub(crate) fn vanished(witness: Option<Option<u64>>, tpm_counter: u64) -> Option<Option<u64>> {
    match witness? {
        None => Some(None),
        Some(counter) if tpm_counter > counter => Some(Some(counter)),
        Some(_) => None,
    }
}

/// The journal's state at start, before this start's own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StartTail {
    /// The last record the journal held.
    pub head_seq: u64,
    /// The last record a TPM-counted checkpoint covered (0: none).
    pub anchored_seq: u64,
    /// Records after it: the previous run stopped without a final checkpoint (a kill, a crash,
    /// a power loss). Their completeness cannot be proved locally: a cut there is not seen.
    pub unanchored: u64,
    /// Whether the journal ends the way a clean stop leaves it: an `agent_stopped` record with
    /// a checkpoint at it (or nothing at all yet). Otherwise records may have followed the last
    /// checkpoint, even when none is left after it (a cut exactly there).
    pub clean_stop: bool,
}

/// Whether the journal in `store` ends as a clean stop leaves it (see [`StartTail`]).
pub(crate) fn ends_cleanly(store: &Store, head_seq: u64, anchored_seq: u64) -> bool {
    if head_seq == 0 {
        return true;
    }
    if anchored_seq != head_seq {
        return false;
    }
    let Ok(Some(bytes)) = store.records.get(seq_key(head_seq)) else {
        return false;
    };
    posguard_proto::record::Record::from_bytes(&bytes)
        .ok()
        .and_then(|r| r.event().ok())
        .is_some_and(|e| matches!(e.kind, EventKind::AgentStopped { .. }))
}

/// Store anchors: the journal's record of them and the live ones it records at checkpoints.
#[derive(Debug, Default)]
pub(crate) struct Board {
    recorded: Mutex<BTreeMap<String, StoreAnchor>>,
    watched: Mutex<Vec<(String, Arc<AnchorCell>)>>,
    findings: Mutex<Vec<String>>,
    /// The journal's durable head, published by the writer after each commit; the stores
    /// record it at their fsyncs.
    pub(crate) head: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoned only by a panic while holding it; the data is a plain map, still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Board {
    /// The record read from the journal at start (an unreadable record counts as none: the
    /// journal's own check has vouched for the database).
    pub(crate) fn load(store: &Store, head_seq: u64) -> Result<Self, JournalError> {
        let recorded = store
            .get(META_STORE_ANCHORS)?
            .map(|v| decode(&v))
            .unwrap_or_default();
        Ok(Board {
            recorded: Mutex::new(recorded),
            head: Arc::new(AtomicU64::new(head_seq)),
            ..Board::default()
        })
    }

    /// `seq` is durable in the journal.
    pub(crate) fn durable_head(&self, seq: u64) {
        self.head.fetch_max(seq, Ordering::SeqCst);
    }

    pub(crate) fn recorded(&self, name: &str) -> Option<StoreAnchor> {
        lock(&self.recorded).get(name).copied()
    }

    pub(crate) fn watch(&self, name: &str, cell: Arc<AnchorCell>) {
        let mut watched = lock(&self.watched);
        watched.retain(|(n, _)| n != name);
        watched.push((name.to_owned(), cell));
    }

    pub(crate) fn add_finding(&self, text: String) {
        lock(&self.findings).push(text);
    }

    pub(crate) fn findings(&self) -> Vec<String> {
        lock(&self.findings).clone()
    }

    /// Writes the anchors into the journal's meta (made durable by the caller): the live
    /// durable anchor of each watched store, the earlier record for the others.
    pub(crate) fn record(&self, store: &Store) -> Result<(), JournalError> {
        let mut all = lock(&self.recorded).clone();
        for (name, cell) in lock(&self.watched).iter() {
            all.insert(name.clone(), cell.durable());
        }
        store.put(META_STORE_ANCHORS, &encode(&all))
    }
}

/// What the writer holds of the anchors: the board and the start's tail, for checkpoints and
/// `status`.
#[derive(Debug)]
pub(crate) struct Anchoring {
    pub(crate) board: Arc<Board>,
    pub(crate) start_tail: StartTail,
}

/// The finding in words, for `status` and the log.
pub(crate) fn describe(
    store: &str,
    problem: AnchorProblem,
    recorded: Option<StoreAnchor>,
    found: StoreAnchor,
) -> String {
    let recorded_id = recorded.map_or_else(String::new, |r| crate::anchor::hex(&r.id));
    match problem {
        AnchorProblem::Missing => format!(
            "{store} missing: the journal knew store {recorded_id} but the store was created afresh at this start (deleted or emptied)"
        ),
        AnchorProblem::Replaced => format!(
            "{store} replaced: the journal knew store {recorded_id}, found store {} (a fresh store or another terminal's)",
            crate::anchor::hex(&found.id)
        ),
        AnchorProblem::Older { recorded, found } => format!(
            "{store} older copy: write generation {found}, the journal recorded {recorded} (an older copy was put back)"
        ),
    }
}

/// The finding as the journal's signed record says it.
pub(crate) fn to_event(store: &str, problem: AnchorProblem) -> Result<TamperFinding, JournalError> {
    let store =
        ShortCode::new(store).map_err(|e| JournalError::Build(format!("store name: {e}")))?;
    Ok(match problem {
        AnchorProblem::Missing => TamperFinding::StoreMissing { store },
        AnchorProblem::Replaced => TamperFinding::StoreReplaced { store },
        AnchorProblem::Older { recorded, found } => TamperFinding::StoreOlder {
            store,
            recorded_generation: recorded,
            found_generation: found,
        },
    })
}

/// `name length (1 byte), name, anchor (24 bytes)`, repeated.
fn encode(all: &BTreeMap<String, StoreAnchor>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, anchor) in all {
        let name = name.as_bytes();
        let Ok(len) = u8::try_from(name.len()) else {
            continue;
        };
        out.push(len);
        out.extend_from_slice(name);
        out.extend_from_slice(&anchor.to_bytes());
    }
    out
}

fn decode(mut bytes: &[u8]) -> BTreeMap<String, StoreAnchor> {
    let mut out = BTreeMap::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = usize::from(len);
        let Some((name, rest)) = rest.split_at_checked(len) else {
            break;
        };
        let Some((anchor, rest)) = rest.split_at_checked(24) else {
            break;
        };
        if let Some(anchor) = StoreAnchor::from_bytes(anchor) {
            out.insert(String::from_utf8_lossy(name).into_owned(), anchor);
        }
        bytes = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip_and_garbage_decodes_to_what_is_whole() {
        let mut all = BTreeMap::new();
        all.insert(
            "clerks".to_owned(),
            StoreAnchor {
                id: [1; 16],
                generation: 9,
            },
        );
        all.insert(
            "cache".to_owned(),
            StoreAnchor {
                id: [2; 16],
                generation: u64::MAX,
            },
        );
        let bytes = encode(&all);
        assert_eq!(decode(&bytes), all);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).len() < 2, "a cut record is not kept");
        }
        assert!(decode(&[0xff; 7]).is_empty());
    }

    #[test]
    fn a_witness_flags_a_vanished_journal_only_once_the_counter_moved() {
        assert_eq!(vanished(None, 50), None, "no witness: a first start");
        assert_eq!(vanished(Some(Some(50)), 50), None, "no checkpoint yet");
        assert_eq!(vanished(Some(Some(50)), 51), Some(Some(50)));
        assert_eq!(vanished(Some(None), 1), Some(None), "a forged witness");
    }

    #[test]
    fn the_witness_file_round_trips_and_names_its_device() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let me = DeviceId::new("term-1").unwrap();
        let other = DeviceId::new("term-2").unwrap();
        assert_eq!(read_witness(&journal, &me).unwrap(), None);
        write_witness(&journal, &me, 77).unwrap();
        assert_eq!(read_witness(&journal, &me).unwrap(), Some(Some(77)));
        assert_eq!(read_witness(&journal, &other).unwrap(), None);
        std::fs::write(witness_path(&journal), "junk").unwrap();
        assert_eq!(read_witness(&journal, &me).unwrap(), Some(None));
    }
}
