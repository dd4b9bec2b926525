//! The four binaries, run as a user would run them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use posguard_e2e::command;
use posguard_hal::testing::Swtpm;

const BINARIES: [&str; 4] = [
    "posguard-agent",
    "posguardctl",
    "posguard-provision",
    "posguard-collector",
];

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_binary_answers_help_and_version() {
    for name in BINARIES {
        let out = command(name).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help: {}", text(&out));
        assert!(text(&out).contains("Usage:"), "{name}: {}", text(&out));
        let out = command(name).arg("--version").output().unwrap();
        assert!(out.status.success(), "{name} --version");
        assert!(
            text(&out).contains(env!("CARGO_PKG_VERSION")),
            "{name}: {}",
            text(&out)
        );
    }
}

#[test]
fn bad_usage_exits_64() {
    for name in BINARIES {
        let out = command(name).arg("--no-such-flag").output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{name}: {}", text(&out));
    }
}

#[test]
fn check_config_names_the_bad_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[device]\nid = \"t-1\"\n[secure_element]\nidentity_handle = 0x01000000\n",
    )
    .unwrap();
    let out = command("posguard-agent")
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("secure_element.identity_handle"),
        "{}",
        text(&out)
    );

    std::fs::write(
        &path,
        "[device]\nid = \"t-1\"\n[secure_element]\nbackend = \"tpm\"\n",
    )
    .unwrap();
    let out = command("posguard-agent")
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let out = command("posguard-agent")
        .args(["check-config", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out).contains("/nonexistent/agent.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn provisioning_selftest_passes_on_a_software_tpm_and_survives_a_reboot() {
    let tpm = Swtpm::start().unwrap();
    let out = command("posguard-provision")
        .args(["selftest", "--tcti", &tpm.tcti()])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("self-test PASSED"), "{t}");
    assert!(t.contains("Created at 0x81010001"), "{t}");

    let tpm = tpm.restart().unwrap();
    let out = command("posguard-provision")
        .args(["selftest", "--check-only", "--json", "--tcti", &tpm.tcti()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let key = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["name"]
                .as_str()
                .unwrap()
                .starts_with("device identity key")
        })
        .unwrap();
    assert!(
        key["detail"].as_str().unwrap().starts_with("Opened"),
        "{key}"
    );
}

#[test]
fn selftest_against_nothing_fails_fast_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = command("posguard-provision")
        .args([
            "selftest",
            "--tcti",
            &format!("swtpm:host=127.0.0.1,port={port}"),
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("[FAIL] open secure element"), "{t}");
    assert!(t.contains(&format!("port={port}")), "{t}");
}
