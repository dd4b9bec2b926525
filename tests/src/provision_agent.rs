//! What the technician-facing tests share: a collector with its own CA (`ca init`) and one-time
//! tokens ([`Central`]), `posguard-provision init` against it, and a software TPM shared by the
//! agent and `posguard-provision` at once ([`SharedTpm`]).
//!
//! swtpm serves one TPM client at a time; a terminal's `/dev/tpmrm0` serves many. To run the
//! agent and the provisioning tool on one TPM together, [`SharedTpm`] puts the TPM2 access
//! broker (`tpm2-abrmd`) in front of the swtpm, on a private D-Bus bus, as docs/hardware.md's
//! resource manager does on a terminal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use posguard_hal::testing::Swtpm;

use crate::{CollectorProcess, command, free_port};

/// Runs a command; (success, stdout + stderr).
///
/// # Panics
/// If it cannot be started.
#[allow(clippy::unwrap_used)]
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A collector with a CA made by `posguard-collector ca init` (server certificate for
/// `localhost`, fleet CRL), its store and configuration in a temp dir.
#[derive(Debug)]
pub struct Central {
    /// The directory holding the CA, store and configuration.
    pub dir: tempfile::TempDir,
    /// `collector.toml`.
    pub config: PathBuf,
    /// Its loopback port.
    pub port: u16,
}

impl Central {
    /// Makes the CA and starts the collector.
    ///
    /// # Panics
    /// On failure (test support).
    #[allow(clippy::unwrap_used)]
    pub fn start() -> (Self, CollectorProcess) {
        let dir = tempfile::tempdir().unwrap();
        let (ok, ca) = run(command("posguard-collector")
            .args(["ca", "init", "--dir"])
            .arg(dir.path().join("ca"))
            .args(["--server-name", "localhost"]));
        assert!(ok, "{ca}");
        let port = free_port();
        let config = dir.path().join("collector.toml");
        let lines: String = ca
            .lines()
            .filter(|l| l.contains(" = \""))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nstore = \"{}\"\n{lines}",
                dir.path().join("c.db").display()
            ),
        )
        .unwrap();
        let collector = CollectorProcess::start(&config, port);
        (Central { dir, config, port }, collector)
    }

    /// The fleet CA certificate.
    pub fn fleet_ca(&self) -> PathBuf {
        self.dir.path().join("ca/fleet-ca.pem")
    }

    /// A one-time enrollment token for `device`.
    ///
    /// # Panics
    /// If the collector CLI fails.
    pub fn token(&self, device: &str) -> String {
        let (ok, out) = run(command("posguard-collector")
            .args(["enroll-token", "create", "--device-id", device])
            .args(["--ttl", "1h", "--quiet", "--config"])
            .arg(&self.config));
        assert!(ok, "{out}");
        out.trim().to_owned()
    }
}

/// A terminal's directories, laid out as `init` makes them.
#[derive(Debug)]
pub struct Terminal {
    /// Holds both.
    pub dir: tempfile::TempDir,
    /// `/etc/posguard`.
    pub etc: PathBuf,
    /// `/var/lib/posguard`.
    pub state: PathBuf,
}

