//! Store anchors: how the agent notices that the clerk store or the transaction cache was
//! deleted, swapped for another store, or put back as an older copy.
//!
//! Each of those sled stores carries an anchor in its own `meta` tree: a random instance id,
//! made when the store is created, and a write generation that goes up with every durable write
//! (every fsync of the store). The journal — whose own rollback the TPM counter exposes —
//! records the anchors it last saw at every checkpoint and at clean shutdown. At start the
//! anchor a store holds is compared with the journal's record ([`check`]): a store created
//! afresh where the journal knew one, another instance id, or a lower generation is a finding.
//!
//! A generation is published (made visible to the journal) only after the fsync that made it
//! durable, so the journal never records a generation the store could lose in a crash.
//!
//! The other way round, each store also keeps the journal's durable head as it was at the
//! store's last fsync (`journal_head`): a journal that starts below what a store saw lost its
//! tail, even inside the window after its last checkpoint that the TPM counter cannot cover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ring::rand::{SecureRandom, SystemRandom};

/// The meta key of a store's anchor: 16 bytes instance id, 8 bytes generation (big-endian).
pub(crate) const META_ANCHOR: &[u8] = b"anchor";
/// The meta key of the journal's durable head at the store's last fsync (8 bytes, big-endian).
pub(crate) const META_JOURNAL_HEAD: &[u8] = b"journal_head";

/// A store's identity and how far its writes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreAnchor {
    /// Random, made when the store was created.
    #[serde(serialize_with = "hex16")]
    pub id: [u8; 16],
    /// Durable writes since the store was created.
    pub generation: u64,
}

fn hex16<S: serde::Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(id))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl StoreAnchor {
    /// The stored form (24 bytes).
    pub(crate) fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        let (id, generation) = out.split_at_mut(16);
        id.copy_from_slice(&self.id);
        generation.copy_from_slice(&self.generation.to_be_bytes());
        out
    }

    /// Decodes the stored form; `None` if it is not 24 bytes.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 24] = bytes.try_into().ok()?;
        let (id, generation) = bytes.split_at(16);
        Some(StoreAnchor {
            id: id.try_into().ok()?,
            generation: u64::from_be_bytes(generation.try_into().ok()?),
        })
    }
}

/// What a store's anchor says against the journal's record of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorProblem {
    /// The store was created at this start, but the journal knew one: deleted (or emptied).
    Missing,
    /// Another instance stands in its place.
    Replaced,
    /// An older copy of the same store: its generation is below the recorded one.
    Older {
        /// What the journal recorded.
        recorded: u64,
        /// What the store holds.
        found: u64,
    },
}

/// Compares the anchor a store holds at open (`created`: the store was made at this open) with
/// what the journal recorded for it. Pure.
pub fn check(
    recorded: Option<StoreAnchor>,
    found: StoreAnchor,
    created: bool,
) -> Option<AnchorProblem> {
    let recorded = recorded?;
    if created {
        return Some(AnchorProblem::Missing);
    }
    if recorded.id != found.id {
        return Some(AnchorProblem::Replaced);
    }
    (found.generation < recorded.generation).then_some(AnchorProblem::Older {
        recorded: recorded.generation,
        found: found.generation,
    })
}

/// A store's live anchor: its id, the generation last staged in its `meta` tree and the one
/// last made durable.
#[derive(Debug)]
pub struct AnchorCell {
    id: [u8; 16],
    staged: AtomicU64,
    durable: AtomicU64,
    created: bool,
    opened_with: StoreAnchor,
    /// The journal's durable head, once the journal watches this store.
    journal_head: OnceLock<Arc<AtomicU64>>,
    /// What the store held of the journal's head when it was opened.
    opened_journal_head: Option<u64>,
}

/// Why an anchor could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// sled failed.
    #[error("store anchor: {0}")]
    Db(#[from] sled::Error),
    /// The stored anchor is not 24 bytes.
    #[error("store anchor: the stored value has {0} bytes, not 24")]
    Corrupt(usize),
    /// The OS RNG failed.
    #[error("store anchor: the OS random number generator failed")]
    Rng,
}

impl AnchorCell {
    /// Reads the anchor from `meta`, or makes one (a new random id, generation 0) when the
    /// store has none: then the store was created now (a store from before anchors existed
    /// counts as created too; the journal has no record of it either, so nothing is flagged).
    /// The caller makes the store durable before relying on it.
    pub(crate) fn load_or_create(meta: &sled::Tree) -> Result<Self, AnchorError> {
        let (anchor, created) = match meta.get(META_ANCHOR)? {
            Some(v) => (
                StoreAnchor::from_bytes(&v).ok_or(AnchorError::Corrupt(v.len()))?,
                false,
            ),
            None => {
                let mut id = [0u8; 16];
                SystemRandom::new()
                    .fill(&mut id)
                    .map_err(|_| AnchorError::Rng)?;
                let anchor = StoreAnchor { id, generation: 0 };
                meta.insert(META_ANCHOR, &anchor.to_bytes())?;
                (anchor, true)
            }
        };
        let opened_journal_head = meta
            .get(META_JOURNAL_HEAD)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        Ok(AnchorCell {
            id: anchor.id,
            staged: AtomicU64::new(anchor.generation),
            durable: AtomicU64::new(anchor.generation),
            created,
            opened_with: anchor,
            journal_head: OnceLock::new(),
            opened_journal_head,
        })
    }

