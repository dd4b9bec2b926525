//! Binding the socket and accepting connections, at most `max_connections` at once and at most
//! `max_connections_per_process` from one client process (uid and pid): beyond that a connection
//! is answered `busy` and closed, so a flood cannot starve the till, and one process cannot
//! take every slot from the others.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use posguard_proto::local_api::{ApiError, ErrorCode, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Ctx, conn};

/// Binds the socket at `path` with `mode`, replacing a stale socket left by a previous run.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Connections held per client process.
type Holdings = Arc<Mutex<HashMap<(u32, u32), usize>>>;

/// One connection counted against its process; uncounted on drop.
struct Held {
    holdings: Holdings,
    key: (u32, u32),
}

impl Held {
    /// Counts a connection of `key`, unless the process already holds `limit`.
    fn take(holdings: &Holdings, key: (u32, u32), limit: usize) -> Option<Held> {
        let mut map = holdings.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(key).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count = count.saturating_add(1);
        Some(Held {
            holdings: holdings.clone(),
            key,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.holdings.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Answers `busy` with `message` and closes, without reading.
fn refuse(tracker: &TaskTracker, mut stream: tokio::net::UnixStream, message: &'static str) {
    tracker.spawn(async move {
        let busy = Response::err(None, ApiError::new(ErrorCode::Busy, message));
        let mut line = serde_json::to_vec(&busy).unwrap_or_default();
        line.push(b'\n');
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&line)).await;
    });
}

/// Serves until `shutdown` is cancelled, then waits for open connections to finish their
/// current request (they are told to stop between requests).
pub async fn serve(listener: UnixListener, ctx: Ctx, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(ctx.api.max_connections));
    let holdings = Holdings::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "local API accept failed");
                continue;
            }
        };
        // Without credentials the connection is closed by `conn::handle`; count it alone.
        let key = stream
            .peer_cred()
            .map(|c| {
                (
                    c.uid(),
                    c.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                )
            })
            .unwrap_or((u32::MAX, 0));
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(
                &tracker,
                stream,
                "the agent is at its connection limit ([api] max_connections); retry in a moment",
            );
            continue;
        };
        let Some(held) = Held::take(&holdings, key, ctx.api.max_connections_per_process) else {
            refuse(
                &tracker,
                stream,
                "this process holds its share of connections \
                 ([api] max_connections_per_process); close one or retry in a moment",
            );
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            conn::handle(stream, ctx, shutdown).await;
            drop(held);
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}
