//! A technician's day with the real binaries: the collector's CA and a one-time token,
//! `posguard-provision init` on a software TPM (idempotent, failing cleanly on a bad token),
//! the agent renewing its certificate over mTLS without a restart, and decommissioning.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use posguard_e2e::provision::{self, Central, central, run, token};
use posguard_e2e::{AgentProcess, command};
use posguard_hal::testing::Swtpm;
use serde_json::Value;

fn init(
    c: &Central,
    tpm: &Swtpm,
    etc: &Path,
    state: &Path,
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    provision::init(c, tpm, "till-9", (etc, state), token, extra)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn provision_renew_and_decommission() {
    let (c, _collector) = central();
    let tpm = Swtpm::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (etc, state) = (t.path().join("etc"), t.path().join("state"));

    // A wrong token: refused by the collector, nothing written, resumable.
    let (ok, out) = init(&c, &tpm, &etc, &state, &"ab".repeat(32), &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("invalid_token") && out.contains("resumable"),
        "{out}"
    );
    assert!(!etc.join("agent.toml").exists());

    let tok = token(&c, "till-9");
    let (ok, out) = init(&c, &tpm, &etc, &state, &tok, &["--json"]);
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["steps"].as_array().unwrap().len() >= 9);
    assert_eq!(mode(&etc.join("agent.toml")), 0o640);
    assert_eq!(mode(&state.join("datakey.sealed")), 0o600);
    // The certificate the agent renews lives in its state directory: /etc/posguard is
    // read-only to the agent under systemd.
    assert!(state.join("device.pem").is_file());
    assert!(!etc.join("device.pem").exists());
    let config_before = std::fs::read(etc.join("agent.toml")).unwrap();

    // Idempotent: a second run changes nothing, and the token cannot be reused anyway.
    let (ok, out) = init(&c, &tpm, &etc, &state, &tok, &[]);
    assert!(ok && out.contains("already provisioned"), "{out}");
    assert_eq!(
        std::fs::read(etc.join("agent.toml")).unwrap(),
        config_before
    );

    // A technician renews by hand, over mTLS with the TPM key.
    let before_manual = std::fs::read(state.join("device.pem")).unwrap();
    let (ok, out) = run(command("posguard-provision")
        .args(["renew", "--tcti", &tpm.tcti(), "--config-dir"])
        .arg(&etc));
    assert!(ok, "{out}");
    assert_ne!(
        std::fs::read(state.join("device.pem")).unwrap(),
        before_manual,
        "{out}"
    );

    // The agent renews at once (0 %) over mTLS and keeps shipping with the new certificate.
    let config_text = String::from_utf8(config_before).unwrap();
    let mut text = config_text.clone();
    text.push_str("heartbeat_secs = 1\nrenew_after_percent = 0\n");
    std::fs::write(etc.join("agent.toml"), text).unwrap();
    let cert_before = std::fs::read(state.join("device.pem")).unwrap();
    let agent = AgentProcess::start(&etc.join("agent.toml"), &state.join("agent.sock"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read(state.join("device.pem")).unwrap() == cert_before {
        assert!(Instant::now() < deadline, "the certificate was not renewed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = run(command("posguard-collector")
        .args(["enrollments", "--config"])
        .arg(&c.config));
    assert!(
        ok && out.contains("\"renew\"") && out.contains("\"issued\""),
        "{out}"
    );
    // The provisioned configuration keeps the fleet CRL (which `ca init` created and the
    // collector serves) in the state directory, where the agent writes what it fetched.
    assert!(
        config_text.contains(&format!("crl = \"{}\"", state.join("fleet.crl").display())),
        "{config_text}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("fleet.crl").exists() {
        assert!(
            Instant::now() < deadline,
            "the agent did not fetch the fleet CRL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Decommission: ships what is left, stops the agent, evicts the TPM keys, removes state.
    let (ok, out) = run(command("posguard-provision")
        .args([
            "decommission",
            "--yes",
            "--tcti",
            &tpm.tcti(),
            "--config-dir",
        ])
        .arg(&etc)
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(state.join("agent.sock")));
    assert!(ok, "{out}");
    assert!(!state.exists() && !etc.join("agent.toml").exists(), "{out}");
    let (ok, stored) = run(command("posguard-collector")
        .args(["query", "--device", "till-9", "--config"])
        .arg(&c.config));
    assert!(
        ok && stored.contains("decommission"),
        "the decommissioning is recorded at the collector"
    );
    drop(agent);
    let caps = tpm.tpm2("tpm2_getcap", &["handles-persistent"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&caps.stdout).contains("0x81010001"),
        "identity key evicted"
    );
}
