//! The one thread that owns the store. Async callers send it closures and await the answer,
//! so blocking SQLite work (and its fsyncs) never runs on the reactor.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Store, StoreError, StoreTx};

type Job = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// One part of a group transaction (see [`StoreHandle::transact`]).
trait Part: Send {
    /// Runs the part in the group's transaction; false if it failed. May be called again after
    /// the transaction was rolled back (the group is then redone with savepoints).
    fn run(&mut self, tx: &mut dyn StoreTx) -> bool;
    /// Forgets the result of a run that was rolled back.
    fn forget(&mut self);
    /// Sends the caller its result, once the group has committed (`true`) or failed to.
    fn deliver(self: Box<Self>, committed: bool);
}

/// A part's closure, its last result and where the caller waits. The closure goes back to
/// the caller with the result, so what it owns (a whole batch of records) is freed on the
/// caller's thread, not on the store thread every transaction waits for.
struct Waiting<R, F> {
    f: F,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<(Result<R, StoreError>, F)>,
}

impl<R, F> Part for Waiting<R, F>
where
    R: Send + 'static,
    F: FnMut(&mut dyn StoreTx) -> Result<R, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &mut dyn StoreTx) -> bool {
        let result = (self.f)(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn forget(&mut self) {
        self.result = None;
    }

    fn deliver(self: Box<Self>, committed: bool) {
        let Waiting { f, result, reply } = *self;
        let result = match (committed, result) {
            (true, Some(r)) => r,
            (_, Some(Err(e))) => Err(e),
            (false, Some(Ok(_))) | (_, None) => Err(StoreError::NotCommitted),
        };
        // The caller may have gone away (timeout); then the answer is simply dropped.
        let _ = reply.send((result, f));
    }
}

enum Work {
    Job(Job),
    Part(Box<dyn Part>),
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
    /// transaction has committed durably, together with `f` itself (so that what it owns is
    /// dropped by the caller). Transactions waiting together are committed together (one fsync
    /// for the group); one that fails is rolled back alone, and its caller gets its error.
    ///
    /// `f` may run more than once: if a transaction of the group fails, the group is rolled
    /// back and run again with each transaction in its own savepoint. Only its effects in the
    /// store, undone by the rollback, may depend on being run.
    pub async fn transact<R, F>(&self, f: F) -> Result<(R, F), StoreError>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn StoreTx) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let part = Box::new(Waiting {
            f,
            result: None,
            reply,
        });
        self.tx
            .send(Work::Part(part))
            .map_err(|_| StoreError::Stopped)?;
        let (result, f) = answer.await.map_err(|_| StoreError::Stopped)?;
        result.map(|r| (r, f))
    }
}

/// Runs `parts` in one transaction and tells each the outcome.
///
/// Each part could run in a savepoint of its own, so that one failing is undone alone; but
/// SQLite then copies every page a part changes into a sub-journal first, which cost the
/// store thread about 40% of its time in `./scripts/bench.sh ingest`. A part fails only
/// when the store does (an I/O error, a full disk, a corrupt row), so the group runs without
/// savepoints, and only if a part fails is it rolled back and run again the careful way.
fn run_group(store: &mut dyn Store, mut parts: Vec<Box<dyn Part>>) {
    let all_at_once = store.transaction(&mut |tx| {
        for part in &mut parts {
            if !part.run(tx) {
                return Err(StoreError::PartRolledBack);
            }
        }
        Ok(())
    });
    let committed = match all_at_once {
        Ok(()) => true,
        // A lone part that failed: the error goes to its caller; nothing else to commit.
        Err(StoreError::PartRolledBack) if parts.len() == 1 => return deliver(parts, false),
        Err(_) if parts.len() > 1 => store
            .transaction(&mut |tx| {
                for part in &mut parts {
                    // What the first pass did was rolled back: a part that does not run again
                    // (its savepoint could not be opened) must not report that pass's result.
                    part.forget();
                    // A failed part has been rolled back to its savepoint; the others stand.
                    let _ = tx.savepoint(&mut |tx| {
                        if part.run(tx) {
                            Ok(())
                        } else {
                            Err(StoreError::PartRolledBack)
                        }
                    });
                }
                Ok(())
            })
            .is_ok(),
        Err(_) => false,
    };
    if !committed {
        tracing::error!(parts = parts.len(), "a group transaction did not commit");
    }
    deliver(parts, committed);
}

