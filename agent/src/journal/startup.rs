//! Opening the journal. The tail is checked against the last checkpoint and the TPM counter;
//! when they disagree (an older database put back, a broken chain, an unreadable database) the
//! agent keeps running on a fresh store: the verified prefix is copied into it, the old
//! database is moved aside (never deleted), and the writer's first record says what was found.
//! The checks read a scratch copy that a child process opened first (`crate::storeguard`), so a
//! database that crashes sled cannot crash the agent, and the one moved aside is never written.

use std::path::PathBuf;

use posguard_hal::SecureElement;
use posguard_proto::chain::ChainHead;
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::event::TamperFinding;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::text::{DeviceId, ShortCode};

use super::scan::{self, Scan};
use super::store::{
    META_BASE, META_CHECKPOINT_PENDING, META_DEVICE_ID, META_DIK, META_HEAD, META_SHIPPED, Store,
    seq_key,
};
use super::witness;
use super::{JournalConfig, JournalError};
use crate::clock::Clock;
use crate::storeguard::{self, Scratch, StoreKind};

/// What the start-up check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The database is older than the TPM counter says: an old copy was put back.
    Rollback {
        /// Counter value of the database's last checkpoint.
        stored_counter: u64,
        /// The TPM's counter.
        tpm_counter: u64,
    },
    /// A record (or the checkpoint) does not verify; `seq` is the first bad one.
    BrokenChain {
        /// First bad sequence number.
        seq: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The database could not be opened or read.
    Unreadable {
        /// The error.
        reason: String,
    },
    /// The journal directory was deleted or emptied: its witness says a journal existed at
    /// TPM counter `witnessed_counter` (`None`: the witness did not parse), and the counter has
    /// moved on since, so checkpoints were made into a journal that is gone.
    Missing {
        /// The counter value the witness recorded at the journal's creation.
        witnessed_counter: Option<u64>,
        /// The TPM's counter.
        tpm_counter: u64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Rollback {
                stored_counter,
                tpm_counter,
            } => write!(
                f,
                "rollback: the journal's last checkpoint has counter {stored_counter}, the TPM counter is {tpm_counter}"
            ),
            Finding::BrokenChain { seq, reason } => {
                write!(f, "broken chain at seq {seq}: {reason}")
            }
            Finding::Unreadable { reason } => write!(f, "unreadable journal database: {reason}"),
            Finding::Missing {
                witnessed_counter,
                tpm_counter,
            } => write!(
                f,
                "journal missing: the journal was deleted or replaced by an empty one (its witness {}; the TPM counter is {tpm_counter}); a new chain starts here",
                witnessed_counter.map_or("does not parse".to_owned(), |c| format!(
                    "records TPM counter {c} at its creation"
                ))
            ),
        }
    }
}

impl Finding {
    pub(crate) fn to_event(&self) -> TamperFinding {
        match self {
            Finding::Rollback {
                stored_counter,
                tpm_counter,
            } => TamperFinding::Rollback {
                stored_counter: *stored_counter,
                tpm_counter: *tpm_counter,
            },
            Finding::BrokenChain { seq, .. } => TamperFinding::BrokenChain { seq: *seq },
            Finding::Unreadable { .. } => TamperFinding::UnreadableDatabase {
                store: journal_code(),
            },
            Finding::Missing { .. } => TamperFinding::StoreMissing {
                store: journal_code(),
            },
        }
    }
}

#[allow(clippy::expect_used)]
fn journal_code() -> ShortCode {
    // Invariant: "journal" is a literal of the short-code alphabet (checked by a test).
    ShortCode::new("journal").expect("valid short code")
}

/// The journal as the writer takes it over.
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) head: ChainHead,
    pub(crate) shipped: u64,
    pub(crate) count: u64,
    pub(crate) bytes: u64,
    pub(crate) last_checkpoint: Option<Checkpoint>,
    pub(crate) finding: Option<Finding>,
    pub(crate) moved_to: Option<PathBuf>,
}

pub(crate) fn dik(element: &dyn SecureElement) -> Result<DikPublicKey, JournalError> {
    let spki = element.identity_public_key()?;
    DikPublicKey::from_der_or_point(&spki).map_err(|e| JournalError::Corrupt {
        what: format!("device identity key: {e}"),
    })
}

