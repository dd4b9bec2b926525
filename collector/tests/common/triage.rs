//! The `posguard-collector alerts` binary on a test collector's store, for the triage tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

use std::path::Path;
use std::process::{Command, Output};

use posguard_proto::uplink::UplinkBatch;
use serde_json::Value;

use super::Device;

/// Runs the binary against the store at `db` as operator `user` (no SUDO_USER).
pub fn cli(db: &Path, user: Option<&str>, args: &[&str]) -> Output {
    let dir = db.parent().unwrap();
    let cfg = dir.join("cli.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nserver_cert = \"s.pem\"\nserver_key = \"k.pem\"\n\
             fleet_ca = \"ca.pem\"\nstore = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    // `alerts --config FILE [show|ack|…]`: the global flag between the command and its
    // subcommand, as operators type it.
    let (first, rest) = args.split_first().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_posguard-collector"));
    c.arg(first)
        .arg("--config")
        .arg(&cfg)
        .args(rest)
        .env_remove("SUDO_USER");
    match user {
        Some(u) => c.env("USER", u),
        None => c.env_remove("USER"),
    };
    c.output().unwrap()
}

/// The JSON lines of a successful run.
pub fn lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn ids(v: &[Value]) -> Vec<i64> {
    v.iter().map(|a| a["id"].as_i64().unwrap()).collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A batch from `dev` whose second record has a damaged signature (refused `bad_signature`).
pub fn forged(dev: &mut Device) -> Vec<u8> {
    let good = dev.logout();
    let bad = dev.logout();
    let mut bytes = bad.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut b = UplinkBatch::new();
    b.certs = vec![dev.journal_cert(1)];
    b.records = vec![good.as_bytes().to_vec(), bytes];
    b.to_bytes().unwrap()
}

pub fn is_fixed_rfc3339(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.' && s.as_bytes()[10] == b'T'
}
