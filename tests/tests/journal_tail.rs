//! Issue 15, point 5 on the real agent binary with swtpm: a journal tail cut after a SIGKILL
//! (truncated, or a byte edited near the end of `journal/db`) is reported for what it is by
//! `posguardctl verify-journal` (exit 2, the unanchored count) and by the agent's status; a cut
//! below what the cache saw of the journal is a signed finding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod terminal;

use std::path::Path;

use posguard_e2e::{agent_status, append_business_events, command};
use posguard_proto::event::TamperFinding;
use serde_json::Value;
use terminal::{Terminal, condition};

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
fn cut_tail_case(damage: impl FnOnce(&Path, u64)) {
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

    damage(&t.path("journal"), before);
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

/// Truncates the journal's sled file by a few hundred bytes, more if that cut only what follows
/// the last record (sled appends other pages after it too): the first cut, from 300 bytes up,
/// that makes the stored head fall below `head`. `verify-journal` works on a copy, so each try
/// starts from the same bytes.
fn cut_records(journal: &Path, head: u64) {
    let db = journal.join("db");
    let original = std::fs::read(&db).unwrap();
    for by in [300usize, 600, 1200, 2400, 4800, 9600] {
        std::fs::write(&db, &original[..original.len() - by]).unwrap();
        if verify_json(journal)["head_seq"].as_u64().unwrap() < head {
            return;
        }
    }
    panic!("no cut up to 9600 bytes removed a record");
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
    cut_records(&t.path("journal"), seen);
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
    cut_tail_case(cut_records);
}

#[test]
fn a_byte_edited_near_the_end_after_a_kill_is_reported_as_unanchored() {
    cut_tail_case(|journal, _| {
        let db = &journal.join("db");
        let mut bytes = std::fs::read(db).unwrap();
        let at = bytes.len() - 200;
        bytes[at] ^= 0x01;
        std::fs::write(db, bytes).unwrap();
    });
}
