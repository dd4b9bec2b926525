//! The transaction cache: small records the POS application parks on the terminal (e.g. an
//! offline sale waiting for the network), encrypted at rest, bounded in size and time, and
//! guarded against cardholder data.
//!
//! Modules:
//! - `config`: [`CacheConfig`] (`[cache]` in the agent's configuration) and its checks.
//! - `record`: [`RecordId`] (opaque, not secret) and the stored layout: a plain header (format,
//!   key version, expiry) and an AES-256-GCM body whose AAD binds tree, id and header.
//! - `guard`: the card-data guard, a Luhn scanner over any bytes.
//! - `store`: the sled database, sized for a small terminal, and the size accounting.
//! - `sync`: group sync: concurrent writers share one `flush` + `fdatasync`.
//! - `ops`: put / get / delete / list (blocking core).
//! - `rotate`: key rotation: a new key version, re-encryption, retiring unused versions.
//! - `purge`: expiry, and the background task (purge interval, rotation requests).
//! - `audit`: where refusals and purges are journaled ([`CacheAudit`], [`JournalAudit`]).
//!
//! Every method of [`Cache`] blocks (sled, fsync, secure element): call it from
//! `spawn_blocking`. [`spawn_background`] is the async part.

mod audit;
mod config;
mod guard;
mod ops;
mod purge;
mod record;
mod rotate;
mod store;
mod sync;

use std::path::PathBuf;
use std::sync::Arc;

pub use audit::{CacheAudit, JournalAudit, NoAudit};
pub use config::CacheConfig;
pub use guard::{find_card_number, luhn_valid};
pub use ops::{ListEntry, Stored};
pub use purge::spawn_background;
pub use record::{RecordId, RecordIdError};
pub use rotate::RotationReport;

use crate::datakey::{DataKeyError, Keyring};

/// What can go wrong in the cache. Errors about one record name it; ids are not secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The id is not 1–128 bytes of printable ASCII.
    #[error("bad record id: {0}")]
    BadId(#[from] RecordIdError),
    /// The value (or the id) holds what looks like a card number; nothing was stored.
    #[error("refused: the record holds what looks like a card number (never stored)")]
    CardData,
    /// Storing this would take the cache over its size bound.
    #[error("the cache is full: {used} of {max} bytes used, this record needs {needed}")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The bound.
        max: u64,
        /// Bytes the record would take.
        needed: u64,
    },
    /// The value is larger than one record may be.
    #[error("the value has {size} bytes; a record holds at most {max}")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A retention of zero or above the configured maximum.
    #[error("retention of {asked} s is not within 1..={max} s")]
    BadRetention {
        /// What was asked.
        asked: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The record is a tombstone: it does not exist or has expired.
    #[error("no record {0:?}")]
    NotFound(String),
    /// The record is stored but does not decrypt: tampered, truncated, copied from another id,
    /// or its key version is gone.
    #[error("record {id:?} is unreadable: {why}")]
    Unreadable {
        /// The record.
        id: String,
        /// What failed (no secret in it).
        why: &'static str,
    },
    /// The database failed.
    #[error("cache database ({context}): {source}")]
    Db {
        /// What we were doing.
        context: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A file operation failed.
    #[error("cache {action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data key could not be used or rotated.
    #[error("cache data key: {0}")]
    Key(#[from] DataKeyError),
    /// An earlier fsync failed: what was written since may not be durable.
    #[error("the cache could not make its writes durable (an fsync failed; see the log)")]
    SyncFailed,
    /// The store's anchor could not be read or made.
    #[error("cache: {0}")]
    Anchor(#[source] crate::anchor::AnchorError),
}

impl CacheError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sled::Error) -> CacheError {
        move |source| CacheError::Db { context, source }
    }
}

/// The transaction cache. Cheap to clone; clones share one database.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CacheConfig,
    store: store::Store,
    keyring: Keyring,
    audit: Arc<dyn CacheAudit>,
    /// The database found unreadable at start and moved aside, if it was.
    recovered: Option<crate::storeguard::MovedAside>,
    /// Wakes the background task when a rotation asks for re-encryption.
    rotation_wanted: tokio::sync::Notify,
}

impl Cache {
    /// Opens (creating) the cache at `config.dir` with the keys of `keyring`. Blocking.
    ///
    /// Warns if the card-data guard is off: it is on unless the configuration says otherwise.
    pub fn open(
        config: &CacheConfig,
        keyring: Keyring,
        audit: Arc<dyn CacheAudit>,
    ) -> Result<Self, CacheError> {
        if !config.card_data_guard {
            tracing::warn!(
                "cache.card_data_guard = false: the transaction cache does NOT refuse card numbers"
            );
        }
        // A damaged database is moved aside untouched (its records stay there for an
        // investigator, sealed under the data key) and replaced by an empty one.
        let recovered = crate::storeguard::check_or_move_aside(
            &config.dir,
            crate::storeguard::StoreKind::Cache,
            |copy| {
                store::Store::open(copy, config.page_cache_bytes)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        )
        .map_err(|source| CacheError::Io {
            action: "move aside",
            path: config.dir.clone(),
            source,
        })?;
        let store = store::Store::open(&config.dir, config.page_cache_bytes)?;
        Ok(Cache {
            inner: Arc::new(Inner {
                config: config.clone(),
                recovered,
                store,
                keyring,
                audit,
                rotation_wanted: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The database found unreadable at start and moved aside, if it was.
    pub fn recovered(&self) -> Option<&crate::storeguard::MovedAside> {
        self.inner.recovered.as_ref()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The cache store's anchor (instance id, write generation), for the journal's check.
    pub fn anchor(&self) -> Arc<crate::anchor::AnchorCell> {
        self.inner.store.anchor()
    }

    /// Makes the cache durable now, with its anchor and the journal head it records.
    /// Blocking (fsync).
    pub fn sync_anchor(&self) -> Result<(), CacheError> {
        self.inner.store.durable()
    }

    /// Bytes counted against `max_bytes` (ids and stored values).
    pub fn used_bytes(&self) -> u64 {
        self.inner.store.used()
    }

    /// The data key versions held, oldest first.
    pub fn key_versions(&self) -> Vec<u32> {
        self.inner.keyring.versions()
    }
}
