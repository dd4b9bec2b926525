//! posguard-e2e: whole-system tests. The tests under `tests/` start the real binaries of this
//! workspace (built by `cargo build --workspace --bins`, which `scripts/test.sh` runs first), a
//! real software TPM through the `posguard-hal` test harness, and a real collector.
//!
//! This library holds what those tests share: finding the binaries, running them, a fleet PKI;
//! [`lifetime`] holds what the field-lifetime test adds (shifted clocks, killable agents, POS
//! clients that remember what was acknowledged); [`central`] a collector with its own fleet CA
//! as operations run it, for the technician's paths.
#![forbid(unsafe_code)]

pub mod central;
pub mod lifetime;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub mod damage;
pub mod provision;
pub mod provision_agent;
pub mod provision_tpm;

/// The path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`), or in `POSGUARD_E2E_BIN_DIR`
/// when set (the soak runs debug test code against the optimised binaries in target/release).
///
/// A binary missing from the target directory is built first (`cargo build --workspace --bins`,
/// once per test process): `cargo test -p posguard-e2e` does not build other packages'
/// binaries. `scripts/test.sh` builds them before the tests, so that they are never stale.
///
/// # Panics
/// If the binary is missing and cannot be built: the message says what to run.
#[allow(clippy::expect_used, clippy::panic)]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin_dir = std::env::var_os("POSGUARD_E2E_BIN_DIR").map(PathBuf::from);
    let profile_dir = match &bin_dir {
        Some(dir) => dir.clone(),
        None => exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executable lives in target/<profile>/deps")
            .to_path_buf(),
    };
    let path = profile_dir.join(name);
    if !path.exists() && bin_dir.is_none() {
        build_bins(&profile_dir);
    }
    if !path.exists() {
        panic!(
            "{} is not built; run `cargo build --workspace --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    path
}

/// `cargo build --workspace --bins` into `profile_dir` (`target/<profile>`), at most once per
/// test process. Cargo has released its build lock by the time tests run.
#[allow(clippy::expect_used, clippy::panic)]
fn build_bins(profile_dir: &Path) {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    *built = true;
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    eprintln!("building the workspace's binaries ({profile} profile) for the end-to-end tests");
    let out = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&workspace)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    if !out.status.success() {
        panic!(
            "building the workspace's binaries failed ({}); run `cargo build --workspace --bins`:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
        Self::start_with_env(config, socket, &[])
    }

    /// [`AgentProcess::start`] with extra environment variables.
    ///
    /// # Panics
    /// If it exits or does not come up.
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn start_with_env(
        config: &std::path::Path,
        socket: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_within(config, socket, env, std::time::Duration::from_secs(20))
    }

    /// [`AgentProcess::start_with_env`], waiting at most `wait` for the socket.
    ///
    /// # Panics
    /// If it exits or does not come up.
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn start_within(
        config: &std::path::Path,
        socket: &std::path::Path,
        env: &[(&str, &str)],
        wait: std::time::Duration,
    ) -> Self {
        let child = command("posguard-agent")
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start posguard-agent");
        let mut agent = AgentProcess {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("posguard-agent exited during start: {status}");
            }
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return agent;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "posguard-agent did not open {} within {} s",
                    socket.display(),
                    wait.as_secs()
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// The agent's `status` result, asked over its local API.
///
/// # Panics
/// If the socket does not answer with a JSON line.
#[allow(clippy::expect_used)]
pub fn agent_status(socket: &std::path::Path) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let s = std::os::unix::net::UnixStream::connect(socket).expect("connect to the agent");
    let mut w = s.try_clone().expect("clone the socket");
    w.write_all(b"{\"v\":1,\"id\":1,\"method\":\"status\",\"params\":{}}\n")
        .expect("send status");
    let mut line = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut line)
        .expect("read status");
    let answer: serde_json::Value = serde_json::from_str(&line).expect("status is JSON");
    answer.get("result").cloned().unwrap_or_default()
}

/// Appends `clients × per_client` POS business events (`audit.record`, durable when answered)
/// through the agent's local API from `clients` connections at once, as a busy POS application
/// would. `tag` goes into each reference, so that rounds differ.
///
/// # Panics
/// If a call fails or is refused.
#[allow(clippy::expect_used, clippy::panic)]
pub fn append_business_events(socket: &std::path::Path, clients: u64, per_client: u64, tag: u64) {
    use std::io::{BufRead, Write};
    let threads: Vec<_> = (0..clients)
        .map(|p| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let s =
                    std::os::unix::net::UnixStream::connect(&socket).expect("connect to the agent");
                let mut w = s.try_clone().expect("clone the socket");
                let mut r = std::io::BufReader::new(s);
                for i in 0..per_client {
                    let req = serde_json::json!({"v": 1, "id": i, "method": "audit.record",
                        "params": {"action": "sale", "amount_minor": 1000 + i,
                        "currency": "EUR", "reference": format!("receipt t{tag} c{p} n{i}")}});
                    w.write_all(format!("{req}\n").as_bytes())
                        .expect("send audit.record");
                    let mut line = String::new();
                    r.read_line(&mut line).expect("read the answer");
                    assert!(line.contains("\"ok\":true"), "audit.record refused: {line}");
                }
            })
        })
        .collect();
    for t in threads {
        if t.join().is_err() {
            panic!("a client thread failed");
        }
    }
}

