//! The audit journal: every security decision, signed and hash-chained, durable in sled before
//! it is acknowledged.
//!
//! - `store`: the sled trees and the fsync that makes a commit durable.
//! - `startup`: opening the journal — checks the tail against the last checkpoint and the TPM
//!   counter, and recovers onto a fresh store (moving the old one aside) when they disagree.
//! - `writer`: the one thread that owns the store and the journal key; it takes appends from a
//!   channel and commits them in groups (many appends, one fsync).
//! - `sign`: the per-start journal key and its certificate from the device identity key,
//!   and checkpoints signed by the device identity key with the TPM counter.
//! - `compact`: replacing the sled database by a compact copy when it nears its bound.
//! - `prune`: keeping the journal within its bound, shipped records first, never a silent gap.
//! - `retire`: dropping journal-key certificates no stored record needs (the key ring's bound).
//! - `scan`: reading a journal end to end and verifying it (used at start and offline).
//! - `offline`: reading and verifying a journal directory offline (`posguardctl verify-journal`).
//! - `witness`: the file beside the journal that makes a deleted or emptied journal a finding.
//! - `anchor`: the other stores' anchors (recorded at checkpoints, checked at start by
//!   [`Journal::watch_store`]) and the start's unanchored tail.
//!
//! [`Journal`] is the handle the rest of the agent holds; it is cheap to clone.

mod anchor;
mod compact;
mod offline;
mod prune;
mod retire;
mod scan;
mod sign;
mod startup;
mod store;
mod witness;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use posguard_hal::{HalError, SecureElement};
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::event::Event;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
pub use anchor::StartTail;
pub use offline::{OfflineReport, Verdict, read_events, verify_dir};
pub use retire::{KeyRing, key_ring};
pub use startup::Finding;
pub use store::dir_size;

/// Journal settings (`[journal]` in the agent's configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Directory of the sled database.
    pub dir: PathBuf,
    /// Bound on the database's size on disk, in bytes (default 64 MiB).
    pub max_bytes: u64,
    /// A checkpoint after this many records (default 1000)…
    pub checkpoint_every: u64,
    /// …or after this many seconds with new records (default 60).
    pub checkpoint_secs: u64,
    /// sled page cache, in bytes (default 2 MiB: with the transaction cache's 1 MiB and the clerk
    /// database's 512 KiB, the agent's sled caches stay within 4 MiB together; sled keeps about
    /// three times its nominal cache in memory, in many small allocations).
    pub cache_bytes: u64,
    /// Most appends committed by one fsync (default 4096).
    pub max_group: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: PathBuf::from("/var/lib/posguard/journal"),
            max_bytes: 64 * 1024 * 1024,
            checkpoint_every: 1000,
            checkpoint_secs: 60,
            cache_bytes: 2 * 1024 * 1024,
            max_group: 4096,
        }
    }
}

impl JournalConfig {
    /// A configuration for `dir` with the defaults.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            ..JournalConfig::default()
        }
    }

    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 1024 * 1024 {
            return Err("journal.max_bytes: must be at least 1048576 (1 MiB)".to_owned());
        }
        if self.checkpoint_every == 0 {
            return Err("journal.checkpoint_every: must be at least 1".to_owned());
        }
        if self.checkpoint_secs == 0 {
            return Err("journal.checkpoint_secs: must be at least 1".to_owned());
        }
        if self.max_group == 0 {
            return Err("journal.max_group: must be at least 1".to_owned());
        }
        Ok(())
    }

    fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_secs)
    }
}

