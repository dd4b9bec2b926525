//! put / get / delete / list: the blocking core behind the `cache.*` API methods.

use std::ops::Bound;

use posguard_proto::event::{CacheRefusal, EventKind, PeerCred};
use zeroize::Zeroizing;

use super::config::MAX_VALUE_BYTES;
use super::record::{Header, RecordId, aad, plain_size};
use super::store::entry_size;
use super::{Cache, CacheError, guard};
use crate::clock::Clock;
use crate::walk::{walk, walk_all};

/// A record read back. `Debug` shows the size, never the bytes.
pub struct Stored {
    /// The plaintext, zeroized on drop.
    pub value: Zeroizing<Vec<u8>>,
    /// When it expires (unix milliseconds, UTC).
    pub expires_unix_ms: u64,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("len", &self.value.len())
            .field("expires_unix_ms", &self.expires_unix_ms)
            .finish()
    }
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListEntry {
    /// The record id.
    pub id: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// When it expires (unix milliseconds, UTC).
    pub expires_unix_ms: u64,
}

impl Cache {
    /// [`Cache::put_as`] without a peer.
    pub fn put(
        &self,
        id: &RecordId,
        value: &[u8],
        retention_secs: Option<u64>,
    ) -> Result<u64, CacheError> {
        self.put_as(None, id, value, retention_secs)
    }

    /// Stores `value` under `id` (replacing any record there) for `retention_secs` (default
    /// from the configuration); returns its expiry in unix ms once the record is durable.
    /// Refused with [`CacheError::CardData`] (and journaled, with `peer`) when the value or the
    /// id holds a card number and the guard is on.
    pub fn put_as(
        &self,
        peer: Option<PeerCred>,
        id: &RecordId,
        value: &[u8],
        retention_secs: Option<u64>,
    ) -> Result<u64, CacheError> {
        let inner = &self.inner;
        if value.len() > MAX_VALUE_BYTES {
            return Err(CacheError::TooLarge {
                size: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        let retention = inner.config.retention(retention_secs)?;
        if inner.config.card_data_guard
            && (guard::find_card_number(value).is_some()
                || guard::find_card_number(id.as_str().as_bytes()).is_some())
        {
            let kind = EventKind::CacheRecordRefused {
                reason: CacheRefusal::CardData,
            };
            if let Err(e) = inner.audit.record(kind, peer) {
                tracing::error!(error = %e, "cache: journaling a card-data refusal failed");
            }
            return Err(CacheError::CardData);
        }
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let expires_unix_ms = Clock::wall_ms().saturating_add(retention_ms);
        let (version, mut stored) = self.seal(id, value, expires_unix_ms)?;
        {
            let mut used = inner.store.writer();
            // A rotation may have retired the key we sealed with (it does so holding this lock,
            // after a pass found no record using it): seal again with the current one.
            if inner.keyring.get(version).is_none() {
                stored = self.seal(id, value, expires_unix_ms)?.1;
            }
            let old = inner
                .store
                .records
                .get(id.as_str())
                .map_err(CacheError::db("read"))?
                .map_or(0, |v| entry_size(id.as_str().len(), v.len()));
            let needed = entry_size(id.as_str().len(), stored.len());
            let after = used.saturating_sub(old).saturating_add(needed);
            if after > inner.config.max_bytes {
                return Err(CacheError::Full {
                    used: *used,
                    max: inner.config.max_bytes,
                    needed,
                });
            }
            inner
                .store
                .records
                .insert(id.as_str(), stored)
                .map_err(CacheError::db("insert"))?;
            *used = after;
        }
        inner.store.durable()?;
        Ok(expires_unix_ms)
    }

    /// Seals `value` for `id` with the current key: (key version, stored bytes).
    pub(crate) fn seal(
        &self,
        id: &RecordId,
        value: &[u8],
        expires_unix_ms: u64,
    ) -> Result<(u32, Vec<u8>), CacheError> {
        let (key_version, key) = self.inner.keyring.current()?;
        let header = Header {
            key_version,
            expires_unix_ms,
        }
        .encode();
        let sealed = key.seal_value(&aad(id, &header), value)?;
        let mut stored = Vec::with_capacity(header.len().saturating_add(sealed.len()));
        stored.extend_from_slice(&header);
        stored.extend_from_slice(&sealed);
        Ok((key_version, stored))
    }

    /// Opens a stored value of `id`: its header and plaintext.
    pub(crate) fn open_stored(
        &self,
        id: &RecordId,
        stored: &[u8],
    ) -> Result<(Header, Zeroizing<Vec<u8>>), CacheError> {
        let unreadable = |why| CacheError::Unreadable {
            id: id.to_string(),
            why,
        };
        let (header, raw_header, body) =
            Header::decode(stored).ok_or_else(|| unreadable("bad header"))?;
        let key = self
            .inner
            .keyring
            .get(header.key_version)
            .ok_or_else(|| unreadable("its key version is gone"))?;
        let plain = key
            .open_value(&aad(id, raw_header), body)
            .map_err(|_| unreadable("does not decrypt: tampered, or stored under another id"))?;
        Ok((header, plain))
    }

    /// The record `id`, unless absent or expired.
    pub fn get(&self, id: &RecordId) -> Result<Stored, CacheError> {
        // Two tries: a record read just before a rotation re-encrypted it and retired its key
        // is read again under the new key.
        let mut tries = 0;
        loop {
            let stored = self
                .inner
                .store
                .records
                .get(id.as_str())
                .map_err(CacheError::db("read"))?
                .ok_or_else(|| CacheError::NotFound(id.to_string()))?;
            match self.open_stored(id, &stored) {
                Ok((header, _)) if header.expires_unix_ms <= Clock::wall_ms() => {
                    return Err(CacheError::NotFound(id.to_string()));
                }
                Ok((header, value)) => {
                    return Ok(Stored {
                        value,
                        expires_unix_ms: header.expires_unix_ms,
                    });
                }
                Err(e) if tries > 0 => return Err(e),
                Err(_) => tries += 1,
            }
        }
    }

    /// Deletes `id`; whether it was there. Durable when it returns.
    pub fn delete(&self, id: &RecordId) -> Result<bool, CacheError> {
        let removed = {
            let mut used = self.inner.store.writer();
            let old = self
                .inner
                .store
                .records
                .remove(id.as_str())
                .map_err(CacheError::db("remove"))?;
            if let Some(old) = &old {
                *used = used.saturating_sub(entry_size(id.as_str().len(), old.len()));
            }
            old.is_some()
        };
        if removed {
            self.inner.store.durable()?;
        }
        Ok(removed)
    }

    /// Up to `limit` unexpired records with ids after `after` (all when `None`), in id order.
    pub fn list(
        &self,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<Vec<ListEntry>, CacheError> {
        let now = Clock::wall_ms();
        let records = &self.inner.store.records;
        let iter = match after {
            Some(a) => walk(
                records,
                Bound::Excluded(a.as_str().as_bytes()),
                Bound::Unbounded,
            ),
            None => walk_all(records),
        };
        let mut out = Vec::new();
        for entry in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(CacheError::db("scan"))?;
            let (Ok(id), Some((header, _, _))) = (RecordId::from_key(&key), Header::decode(&value))
            else {
                tracing::warn!("cache: a stored record has a bad id or header; skipped");
                continue;
            };
            if header.expires_unix_ms <= now {
                continue;
            }
            out.push(ListEntry {
                id: id.as_str().to_owned(),
                size: plain_size(value.len()),
                expires_unix_ms: header.expires_unix_ms,
            });
        }
        Ok(out)
    }
}