/// What [`Fleet::bench_terminal`] set up; the directory is removed on drop.
#[derive(Debug)]
pub struct BenchTerminal {
    /// The agent's configuration file.
    pub config: PathBuf,
    /// Its local API socket.
    pub socket: PathBuf,
    /// Its journal directory.
    pub journal: PathBuf,
    /// The directory holding all of it.
    pub dir: tempfile::TempDir,
}

/// A throwaway fleet PKI: the fleet CA, the collector's server certificate for `localhost`,
/// and device certificates for secure-element keys, written as PEM files in `dir`.
pub struct Fleet {
    /// Where the PEM files are.
    pub dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Fleet {
    /// A new CA named `name`, with `fleet-ca.pem`, `server.pem` and `server.key` written.
    ///
    /// # Panics
    /// On any I/O or rcgen failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("fleet-ca.pem"), cert.pem()).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Fleet { dir, issuer }
    }

    /// Path of a file in the fleet directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a device certificate for the identity key of `element` and writes it to `out`.
    ///
    /// # Panics
    /// On failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn device_cert(
        &self,
        element: std::sync::Arc<dyn posguard_hal::SecureElement>,
        id: &str,
        out: &std::path::Path,
    ) {
        let key = posguard_hal::csr::IdentityCsrKey::new(element).unwrap();
        let cert = device_params(id).signed_by(&key, &self.issuer).unwrap();
        std::fs::write(out, cert.pem()).unwrap();
    }

    /// A provisioned terminal for benchmarks: its identity key in `tpm` with a certificate for
    /// `id`, and an agent configuration in a fresh directory (journal bound `journal_max_bytes`,
    /// shipping to `127.0.0.1:collector_port` with a 1 s heartbeat and backoff cap; `extra`
    /// appended to the TOML).
    ///
    /// # Panics
    /// On failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn bench_terminal(
        &self,
        tpm: &posguard_hal::testing::Swtpm,
        id: &str,
        collector_port: u16,
        journal_max_bytes: u64,
        extra: &str,
    ) -> BenchTerminal {
        let se = posguard_hal::open(&tpm.config()).unwrap();
        se.ensure_identity_key(posguard_hal::KeyMode::OpenOrCreate)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("device.pem");
        self.device_cert(se, id, &cert);
        let t = BenchTerminal {
            socket: dir.path().join("agent.sock"),
            journal: dir.path().join("journal"),
            config: dir.path().join("agent.toml"),
            dir,
        };
        std::fs::write(
            &t.config,
            format!(
                "[device]\nid = \"{id}\"\n[secure_element]\ntcti = \"{}\"\n[journal]\n\
                 max_bytes = {journal_max_bytes}\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n\
                 [api]\nsocket = \"{}\"\n[uplink]\ncollector = \"127.0.0.1:{collector_port}\"\n\
                 server_name = \"localhost\"\nfleet_ca = \"{}\"\ncertificate = \"{}\"\n\
                 heartbeat_secs = 1\nbackoff_max_secs = 1\n{extra}",
                tpm.tcti(),
                t.journal.display(),
                t.dir.path().join("state").display(),
                t.socket.display(),
                self.path("fleet-ca.pem").display(),
                cert.display(),
            ),
        )
        .unwrap();
        t
    }

    /// A simulated device for load generators: a fresh software P-256 key and a certificate for
    /// it naming `urn:posguard:device:<id>`. Returns (certificate DER, key PKCS#8 DER).
    ///
    /// # Panics
    /// On failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn software_device(&self, id: &str) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = device_params(id).signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    /// Writes `collector.toml` in the fleet directory for a collector on `127.0.0.1:port` with
    /// this fleet's server certificate and CA and a store in the same directory, then `extra`
    /// (more top-level keys first, then tables). Returns its path.
    ///
    /// # Panics
    /// On an I/O failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn collector_config(&self, port: u16, extra: &str) -> PathBuf {
        let path = self.path("collector.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:{port}\"\nserver_cert = \"{}\"\nserver_key = \"{}\"\n\
                 fleet_ca = \"{}\"\nstore = \"{}\"\n{extra}",
                self.path("server.pem").display(),
                self.path("server.key").display(),
                self.path("fleet-ca.pem").display(),
                self.path("collector.db").display(),
            ),
        )
        .unwrap();
        path
    }
}