/// What can go wrong in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// sled failed.
    #[error("journal database: {context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A file operation failed.
    #[error("journal: {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The secure element refused (signing, counter).
    #[error("journal: secure element: {0}")]
    SecureElement(#[from] HalError),
    /// Stored data does not decode.
    #[error("journal data is corrupt: {what}")]
    Corrupt {
        /// What.
        what: String,
    },
    /// The event could not be encoded (too large) or the sequence is exhausted.
    #[error("journal: cannot build record: {0}")]
    Build(String),
    /// A journal key the signature rule refuses (not a canonical encoding of a point of prime
    /// order): it is not certified.
    #[error("journal: refusing to certify the journal key: {0}")]
    BadJournalKey(posguard_proto::ed25519::Ed25519KeyError),
    /// The database cannot be opened or read at all (sled refused it, or crashed, hung or ran
    /// out of memory on a copy of it).
    #[error("the journal database is unreadable: {reason}")]
    Unreadable {
        /// What happened.
        reason: String,
    },
    /// The writer thread has stopped (shutdown, or a fatal storage error).
    #[error("the journal is closed")]
    Closed,
}

impl JournalError {
    pub(crate) fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        JournalError::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// The journal's state for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JournalStatus {
    /// Sequence number of the last record.
    pub head_seq: u64,
    /// Hash of the last record (hex): what a forced decommission hands to operations, so the
    /// records that were never shipped can be named.
    pub head_hash: String,
    /// Highest sequence number the collector acknowledged.
    pub shipped_seq: u64,
    /// Records stored.
    pub records: u64,
    /// Bytes of records stored.
    pub record_bytes: u64,
    /// Sequence number of the last checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// TPM counter value of the last checkpoint.
    pub last_checkpoint_counter: Option<u64>,
    /// Records dropped to stay within the bound since this start.
    pub dropped: u64,
    /// What the start-up check found (tamper, rollback, unreadable), if anything.
    pub finding: Option<String>,
    /// Where the old data was moved when the journal recovered.
    pub moved_to: Option<String>,
    /// Why the journal stopped accepting events (a commit failed: full disk, I/O error), if it
    /// did. The agent must be restarted once the cause is fixed.
    pub failure: Option<String>,
    /// The journal as this start found it: records after the last checkpoint are the window a
    /// local check cannot prove complete.
    pub start_tail: StartTail,
    /// What the start-up check of the clerk store and the cache found (missing, replaced, an
    /// older copy), if anything.
    pub store_findings: Vec<String>,
}

pub(crate) enum Command {
    Append(Event, oneshot::Sender<Result<u64, JournalError>>),
    Ack(u64, oneshot::Sender<Result<(), JournalError>>),
    Checkpoint(oneshot::Sender<Result<Checkpoint, JournalError>>),
    Status(oneshot::Sender<JournalStatus>),
    Read {
        from: u64,
        max_count: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<Vec<Record>, JournalError>>,
    },
    CertsFor(
        Vec<[u8; 8]>,
        oneshot::Sender<Result<Vec<Vec<u8>>, JournalError>>,
    ),
    Checkpoints {
        from: u64,
        to: u64,
        reply: oneshot::Sender<Result<Vec<Vec<u8>>, JournalError>>,
    },
    Tick,
    Shutdown(oneshot::Sender<Result<(), JournalError>>),
}

/// Handle to the journal writer. Cheap to clone; all clones talk to one writer thread.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Command>,
    device_id: DeviceId,
    board: Arc<anchor::Board>,
    start_tail: StartTail,
    /// The start-up check found something and recovered: the stores' view of the journal's
    /// head is moot (the finding says more).
    recovered: bool,
}

/// What opening the journal found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Head after opening (and after any recovery records).
    pub head_seq: u64,
    /// A tamper/rollback/unreadable finding, if the journal had to recover.
    pub finding: Option<Finding>,
    /// Where the old data went.
    pub moved_to: Option<PathBuf>,
    /// The journal as this start found it (head, last anchored seq, records after it).
    pub start_tail: StartTail,
}

