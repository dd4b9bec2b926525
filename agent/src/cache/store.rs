//! The cache's sled database: one tree of records, sized for a small terminal (a small page
//! cache, no background flusher), the size accounting, and durability. sled's `flush()` ends
//! in `sync_file_range`, which is not a commit point on power loss, so every durable step is
//! `flush` + `fdatasync` of the `db` file, shared between concurrent writers ([`GroupSync`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::CacheError;
use super::record::TREE;
use super::sync::GroupSync;
use crate::anchor::AnchorCell;
use crate::walk::walk_all;

/// sled's log segment size: smaller than its default (512 KiB) for a small bound.
const SEGMENT_BYTES: usize = 128 * 1024;

pub(crate) struct Store {
    dir: PathBuf,
    db: sled::Db,
    pub(crate) records: sled::Tree,
    /// Holds the store's anchor (see `crate::anchor`).
    meta: sled::Tree,
    anchor: Arc<AnchorCell>,
    data_file: File,
    group: GroupSync,
    /// Bytes counted against the bound. Held while a writer reads, checks and replaces a
    /// record, so that accounting and "which key version is stored" stay exact. Readers never
    /// take it.
    writer: Mutex<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// What one record counts against the bound.
pub(crate) fn entry_size(key_len: usize, value_len: usize) -> u64 {
    u64::try_from(key_len.saturating_add(value_len)).unwrap_or(u64::MAX)
}

impl Store {
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, CacheError> {
        let io = |action, source| CacheError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        crate::storeguard::drop_unfinished_snapshots(dir);
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .segment_size(SEGMENT_BYTES)
            .mode(sled::Mode::LowSpace);
        // A database closed a moment ago in this process may still hold its lock while sled's
        // threads wind down: retry briefly.
        let mut attempts = 0u32;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other && attempts < 200 =>
                {
                    attempts = attempts.saturating_add(1);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(CacheError::db("open database")(e)),
            }
        };
        let records = db.open_tree(TREE).map_err(CacheError::db("open tree"))?;
        let meta = db.open_tree("meta").map_err(CacheError::db("open tree"))?;
        let anchor = Arc::new(AnchorCell::load_or_create(&meta).map_err(CacheError::Anchor)?);
        let data_path = dir.join("db");
        let data_file = File::open(&data_path).map_err(|source| CacheError::Io {
            action: "open",
            path: data_path,
            source,
        })?;
        let mut used = 0u64;
        for entry in walk_all(&records) {
            let (k, v) = entry.map_err(CacheError::db("scan"))?;
            used = used.saturating_add(entry_size(k.len(), v.len()));
        }
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            records,
            meta,
            anchor,
            data_file,
            group: GroupSync::default(),
            writer: Mutex::new(used),
        };
        store.durable()?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", e))?;
        Ok(store)
    }

    /// Everything written to sled before this call survives a power loss once it returns.
    pub(crate) fn durable(&self) -> Result<(), CacheError> {
        self.group
            .sync(
                || -> Result<(), CacheError> {
                    let generation = self
                        .anchor
                        .stage(&self.meta)
                        .map_err(CacheError::db("write anchor"))?;
                    self.db.flush().map_err(CacheError::db("flush"))?;
                    self.data_file
                        .sync_data()
                        .map_err(|source| CacheError::Io {
                            action: "fdatasync",
                            path: self.dir.join("db"),
                            source,
                        })?;
                    self.anchor.published(generation);
                    Ok(())
                },
                |e| tracing::error!(error = %e, "cache: making writes durable failed"),
            )
            .map_err(|()| CacheError::SyncFailed)
    }

    /// The writer lock and the byte count it guards.
    pub(crate) fn writer(&self) -> MutexGuard<'_, u64> {
        // Poisoned only by a panic while holding it; the count is then at worst stale.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's anchor, for the journal to check and record.
    pub(crate) fn anchor(&self) -> Arc<AnchorCell> {
        self.anchor.clone()
    }

    pub(crate) fn used(&self) -> u64 {
        *self.writer()
    }
}
