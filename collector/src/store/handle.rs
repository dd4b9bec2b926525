//! The one thread that owns the store. Async callers send it closures and await the answer,
//! so blocking SQLite work (and its fsyncs) never runs on the reactor.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Store, StoreError, StoreTx};

type Job = Box<dyn FnOnce(&mut dyn Store) + Send>;
/// Called once the group a part ran in has committed (`true`) or failed to (`false`).
type Deliver = Box<dyn FnOnce(bool) + Send>;
/// One part of a group transaction: runs inside its own savepoint and says whether it
/// succeeded (a failed part is rolled back alone).
type Part = Box<dyn FnOnce(&mut dyn StoreTx) -> (bool, Deliver) + Send>;

enum Work {
    Job(Job),
    Part(Part),
}

/// Most parts committed together.
const MAX_GROUP: usize = 64;

/// A cloneable handle to the store thread. The thread ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Work>,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Work::Job(_) => "Job",
            Work::Part(_) => "Part",
        })
    }
}

impl StoreHandle {
    /// Moves `store` onto its own thread.
    pub fn spawn(mut store: Box<dyn Store>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("posguard-store".into())
            .spawn(move || {
                let mut next: Option<Work> = None;
                loop {
                    let work = match next.take() {
                        Some(w) => w,
                        None => match rx.recv() {
                            Ok(w) => w,
                            Err(_) => break,
                        },
                    };
                    match work {
                        Work::Job(job) => job(store.as_mut()),
                        Work::Part(first) => {
                            // Group commit: every part already waiting shares one commit (one
                            // fsync); a plain job met on the way runs after the group.
                            let mut parts = vec![first];
                            while parts.len() < MAX_GROUP {
                                match rx.try_recv() {
                                    Ok(Work::Part(p)) => parts.push(p),
                                    Ok(other) => {
                                        next = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            run_group(store.as_mut(), parts);
                        }
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` on the store thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            // The caller may have gone away (timeout); then the answer is simply dropped.
            let _ = reply.send(f(store));
        });
        self.tx
            .send(Work::Job(job))
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs `f` in a transaction on the store thread and returns its result once that
    /// transaction has committed durably. Transactions waiting together are committed together
    /// (one fsync for the group), each in its own savepoint: one that fails is rolled back
    /// alone, and its caller gets its error.
    pub async fn transact<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StoreTx) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let part: Part = Box::new(move |tx| {
            let result = f(tx);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |committed| {
                let _ = reply.send(match (committed, result) {
                    (true, r) => r,
                    (false, Err(e)) => Err(e),
                    (false, Ok(_)) => Err(StoreError::NotCommitted),
                });
            });
            (ok, deliver)
        });
        self.tx
            .send(Work::Part(part))
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

/// Runs `parts` in one transaction, each in its own savepoint, and tells each the outcome.
fn run_group(store: &mut dyn Store, parts: Vec<Part>) {
    let mut delivers: Vec<Deliver> = Vec::with_capacity(parts.len());
    let mut parts = parts.into_iter();
    let committed = store
        .transaction(&mut |tx| {
            for part in parts.by_ref() {
                let mut part = Some(part);
                // A failed part has been rolled back to its savepoint; the others stand.
                let _ = tx.savepoint(&mut |tx| {
                    let Some(p) = part.take() else {
                        return Ok(());
                    };
                    let (ok, deliver) = p(tx);
                    delivers.push(deliver);
                    if ok {
                        Ok(())
                    } else {
                        Err(StoreError::PartRolledBack)
                    }
                });
            }
            Ok(())
        })
        .is_ok();
    if !committed {
        tracing::error!(parts = delivers.len(), "a group transaction did not commit");
    }
    for deliver in delivers {
        deliver(committed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::DeviceRow;
    use crate::store::sqlite::SqliteStore;

    fn put(tx: &mut dyn StoreTx, id: &str) -> Result<(), StoreError> {
        tx.put_device(&DeviceRow::new(id, 1))
    }

    #[tokio::test]
    async fn waiting_transactions_commit_together_and_a_failed_one_alone_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let h = StoreHandle::spawn(Box::new(SqliteStore::open(&db).unwrap())).unwrap();
        // Hold the store thread so that the three transactions below queue up as one group.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = h.call(move |_| {
            let _ = held.recv();
            Ok(())
        });
        let a = h.transact(|tx| put(tx, "dev-a"));
        let bad = h.transact(|tx| {
            put(tx, "dev-bad")?;
            Err::<(), _>(StoreError::Corrupt("refused on purpose"))
        });
        let c = h.transact(|tx| put(tx, "dev-c"));
        let release_later = async {
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        };
        let (b, ra, rbad, rc, ()) = tokio::join!(blocker, a, bad, c, release_later);
        b.unwrap();
        ra.unwrap();
        assert!(matches!(rbad, Err(StoreError::Corrupt(_))));
        rc.unwrap();
        let ids: Vec<String> = h
            .call(|s| s.devices())
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert_eq!(ids, vec!["dev-a".to_owned(), "dev-c".to_owned()]);
        // What was committed is on disk for a fresh connection.
        let mut again = SqliteStore::open(&db).unwrap();
        assert_eq!(crate::store::Store::devices(&mut again).unwrap().len(), 2);
    }
}
