//! The journal's sled database: trees, keys, and the durability step sled lacks.
//!
//! Trees: `records` (seq, big-endian → encoded record), `certs` (journal key id → encoded
//! journal-key certificate), `checkpoints` (seq → encoded checkpoint), `meta` (small named
//! values below). sled's `flush()` ends in `sync_file_range`, which is not a commit point on
//! power loss, so [`Store::make_durable`] follows it with `fdatasync` of the data file.

use std::fs::File;
use std::path::{Path, PathBuf};

use posguard_proto::chain::ChainHead;

use super::JournalError;

pub(crate) const META_HEAD: &[u8] = b"head";
pub(crate) const META_SHIPPED: &[u8] = b"shipped";
pub(crate) const META_LAST_CHECKPOINT: &[u8] = b"last_checkpoint";
pub(crate) const META_CHECKPOINT_PENDING: &[u8] = b"checkpoint_pending";
pub(crate) const META_DEVICE_ID: &[u8] = b"device_id";
pub(crate) const META_DIK: &[u8] = b"dik_spki";
/// The last record pruned from the front: where the stored records continue from.
pub(crate) const META_BASE: &[u8] = b"base";

/// sled's log segment size: smaller than its default (512 KiB) so that a small bound is kept.
const SEGMENT_BYTES: usize = 128 * 1024;

/// The open database and its trees.
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) records: sled::Tree,
    pub(crate) certs: sled::Tree,
    pub(crate) checkpoints: sled::Tree,
    pub(crate) meta: sled::Tree,
    data_file: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn sled_err(context: &'static str) -> impl FnOnce(sled::Error) -> JournalError {
    move |source| JournalError::Db { context, source }
}

impl Store {
    /// Opens (creating) the database at `dir`, sized for a small terminal: a page cache of
    /// `cache_bytes` and no background flusher (we flush at every group commit).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, JournalError> {
        super::compact::finish_interrupted(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io("create", dir, e))?;
        crate::storeguard::drop_unfinished_snapshots(dir);
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .segment_size(SEGMENT_BYTES)
            .mode(sled::Mode::LowSpace);
        // A database closed a moment ago in this process may still hold its lock while sled's
        // threads wind down: retry briefly rather than declare it unreadable.
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
                Err(e) => {
                    return Err(JournalError::Db {
                        context: "open database",
                        source: e,
                    });
                }
            }
        };
        let tree = |name: &'static str| db.open_tree(name).map_err(sled_err("open tree"));
        let records = tree("records")?;
        let certs = tree("certs")?;
        let checkpoints = tree("checkpoints")?;
        let meta = tree("meta")?;
        let data_path = dir.join("db");
        let data_file =
            File::open(&data_path).map_err(|e| JournalError::io("open", &data_path, e))?;
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            records,
            certs,
            checkpoints,
            meta,
            data_file,
        };
        store.make_durable()?;
        // The directory entries of a new database must be durable too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| JournalError::io("sync", dir, e))?;
        Ok(store)
    }

    /// A throwaway in-memory-backed database, standing in while the real one is swapped.
    pub(crate) fn temporary() -> Result<Self, JournalError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(sled_err("open temporary database"))?;
        let tree = |name: &'static str| db.open_tree(name).map_err(sled_err("open tree"));
        Ok(Store {
            dir: PathBuf::new(),
            records: tree("records")?,
            certs: tree("certs")?,
            checkpoints: tree("checkpoints")?,
            meta: tree("meta")?,
            data_file: File::open("/dev/null")
                .map_err(|e| JournalError::io("open", "/dev/null", e))?,
            db,
        })
    }

    /// Everything written so far survives a power loss once this returns.
    pub(crate) fn make_durable(&self) -> Result<(), JournalError> {
        self.db.flush().map_err(sled_err("flush"))?;
        self.data_file
            .sync_data()
            .map_err(|e| JournalError::io("fsync", self.dir.join("db"), e))
    }

    pub(crate) fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, JournalError> {
        match self.meta.get(key).map_err(sled_err("read meta"))? {
            None => Ok(None),
            Some(v) => {
                let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| JournalError::Corrupt {
                    what: format!(
                        "meta value {} has {} bytes",
                        String::from_utf8_lossy(key),
                        v.len()
                    ),
                })?;
                Ok(Some(u64::from_be_bytes(arr)))
            }
        }
    }

    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> Result<(), JournalError> {
        self.meta
            .insert(key, value)
            .map_err(sled_err("write meta"))?;
        Ok(())
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, JournalError> {
        self.meta.get(key).map_err(sled_err("read meta"))
    }

    pub(crate) fn remove(&self, key: &[u8]) -> Result<(), JournalError> {
        self.meta.remove(key).map_err(sled_err("write meta"))?;
        Ok(())
    }

    pub(crate) fn stored_head(&self) -> Result<Option<ChainHead>, JournalError> {
        self.head_at(META_HEAD)
    }

    /// The hash of the stored record `seq`, if present and decodable.
    pub(crate) fn record_hash(&self, seq: u64) -> Result<Option<[u8; 32]>, JournalError> {
        let Some(v) = self
            .records
            .get(seq_key(seq))
            .map_err(sled_err("read record"))?
        else {
            return Ok(None);
        };
        Ok(posguard_proto::record::Record::from_bytes(&v)
            .ok()
            .map(|r| *r.hash()))
    }

    pub(crate) fn head_at(&self, key: &[u8]) -> Result<Option<ChainHead>, JournalError> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        let bytes: [u8; 40] = v.as_ref().try_into().map_err(|_| JournalError::Corrupt {
            what: "stored head".to_owned(),
        })?;
        let (seq, hash) = bytes.split_at(8);
        Ok(Some(ChainHead {
            seq: u64::from_be_bytes(seq.try_into().unwrap_or_default()),
            hash: hash.try_into().unwrap_or_default(),
        }))
    }

    pub(crate) fn head_bytes(head: &ChainHead) -> [u8; 40] {
        let mut out = [0u8; 40];
        let (seq, hash) = out.split_at_mut(8);
        seq.copy_from_slice(&head.seq.to_be_bytes());
        hash.copy_from_slice(&head.hash);
        out
    }
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn key_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Total size of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .fold(0u64, u64::saturating_add)
}
