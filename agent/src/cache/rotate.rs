//! Key rotation. Every record carries its key version, so rotation is crash-safe in three
//! steps, each of which may be interrupted by SIGKILL:
//!
//! 1. [`Cache::rotate_key`]: a new key version from the secure element's RNG; its sealed file is
//!    durable (fsync of file and directory) before any record is sealed with it.
//! 2. [`Cache::reencrypt`]: every record under an older version is opened and sealed again with
//!    the current one, replaced only if unchanged meanwhile; then everything is made durable.
//! 3. Still in [`Cache::reencrypt`], holding the writer lock (no put can land meanwhile): a scan
//!    finds the versions still in use, a sync makes that state durable, and only then are the
//!    unused old key files deleted. Version 1 ([`crate::datakey::KEYRING_SHARED_VERSION`]) is
//!    kept: it also protects the clerks' TOTP seeds.
//!
//! After a crash, the next [`Cache::reencrypt`] (the background task runs one at start) simply
//! finishes the work.

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use super::record::{Header, RecordId};
use super::store::entry_size;
use super::{Cache, CacheError};
use crate::walk::walk_all;

/// What a re-encryption pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The current key version.
    pub current: u32,
    /// Records sealed again with it.
    pub reencrypted: u64,
    /// Records under an old version that could not be opened (they keep their key alive).
    pub unreadable: u64,
    /// Key versions destroyed.
    pub retired: Vec<u32>,
    /// The pass stopped early (shutdown); the next one continues.
    pub interrupted: bool,
}

impl Cache {
    /// Makes a new data key version (durable before it is used) and wakes the background task
    /// to re-encrypt the records. Returns the new version. Blocking.
    ///
    /// Who may rotate is decided by the caller (the local API method checks the session).
    pub fn rotate_key(&self) -> Result<u32, CacheError> {
        let version = self.inner.keyring.rotate()?;
        tracing::info!(
            version,
            "cache: new data key version; re-encrypting in the background"
        );
        self.inner.rotation_wanted.notify_one();
        Ok(version)
    }

    /// [`Cache::reencrypt_until`] without a way to stop it.
    pub fn reencrypt(&self) -> Result<RotationReport, CacheError> {
        self.reencrypt_until(&CancellationToken::new())
    }

    /// Re-encrypts every record under an older key version, makes that durable, and retires
    /// the key versions no record uses any more. Safe at any time and after any crash.
    /// Blocking; checks `stop` between records.
    pub fn reencrypt_until(&self, stop: &CancellationToken) -> Result<RotationReport, CacheError> {
        let inner = &self.inner;
        let (current, _) = inner.keyring.current()?;
        let mut report = RotationReport {
            current,
            ..RotationReport::default()
        };
        if inner.keyring.versions().iter().all(|v| *v >= current) {
            return Ok(report);
        }
        for entry in walk_all(&inner.store.records) {
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let (key, value) = entry.map_err(CacheError::db("scan"))?;
            let (Ok(id), Some((header, _, _))) = (RecordId::from_key(&key), Header::decode(&value))
            else {
                report.unreadable = report.unreadable.saturating_add(1);
                continue;
            };
            if header.key_version >= current {
                continue;
            }
            let plain = match self.open_stored(&id, &value) {
                Ok((_, plain)) => plain,
                Err(e) => {
                    tracing::warn!(error = %e, "cache: a record under an old key cannot be re-encrypted");
                    report.unreadable = report.unreadable.saturating_add(1);
                    continue;
                }
            };
            let (_, fresh) = self.seal(&id, &plain, header.expires_unix_ms)?;
            let mut used = inner.store.writer();
            let now = inner
                .store
                .records
                .get(&key)
                .map_err(CacheError::db("read"))?;
            // Replaced or deleted meanwhile: the newer write stands.
            if now.as_deref() == Some(&value[..]) {
                inner
                    .store
                    .records
                    .insert(&key, fresh.as_slice())
                    .map_err(CacheError::db("insert"))?;
                *used = used
                    .saturating_sub(entry_size(key.len(), value.len()))
                    .saturating_add(entry_size(key.len(), fresh.len()));
                report.reencrypted = report.reencrypted.saturating_add(1);
            }
        }
        inner.store.durable()?;
        if !report.interrupted {
            report.retired = self.retire_unused(current)?;
        }
        tracing::info!(
            current = report.current,
            reencrypted = report.reencrypted,
            unreadable = report.unreadable,
            retired = ?report.retired,
            "cache: re-encryption pass"
        );
        Ok(report)
    }

    /// Destroys the key versions below `current` that no record uses, after a durable pass.
    fn retire_unused(&self, current: u32) -> Result<Vec<u32>, CacheError> {
        let inner = &self.inner;
        // Held throughout: no put or re-encryption can store a record meanwhile.
        let _writer = inner.store.writer();
        let mut in_use = BTreeSet::new();
        for entry in walk_all(&inner.store.records) {
            let (_, value) = entry.map_err(CacheError::db("scan"))?;
            match Header::decode(&value) {
                Some((header, _, _)) => in_use.insert(header.key_version),
                // A record whose version cannot be read might need any key: keep them all.
                None => return Ok(Vec::new()),
            };
        }
        // Everything scanned is durable before any key goes.
        inner.store.durable()?;
        let mut retired = Vec::new();
        for version in inner.keyring.versions() {
            if version < current && !in_use.contains(&version) && inner.keyring.retire(version)? {
                tracing::info!(
                    version,
                    "cache: data key version destroyed (no record uses it)"
                );
                retired.push(version);
            }
        }
        Ok(retired)
    }

    /// Resolves when [`Cache::rotate_key`] asks for re-encryption.
    pub(crate) async fn rotation_wanted(&self) {
        self.inner.rotation_wanted.notified().await;
    }
}
