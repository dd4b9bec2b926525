//! Test support: a real software TPM (swtpm) per test. [`Swtpm::start`] picks free loopback
//! ports, starts swtpm as a child process with a fresh state directory, and polls until it
//! accepts connections; dropping it kills the child. Restarting on the same state directory
//! models a terminal reboot: persistent keys and NV counters survive.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::SecureElementConfig;

/// How long swtpm may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running swtpm. Killed on drop; its state directory lives as long as this value (or the
/// [`tempfile::TempDir`] the caller passed in).
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    port: u16,
    state_dir: PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
}

/// Why swtpm could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    /// The binary is missing.
    #[error("swtpm is not installed (apt-get install swtpm swtpm-tools): {0}")]
    NotInstalled(std::io::Error),
    /// It did not come up.
    #[error("swtpm did not start: {0}")]
    Start(String),
}

fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").ok()?;
        let port = a.local_addr().ok()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return Some(port);
        }
    }
    None
}

impl Swtpm {
    /// Starts a fresh swtpm with an empty state directory of its own.
    pub fn start() -> Result<Self, SwtpmError> {
        let dir = tempfile::Builder::new()
            .prefix("posguard-swtpm-")
            .tempdir()
            .map_err(|e| SwtpmError::Start(format!("temp dir: {e}")))?;
        let path = dir.path().to_path_buf();
        let mut s = Self::start_in(&path)?;
        s._owned_dir = Some(dir);
        Ok(s)
    }

    /// Starts swtpm on an existing state directory (a "reboot" of the same TPM).
    pub fn start_in(state_dir: &Path) -> Result<Self, SwtpmError> {
        let mut last = String::new();
        // A port may be taken between our probe and swtpm's bind: try a few pairs.
        for _ in 0..5 {
            let port = free_port_pair().ok_or_else(|| SwtpmError::Start("no free port".into()))?;
            match Self::spawn(state_dir, port) {
                Ok(s) => return Ok(s),
                Err(SwtpmError::Start(msg)) => last = msg,
                Err(e) => return Err(e),
            }
        }
        Err(SwtpmError::Start(last))
    }

    fn spawn(state_dir: &Path, port: u16) -> Result<Self, SwtpmError> {
        let ctrl = port.saturating_add(1);
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", state_dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SwtpmError::NotInstalled(e),
                _ => SwtpmError::Start(e.to_string()),
            })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(SwtpmError::Start(format!("exited with {status}: {err}")));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Swtpm {
                    child,
                    port,
                    state_dir: state_dir.to_path_buf(),
                    _owned_dir: None,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SwtpmError::Start("not listening after 15 s".into()));
            }
            // Polling interval while waiting for the listener, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A TPM secure-element configuration pointing at this swtpm.
    pub fn config(&self) -> SecureElementConfig {
        SecureElementConfig::tpm(self.tcti())
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Kills swtpm and starts it again on the same state directory (new ports).
    pub fn restart(mut self) -> Result<Self, SwtpmError> {
        self.kill();
        let owned = self._owned_dir.take();
        let mut s = Self::start_in(&self.state_dir)?;
        s._owned_dir = owned;
        Ok(s)
    }

    /// Runs a tpm2-tools command against this swtpm. No client may hold the TPM meanwhile
    /// (swtpm serves one connection at a time).
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> std::io::Result<Output> {
        Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .stdin(Stdio::null())
            .output()
    }

    /// What the kernel's resource manager (`/dev/tpmrm0`) does when a process dies: flushes the
    /// transient objects and the loaded and saved sessions it left in the TPM. swtpm's socket has
    /// no resource manager, so a test that SIGKILLs a TPM client between a load and its flush
    /// must do this itself, or the TPM's few object slots fill up (`TPM_RC_OBJECT_MEMORY`,
    /// 0x902) — which a terminal behind `/dev/tpmrm0` never sees. No client may hold the TPM.
    pub fn flush_after_kill(&self) -> std::io::Result<()> {
        for what in ["-t", "-l", "-s"] {
            let out = self.tpm2("tpm2_flushcontext", &[what])?;
            if !out.status.success() {
                return Err(std::io::Error::other(format!(
                    "tpm2_flushcontext {what}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}