pub(crate) fn open(
    config: &JournalConfig,
    device_id: &DeviceId,
    element: &dyn SecureElement,
    _clock: Clock,
) -> Result<Opened, JournalError> {
    let dik = dik(element)?;
    let tpm_counter = element.counter_create()?;
    // The checks below run on a scratch copy whenever one can be made, so that a journal found
    // bad is moved aside exactly as it was on disk (see `guard`).
    let (store, scratch) = match guard(config)? {
        Guarded::Unreadable(reason) => {
            let finding = Finding::Unreadable { reason };
            return recover(config, None, device_id, &dik, finding);
        }
        Guarded::Copy(store, scratch) => (store, Some(scratch)),
        Guarded::InPlace => match Store::open(&config.dir, config.cache_bytes) {
            Ok(store) => (store, None),
            Err(e) => {
                let finding = Finding::Unreadable {
                    reason: e.to_string(),
                };
                return recover(config, None, device_id, &dik, finding);
            }
        },
    };
    if let Some(id) = store.get(META_DEVICE_ID)? {
        if id.as_ref() != device_id.as_str().as_bytes() {
            let finding = Finding::Unreadable {
                reason: format!(
                    "the journal belongs to device {:?}, not {device_id}",
                    String::from_utf8_lossy(&id)
                ),
            };
            return recover(config, Some((store, None)), device_id, &dik, finding);
        }
    } else {
        store.put(META_DEVICE_ID, device_id.as_str().as_bytes())?;
        store.put(META_DIK, &dik.to_spki_der())?;
    }
    let scan = match scan::scan(&store, &dik, device_id, scan::Depth::Startup) {
        Ok(scan) => scan,
        Err(e) => {
            let finding = Finding::Unreadable {
                reason: e.to_string(),
            };
            return recover(config, Some((store, None)), device_id, &dik, finding);
        }
    };
    if let Some((seq, reason)) = scan.problem.clone() {
        let finding = Finding::BrokenChain { seq, reason };
        return recover(config, Some((store, Some(scan))), device_id, &dik, finding);
    }
    if let Some(cp) = &scan.last_checkpoint {
        let stored = cp.fields().nv_counter;
        let pending = store.get_u64(META_CHECKPOINT_PENDING)?.is_some();
        // A kill between the counter increment and storing the checkpoint leaves the TPM one
        // ahead; the pending marker, written durably before the increment, says so.
        let consistent =
            tpm_counter == stored || (pending && tpm_counter == stored.saturating_add(1));
        if !consistent {
            let finding = Finding::Rollback {
                stored_counter: stored,
                tpm_counter,
            };
            return recover(config, Some((store, Some(scan))), device_id, &dik, finding);
        }
    }
    let shipped = store.get_u64(META_SHIPPED)?.unwrap_or(0).min(scan.head.seq);
    let pending = store.get_u64(META_CHECKPOINT_PENDING)?.is_some();
    let finding = witness_check(config, device_id, &scan, tpm_counter, pending);
    let store = match scratch {
        Some(scratch) => in_place(config, store, scratch, device_id, &dik)?,
        None => store,
    };
    Ok(Opened {
        head: scan.head,
        shipped,
        count: scan.count,
        bytes: scan.bytes,
        last_checkpoint: scan.last_checkpoint,
        finding,
        moved_to: None,
        store,
    })
}

/// A journal that holds nothing yet (no record, no base, no checkpoint) is either a first start
/// or one that vanished: its witness tells which (`witness`). The witness is (re)written for a
/// new journal and wherever it is missing. `pending`: the journal's first checkpoint was
/// interrupted between the counter increment and its storage (a kill during the very first
/// start), so the counter may be one past the witness without any journal having been lost.
fn witness_check(
    config: &JournalConfig,
    device_id: &DeviceId,
    scan: &Scan,
    tpm_counter: u64,
    pending: bool,
) -> Option<Finding> {
    let witness = witness::read_witness(&config.dir, device_id);
    let empty = scan.head.seq == 0 && scan.last_checkpoint.is_none();
    let counter = if pending {
        tpm_counter.saturating_sub(1)
    } else {
        tpm_counter
    };
    let finding = if empty {
        witness::vanished(witness, counter).map(|witnessed_counter| Finding::Missing {
            witnessed_counter,
            tpm_counter,
        })
    } else {
        None
    };
    if empty || witness.is_none() {
        // Not fatal: the agent must keep enforcing logins on a full disk; the cost is that a
        // later deletion of this journal would look like a first start.
        if let Err(e) = witness::write_witness(&config.dir, device_id, tpm_counter) {
            tracing::error!(error = %e, "cannot write the journal's witness; a later deletion of the journal would go unnoticed at start");
        }
    }
    finding
}

/// Where the start-up checks run.
enum Guarded {
    /// The journal cannot be opened or read at all (sled erred, panicked, hung or ran out of
    /// memory on a copy): it is moved aside unopened.
    Unreadable(String),
    /// A scratch copy that opened and read cleanly in a probe, opened here.
    Copy(Store, Scratch),
    /// No journal yet, or no room for a copy: open in place.
    InPlace,
}

