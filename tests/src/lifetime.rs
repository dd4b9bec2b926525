//! Support for the field-lifetime test (`tests/tests/lifetime.rs`) and its soak run
//! (`scripts/soak-lifetime.sh`): a fleet PKI whose device certificates have short lifetimes, a
//! shifted wall clock for the real binaries through libfaketime (monotonic clocks untouched), a
//! collector whose clock follows a file, agent processes that can be killed at any moment, and
//! POS clients that remember every event the agent acknowledged.
// Test support: a failure to set up is a test failure. Indexing is serde_json's `Value[..]`,
// which answers `Null` for what is missing and never panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// libfaketime's preload library for multi-threaded programs (the agent and the collector run
/// tokio; the plain variant shares its state between threads without locks), wherever Debian
/// put it for this architecture.
///
/// # Panics
/// If the `faketime` package is not installed (scripts/lib/common.sh installs it).
pub fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("libfaketime is not installed: apt-get install faketime (scripts/test.sh does)")
    })
}

/// A libfaketime offset in seconds (`+N` or `-N`).
pub fn offset_spec(offset_secs: i64) -> String {
    if offset_secs < 0 {
        format!("-{}", offset_secs.unsigned_abs())
    } else {
        format!("+{offset_secs}")
    }
}

/// The environment that shifts a process's wall clock by `offset_secs`. CLOCK_MONOTONIC and
/// CLOCK_BOOTTIME stay real: tokio's timers and the agent's session clock must not jump.
pub fn faketime_env(offset_secs: i64) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), libfaketime().display().to_string()),
        ("FAKETIME".into(), offset_spec(offset_secs)),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// The agent's environment on a day whose clock is `offset_secs` ahead: the unit's, shifted.
pub fn agent_env(offset_secs: i64) -> Vec<(String, String)> {
    let mut env = unit_env();
    env.extend(faketime_env(offset_secs));
    env
}

/// The `Environment=` lines of `systemd/posguard-agent.service` (the allocator settings the
/// memory bound was measured with), read from the unit itself so that the test runs the agent
/// as deployed.
pub fn unit_env() -> Vec<(String, String)> {
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/posguard-agent.service"
    );
    let text = std::fs::read_to_string(unit).unwrap();
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(!env.is_empty(), "no Environment= line in {unit}");
    env
}

/// Seconds since the Unix epoch on this host's (real) clock.
pub fn real_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fleet PKI written to files: the CA (key too, so that the collector can renew device
/// certificates), the collector's server certificate for `localhost` (valid 1975–4096, so that
/// a terminal whose clock is years off still trusts it), and device certificates with a chosen
/// validity.
pub struct Pki {
    /// Where the PEM files are: `fleet-ca.pem`, `fleet-ca.key`, `server.pem`, `server.key`.
    pub dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Pki {
    /// A new CA and server certificate.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "posguard lifetime fleet CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("fleet-ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("fleet-ca.key"), key.serialize_pem()).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Pki { dir, issuer }
    }

    /// Path of a file of the PKI.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for the identity key of `element`, naming device `id`, valid from
    /// `not_before` for `days` (Unix seconds), written as PEM to `out`.
    pub fn device_cert(
        &self,
        element: Arc<dyn posguard_hal::SecureElement>,
        id: &str,
        not_before: i64,
        days: i64,
        out: &Path,
    ) {
        let key = posguard_hal::csr::IdentityCsrKey::new(element).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, id);
        params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("urn:posguard:device:{id}").try_into().unwrap(),
        )];
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after =
            time::OffsetDateTime::from_unix_timestamp(not_before + days * 86_400).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(out, cert.pem()).unwrap();
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A `posguard-collector serve` whose wall clock is real time plus the offset written in
/// `time_file` (re-read at every clock call), killed on drop.
#[derive(Debug)]
pub struct SimCollector {
    child: Option<Child>,
    /// Its configuration.
    pub config: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    time_file: PathBuf,
}

impl SimCollector {
    /// A collector not started yet; `time_file` holds its clock offset.
    pub fn new(config: &Path, port: u16, time_file: &Path) -> Self {
        SimCollector {
            child: None,
            config: config.to_path_buf(),
            port,
            time_file: time_file.to_path_buf(),
        }
    }

