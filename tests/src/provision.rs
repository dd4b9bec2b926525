//! What the provisioning tests share: a central side (`ca init`, a running collector, tokens,
//! the enrollment history) and a terminal (a fresh swtpm, configuration and state directories)
//! on which `posguard-provision init` runs as a technician would run it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use posguard_hal::testing::Swtpm;

use crate::{CollectorProcess, collector_cli, command, free_port};

/// The collector's side: its directory (CA in `ca/`), configuration and port.
#[derive(Debug)]
pub struct Central {
    /// Holds `ca/`, `collector.toml` and the store.
    pub dir: tempfile::TempDir,
    /// `collector.toml`.
    pub config: PathBuf,
    /// The HTTPS port on 127.0.0.1.
    pub port: u16,
}

/// `posguard-collector ca init` (server name `localhost`) and a running collector.
pub fn central() -> (Central, CollectorProcess) {
    let dir = tempfile::tempdir().unwrap();
    let out = command("posguard-collector")
        .args(["ca", "init", "--dir"])
        .arg(dir.path().join("ca"))
        .args(["--server-name", "localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let port = free_port();
    let config = dir.path().join("collector.toml");
    let lines: String = String::from_utf8_lossy(&out.stdout)
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

impl Central {
    /// A fresh one-hour token for `device`.
    pub fn token(&self, device: &str) -> String {
        let args = [
            "enroll-token",
            "create",
            "--device-id",
            device,
            "--ttl",
            "1h",
            "--quiet",
        ];
        collector_cli(&self.config, &args).trim().to_owned()
    }

    /// The fleet CA `ca init` wrote.
    pub fn fleet_ca(&self) -> PathBuf {
        self.dir.path().join("ca/fleet-ca.pem")
    }

    /// `host:port` of the collector.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether `device`'s token has been spent (`enroll-token list`).
    pub fn token_used(&self, device: &str) -> bool {
        collector_cli(&self.config, &["enroll-token", "list"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["device_id"] == device)
            .map(|v| v["used"] == true)
            .expect("a token for the device")
    }

    /// The enrollment history of `device`.
    pub fn history(&self, device: &str) -> Vec<serde_json::Value> {
        collector_cli(&self.config, &["enrollments", "--device", device])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A terminal: a fresh swtpm, `etc/` and `state/` in a temp dir, a device id.
#[derive(Debug)]
pub struct Terminal {
    /// The software TPM.
    pub tpm: Swtpm,
    /// Holds `etc/`, `state/` and token files.
    pub dir: tempfile::TempDir,
    /// The device id.
    pub id: String,
}

impl Terminal {
    /// A terminal called `id` with its own swtpm.
    pub fn new(id: &str) -> Self {
        Terminal {
            tpm: Swtpm::start().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            id: id.to_owned(),
        }
    }

    /// The configuration directory.
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `posguard-provision init` for this terminal against `c`, without a token; add one.
    pub fn init(&self, c: &Central) -> Command {
        self.init_as(c, &[])
    }

    /// [`Terminal::init`] with another `--fleet-ca`.
    pub fn init_with(&self, c: &Central, fleet_ca: &Path) -> Command {
        self.init_as(c, &[("--fleet-ca", &fleet_ca.display().to_string())])
    }

    /// [`Terminal::init`] with some arguments replaced (or added): `(flag, value)`.
    pub fn init_as(&self, c: &Central, changed: &[(&str, &str)]) -> Command {
        let state = self.state();
        let mut args: Vec<(String, String)> = [
            ("--collector", c.addr()),
            ("--server-name", "localhost".to_owned()),
            ("--fleet-ca", c.fleet_ca().display().to_string()),
            ("--device-id", self.id.clone()),
            ("--config-dir", self.etc().display().to_string()),
            ("--state-dir", state.display().to_string()),
            ("--socket", state.join("agent.sock").display().to_string()),
            ("--tcti", self.tpm.tcti()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (flag, value) in changed {
            match args.iter_mut().find(|(k, _)| k == flag) {
                Some(slot) => slot.1 = (*value).to_owned(),
                None => args.push(((*flag).to_owned(), (*value).to_owned())),
            }
        }
        let mut cmd = command("posguard-provision");
        cmd.arg("init")
            .args(args.into_iter().flat_map(|(k, v)| [k, v]))
            .env_remove("TSS2_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Writes `token` to a file and returns `--token-file PATH`.
    pub fn token_file(&self, token: &str) -> [std::ffi::OsString; 2] {
        let path = self.dir.path().join("token");
        std::fs::write(&path, format!("{token}\n")).unwrap();
        ["--token-file".into(), path.into_os_string()]
    }
}

/// What a run printed, and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for messages.
    pub fn text(&self) -> String {
        format!("{}\n--- stderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to the end.
pub fn run(cmd: &mut Command) -> Ran {
    ran(cmd.output().unwrap())
}

/// Converts an `Output`.
pub fn ran(out: Output) -> Ran {
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A directory made immutable (`chattr +i`) until dropped: root ignores permission bits, so
/// this is how a test run as root gets a directory it cannot write.
#[derive(Debug)]
pub struct Immutable(PathBuf);

impl Immutable {
    /// Makes `dir` (created if needed) immutable.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("chattr").arg("+i").arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "chattr +i {} (needs root on ext4 or similar): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).output();
    }
}
