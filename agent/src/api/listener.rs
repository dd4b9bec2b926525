//! Binding the socket and accepting connections, at most `max_connections` at once: beyond
//! that a connection is answered `busy` and closed, so a flood cannot starve the till.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

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

/// Serves until `shutdown` is cancelled, then waits for open connections to finish their
/// current request (they are told to stop between requests).
pub async fn serve(listener: UnixListener, ctx: Ctx, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(ctx.api.max_connections));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (mut stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "local API accept failed");
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    conn::handle(stream, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracker.spawn(async move {
                    let busy = Response::err(
                        None,
                        ApiError::new(
                            ErrorCode::Busy,
                            "the agent is at its connection limit ([api] max_connections); \
                             retry in a moment",
                        ),
                    );
                    let mut line = serde_json::to_vec(&busy).unwrap_or_default();
                    line.push(b'\n');
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        stream.write_all(&line),
                    )
                    .await;
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}
