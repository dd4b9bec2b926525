//! Just enough of the agent's local API for provisioning (newline-delimited JSON over its Unix
//! socket): the provisioning tool does not link the agent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

/// `v` at a JSON pointer (`/a/b`), or null: reading never panics.
pub fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.pointer(pointer).unwrap_or(&NULL)
}

/// Calls `method` and returns its result, or the agent's error as an error.
pub fn call(socket: &Path, method: &str, params: Value) -> anyhow::Result<Value> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the agent at {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    // A refused caller (uid not allowed, connection limit) gets the agent's answer and the close
    // before the agent reads: the write may fail (EPIPE) with the answer waiting to be read.
    let written = writer.write_all(
        format!(
            "{}\n",
            json!({"v": 1, "id": 1, "method": method, "params": params})
        )
        .as_bytes(),
    );
    let mut line = String::new();
    let read = BufReader::new(stream).read_line(&mut line);
    match (written, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) => return Err(e).context("sending to the agent"),
        (Ok(()), Err(e)) => return Err(e).context("reading the agent's answer"),
        (Ok(()), Ok(_)) => return Err(anyhow!("the agent closed the connection")),
    }
    let response: Value = serde_json::from_str(&line).context("the agent's answer")?;
    if at(&response, "/ok") == true {
        Ok(at(&response, "/result").clone())
    } else {
        Err(anyhow!(
            "{}: {}",
            at(&response, "/error/code").as_str().unwrap_or("error"),
            at(&response, "/error/message").as_str().unwrap_or("")
        ))
    }
}

/// Waits until the agent answers `status` (at most `timeout`).
pub fn wait_ready(socket: &Path, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        match call(socket, "status", json!({})) {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("the agent did not come up"));
            }
            // Polling the agent's socket while it starts.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