    /// Starts it (if down) and waits until it listens.
    pub fn start(&mut self) {
        if self.is_up() {
            return;
        }
        let child = crate::command("posguard-collector")
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "error")
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME_TIMESTAMP_FILE", &self.time_file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .spawn()
            .expect("start posguard-collector");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("posguard-collector exited during start: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "posguard-collector did not listen on {} within 20 s",
                self.port
            );
            // Polling interval while waiting for the listener, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (an outage, or the first half of a restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it runs.
    pub fn is_up(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for SimCollector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One run of `posguard-agent run`, with its clock shifted; killed on drop.
#[derive(Debug)]
pub struct AgentRun {
    child: Child,
    started: Instant,
}

impl AgentRun {
    /// Spawns the agent (does not wait for it).
    pub fn spawn(config: &Path, env: &[(String, String)]) -> Self {
        let child = crate::command("posguard-agent")
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .spawn()
            .expect("start posguard-agent");
        AgentRun {
            child,
            started: Instant::now(),
        }
    }

    /// Waits until `socket` accepts connections; the time it took, or why it never did.
    pub fn wait_ready(&mut self, socket: &Path, within: Duration) -> Result<Duration, String> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("posguard-agent exited during start: {status}"));
            }
            if UnixStream::connect(socket).is_ok() {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > within {
                return Err(format!(
                    "posguard-agent did not open its socket within {within:?}"
                ));
            }
            // Polling interval while waiting for the socket, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status (None if it did not exit within 30 s, then it is killed).
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            // Polling interval while waiting for the exit, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, `RssAnon:`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Runs `posguard-collector <args> --config <config>`: what it printed, or why it failed.
pub fn collector_try(config: &Path, args: &[&str]) -> Result<String, String> {
    let out = crate::command("posguard-collector")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .map_err(|e| format!("cannot run posguard-collector: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// One request on a fresh connection; `None` if the agent did not answer (killed, restarting).
pub fn call(socket: &Path, method: &str, params: Value) -> Option<Value> {
    let s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut w = s.try_clone().ok()?;
    let req = json!({"v": 1, "id": 1, "method": method, "params": params});
    w.write_all(format!("{req}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// An event the agent acknowledged: its seq and the reference the client put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The journal seq the agent answered.
    pub seq: u64,
    /// The unique reference sent.
    pub reference: String,
}

/// POS traffic: `clients` connections at once, each sending up to `per_client`
/// `audit.record` calls (a sale with a unique reference) until `stop` is set or the agent goes
/// away. Returns every event the agent acknowledged (answered `ok` with a seq), and the
/// refusals (answers that were not `ok`), which the caller counts as findings.
pub fn pos_traffic(
    socket: &Path,
    clients: u64,
    per_client: u64,
    tag: &str,
    stop: &Arc<AtomicBool>,
) -> (Vec<Acked>, Vec<String>) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (socket, tag, stop) = (socket.to_path_buf(), tag.to_owned(), stop.clone());
            std::thread::spawn(move || client(&socket, c, per_client, &tag, &stop))
        })
        .collect();
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for t in threads {
        let (a, r) = t.join().unwrap_or_default();
        acked.extend(a);
        refused.extend(r);
    }
    (acked, refused)
}

fn client(
    socket: &Path,
    c: u64,
    per_client: u64,
    tag: &str,
    stop: &AtomicBool,
) -> (Vec<Acked>, Vec<String>) {
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let Ok(s) = UnixStream::connect(socket) else {
        return (acked, refused);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = s.try_clone() else {
        return (acked, refused);
    };
    let mut r = BufReader::new(s);
    for i in 0..per_client {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let reference = format!("{tag}-c{c}-n{i}");
        let req = json!({"v": 1, "id": i, "method": "audit.record", "params": {"action": "sale",
            "amount_minor": 100 + i, "currency": "EUR", "reference": reference}});
        if w.write_all(format!("{req}\n").as_bytes()).is_err() {
            break;
        }
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => break, // the agent went away: this event was not acknowledged
        }
        let answer: Value = serde_json::from_str(&line).unwrap_or_default();
        match answer["result"]["seq"].as_u64() {
            Some(seq) if answer["ok"] == true => acked.push(Acked { seq, reference }),
            _ => refused.push(line.trim().to_owned()),
        }
    }
    (acked, refused)
}
