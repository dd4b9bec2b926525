//! Issue 15, points 4 and 5 on the real agent binary with its identity key and counter in
//! swtpm: a journal, clerk store or cache that vanished, was swapped for another terminal's or
//! was put back as an older copy is a finding at start (the status condition and a signed
//! record in the journal); a journal tail cut after a SIGKILL is reported for what it is by
//! `posguardctl verify-journal` (exit 2, the unanchored count) and by the agent's status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};

use posguard_e2e::{AgentProcess, agent_status, append_business_events, command};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use posguard_proto::event::{EventKind, TamperFinding};
use serde_json::Value;

struct Terminal {
    _tpm: Swtpm,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Terminal {
    fn new(id: &str) -> Self {
        let tpm = Swtpm::start().unwrap();
        posguard_hal::open(&tpm.config())
            .unwrap()
            .ensure_identity_key(KeyMode::OpenOrCreate)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[device]\nid = \"{id}\"\n[secure_element]\ntcti = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n",
                tpm.tcti(),
                dir.path().join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        Terminal {
            _tpm: tpm,
            dir,
            config,
            socket,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    fn start(&self) -> AgentProcess {
        AgentProcess::start(&self.config, &self.socket)
    }

    /// One clean run: start, status, SIGTERM.
    fn run(&self) -> Value {
        let agent = self.start();
        let status = agent_status(&self.socket);
        assert!(agent.stop().success());
        status
    }

    fn findings(&self) -> Vec<TamperFinding> {
        posguard_agent::journal::read_events(&self.path("journal"))
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e.kind {
                EventKind::TamperDetected { finding }
                | EventKind::TamperRecovered { finding, .. } => Some(finding),
                _ => None,
            })
            .collect()
    }
}

fn condition(status: &Value) -> &str {
    status["condition"].as_str().unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn replace_dir(dir: &Path, with: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    copy_dir(with, dir);
}

/// After one tampering run: the condition says what, the journal holds the signed finding,
/// and the next start is clean again (the finding is not repeated forever).
fn expect_finding(t: &Terminal, status: &Value, condition_starts: &str, finding: &TamperFinding) {
    assert!(
        condition(status).starts_with(condition_starts),
        "condition {:?}, expected {condition_starts:?}: {status}",
        condition(status)
    );
    let found = t.findings();
    assert!(
        found.contains(finding),
        "the journal holds a signed {finding:?}: {found:?}"
    );
    let again = t.run();
    assert_eq!(condition(&again), "ok", "the next start is clean: {again}");
}

fn code(s: &str) -> posguard_proto::text::ShortCode {
    posguard_proto::text::ShortCode::new(s).unwrap()
}

#[test]
fn a_deleted_or_emptied_journal_starts_a_new_chain_with_a_signed_finding() {
    let t = Terminal::new("term-a1");
    assert_eq!(condition(&t.run()), "ok", "a first start is not a finding");
    assert_eq!(condition(&t.run()), "ok");

    std::fs::remove_dir_all(t.path("journal")).unwrap();
    let status = t.run();
    expect_finding(
        &t,
        &status,
        "tamper recovered: journal missing",
        &TamperFinding::StoreMissing {
            store: code("journal"),
        },
    );
    let first = posguard_agent::journal::read_events(&t.path("journal")).unwrap();
    assert!(
        matches!(first[0].1.kind, EventKind::TamperRecovered { .. }),
        "the new chain's first record is the finding: {:?}",
        first[0]
    );

    // An empty directory in its place is the same.
    std::fs::remove_dir_all(t.path("journal")).unwrap();
    std::fs::create_dir_all(t.path("journal")).unwrap();
    let status = t.run();
    expect_finding(
        &t,
        &status,
        "tamper recovered: journal missing",
        &TamperFinding::StoreMissing {
            store: code("journal"),
        },
    );
}

#[test]
fn a_journal_swapped_for_another_terminals_or_an_older_copy_is_a_finding() {
    let t = Terminal::new("term-b1");
    let other = Terminal::new("term-b2");
    t.run();
    let old = t.dir.path().join("old-journal");
    copy_dir(&t.path("journal"), &old);
    t.run();
    other.run();

    replace_dir(&t.path("journal"), &old);
    let status = t.run();
    assert!(
        condition(&status).starts_with("tamper recovered: rollback"),
        "{status}"
    );

    replace_dir(&t.path("journal"), &other.path("journal"));
    let status = t.run();
    assert!(
        condition(&status).starts_with("tamper recovered: unreadable journal database")
            && condition(&status).contains("term-b2"),
        "{status}"
    );
}

/// For one store (`name` under `state/<subdir>`): deleted, replaced by another terminal's, put
/// back as an older copy.
fn store_cases(name: &str, subdir: &str) {
    let t = Terminal::new("term-c1");
    let other = Terminal::new("term-c2");
    t.run();
    assert_eq!(
        condition(&t.run()),
        "ok",
        "{name}: anchors recorded, no finding"
    );
    other.run();

    std::fs::remove_dir_all(t.path(subdir)).unwrap();
    let status = t.run();
    assert!(
        status["journal"]["store_findings"][0]
            .as_str()
            .is_some_and(|f| f.starts_with(&format!("{name} missing"))),
        "{status}"
    );
    expect_finding(
        &t,
        &status,
        &format!("tamper detected: {name} missing"),
        &TamperFinding::StoreMissing { store: code(name) },
    );

    replace_dir(&t.path(subdir), &other.path(subdir));
    let status = t.run();
    expect_finding(
        &t,
        &status,
        &format!("tamper detected: {name} replaced"),
        &TamperFinding::StoreReplaced { store: code(name) },
    );

    let old = t.dir.path().join(format!("old-{name}"));
    copy_dir(&t.path(subdir), &old);
    t.run();
    replace_dir(&t.path(subdir), &old);
    let status = t.run();
    let older = t.findings().into_iter().find_map(|f| match f {
        TamperFinding::StoreOlder {
            store,
            recorded_generation,
            found_generation,
        } if store.as_str() == name => Some((recorded_generation, found_generation)),
        _ => None,
    });
    let (recorded, found) = older.unwrap_or_else(|| panic!("{name}: no older-copy record"));
    assert!(found < recorded, "{found} < {recorded}");
    assert!(
        condition(&status).starts_with(&format!("tamper detected: {name} older copy")),
        "{status}"
    );
    assert_eq!(condition(&t.run()), "ok");
}

#[test]
fn the_clerk_store_deleted_replaced_or_older_is_a_finding() {
    store_cases("clerks", "auth");
}

#[test]
fn the_cache_deleted_replaced_or_older_is_a_finding() {
    store_cases("cache", "cache");
}

fn verify(dir: &Path) -> (i32, String) {
    let out = command("posguardctl")
        .arg("verify-journal")
        .arg(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn verify_json(dir: &Path) -> Value {
    let out = command("posguardctl")
        .arg("verify-journal")
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A kill, then `damage` on the journal's sled file: verify-journal says exactly what it
/// proved, and the next start says the tail was not anchored.
fn cut_tail_case(damage: impl FnOnce(&Path)) {
    let t = Terminal::new("term-d1");
    let clean = t.run();
    assert_eq!(condition(&clean), "ok");
    let (code, text) = verify(&t.path("journal"));
    assert_eq!(
        code, 0,
        "a cleanly stopped journal is anchored to its end: {text}"
    );
    assert!(text.contains("VERIFIED AND ANCHORED"), "{text}");

    let agent = t.start();
    append_business_events(&t.socket, 4, 100, 1);
    let before = agent_status(&t.socket)["journal"]["head_seq"]
        .as_u64()
        .unwrap();
    drop(agent); // SIGKILL: no final checkpoint
    let intact = verify_json(&t.path("journal"));
    assert_eq!(intact["head_seq"].as_u64(), Some(before), "{intact}");
    assert_eq!(intact["verdict"], "unanchored_tail", "{intact}");

    damage(&t.path("journal").join("db"));
    let (code, text) = verify(&t.path("journal"));
    let report = verify_json(&t.path("journal"));
    let head = report["head_seq"].as_u64().unwrap();
    let anchored = report["anchored_seq"].as_u64().unwrap();
    assert!(head < before, "the damage cut records: {head} of {before}");
    assert_eq!(code, 2, "verified, tail not anchored: {text}");
    assert!(text.contains("TAIL NOT ANCHORED"), "{text}");
    assert!(!text.contains("OK: the journal verifies"), "{text}");
    assert_eq!(
        report["unanchored"].as_u64(),
        Some(head - anchored),
        "{report}"
    );
    assert!(head > anchored, "{report}");

    let status = t.run();
    assert_eq!(
        status["journal"]["start_tail"]["head_seq"].as_u64(),
        Some(head)
    );
    assert_eq!(
        status["journal"]["start_tail"]["unanchored"].as_u64(),
        Some(head - anchored),
        "{status}"
    );
    assert!(
        condition(&status).starts_with("unanchored tail at start"),
        "{status}"
    );
    let (code, text) = verify(&t.path("journal"));
    assert_eq!(
        code, 0,
        "after a clean stop the journal is anchored again: {text}"
    );
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    use std::io::{BufRead, Write};
    let s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let mut w = s.try_clone().unwrap();
    let req = serde_json::json!({"v": 1, "id": 1, "method": method, "params": params});
    w.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn truncate(db: &Path, by: u64) {
    let len = std::fs::metadata(db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.set_len(len - by).unwrap();
}

#[test]
fn a_tail_cut_below_what_the_cache_saw_is_a_finding() {
    // The cache records the journal's durable head at each of its fsyncs: a journal that
    // starts below it lost records even inside the unanchored window.
    let t = Terminal::new("term-e1");
    t.run();
    let agent = t.start();
    append_business_events(&t.socket, 4, 100, 2);
    let put = call(
        &t.socket,
        "cache.put",
        serde_json::json!({"id": "sale-1", "value_b64": "aGVsbG8="}),
    );
    assert_eq!(put["ok"], true, "{put}");
    let seen = agent_status(&t.socket)["journal"]["head_seq"]
        .as_u64()
        .unwrap();
    drop(agent); // SIGKILL
    truncate(&t.path("journal").join("db"), 300);
    let status = t.run();
    let head = status["journal"]["start_tail"]["head_seq"]
        .as_u64()
        .unwrap();
    assert!(head < seen, "the cut removed records: {head} < {seen}");
    assert!(
        condition(&status).starts_with("tamper detected: journal tail cut: the cache store saw"),
        "{status}"
    );
    let cut = t.findings().into_iter().find_map(|f| match f {
        TamperFinding::StoreOlder {
            store,
            recorded_generation,
            found_generation,
        } if store.as_str() == "journal" => Some((recorded_generation, found_generation)),
        _ => None,
    });
    let (recorded, found) = cut.expect("a signed journal-tail finding");
    assert_eq!(found, head);
    assert!(
        recorded > head && recorded <= seen,
        "{recorded} in {head}..={seen}"
    );
    assert_eq!(condition(&t.run()), "ok", "the next start is clean");
}

#[test]
fn a_journal_that_ends_at_a_checkpoint_after_a_kill_is_not_called_complete() {
    // What a cut exactly at the last checkpoint leaves: nothing unanchored, but no clean stop.
    let t = Terminal::new("term-f1");
    t.run();
    let agent = t.start();
    let live = agent_status(&t.socket)["journal"].clone();
    assert_eq!(live["head_seq"], live["last_checkpoint_seq"], "{live}");
    drop(agent); // SIGKILL
    let report = verify_json(&t.path("journal"));
    assert_eq!(report["unanchored"].as_u64(), Some(0), "{report}");
    assert_eq!(report["clean_stop"], false, "{report}");
    let (code, text) = verify(&t.path("journal"));
    assert_eq!(code, 2, "{text}");
    let status = t.run();
    assert_eq!(
        status["journal"]["start_tail"]["unanchored"].as_u64(),
        Some(0)
    );
    assert_eq!(status["journal"]["start_tail"]["clean_stop"], false);
    assert!(
        condition(&status).starts_with("unanchored tail at start"),
        "{status}"
    );
    let (code, text) = verify(&t.path("journal"));
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_tail_truncated_after_a_kill_is_reported_as_unanchored() {
    cut_tail_case(|db| truncate(db, 300));
}

#[test]
fn a_byte_edited_near_the_end_after_a_kill_is_reported_as_unanchored() {
    cut_tail_case(|db| {
        let mut bytes = std::fs::read(db).unwrap();
        let at = bytes.len() - 200;
        bytes[at] ^= 0x01;
        std::fs::write(db, bytes).unwrap();
    });
}
