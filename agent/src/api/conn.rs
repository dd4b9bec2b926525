//! One local API connection. The peer's uid must be on the allow-list; lines are at most
//! `MAX_LINE` bytes; a connection idle (or stalled mid-line) past the timeout is closed. Every
//! request gets exactly one response line; a bad request never harms the connection's peers or
//! anything stored.

use std::time::Duration;

use posguard_proto::event::PeerCred;
use posguard_proto::local_api::{ApiError, ErrorCode, MAX_LINE, Response, parse_request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Peer, methods};

enum Line {
    Complete(Vec<u8>),
    TooLong,
    Closed,
}

/// Reads one line of at most `MAX_LINE` bytes without buffering more than that.
async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> std::io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                Line::Closed
            } else {
                Line::Complete(line)
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (
                available.get(..i).unwrap_or_default(),
                Some(i.saturating_add(1)),
            ),
            None => (available, None),
        };
        if line.len().saturating_add(chunk.len()) >= MAX_LINE {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(chunk);
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Line::Complete(line));
        }
    }
}

async fn send(
    stream: &mut (impl AsyncWriteExt + Unpin),
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(Duration::from_secs(5), stream.write_all(&line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client not reading"))?
}

pub(super) async fn handle(stream: UnixStream, ctx: Ctx, shutdown: CancellationToken) {
    let cred = match stream.peer_cred() {
        Ok(c) => PeerCred {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        },
        Err(e) => {
            tracing::warn!(error = %e, "local API: no peer credentials; closing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if !ctx.api.allowed_uids.contains(&cred.uid) {
        tracing::warn!(
            uid = cred.uid,
            pid = cred.pid,
            "local API: uid not on the allow-list"
        );
        let _ = send(
            &mut write,
            &Response::err(
                None,
                ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "uid {} may not use this API; add it to [api] allowed_uids in the \
                         agent's configuration and restart the agent, or call as an allowed user",
                        cred.uid
                    ),
                ),
            ),
        )
        .await;
        return;
    }
    let peer = Peer { cred };
    let mut reader = BufReader::new(read);
    let idle = Duration::from_secs(ctx.api.idle_timeout_secs);
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(idle, read_line(&mut reader)) => r,
        };
        let line = match next {
            Err(_) => return, // idle or stalled mid-line: close
            Ok(Err(_)) | Ok(Ok(Line::Closed)) => return,
            Ok(Ok(Line::TooLong)) => {
                let _ = send(
                    &mut write,
                    &Response::err(
                        None,
                        ApiError::new(
                            ErrorCode::LineTooLong,
                            format!("lines are limited to {MAX_LINE} bytes"),
                        ),
                    ),
                )
                .await;
                return; // the rest of the line cannot be told from the next request
            }
            Ok(Ok(Line::Complete(line))) => line,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = match parse_request(&line) {
            Ok(request) => methods::dispatch(&ctx, &peer, request).await,
            Err(response) => response,
        };
        if send(&mut write, &response).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut input: &[u8] = b"{\"a\":1}\nsecond";
        let mut r = BufReader::new(&mut input);
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::Complete(l) if l == b"{\"a\":1}"));
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::Complete(l) if l == b"second"));
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::Closed));
        let big = vec![b'x'; MAX_LINE + 10];
        let mut input: &[u8] = &big;
        let mut r = BufReader::new(&mut input);
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::TooLong));
    }
}