fn guard(config: &JournalConfig) -> Result<Guarded, JournalError> {
    super::compact::finish_interrupted(&config.dir)?;
    if !config.dir.exists() {
        return Ok(Guarded::InPlace);
    }
    // A journal counts as unreadable only when a second, fresh copy is refused too: one
    // verdict may come from the copy (a file changing under it) rather than from the journal,
    // and moving a healthy journal aside breaks its chain.
    let mut first = None;
    for _attempt in 0..2 {
        let scratch = match storeguard::scratch_copy(&config.dir) {
            Ok(scratch) => scratch,
            Err(e) if first.is_none() => {
                tracing::warn!(dir = %config.dir.display(), error = %e, "cannot copy the journal to check it; checking it in place");
                return Ok(Guarded::InPlace);
            }
            Err(_) => break,
        };
        let reason = match storeguard::probe(&scratch.dir, StoreKind::Journal) {
            Ok(()) => match Store::open(&scratch.dir, config.cache_bytes) {
                Ok(store) => {
                    if let Some(reason) = &first {
                        tracing::warn!(%reason, "the journal probe failed once and passed on a fresh copy; the journal is kept");
                    }
                    return Ok(Guarded::Copy(store, scratch));
                }
                Err(e) => e.to_string(),
            },
            Err(reason) => reason,
        };
        first.get_or_insert(reason);
    }
    Ok(Guarded::Unreadable(first.unwrap_or_default()))
}

/// The copy passed every check: close it and open the journal itself (sled's recovery of the
/// same bytes gives the same state).
fn in_place(
    config: &JournalConfig,
    copy: Store,
    scratch: Scratch,
    device_id: &DeviceId,
    dik: &DikPublicKey,
) -> Result<Store, JournalError> {
    drop(copy);
    drop(scratch);
    let store = Store::open(&config.dir, config.cache_bytes)?;
    if store.get(META_DEVICE_ID)?.is_none() {
        store.put(META_DEVICE_ID, device_id.as_str().as_bytes())?;
        store.put(META_DIK, &dik.to_spki_der())?;
    }
    Ok(store)
}

/// Moves the old database aside and opens a fresh one holding the verified prefix.
fn recover(
    config: &JournalConfig,
    old: Option<(Store, Option<Scan>)>,
    device_id: &DeviceId,
    dik: &DikPublicKey,
    finding: Finding,
) -> Result<Opened, JournalError> {
    tracing::error!(finding = %finding, dir = %config.dir.display(), "journal failed its start-up check; recovering onto a fresh store");
    let staging = config.dir.with_extension("recovering");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| JournalError::io("remove", &staging, e))?;
    }
    let fresh = Store::open(&staging, config.cache_bytes)?;
    fresh.put(META_DEVICE_ID, device_id.as_str().as_bytes())?;
    fresh.put(META_DIK, &dik.to_spki_der())?;
    let mut head = ChainHead::genesis(device_id);
    let (mut count, mut bytes) = (0u64, 0u64);
    if let Some((old_store, scan)) = &old {
        // Keep what verified: the base, the records up to the last good one, their certificates.
        let verified = scan.as_ref().map(|s| s.head.seq).unwrap_or(0);
        if let Some(base) = old_store.head_at(META_BASE).ok().flatten()
            && base.seq <= verified
        {
            fresh.put(META_BASE, &Store::head_bytes(&base))?;
            head = base;
        }
        for item in old_store.records.range(..=seq_key(verified)) {
            let Ok((k, v)) = item else { break };
            fresh
                .records
                .insert(k, v.clone())
                .map_err(|source| JournalError::Db {
                    context: "copy record",
                    source,
                })?;
            count = count.saturating_add(1);
            bytes = bytes.saturating_add(v.len() as u64);
        }
        for (k, v) in old_store.certs.iter().flatten() {
            fresh
                .certs
                .insert(k, v)
                .map_err(|source| JournalError::Db {
                    context: "copy certificate",
                    source,
                })?;
        }
        if let Some(s) = scan {
            head = s.head;
        }
        if let Ok(Some(shipped)) = old_store.get_u64(META_SHIPPED) {
            fresh.put(META_SHIPPED, &shipped.min(head.seq).to_be_bytes())?;
        }
    }
    fresh.put(META_HEAD, &Store::head_bytes(&head))?;
    fresh.make_durable()?;
    drop(fresh);
    drop(old);
    // The old journal itself was never opened (only a scratch copy was): what is moved aside is
    // byte for byte what the agent found.
    let moved_to = if config.dir.exists() {
        Some(
            storeguard::move_aside(&config.dir)
                .map_err(|e| JournalError::io("move aside", &config.dir, e))?,
        )
    } else {
        None
    };
    std::fs::rename(&staging, &config.dir)
        .map_err(|e| JournalError::io("install", &config.dir, e))?;
    let store = Store::open(&config.dir, config.cache_bytes)?;
    let shipped = store.get_u64(META_SHIPPED)?.unwrap_or(0);
    Ok(Opened {
        store,
        head,
        shipped,
        count,
        bytes,
        last_checkpoint: None,
        finding: Some(finding),
        moved_to,
    })
}