    /// Writes the next generation into `meta`, to be made durable by the caller's fsync; pass
    /// the returned value to [`AnchorCell::published`] once that fsync succeeded.
    pub(crate) fn stage(&self, meta: &sled::Tree) -> Result<u64, sled::Error> {
        let generation = self.staged.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        let anchor = StoreAnchor {
            id: self.id,
            generation,
        };
        // Concurrent stagers may insert out of order; the highest must stay stored.
        meta.fetch_and_update(META_ANCHOR, |old| {
            let keep = old
                .and_then(StoreAnchor::from_bytes)
                .filter(|a| a.id == self.id && a.generation > generation);
            Some(keep.unwrap_or(anchor).to_bytes().to_vec())
        })?;
        if let Some(head) = self.journal_head.get() {
            // Only ever a lower bound of what the journal holds durably: the writer publishes
            // its head after its fsync.
            meta.insert(
                META_JOURNAL_HEAD,
                &head.load(Ordering::SeqCst).to_be_bytes(),
            )?;
        }
        Ok(generation)
    }

    /// From now on every fsync of the store also records `head`, the journal's durable head.
    pub(crate) fn follow(&self, head: Arc<AtomicU64>) {
        let _ = self.journal_head.set(head);
    }

    /// The journal head the store had recorded when it was opened (its last fsync before).
    pub fn opened_journal_head(&self) -> Option<u64> {
        self.opened_journal_head
    }

    /// `generation` is durable on disk.
    pub(crate) fn published(&self, generation: u64) {
        self.durable.fetch_max(generation, Ordering::SeqCst);
    }

    /// The anchor as far as it is durable: what the journal may record.
    pub fn durable(&self) -> StoreAnchor {
        StoreAnchor {
            id: self.id,
            generation: self.durable.load(Ordering::SeqCst),
        }
    }

    /// The anchor the store held when it was opened.
    pub fn opened_with(&self) -> StoreAnchor {
        self.opened_with
    }

    /// Whether the store was created at this open.
    pub fn created(&self) -> bool {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: u8, generation: u64) -> StoreAnchor {
        StoreAnchor {
            id: [id; 16],
            generation,
        }
    }

    #[test]
    fn nothing_recorded_is_never_a_finding() {
        assert_eq!(check(None, a(1, 0), true), None);
        assert_eq!(check(None, a(1, 9), false), None);
    }

    #[test]
    fn a_store_made_now_where_one_was_known_is_missing() {
        assert_eq!(
            check(Some(a(1, 5)), a(2, 0), true),
            Some(AnchorProblem::Missing)
        );
    }

    #[test]
    fn another_instance_is_replaced_whatever_its_generation() {
        for generation in [0, 5, 1_000] {
            assert_eq!(
                check(Some(a(1, 5)), a(2, generation), false),
                Some(AnchorProblem::Replaced)
            );
        }
    }

    #[test]
    fn a_lower_generation_is_older_and_equal_or_higher_is_fine() {
        assert_eq!(
            check(Some(a(1, 5)), a(1, 4), false),
            Some(AnchorProblem::Older {
                recorded: 5,
                found: 4
            })
        );
        assert_eq!(check(Some(a(1, 5)), a(1, 5), false), None);
        assert_eq!(check(Some(a(1, 5)), a(1, 6), false), None);
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_other_lengths() {
        let x = a(7, 123_456);
        assert_eq!(StoreAnchor::from_bytes(&x.to_bytes()), Some(x));
        assert_eq!(StoreAnchor::from_bytes(&[0u8; 23]), None);
        assert_eq!(StoreAnchor::from_bytes(&[0u8; 25]), None);
    }

    #[test]
    fn generations_go_up_and_only_durable_ones_are_published() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        let cell = AnchorCell::load_or_create(&meta).unwrap();
        assert!(cell.created());
        let g1 = cell.stage(&meta).unwrap();
        let g2 = cell.stage(&meta).unwrap();
        assert!(g2 > g1);
        assert_eq!(cell.durable().generation, 0, "nothing published yet");
        cell.published(g2);
        cell.published(g1);
        assert_eq!(cell.durable().generation, g2, "publishing never goes back");
        let again = AnchorCell::load_or_create(&meta).unwrap();
        assert!(!again.created());
        assert_eq!(again.opened_with(), cell.durable());
        assert_eq!(again.opened_journal_head(), None, "not followed yet");
        let head = Arc::new(AtomicU64::new(41));
        again.follow(head.clone());
        head.store(42, Ordering::SeqCst);
        again.stage(&meta).unwrap();
        let third = AnchorCell::load_or_create(&meta).unwrap();
        assert_eq!(third.opened_journal_head(), Some(42));
    }
}