impl Fleet {
    /// Writes `fleet.crl` (PEM, signed by the fleet CA, CRL number `number`) revoking the
    /// certificates in the PEM files `revoked`, and returns its path. Replaced atomically, as
    /// `posguard-collector ca revoke` does, so that a watcher never reads half a file.
    ///
    /// # Panics
    /// On failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn write_crl(&self, revoked: &[&std::path::Path], number: u64) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|path| {
                let pem = std::fs::read(path).unwrap();
                let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
                let cert = pem.parse_x509().unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(7),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap();
        let path = self.path("fleet.crl");
        let tmp = self.path("fleet.crl.new");
        std::fs::write(&tmp, crl.pem().unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// A new server certificate for `localhost` (a new key), written as `NAME.pem` and
    /// `NAME.key`: what operations install on the collector after its key was stolen.
    ///
    /// # Panics
    /// On failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn new_server_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let (pem, key_path) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (pem, key_path)
    }
}

/// Certificate parameters for device `id`: its name and the URI SAN the collector reads.
#[allow(clippy::unwrap_used)]
fn device_params(id: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("urn:posguard:device:{id}").try_into().unwrap(),
    )];
    params
}

/// Runs `posguard-collector <args> --config <config>` and returns what it printed.
///
/// # Panics
/// If it cannot run or exits with an error (test support).
#[allow(clippy::unwrap_used)]
pub fn collector_cli(config: &std::path::Path, args: &[&str]) -> String {
    let out = command("posguard-collector")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "posguard-collector {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The seqs the collector with configuration `config` has stored for `device`, as
/// `posguard-collector query` lists them (oldest first by time, one per stored record).
///
/// # Panics
/// If the query fails (test support).
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub fn stored_seqs(config: &std::path::Path, device: &str) -> Vec<u64> {
    collector_cli(config, &["query", "--device", device])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A free loopback TCP port (bound, read, released).
///
/// # Panics
/// If no port can be bound.
#[allow(clippy::unwrap_used)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `posguard-collector serve`, killed on drop.
#[derive(Debug)]
pub struct CollectorProcess {
    child: std::process::Child,
    config: PathBuf,
    port: u16,
}

impl CollectorProcess {
    /// Starts the collector with `config` and waits until `port` accepts connections.
    ///
    /// # Panics
    /// If it exits or does not come up within 20 s.
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn start(config: &std::path::Path, port: u16) -> Self {
        let child = command("posguard-collector")
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start posguard-collector");
        let mut c = CollectorProcess {
            child,
            config: config.to_path_buf(),
            port,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("posguard-collector exited during start: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return c;
            }
            if std::time::Instant::now() > deadline {
                panic!("posguard-collector did not listen on {port} within 20 s");
            }
            // Polling interval while waiting for the listener, not a synchronisation sleep.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then start again on the same configuration.
    pub fn kill_and_restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Self::start(&self.config, self.port)
    }

    /// SIGKILL without restarting.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
