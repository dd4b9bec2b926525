//! The writer thread: owns the store and the journal key, builds records in order, and commits
//! them in groups — one sled flush and one fdatasync for every append waiting at that moment —
//! before any of them is acknowledged.

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use posguard_hal::SecureElement;
use posguard_proto::chain::ChainHead;
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::event::{Actor, Event, EventKind};
use posguard_proto::record::Record;
use posguard_proto::text::{DeviceId, SafeText};
use tokio::sync::{mpsc, oneshot};

use super::sign::{self, JournalKey};
use super::startup::{Finding, Opened};
use super::store::{
    META_CHECKPOINT_PENDING, META_HEAD, META_LAST_CHECKPOINT, META_SHIPPED, Store, seq_key,
};
use super::{Command, JournalConfig, JournalError, JournalStatus};
use crate::clock::Clock;
use crate::walk::walk;

pub(super) struct Writer {
    pub(super) config: JournalConfig,
    pub(super) device_id: DeviceId,
    element: Arc<dyn SecureElement>,
    pub(super) clock: Clock,
    pub(super) store: Store,
    key: JournalKey,
    pub(super) head: ChainHead,
    pub(super) shipped: u64,
    pub(super) count: u64,
    pub(super) bytes: u64,
    pub(super) dropped: u64,
    last_checkpoint: Option<Checkpoint>,
    since_checkpoint: u64,
    checkpoint_at: Instant,
    finding: Option<Finding>,
    moved_to: Option<String>,
    commits_since_size_check: u32,
    /// Why the journal stopped accepting events: a commit or compaction failed (a full disk, an
    /// I/O error), so the chain state on disk is uncertain. Shown in status.
    failure: Option<String>,
    /// Store anchors recorded at checkpoints, and the start's tail (see `anchor`).
    anchoring: super::anchor::Anchoring,
}

/// Group commits between two looks at the directory's size.
const SIZE_CHECK_EVERY: u32 = 16;
/// Compact once the directory reaches this share of the bound.
const COMPACT_AT_PERCENT: u64 = 75;

type Pending = Vec<(oneshot::Sender<Result<u64, JournalError>>, u64)>;

// Everything the writer takes over, once, at open: a struct would only move this list.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    config: JournalConfig,
    device_id: DeviceId,
    element: Arc<dyn SecureElement>,
    clock: Clock,
    opened: Opened,
    anchoring: super::anchor::Anchoring,
    rx: mpsc::Receiver<Command>,
    ticker: mpsc::WeakSender<Command>,
) -> Result<(), JournalError> {
    let key = JournalKey::generate()?;
    let mut w = Writer {
        config,
        device_id,
        element,
        clock,
        store: opened.store,
        key,
        head: opened.head,
        shipped: opened.shipped,
        count: opened.count,
        bytes: opened.bytes,
        dropped: 0,
        last_checkpoint: opened.last_checkpoint,
        since_checkpoint: 0,
        checkpoint_at: Instant::now(),
        finding: opened.finding,
        moved_to: opened.moved_to.map(|p| p.display().to_string()),
        commits_since_size_check: 0,
        failure: None,
        anchoring,
    };
    w.start()?;
    std::thread::Builder::new()
        .name("posguard-journal".to_owned())
        .spawn(move || w.run(rx))
        .map_err(|e| JournalError::io("spawn writer thread", "", e))?;
    std::thread::Builder::new()
        .name("posguard-journal-tick".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                match ticker.upgrade() {
                    Some(tx) => {
                        let _ = tx.try_send(Command::Tick);
                    }
                    None => break,
                }
            }
        })
        .map_err(|e| JournalError::io("spawn ticker thread", "", e))?;
    Ok(())
}

impl Writer {
    /// Certifies this start's journal key, records a recovery if there was one, checkpoints.
    fn start(&mut self) -> Result<(), JournalError> {
        let first_seq = self.head.seq.saturating_add(1);
        let cert = self.key.certify(
            self.element.as_ref(),
            &self.device_id,
            &self.clock,
            first_seq,
        )?;
        self.store
            .certs
            .insert(self.key.id, cert.as_bytes())
            .map_err(|source| JournalError::Db {
                context: "store certificate",
                source,
            })?;
        if let Some(finding) = self.finding.clone() {
            let moved_to = self.moved_to.as_deref().and_then(|p| SafeText::new(p).ok());
            let event = self.system_event(EventKind::TamperRecovered {
                finding: finding.to_event(),
                moved_to,
            });
            self.append_now(&event)?;
        }
        self.checkpoint()?;
        // Certificates of earlier starts that sign no stored record are not needed any more.
        if let Err(e) = self.retire_certs() {
            tracing::warn!(error = %e, "journal: old certificates not retired");
        }
        Ok(())
    }

