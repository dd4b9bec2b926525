//! The one thread that owns the store. Async callers send it closures and await the answer,
//! so blocking SQLite work (and its fsyncs) never runs on the reactor.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Store, StoreError};

type Job = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// A cloneable handle to the store thread. The thread ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Moves `store` onto its own thread.
    pub fn spawn(mut store: Box<dyn Store>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("posguard-store".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(store.as_mut());
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
        self.tx.send(job).map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}