fn deliver(parts: Vec<Box<dyn Part>>, committed: bool) {
    for part in parts {
        part.deliver(committed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::DeviceRow;
    use crate::store::sqlite::SqliteStore;

    fn put(tx: &mut dyn StoreTx, id: &str) -> Result<(), StoreError> {
        tx.put_device(&DeviceRow::new(id, 1))
    }

    /// Holds the store thread until the returned sender is used, so that transactions sent
    /// meanwhile queue up as one group.
    fn hold(h: &StoreHandle) -> (std::sync::mpsc::Sender<()>, impl Future<Output = ()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = h.call(move |_| {
            let _ = held.recv();
            Ok(())
        });
        (release, async move { blocker.await.unwrap() })
    }

    async fn device_ids(h: &StoreHandle) -> Vec<String> {
        h.call(|s| s.devices())
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect()
    }

    #[tokio::test]
    async fn waiting_transactions_commit_together_and_a_failed_one_alone_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let h = StoreHandle::spawn(Box::new(SqliteStore::open(&db).unwrap())).unwrap();
        let (release, blocker) = hold(&h);
        let runs_a = std::sync::Arc::new(AtomicUsize::new(0));
        let runs_c = std::sync::Arc::new(AtomicUsize::new(0));
        let (ra_count, rc_count) = (runs_a.clone(), runs_c.clone());
        let a = h.transact(move |tx| {
            ra_count.fetch_add(1, Ordering::SeqCst);
            put(tx, "dev-a").map(|()| "a")
        });
        let bad = h.transact(|tx| {
            put(tx, "dev-bad")?;
            Err::<(), _>(StoreError::Corrupt("refused on purpose"))
        });
        let c = h.transact(move |tx| {
            rc_count.fetch_add(1, Ordering::SeqCst);
            put(tx, "dev-c").map(|()| "c")
        });
        let release_later = async {
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        };
        let ((), ra, rbad, rc, ()) = tokio::join!(blocker, a, bad, c, release_later);
        assert_eq!(ra.unwrap().0, "a");
        assert!(matches!(rbad, Err(StoreError::Corrupt(_))));
        assert_eq!(rc.unwrap().0, "c");
        // The group ran without savepoints up to the failure, was rolled back, and ran again
        // with one savepoint each: `a` twice, `c` (after the failure) once.
        assert_eq!(runs_a.load(Ordering::SeqCst), 2);
        assert_eq!(runs_c.load(Ordering::SeqCst), 1);
        assert_eq!(
            device_ids(&h).await,
            vec!["dev-a".to_owned(), "dev-c".to_owned()]
        );
        // What was committed is on disk for a fresh connection.
        let mut again = SqliteStore::open(&db).unwrap();
        assert_eq!(crate::store::Store::devices(&mut again).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_group_that_succeeds_runs_each_transaction_once() {
        let dir = tempfile::tempdir().unwrap();
        let h = StoreHandle::spawn(Box::new(
            SqliteStore::open(&dir.path().join("c.db")).unwrap(),
        ))
        .unwrap();
        let (release, blocker) = hold(&h);
        let runs = std::sync::Arc::new(AtomicUsize::new(0));
        let part = |id: &'static str| {
            let runs = runs.clone();
            h.transact(move |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                put(tx, id)
            })
        };
        let release_later = async {
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        };
        let ((), r1, r2, r3, ()) = tokio::join!(
            blocker,
            part("dev-1"),
            part("dev-2"),
            part("dev-3"),
            release_later
        );
        for r in [r1, r2, r3] {
            assert!(r.is_ok());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(device_ids(&h).await.len(), 3);
    }

    #[tokio::test]
    async fn a_lone_failed_transaction_gets_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let h = StoreHandle::spawn(Box::new(
            SqliteStore::open(&dir.path().join("c.db")).unwrap(),
        ))
        .unwrap();
        let r = h
            .transact(|tx| {
                put(tx, "dev-x")?;
                Err::<(), _>(StoreError::Corrupt("refused on purpose"))
            })
            .await;
        assert!(matches!(r, Err(StoreError::Corrupt(_))));
        assert!(device_ids(&h).await.is_empty());
    }
}