    /// This start's journal key id.
    pub(super) fn key_id(&self) -> [u8; 8] {
        self.key.id
    }

    pub(super) fn system_event(&self, kind: EventKind) -> Event {
        Event::new(self.clock.stamp(), Actor::System, None, kind)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut commands = vec![first];
            while commands.len() < self.config.max_group {
                match rx.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            let mut batch = sled::Batch::default();
            let mut pending: Pending = Vec::new();
            for command in commands {
                match command {
                    Command::Append(event, reply) => match self.build(&event) {
                        Ok((seq, bytes)) => {
                            batch.insert(&seq_key(seq), bytes);
                            pending.push((reply, seq));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                    Command::Shutdown(reply) => {
                        self.commit(std::mem::take(&mut batch), std::mem::take(&mut pending));
                        let result = self.close();
                        // Release the database (and its file lock) before saying we are done.
                        drop(self);
                        let _ = reply.send(result);
                        return;
                    }
                    other => {
                        self.commit(std::mem::take(&mut batch), std::mem::take(&mut pending));
                        self.handle(other);
                    }
                }
            }
            self.commit(batch, pending);
            self.after_commit();
        }
        // Every handle is gone without a shutdown: still leave a durable, checkpointed journal.
        let _ = self.close();
    }

    fn build(&mut self, event: &Event) -> Result<(u64, Vec<u8>), JournalError> {
        if self.failure.is_some() {
            return Err(JournalError::Closed);
        }
        let key = &self.key;
        let record = Record::build(&self.head, key.id, event, |m| key.sign(m))
            .map_err(|e| JournalError::Build(e.to_string()))?;
        self.head = record.head();
        let bytes = record.into_bytes();
        self.count = self.count.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes.len() as u64);
        self.since_checkpoint = self.since_checkpoint.saturating_add(1);
        Ok((self.head.seq, bytes))
    }

    /// Applies a group and makes it durable, then acknowledges it.
    fn commit(&mut self, batch: sled::Batch, pending: Pending) {
        if pending.is_empty() {
            return;
        }
        let result = self
            .store
            .records
            .apply_batch(batch)
            .map_err(|source| JournalError::Db {
                context: "append",
                source,
            })
            .and_then(|()| self.store.put(META_HEAD, &Store::head_bytes(&self.head)))
            .and_then(|()| self.store.make_durable());
        match result {
            Ok(()) => {
                self.anchoring.board.durable_head(self.head.seq);
                for (reply, seq) in pending {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal commit failed; the journal stops accepting events");
                self.failure = Some(e.to_string());
                for (reply, _) in pending {
                    let _ = reply.send(Err(JournalError::Closed));
                }
            }
        }
    }

    /// Builds and commits one record now (recovery events, overflow events).
    pub(super) fn append_now(&mut self, event: &Event) -> Result<u64, JournalError> {
        let (seq, bytes) = self.build(event)?;
        self.store
            .records
            .insert(seq_key(seq), bytes)
            .map_err(|source| JournalError::Db {
                context: "append",
                source,
            })?;
        self.store.put(META_HEAD, &Store::head_bytes(&self.head))?;
        self.store.make_durable()?;
        Ok(seq)
    }

    fn after_commit(&mut self) {
        if self.failure.is_some() {
            return;
        }
        if let Err(e) = self.prune() {
            tracing::error!(error = %e, "journal prune failed");
        }
        self.commits_since_size_check = self.commits_since_size_check.saturating_add(1);
        if self.commits_since_size_check >= SIZE_CHECK_EVERY {
            self.commits_since_size_check = 0;
            let size = super::store::dir_size(&self.store.dir);
            if size > self.config.max_bytes / 100 * COMPACT_AT_PERCENT {
                let started = Instant::now();
                match super::compact::compact(&mut self.store, self.config.cache_bytes) {
                    Ok(()) => tracing::info!(
                        before = size,
                        after = super::store::dir_size(&self.store.dir),
                        ms = started.elapsed().as_millis() as u64,
                        "journal compacted"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "journal compaction failed; the journal stops accepting events");
                        self.failure = Some(e.to_string());
                    }
                }
            }
        }
        let due = self.since_checkpoint >= self.config.checkpoint_every
            || (self.since_checkpoint > 0
                && self.checkpoint_at.elapsed() >= self.config.checkpoint_interval());
        if due && let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "journal checkpoint failed");
        }
    }

    /// Signs (seq, head, counter) with the device identity key. The pending marker is durable
    /// before the counter moves, so a kill in between is not mistaken for a rollback.
    ///
    /// A checkpoint interrupted between the increment and its storage (a kill) leaves the
    /// counter one ahead of the last stored checkpoint, with the marker still set. The next
    /// checkpoint takes that increment over instead of adding one: otherwise a second kill at
    /// the same point would leave the counter two ahead, which the start-up check must call a
    /// rollback (seen once in about 1,900 kills by the field-lifetime soak).
    pub(super) fn checkpoint(&mut self) -> Result<Checkpoint, JournalError> {
        let interrupted = self.store.get_u64(META_CHECKPOINT_PENDING)?.is_some();
        let adopt = match (&self.last_checkpoint, interrupted) {
            (Some(last), true) => {
                let now = self.element.counter_read()?;
                (now == last.fields().nv_counter.saturating_add(1)).then_some(now)
            }
            _ => None,
        };
        self.store
            .put(META_CHECKPOINT_PENDING, &self.head.seq.to_be_bytes())?;
        self.anchoring.board.record(&self.store)?;
        self.store.make_durable()?;
        let cp = sign::checkpoint(self.element.as_ref(), &self.device_id, self.head, adopt)?;
        self.store
            .checkpoints
            .insert(seq_key(cp.fields().seq), cp.as_bytes())
            .map_err(|source| JournalError::Db {
                context: "store checkpoint",
                source,
            })?;
        self.store.put(META_LAST_CHECKPOINT, cp.as_bytes())?;
        self.store.remove(META_CHECKPOINT_PENDING)?;
        self.store.make_durable()?;
        self.since_checkpoint = 0;
        self.checkpoint_at = Instant::now();
        self.last_checkpoint = Some(cp.clone());
        Ok(cp)
    }

    fn status(&self) -> JournalStatus {
        JournalStatus {
            head_seq: self.head.seq,
            head_hash: self.head.hash.iter().map(|b| format!("{b:02x}")).collect(),
            shipped_seq: self.shipped,
            records: self.count,
            record_bytes: self.bytes,
            last_checkpoint_seq: self.last_checkpoint.as_ref().map(|c| c.fields().seq),
            last_checkpoint_counter: self.last_checkpoint.as_ref().map(|c| c.fields().nv_counter),
            dropped: self.dropped,
            finding: self.finding.as_ref().map(|f| f.to_string()),
            moved_to: self.moved_to.clone(),
            failure: self.failure.clone(),
            start_tail: self.anchoring.start_tail,
            store_findings: self.anchoring.board.findings(),
        }
    }

    fn read(
        &self,
        from: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, JournalError> {
        let mut out = Vec::new();
        let mut size = 0usize;
        for item in walk(
            &self.store.records,
            Bound::Included(&seq_key(from)),
            Bound::Unbounded,
        ) {
            let (_, v) = item.map_err(|source| JournalError::Db {
                context: "read records",
                source,
            })?;
            if out.len() >= max_count
                || (!out.is_empty() && size.saturating_add(v.len()) > max_bytes)
            {
                break;
            }
            let record = Record::from_bytes(&v).map_err(|e| JournalError::Corrupt {
                what: format!("stored record: {e}"),
            })?;
            size = size.saturating_add(v.len());
            out.push(record);
        }
        Ok(out)
    }

    /// Handles a command other than append and shutdown.
    fn handle(&mut self, command: Command) {
        match command {
            Command::Append(..) | Command::Shutdown(_) => {}
            Command::Tick => self.after_commit(),
            Command::Ack(seq, reply) => {
                // The collector's word, both ways: after it was restored from a backup it holds
                // less than it once acknowledged, and what it lost must count as unshipped again
                // (kept ahead of shipped records when pruning, and resent).
                self.shipped = seq.min(self.head.seq);
                let r = self.store.put(META_SHIPPED, &self.shipped.to_be_bytes());
                let _ = reply.send(r);
            }
            Command::Checkpoint(reply) => {
                let _ = reply.send(self.checkpoint());
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Read {
                from,
                max_count,
                max_bytes,
                reply,
            } => {
                let _ = reply.send(self.read(from, max_count, max_bytes));
            }
            Command::Checkpoints { from, to, reply } => {
                let found = walk(
                    &self.store.checkpoints,
                    Bound::Included(&seq_key(from)),
                    Bound::Included(&seq_key(to)),
                )
                .map(|i| i.map(|(_, v)| v.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| JournalError::Db {
                    context: "read checkpoints",
                    source,
                });
                let _ = reply.send(found);
            }
            Command::CertsFor(ids, reply) => {
                let certs = ids
                    .iter()
                    .filter_map(|id| self.store.certs.get(id).transpose())
                    .map(|i| i.map(|v| v.to_vec()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|source| JournalError::Db {
                        context: "read certificates",
                        source,
                    });
                let _ = reply.send(certs);
            }
        }
    }

    fn close(&mut self) -> Result<(), JournalError> {
        if self.failure.is_none()
            && self.last_checkpoint.as_ref().map(|c| c.fields().seq) != Some(self.head.seq)
        {
            self.checkpoint()?;
        }
        self.store.make_durable()
    }
}
