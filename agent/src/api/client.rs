//! A small client for the local API, used by `posguardctl` and the tests.

use std::path::Path;
use std::time::Duration;

use posguard_proto::local_api::{ApiError, ErrorCode, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// What can go wrong calling the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot reach the agent at {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("connection to the agent failed: {0}")]
    Io(#[from] std::io::Error),
    /// The agent answered with something that is not a response.
    #[error("the agent sent an unreadable response: {0}")]
    Protocol(String),
    /// The agent refused the request.
    #[error("{}: {}", serde_json::to_value(.0.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(), .0.message)]
    Refused(ApiError),
}

impl ClientError {
    /// What the person at the terminal can do about it, when there is something.
    pub fn hint(&self) -> Option<&'static str> {
        let ClientError::Refused(error) = self else {
            return match self {
                // The socket's directory and the socket belong to the group posguard-pos: a
                // user outside it is refused by the kernel before the agent sees anything.
                ClientError::Connect { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    Some(
                        "this user may not open the agent's socket: add it to the group \
                         posguard-pos (usermod -aG posguard-pos USER, then log in again) and to \
                         [api] allowed_uids (docs/operations.md, \"Users and groups\")",
                    )
                }
                ClientError::Connect { .. } => {
                    Some("is posguard-agent running? (systemctl status posguard-agent)")
                }
                _ => None,
            };
        };
        match error.code {
            ErrorCode::Forbidden => Some(
                "run this as a user on the agent's [api] allowed_uids, or add the uid there \
                 (/etc/posguard/agent.toml) and restart the agent",
            ),
            ErrorCode::Busy => Some(
                "the agent is serving as many clients or logins as it allows; wait a moment \
                 and retry",
            ),
            _ => None,
        }
    }
}

/// One connection to the agent.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    timeout: Duration,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self::from_stream(stream))
    }

    /// A client on a connection the caller opened.
    pub fn from_stream(stream: UnixStream) -> Self {
        let (read, writer) = stream.into_split();
        Client {
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            timeout: Duration::from_secs(30),
        }
    }

    /// Calls `method` with `params`; the result on success.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let mut line =
            serde_json::to_vec(&json!({"v": 1, "id": id, "method": method, "params": params}))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        // A refused client (uid not allowed, connection limit) gets the agent's answer and the
        // close before the agent reads anything: the write may then fail (EPIPE) while the
        // answer waits to be read. The answer, if any, says more than the write error.
        let written = self.writer.write_all(&line).await;
        // After a failed write only an answer already sent is worth waiting for.
        let wait = if written.is_ok() {
            self.timeout
        } else {
            Duration::from_secs(1)
        };
        let mut answer = String::new();
        let read = tokio::time::timeout(wait, self.reader.read_line(&mut answer)).await;
        match (written, read) {
            (_, Ok(Ok(n))) if n > 0 => {}
            (Err(e), _) => return Err(ClientError::Io(e)),
            (Ok(()), Err(_)) => {
                return Err(ClientError::Protocol("no answer within 30 s".to_owned()));
            }
            (Ok(()), Ok(Err(e))) => return Err(ClientError::Io(e)),
            (Ok(()), Ok(Ok(_))) => {
                return Err(ClientError::Protocol(
                    "the agent closed the connection".to_owned(),
                ));
            }
        }
        let response: Response =
            serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match (response.ok, response.result, response.error) {
            (true, Some(result), _) => Ok(result),
            (false, _, Some(error)) => Err(ClientError::Refused(error)),
            _ => Err(ClientError::Protocol("neither result nor error".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClientError;

    fn connect_error(kind: std::io::ErrorKind) -> ClientError {
        ClientError::Connect {
            path: "/run/posguard/agent.sock".into(),
            source: std::io::Error::from(kind),
        }
    }

    #[test]
    fn a_socket_refused_by_its_mode_names_the_group_and_an_absent_one_the_agent() {
        let denied = connect_error(std::io::ErrorKind::PermissionDenied);
        assert!(
            denied.hint().is_some_and(|h| h.contains("posguard-pos")),
            "{denied:?}"
        );
        for kind in [
            std::io::ErrorKind::NotFound,
            std::io::ErrorKind::ConnectionRefused,
        ] {
            let e = connect_error(kind);
            assert!(e.hint().is_some_and(|h| h.contains("running")), "{e:?}");
        }
    }
}