impl Journal {
    /// Opens the journal: checks it, recovers if needed, makes a fresh journal key certified by
    /// the device identity key, and starts the writer thread. Blocking (TPM calls, fsync):
    /// call it from `spawn_blocking` or before the runtime starts.
    pub fn open(
        config: &JournalConfig,
        device_id: DeviceId,
        element: Arc<dyn SecureElement>,
        clock: Clock,
    ) -> Result<(Journal, OpenReport), JournalError> {
        let opened = startup::open(config, &device_id, element.as_ref(), clock)?;
        // Before this start's own records: what the previous run left.
        let anchored_seq = opened
            .last_checkpoint
            .as_ref()
            .map_or(0, |c| c.fields().seq);
        let start_tail = StartTail {
            head_seq: opened.head.seq,
            anchored_seq,
            unanchored: opened.head.seq.saturating_sub(anchored_seq),
            clean_stop: anchor::ends_cleanly(&opened.store, opened.head.seq, anchored_seq),
        };
        let board = Arc::new(anchor::Board::load(&opened.store, opened.head.seq)?);
        let recovered = opened.finding.is_some();
        let report = OpenReport {
            head_seq: opened.head.seq,
            finding: opened.finding.clone(),
            moved_to: opened.moved_to.clone(),
            start_tail,
        };
        let (tx, rx) = mpsc::channel(config.max_group.max(1024));
        writer::spawn(
            config.clone(),
            device_id.clone(),
            element,
            clock,
            opened,
            anchor::Anchoring {
                board: board.clone(),
                start_tail,
            },
            rx,
            tx.downgrade(),
        )?;
        Ok((
            Journal {
                tx,
                device_id,
                board,
                start_tail,
                recovered,
            },
            report,
        ))
    }

    /// The device this journal belongs to.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)
    }

    fn ask_blocking<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(make(reply))
            .map_err(|_| JournalError::Closed)?;
        rx.blocking_recv().map_err(|_| JournalError::Closed)
    }

    /// Appends an event; returns its sequence number once the record is durable on disk.
    pub async fn append(&self, event: Event) -> Result<u64, JournalError> {
        self.ask(|r| Command::Append(event, r)).await?
    }

    /// [`Journal::append`] for threads outside the async runtime.
    pub fn append_blocking(&self, event: Event) -> Result<u64, JournalError> {
        self.ask_blocking(|r| Command::Append(event, r))?
    }

    /// Marks records up to `seq` as shipped and acknowledged by the collector; they become the
    /// first to be pruned. A `seq` below the earlier acknowledgement (a collector restored from
    /// a backup) makes the records above it unshipped again.
    pub async fn ack(&self, seq: u64) -> Result<(), JournalError> {
        self.ask(|r| Command::Ack(seq, r)).await?
    }

    /// Writes a checkpoint now (increments the TPM counter).
    pub async fn checkpoint(&self) -> Result<Checkpoint, JournalError> {
        self.ask(Command::Checkpoint).await?
    }

    /// Current state.
    pub async fn status(&self) -> Result<JournalStatus, JournalError> {
        self.ask(Command::Status).await
    }

    /// [`Journal::status`] for threads outside the async runtime.
    pub fn status_blocking(&self) -> Result<JournalStatus, JournalError> {
        self.ask_blocking(Command::Status)
    }

    /// Up to `max_count` records (and about `max_bytes`) from `from` on, in order.
    pub async fn read(
        &self,
        from: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, JournalError> {
        self.ask(|reply| Command::Read {
            from,
            max_count,
            max_bytes,
            reply,
        })
        .await?
    }

    /// The encoded journal-key certificates of the keys `ids` (those stored; a batch needs the
    /// ones its records name).
    pub async fn certs_for(&self, ids: Vec<[u8; 8]>) -> Result<Vec<Vec<u8>>, JournalError> {
        self.ask(|reply| Command::CertsFor(ids, reply)).await?
    }

    /// The encoded checkpoints at sequence numbers `from..=to`.
    pub async fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, JournalError> {
        self.ask(|reply| Command::Checkpoints { from, to, reply })
            .await?
    }

    /// Writes a final checkpoint, makes everything durable and stops the writer.
    pub async fn shutdown(&self) -> Result<(), JournalError> {
        self.ask(Command::Shutdown).await?
    }

    /// [`Journal::shutdown`] for threads outside the async runtime.
    pub fn shutdown_blocking(&self) -> Result<(), JournalError> {
        self.ask_blocking(Command::Shutdown)?
    }
}
