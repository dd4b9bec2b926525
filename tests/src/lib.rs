//! posguard-e2e: whole-system tests. The tests under `tests/` start the real binaries of this
//! workspace (built by `cargo build --workspace --bins`, which `scripts/test.sh` runs first), a
//! real software TPM through the `posguard-hal` test harness, and a real collector.
//!
//! This library holds what those tests share: finding the binaries.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

/// The path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
///
/// # Panics
/// If the binary has not been built: run `cargo build --workspace --bins` first.
#[allow(clippy::expect_used, clippy::panic)]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    if !path.exists() {
        panic!(
            "{} is not built; run `cargo build --workspace --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    path
}

/// A `Command` for a workspace binary with a clean, quiet environment.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("RUST_LOG");
    c
}

/// A running `posguard-agent run`, stopped with SIGTERM (or killed) on drop.
#[derive(Debug)]
pub struct AgentProcess {
    child: std::process::Child,
    /// Its local API socket.
    pub socket: PathBuf,
}

impl AgentProcess {
    /// Starts the agent with `config` and waits (polling, at most 20 s) until its socket
    /// accepts connections.
    ///
    /// # Panics
    /// If it exits or does not come up.
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn start(config: &std::path::Path, socket: &std::path::Path) -> Self {
        let child = command("posguard-agent")
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start posguard-agent");
        let mut agent = AgentProcess {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("posguard-agent exited during start: {status}");
            }
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return agent;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "posguard-agent did not open {} within 20 s",
                    socket.display()
                );
            }
            // Polling interval while waiting for the socket, not a synchronisation sleep.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    ///
    /// # Panics
    /// If `kill` cannot be run.
    #[allow(clippy::expect_used)]
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        self.child.wait().expect("wait for posguard-agent")
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
