//! Issue 15, point 4 on the real agent binary with its identity key and counter in swtpm: a
//! journal, clerk store or cache that vanished, was swapped for another terminal's or was put
//! back as an older copy is a finding at start (the status condition and a signed record in the
//! journal), and the next start is clean again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod terminal;

use posguard_proto::event::{EventKind, TamperFinding};
use serde_json::Value;
use terminal::{Terminal, condition, copy_dir, replace_dir};

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
