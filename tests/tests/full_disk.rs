//! A full disk under the journal: the real agent (identity key in swtpm) with its journal on a
//! 2 MiB tmpfs. Appends are refused with a clear error once the disk is full, the agent keeps
//! serving, and every acknowledged record is still stored and verifies offline.
//!
//! Mounting needs root, as CI runs the tests (`scripts/test.sh` installs packages as root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use posguard_e2e::{AgentProcess, Fleet, agent_status, command, free_port};
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

/// A tmpfs mounted for the test's lifetime.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .unwrap();
        assert_eq!(
            uid, "0",
            "this test mounts a small tmpfs under the journal and so needs root"
        );
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One `audit.record` call on `conn`: the answer.
fn append(conn: &mut (UnixStream, BufReader<UnixStream>), i: u64) -> Value {
    let req = json!({"v": 1, "id": i, "method": "audit.record",
        "params": {"action": "sale", "amount_minor": 1000 + i, "currency": "EUR",
                   "reference": format!("receipt disk n{i}")}});
    conn.0.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    conn.1.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_full_disk_refuses_appends_and_keeps_every_acknowledged_record() {
    let fleet = Fleet::new("posguard full-disk test fleet CA");
    let tpm = Swtpm::start().unwrap();
    // A 64 MiB bound on a 2 MiB disk: the disk fills long before the bound prunes anything.
    let terminal = fleet.bench_terminal(&tpm, "disk-term-1", free_port(), 64 << 20, "");
    let mount = Mount::tmpfs(&terminal.journal, "2m");
    let mut agent = AgentProcess::start(&terminal.config, &terminal.socket);

    let s = UnixStream::connect(&terminal.socket).unwrap();
    let mut conn = (s.try_clone().unwrap(), BufReader::new(s));
    let mut acknowledged = 0u64;
    let mut refusal = None;
    for i in 0..100_000u64 {
        let answer = append(&mut conn, i);
        if answer["ok"] == json!(true) {
            acknowledged += 1;
        } else {
            refusal = Some(answer);
            break;
        }
    }
    let refusal = refusal.expect("a 2 MiB disk never filled");
    assert!(
        acknowledged > 100,
        "only {acknowledged} appends before the refusal"
    );
    assert_eq!(
        refusal["error"]["code"],
        json!("journal_unavailable"),
        "the refusal says the journal cannot store events: {refusal}"
    );

    // Still serving: status answers and says why the journal stopped.
    assert!(agent.is_running(), "the agent died on a full disk");
    let status = agent_status(&terminal.socket);
    let failure = status["journal"]["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("No space left on device"),
        "status names the full disk: {status}"
    );
    assert!(
        status["condition"]
            .as_str()
            .is_some_and(|c| c.starts_with("journal stopped")),
        "the condition shows it: {status}"
    );
    let again = append(&mut conn, 1_000_000);
    assert_eq!(
        again["error"]["code"],
        json!("journal_unavailable"),
        "later appends are refused too: {again}"
    );
    drop(conn);
    drop(agent);

    // Everything acknowledged is on the disk and verifies offline.
    let out = command("posguardctl")
        .arg("verify-journal")
        .arg(&terminal.journal)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The journal stopped before a final checkpoint: everything verifies (exit 0), or it does
    // with records after the last checkpoint that nothing anchors (exit 2, and it says so).
    match out.status.code() {
        Some(0) => {}
        Some(2) => assert!(report.contains("TAIL NOT ANCHORED"), "{report}"),
        _ => panic!("verify-journal failed: {report}"),
    }
    let verified: u64 = report
        .split("records verified: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in: {report}"));
    // The journal's own events (start, key certificate, ...) come on top of the POS events.
    assert!(
        verified >= acknowledged,
        "{verified} records verify, {acknowledged} were acknowledged: {report}"
    );
    println!("{acknowledged} acknowledged; verify-journal: {report}");
    drop(mount);
}
