//! A collector with its fleet CA and one-time tokens, and `posguard-provision init` against a
//! software TPM: what the provisioning tests share.

use std::path::{Path, PathBuf};

use posguard_hal::testing::Swtpm;

use crate::{CollectorProcess, command, free_port};

/// Runs a command; returns whether it succeeded and its stdout followed by its stderr.
///
/// # Panics
/// If the command cannot be run.
#[allow(clippy::unwrap_used)]
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The central side: a collector's CA directory, configuration and port.
#[derive(Debug)]
pub struct Central {
    /// Holds `ca/` (fleet CA, `fleet-ca.pem`), the configuration and the store.
    pub dir: tempfile::TempDir,
    /// `collector.toml`.
    pub config: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

/// A fresh fleet CA (`posguard-collector ca init`) and a collector serving it.
///
/// # Panics
/// If the CA cannot be made or the collector does not start.
#[allow(clippy::unwrap_used)]
pub fn central() -> (Central, CollectorProcess) {
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

/// A one-time enrollment token for `device`, valid for an hour.
///
/// # Panics
/// If the collector's CLI refuses.
pub fn token(c: &Central, device: &str) -> String {
    let (ok, out) = run(command("posguard-collector")
        .args([
            "enroll-token",
            "create",
            "--device-id",
            device,
            "--ttl",
            "1h",
            "--quiet",
            "--config",
        ])
        .arg(&c.config));
    assert!(ok, "{out}");
    out.trim().to_owned()
}

/// `posguard-provision init` of `device` against `c` and `tpm`, with `etc` and `state` as the
/// terminal's configuration and state directories, and `extra` arguments.
pub fn init(
    c: &Central,
    tpm: &Swtpm,
    device: &str,
    (etc, state): (&Path, &Path),
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    run(command("posguard-provision")
        .args([
            "init",
            "--collector",
            &format!("127.0.0.1:{}", c.port),
            "--server-name",
            "localhost",
            "--token",
            token,
            "--fleet-ca",
        ])
        .arg(c.dir.path().join("ca/fleet-ca.pem"))
        .args(["--device-id", device, "--config-dir"])
        .arg(etc)
        .arg("--state-dir")
        .arg(state)
        .arg("--socket")
        .arg(state.join("agent.sock"))
        .args(["--tcti", &tpm.tcti()])
        .args(extra))
}
