//! What the provisioning tests share: a central side (`ca init`, a running collector, tokens,
//! the enrollment history) and a terminal (a fresh swtpm, configuration and state directories)
//! on which `posguard-provision init` runs as a technician would run it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

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

/// A directory this test process cannot write until dropped. Root ignores permission bits, so
/// as root the directory is made immutable (`chattr +i`, ext4 and most disk filesystems) or, where
/// that is not supported (tmpfs), bind-mounted read-only onto itself; otherwise mode 0555.
#[derive(Debug)]
pub struct Immutable {
    dir: PathBuf,
    how: ReadOnly,
}

#[derive(Debug, Clone, Copy)]
enum ReadOnly {
    Chattr,
    BindMount,
    Mode,
}

fn sh(program: &str, args: &[&std::ffi::OsStr]) -> bool {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

impl Immutable {
    /// Makes `dir` (created if needed) unwritable.
    pub fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(dir).unwrap();
        let d = dir.as_os_str();
        let how = if !is_root() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            ReadOnly::Mode
        } else if sh("chattr", &["+i".as_ref(), d]) {
            ReadOnly::Chattr
        } else if sh("mount", &["--bind".as_ref(), d, d])
            && sh("mount", &["-o".as_ref(), "remount,bind,ro".as_ref(), d])
        {
            ReadOnly::BindMount
        } else {
            panic!(
                "cannot make {} read-only as root: neither `chattr +i` nor a read-only bind \
                 mount works here",
                dir.display()
            );
        };
        let probe = dir.join(".probe");
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable ({how:?})",
            dir.display()
        );
        Immutable {
            dir: dir.to_path_buf(),
            how,
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        let d = self.dir.as_os_str();
        match self.how {
            ReadOnly::Chattr => {
                sh("chattr", &["-i".as_ref(), d]);
            }
            ReadOnly::BindMount => {
                sh("umount", &[d]);
            }
            ReadOnly::Mode => {
                let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
            }
        }
    }
}
