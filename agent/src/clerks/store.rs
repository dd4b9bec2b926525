//! What clerk authentication keeps on disk (a sled database of its own, `<state>/auth`): clerk
//! records with their Argon2id hashes and sealed TOTP seeds, throttle states, the terminal
//! failure budget and the lockdown flag. Every change is fsynced before it is acted on, so a
//! restart (or a reboot) unlocks nobody. Sessions are never stored: a restart revokes them all.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use posguard_proto::text::ClerkId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::anchor::AnchorCell;
use crate::auth::{ClerkRecord, ClerkThrottle, TerminalBudget};

/// A stored clerk (no secret in clear: the PIN/password only as its Argon2id hash, the TOTP seed
/// only encrypted under the data key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredClerk {
    pub(crate) record: ClerkRecord,
    pub(crate) phc: String,
    pub(crate) totp: Option<StoredTotp>,
}

/// A TOTP seed sealed under the data key, and the last accepted time step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredTotp {
    pub(crate) sealed_seed: Vec<u8>,
    pub(crate) last_step: Option<u64>,
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("auth database: {0}")]
    Db(#[from] sled::Error),
    /// fsync failed.
    #[error("auth database fsync {path}: {source}")]
    Sync {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Argon2id worker threads could not be started.
    #[error("cannot start the Argon2id workers: {0}")]
    Workers(#[source] std::io::Error),
    /// A stored value does not decode.
    #[error("auth database holds an unreadable {what}")]
    Corrupt {
        /// What.
        what: &'static str,
    },
    /// The store's anchor could not be read or made.
    #[error("auth database: {0}")]
    Anchor(#[from] crate::anchor::AnchorError),
}

pub(crate) struct AuthStore {
    db: sled::Db,
    clerks: sled::Tree,
    throttle: sled::Tree,
    meta: sled::Tree,
    data_file: File,
    dir: PathBuf,
    /// Instance id and write generation, recorded by the journal (see `crate::anchor`).
    anchor: Arc<AnchorCell>,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore").field("dir", &self.dir).finish()
    }
}

const BUDGET: &[u8] = b"budget";
const LOCKDOWN: &[u8] = b"lockdown";

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt { what })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl AuthStore {
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        crate::storeguard::drop_unfinished_snapshots(dir);
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(512 * 1024)
            .flush_every_ms(None)
            .open()?;
        let data_path = dir.join("db");
        let data_file = File::open(&data_path).map_err(|source| StoreError::Sync {
            path: data_path,
            source,
        })?;
        let meta = db.open_tree("meta")?;
        let anchor = Arc::new(AnchorCell::load_or_create(&meta)?);
        let store = AuthStore {
            clerks: db.open_tree("clerks")?,
            throttle: db.open_tree("throttle")?,
            meta,
            db,
            data_file,
            dir: dir.to_path_buf(),
            anchor,
        };
        store.sync()?;
        Ok(store)
    }

    /// The store's anchor, for the journal to check and record.
    pub(crate) fn anchor(&self) -> Arc<AnchorCell> {
        self.anchor.clone()
    }

    /// Opens the database at `dir` (a scratch copy) and decodes every stored value, as the
    /// agent does at start and at each login.
    pub(crate) fn check(dir: &Path) -> Result<(), StoreError> {
        let store = Self::open(dir)?;
        for id in store.clerk_ids()? {
            if let Some(v) = store.clerks.get(id.as_bytes())? {
                decode::<StoredClerk>(&v, "clerk record")?;
            }
        }
        store.all_throttles()?;
        store.budget()?;
        store.lockdown()?;
        Ok(())
    }

    /// Makes every change so far durable (flush + fdatasync), with the next write generation.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let generation = self.anchor.stage(&self.meta)?;
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(|source| StoreError::Sync {
                path: self.dir.join("db"),
                source,
            })?;
        self.anchor.published(generation);
        Ok(())
    }

    pub(crate) fn clerk(&self, id: &ClerkId) -> Result<Option<StoredClerk>, StoreError> {
        self.clerks
            .get(id.as_str())?
            .map(|v| decode(&v, "clerk record"))
            .transpose()
    }

    pub(crate) fn put_clerk(&self, id: &ClerkId, clerk: &StoredClerk) -> Result<(), StoreError> {
        self.clerks.insert(id.as_str(), encode(clerk))?;
        self.sync()
    }

    pub(crate) fn remove_clerk(&self, id: &ClerkId) -> Result<bool, StoreError> {
        let existed = self.clerks.remove(id.as_str())?.is_some();
        self.throttle.remove(id.as_str())?;
        self.sync()?;
        Ok(existed)
    }

    pub(crate) fn clerk_ids(&self) -> Result<Vec<String>, StoreError> {
        self.clerks
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(StoreError::from)
            })
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.clerks.is_empty()
    }

    pub(crate) fn throttle(&self, id: &ClerkId) -> Result<ClerkThrottle, StoreError> {
        Ok(self
            .throttle
            .get(id.as_str())?
            .map(|v| decode(&v, "throttle state"))
            .transpose()?
            .unwrap_or_default())
    }

    pub(crate) fn put_throttle(
        &self,
        id: &ClerkId,
        state: &ClerkThrottle,
    ) -> Result<(), StoreError> {
        self.throttle.insert(id.as_str(), encode(state))?;
        Ok(())
    }

    pub(crate) fn all_throttles(&self) -> Result<Vec<(String, ClerkThrottle)>, StoreError> {
        let mut out = Vec::new();
        for item in self.throttle.iter() {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode(&v, "throttle state")?,
            ));
        }
        Ok(out)
    }

    pub(crate) fn budget(&self) -> Result<TerminalBudget, StoreError> {
        Ok(self
            .meta
            .get(BUDGET)?
            .map(|v| decode(&v, "terminal budget"))
            .transpose()?
            .unwrap_or_default())
    }

    pub(crate) fn put_budget(&self, budget: &TerminalBudget) -> Result<(), StoreError> {
        self.meta.insert(BUDGET, encode(budget))?;
        Ok(())
    }

    pub(crate) fn lockdown(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(LOCKDOWN)?.is_some_and(|v| v.as_ref() == b"1"))
    }

    pub(crate) fn set_lockdown(&self, on: bool) -> Result<(), StoreError> {
        self.meta
            .insert(LOCKDOWN, if on { &b"1"[..] } else { &b"0"[..] })?;
        self.sync()
    }
}