impl Terminal {
    /// A fresh, empty terminal.
    ///
    /// # Panics
    /// If no temp dir can be made.
    #[allow(clippy::unwrap_used)]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Terminal {
            etc: dir.path().join("etc"),
            state: dir.path().join("state"),
            dir,
        }
    }

    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.state.join("agent.sock")
    }

    /// `agent.toml`.
    pub fn config(&self) -> PathBuf {
        self.etc.join("agent.toml")
    }

    /// Runs `posguard-provision init` for `device` with a fresh token on TCTI `tcti` (with
    /// environment `env`), then sets a 1 s heartbeat and backoff so that tests do not wait for
    /// the uplink.
    ///
    /// # Panics
    /// If provisioning fails.
    #[allow(clippy::unwrap_used)]
    pub fn init(&self, central: &Central, device: &str, tcti: &str, env: &[(String, String)]) {
        let token = central.token(device);
        let (ok, out) = run(command("posguard-provision")
            .args([
                "init",
                "--collector",
                &format!("127.0.0.1:{}", central.port),
            ])
            .args([
                "--server-name",
                "localhost",
                "--token",
                &token,
                "--fleet-ca",
            ])
            .arg(central.fleet_ca())
            .args(["--device-id", device, "--config-dir"])
            .arg(&self.etc)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(self.socket())
            .args(["--tcti", tcti])
            .envs(env.iter().map(|(k, v)| (k, v))));
        assert!(ok, "{out}");
        let mut text = std::fs::read_to_string(self.config()).unwrap();
        text.push_str("heartbeat_secs = 1\nbackoff_max_secs = 1\n");
        std::fs::write(self.config(), text).unwrap();
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

/// A swtpm behind its own `tpm2-abrmd` on a private D-Bus bus: many clients at once.
#[derive(Debug)]
pub struct SharedTpm {
    /// The TPM (its own TCTI must not be used while the broker holds it).
    pub swtpm: Swtpm,
    bus: Child,
    broker: Child,
    dir: tempfile::TempDir,
    name: String,
}

impl SharedTpm {
    /// Starts swtpm, a D-Bus daemon and the broker, and waits (at most 20 s) until a TPM
    /// command through the broker answers.
    ///
    /// # Panics
    /// If any of them does not come up.
    #[allow(clippy::unwrap_used, clippy::panic)]
    pub fn start() -> Self {
        let swtpm = Swtpm::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bus.sock");
        std::fs::write(
            dir.path().join("bus.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\
                 <type>session</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/><allow user=\"*\"/></policy>\
                 </busconfig>\n",
                sock.display()
            ),
        )
        .unwrap();
        let bus = Command::new("dbus-daemon")
            .arg(format!(
                "--config-file={}",
                dir.path().join("bus.conf").display()
            ))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The bus is private to this TPM: one well-known name is enough.
        let name = "com.intel.tss2.Tabrmd.posguard".to_owned();
        let address = format!("unix:path={}", sock.display());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            // Polling for the bus socket to appear.
            std::thread::sleep(Duration::from_millis(20));
        }
        let broker = Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root"])
            .arg(format!("--dbus-name={name}"))
            .arg(format!("--tcti={}", swtpm.tcti()))
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let shared = SharedTpm {
            swtpm,
            bus,
            broker,
            dir,
            name,
        };
        loop {
            if let Ok(out) = shared.tpm2("tpm2_getcap", &["properties-variable"])
                && out.status.success()
            {
                return shared;
            }
            if Instant::now() > deadline {
                panic!("tpm2-abrmd did not answer within 20 s");
            }
            // Polling until the broker has claimed its bus name.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCTI for clients (agent, posguard-provision, tpm2-tools).
    pub fn tcti(&self) -> String {
        format!("tabrmd:bus_type=session,bus_name={}", self.name)
    }

    /// The environment clients need to find the broker's bus.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "DBUS_SESSION_BUS_ADDRESS".to_owned(),
            format!("unix:path={}", self.dir.path().join("bus.sock").display()),
        )]
    }

    /// Runs a tpm2-tools command through the broker.
    ///
    /// # Errors
    /// If the tool cannot be run.
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> std::io::Result<Output> {
        Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
    }
}

impl Drop for SharedTpm {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Puts the TPM behind `tpm2` (a tool runner with the right TCTI) into dictionary-attack
/// lockout: at most one failure allowed, then one wrong password on a key that has one.
///
/// # Panics
/// If a tool fails where it should not, or the TPM is not in lockout afterwards.
#[allow(clippy::unwrap_used)]
pub fn force_lockout(dir: &Path, tpm2: &dyn Fn(&str, &[&str]) -> std::io::Result<Output>) {
    let p = |name: &str| dir.join(name).display().to_string();
    let ok = |tool: &str, args: &[&str]| {
        let out = tpm2(tool, args).unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(
        "tpm2_dictionarylockout",
        &["-s", "-n", "1", "-t", "600", "-l", "600"],
    );
    ok("tpm2_createprimary", &["-Q", "-c", &p("p.ctx")]);
    ok(
        "tpm2_create",
        &[
            "-Q",
            "-C",
            &p("p.ctx"),
            "-p",
            "right",
            "-G",
            "ecc",
            "-u",
            &p("k.pub"),
            "-r",
            &p("k.priv"),
        ],
    );
    ok("tpm2_flushcontext", &["-t"]);
    ok(
        "tpm2_load",
        &[
            "-Q",
            "-C",
            &p("p.ctx"),
            "-u",
            &p("k.pub"),
            "-r",
            &p("k.priv"),
            "-c",
            &p("k.ctx"),
        ],
    );
    ok("tpm2_flushcontext", &["-t"]);
    std::fs::write(dir.join("m"), b"message").unwrap();
    let wrong = tpm2(
        "tpm2_sign",
        &[
            "-Q",
            "-c",
            &p("k.ctx"),
            "-p",
            "wrong",
            "-g",
            "sha256",
            "-o",
            &p("sig"),
            &p("m"),
        ],
    )
    .unwrap();
    assert!(!wrong.status.success(), "a wrong password was accepted");
    ok("tpm2_flushcontext", &["-t"]);
    let caps = tpm2("tpm2_getcap", &["properties-variable"]).unwrap();
    assert!(
        String::from_utf8_lossy(&caps.stdout).contains("inLockout:                 1"),
        "the TPM did not enter lockout"
    );
}
