//! What the journal remembers so that a vanished or replaced store is a finding at start.
//!
//! - The journal itself: see `witness`.
//! - The clerk store and the cache: their anchors ([`crate::anchor`]) are recorded in the
//!   journal's `meta` tree (`store_anchors`) at every checkpoint, where the TPM counter protects
//!   them against rollback; [`Board`] holds the record read at start and the live anchors.
//! - The start's tail: how many records after the last checkpoint the journal held at start,
//!   which no local check can prove complete (the unanchored window).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use posguard_proto::event::{Actor, Event, EventKind, Severity, TamperFinding};
use posguard_proto::text::ShortCode;

use super::store::{Store, seq_key};
use super::{Journal, JournalError};
use crate::anchor::{AnchorCell, AnchorProblem, StoreAnchor};
use crate::clock::Clock;

/// The journal's meta key for the store anchors it recorded.
pub(crate) const META_STORE_ANCHORS: &[u8] = b"store_anchors";

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

impl Journal {
    /// Checks a store's anchor against the journal's record of it, and the journal's head
    /// against what the store saw of it; watches the store from now on (its durable anchor is
    /// recorded at every checkpoint, and it records the journal's durable head at each of its
    /// fsyncs). Each finding is logged, kept for `status`, journaled as a signed
    /// `tamper_detected` record and returned. Call [`Journal::checkpoint`] once every store is
    /// watched, and sync the stores, so that both records are current.
    pub async fn watch_store(
        &self,
        store: &'static str,
        cell: Arc<AnchorCell>,
        moved_aside: bool,
        clock: Clock,
    ) -> Result<Vec<TamperFinding>, JournalError> {
        let recorded = self.board.recorded(store);
        let found = cell.opened_with();
        let mut findings = Vec::new();
        // A store found unreadable at this start was moved aside and made afresh: that is
        // already journaled (`tamper_recovered`, unreadable database), and "created afresh
        // where the journal knew one" would only say it again.
        let problem = if moved_aside {
            None
        } else {
            crate::anchor::check(recorded, found, cell.created())
        };
        if let Some(problem) = problem {
            let text = describe(store, problem, recorded, found);
            findings.push((text, to_event(store, problem)?));
        }
        let head = self.start_tail.head_seq;
        if let Some(seen) = cell.opened_journal_head()
            && seen > head
            && !self.recovered
        {
            findings.push((
                format!(
                    "journal tail cut: the {store} store saw the journal's durable head at seq {seen}, the journal started at seq {head} (records {}..={seen} are gone)",
                    head.saturating_add(1)
                ),
                to_event(
                    "journal",
                    AnchorProblem::Older {
                        recorded: seen,
                        found: head,
                    },
                )?,
            ));
        }
        cell.follow(self.board.head.clone());
        self.board.watch(store, cell);
        let mut out = Vec::new();
        for (text, finding) in findings {
            tracing::error!(store, finding = %text, "a start-up anchor check failed");
            self.board.add_finding(text);
            let event = Event::new(
                clock.stamp(),
                Actor::System,
                None,
                EventKind::TamperDetected {
                    finding: finding.clone(),
                },
            )
            .at_least(Severity::Critical);
            self.append(event).await?;
            out.push(finding);
        }
        Ok(out)
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
}
