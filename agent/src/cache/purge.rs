//! Expiry: the purge, and the background task that runs it on an interval and re-encrypts
//! after a rotation (and once at start, finishing any rotation a crash interrupted).

use posguard_proto::event::EventKind;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::record::Header;
use super::store::entry_size;
use super::{Cache, CacheError};
use crate::clock::Clock;
use crate::walk::walk_all;

impl Cache {
    /// Removes every expired record; journals the counts (`CachePurged`) when any went.
    /// Returns (purged, remaining). Blocking.
    pub fn purge_expired(&self) -> Result<(u64, u64), CacheError> {
        let inner = &self.inner;
        let now = Clock::wall_ms();
        let (mut purged, mut remaining) = (0u64, 0u64);
        for entry in walk_all(&inner.store.records) {
            let (key, value) = entry.map_err(CacheError::db("scan"))?;
            let expired = Header::decode(&value).is_some_and(|(h, _, _)| h.expires_unix_ms <= now);
            if !expired {
                remaining = remaining.saturating_add(1);
                continue;
            }
            let mut used = inner.store.writer();
            // Only if unchanged: a put may have renewed it since the scan read it.
            let swapped = inner
                .store
                .records
                .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)
                .map_err(CacheError::db("remove"))?;
            if swapped.is_ok() {
                *used = used.saturating_sub(entry_size(key.len(), value.len()));
                purged = purged.saturating_add(1);
            } else {
                remaining = remaining.saturating_add(1);
            }
        }
        if purged > 0 {
            inner.store.durable()?;
            tracing::info!(purged, remaining, "cache: expired records purged");
            if let Err(e) = inner
                .audit
                .record(EventKind::CachePurged { purged, remaining }, None)
            {
                tracing::error!(error = %e, "cache: journaling a purge failed");
            }
        }
        Ok((purged, remaining))
    }
}

/// Runs the cache's background work until `stop` is cancelled: a purge every
/// `purge_interval_secs`, a re-encryption pass at start and after every rotation. Blocking
/// steps run on the blocking pool; a pass in progress stops at the next record on `stop`.
pub fn spawn_background(cache: Cache, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cache.config().purge_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // First round: finish any interrupted rotation.
        let mut reencrypt = true;
        loop {
            if reencrypt {
                reencrypt = false;
                let (c, s) = (cache.clone(), stop.clone());
                match tokio::task::spawn_blocking(move || c.reencrypt_until(&s)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cache: re-encryption failed"),
                    Err(e) => tracing::error!(error = %e, "cache: re-encryption task failed"),
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = cache.rotation_wanted() => reencrypt = true,
                _ = tick.tick() => {
                    let c = cache.clone();
                    match tokio::task::spawn_blocking(move || c.purge_expired()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "cache: purge failed"),
                        Err(e) => tracing::error!(error = %e, "cache: purge task failed"),
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use posguard_hal::SecureElementConfig;
    use posguard_proto::event::PeerCred;

    use super::*;
    use crate::cache::{CacheAudit, CacheConfig, RecordId};
    use crate::datakey::Keyring;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<EventKind>>);

    impl CacheAudit for Recorder {
        fn record(&self, kind: EventKind, _peer: Option<PeerCred>) -> Result<(), String> {
            self.0.lock().unwrap().push(kind);
            Ok(())
        }
    }

    #[test]
    fn expired_records_are_gone_and_purges_audited_with_counts() {
        let dir = tempfile::tempdir().unwrap();
        let se =
            posguard_hal::open(&SecureElementConfig::software(dir.path().join("keys"))).unwrap();
        let keyring = Keyring::open(se, dir.path()).unwrap();
        let audit = Arc::new(Recorder::default());
        let cache = Cache::open(
            &CacheConfig::at(dir.path().join("cache")),
            keyring,
            audit.clone(),
        )
        .unwrap();
        let live = RecordId::new("live").unwrap();
        cache.put(&live, b"keep", None).unwrap();
        for name in ["old-1", "old-2"] {
            // Expired a second ago: sealed and stored as a put would, with a past expiry.
            let id = RecordId::new(name).unwrap();
            let (_, stored) = cache.seal(&id, b"stale", Clock::wall_ms() - 1000).unwrap();
            cache.inner.store.records.insert(name, stored).unwrap();
        }
        let old = RecordId::new("old-1").unwrap();
        assert!(matches!(cache.get(&old), Err(CacheError::NotFound(_))));
        assert_eq!(cache.list(None, 10).unwrap().len(), 1);
        assert_eq!(cache.purge_expired().unwrap(), (2, 1));
        assert_eq!(cache.purge_expired().unwrap(), (0, 1));
        assert_eq!(
            *audit.0.lock().unwrap(),
            vec![EventKind::CachePurged {
                purged: 2,
                remaining: 1
            }]
        );
        assert_eq!(&cache.get(&live).unwrap().value[..], b"keep");
    }

    #[tokio::test]
    async fn background_task_stops_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let se =
            posguard_hal::open(&SecureElementConfig::software(dir.path().join("keys"))).unwrap();
        let keyring = Keyring::open(se, dir.path()).unwrap();
        let cache = Cache::open(
            &CacheConfig::at(dir.path().join("cache")),
            keyring,
            Arc::new(Recorder::default()),
        )
        .unwrap();
        let stop = CancellationToken::new();
        let task = spawn_background(cache, stop.clone());
        stop.cancel();
        task.await.unwrap();
    }
}
