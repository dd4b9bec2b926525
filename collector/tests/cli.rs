//! The real `posguard-collector` binary in a scratch dir: usage and config errors exit 64
//! naming the key; the ops commands work on the store named by the config.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};

fn bin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posguard-collector"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn write_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nserver_cert = \"s.pem\"\nserver_key = \"k.pem\"\n\
             fleet_ca = \"ca.pem\"\nstore = \"{}\"\n{extra}",
            dir.join("c.db").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn bad_usage_and_bad_config_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(64));
    let cfg = write_config(dir.path(), "body_limit = 0\n");
    let out = bin(dir.path(), &["--config", &cfg, "devices"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("body_limit"));
    let cfg = write_config(dir.path(), "typo_key = 1\n");
    let out = bin(dir.path(), &["--config", &cfg, "devices"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("typo_key"));
    // serve with missing TLS files: refused before anything is bound.
    let cfg = write_config(dir.path(), "");
    let out = bin(dir.path(), &["--config", &cfg, "serve"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server_cert"));
}

#[test]
fn ops_commands_on_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path(), &["ops-key", "generate", "--out", "ops.key"]);
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 64);
    let cfg = write_config(dir.path(), &format!("ops_public_key = \"{public}\"\n"));
    // The store is created only when asked (a mistyped path is an error: tests/typos.rs); a
    // token makes term-0001 a device the collector knows, so commands for it are accepted.
    let out = bin(
        dir.path(),
        &[
            "--config",
            &cfg,
            "--create-store",
            "enroll-token",
            "create",
            "--device-id",
            "term-0001",
            "--ttl",
            "1h",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    for args in [
        vec!["maintenance", "on"],
        vec!["maintenance", "off"],
        vec!["devices"],
        vec!["alerts"],
        vec![
            "query",
            "--since",
            "2025-01-01T00:00:00Z",
            "--min-severity",
            "warning",
        ],
        vec!["export"],
        vec![
            "command",
            "--device",
            "term-0001",
            "lockdown",
            "--ops-key",
            "ops.key",
        ],
    ] {
        let mut full = vec!["--config", cfg.as_str()];
        full.extend(args.iter().copied());
        let out = bin(dir.path(), &full);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let out = bin(
        dir.path(),
        &["--config", &cfg, "query", "--since", "last tuesday"],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    let out = bin(dir.path(), &["--config", &cfg, "maintenance", "maybe"]);
    assert_eq!(out.status.code(), Some(64));
    // Another key than the configured one is refused.
    bin(dir.path(), &["ops-key", "generate", "--out", "other.key"]);
    let out = bin(
        dir.path(),
        &[
            "--config",
            &cfg,
            "command",
            "--device",
            "term-0001",
            "unlock",
            "--ops-key",
            "other.key",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
}
