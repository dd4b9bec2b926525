//! The journal's own anchors on both backends (software, and swtpm): a deleted or emptied
//! journal is a finding by its witness, a first start is not; the offline verdict says what
//! was proved (anchored to a clean stop, an unanchored tail, broken).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::sync::Arc;

use posguard_agent::clock::Clock;
use posguard_agent::journal::{Finding, Journal, JournalConfig, OpenReport, Verdict, verify_dir};
use posguard_hal::testing::Swtpm;
use posguard_hal::{KeyMode, SecureElement, SecureElementConfig};
use posguard_proto::event::{Actor, Event, EventKind, StopReason, TamperFinding};
use posguard_proto::text::DeviceId;

enum Backend {
    Software(tempfile::TempDir),
    Tpm(Swtpm),
}

struct Fixture {
    backend: Backend,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(tpm: bool) -> Self {
        let backend = if tpm {
            Backend::Tpm(Swtpm::start().unwrap())
        } else {
            Backend::Software(tempfile::tempdir().unwrap())
        };
        let f = Fixture {
            backend,
            dir: tempfile::tempdir().unwrap(),
        };
        f.element()
            .ensure_identity_key(KeyMode::OpenOrCreate)
            .unwrap();
        f
    }

    fn element(&self) -> Arc<dyn SecureElement> {
        let config = match &self.backend {
            Backend::Software(d) => SecureElementConfig::software(d.path().join("keys")),
            Backend::Tpm(t) => t.config(),
        };
        posguard_hal::open(&config).unwrap()
    }

    fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    fn open(&self) -> (Journal, OpenReport) {
        let config = JournalConfig::at(self.journal_dir());
        Journal::open(&config, device(), self.element(), Clock::system()).unwrap()
    }

    /// Opens, appends `n` events, and stops cleanly (as the daemon does: `agent_stopped`,
    /// then the final checkpoint) or not.
    fn session(&self, n: u64, clean: bool) -> OpenReport {
        let (j, report) = self.open();
        for _ in 0..n {
            j.append_blocking(event(EventKind::AgentStarted {
                version: posguard_proto::text::ShortCode::new("0.1.0").unwrap(),
                backend: posguard_proto::event::KeyBackend::Software,
            }))
            .unwrap();
        }
        if clean {
            j.append_blocking(event(EventKind::AgentStopped {
                reason: StopReason::Shutdown,
            }))
            .unwrap();
        }
        j.shutdown_blocking().unwrap();
        report
    }
}

fn device() -> DeviceId {
    DeviceId::new("term-0001").unwrap()
}

fn event(kind: EventKind) -> Event {
    Event::new(Clock::system().stamp(), Actor::System, None, kind)
}

/// sled may hold its lock a moment after the journal closed it in this process.
fn open_sled(dir: &std::path::Path) -> sled::Db {
    let config = sled::Config::new().path(dir).segment_size(128 * 1024);
    for _ in 0..200 {
        if let Ok(db) = config.open() {
            return db;
        }
        // Polling for the lock with a deadline, not synchronisation by sleeping.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    config.open().unwrap()
}

macro_rules! both {
    ($name:ident, |$tpm:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run($tpm: bool) $body
            #[test]
            fn software() { run(false) }
            #[test]
            fn tpm() { run(true) }
        }
    };
}

both!(
    a_deleted_or_emptied_journal_is_missing_a_first_start_is_not,
    |tpm| {
        let f = Fixture::new(tpm);
        let first = f.session(5, true);
        assert!(
            first.finding.is_none(),
            "a first start: {:?}",
            first.finding
        );
        assert!(
            f.dir.path().join("journal.anchor").exists(),
            "the witness is written"
        );

        for emptied in [false, true] {
            std::fs::remove_dir_all(f.journal_dir()).unwrap();
            if emptied {
                std::fs::create_dir_all(f.journal_dir()).unwrap();
            }
            let (j, report) = f.open();
            match report.finding {
                Some(Finding::Missing {
                    witnessed_counter: Some(w),
                    tpm_counter,
                }) => assert!(tpm_counter > w, "{w} < {tpm_counter}"),
                other => panic!("expected journal missing (emptied: {emptied}), got {other:?}"),
            }
            let status = j.status_blocking().unwrap();
            assert!(status.finding.unwrap().starts_with("journal missing"));
            j.shutdown_blocking().unwrap();
            drop(j);
            let events = posguard_agent::journal::read_events(&f.journal_dir()).unwrap();
            assert!(
                matches!(
                    &events[0].1.kind,
                    EventKind::TamperRecovered {
                        finding: TamperFinding::StoreMissing { store },
                        ..
                    } if store.as_str() == "journal"
                ),
                "the new chain's first record says so: {:?}",
                events[0]
            );
            // The next start is a continuation, not a finding again.
            let again = f.session(1, true);
            assert!(again.finding.is_none(), "{:?}", again.finding);
        }

        // Journal and witness wiped together: locally a first start (the collector sees the
        // chain restart). Documented, and pinned here so that a change of it is deliberate.
        std::fs::remove_dir_all(f.journal_dir()).unwrap();
        std::fs::remove_file(f.dir.path().join("journal.anchor")).unwrap();
        let wiped = f.session(1, true);
        assert!(wiped.finding.is_none());
    }
);

both!(the_offline_verdict_says_what_was_proved, |tpm| {
    let f = Fixture::new(tpm);
    f.session(20, true);
    let report = verify_dir(&f.journal_dir(), None).unwrap();
    assert_eq!(report.verdict, Verdict::Anchored, "{report:?}");
    assert_eq!(report.verdict.exit_code(), 0);
    assert_eq!(report.unanchored, 0);
    assert!(report.clean_stop);

    // Stopped without agent_stopped: the final checkpoint covers the head, but it is not a
    // clean stop, so nothing proves that more did not follow.
    let tail = f.session(20, false);
    assert_eq!(tail.start_tail.unanchored, 0);
    assert!(
        tail.start_tail.clean_stop,
        "the previous session stopped cleanly"
    );
    let report = verify_dir(&f.journal_dir(), None).unwrap();
    assert_eq!(report.verdict, Verdict::UnanchoredTail, "{report:?}");
    assert_eq!(report.verdict.exit_code(), 2);
    assert!(!report.clean_stop);
    let next = f.session(0, true);
    assert!(!next.start_tail.clean_stop, "{:?}", next.start_tail);

    // A broken record is broken, whatever the tail.
    let db = open_sled(&f.journal_dir());
    let records = db.open_tree("records").unwrap();
    let mut v = records.get(5u64.to_be_bytes()).unwrap().unwrap().to_vec();
    let at = v.len() - 80;
    v[at] ^= 0x01;
    records.insert(5u64.to_be_bytes(), v).unwrap();
    db.flush().unwrap();
    drop(records);
    drop(db);
    let report = verify_dir(&f.journal_dir(), None).unwrap();
    assert_eq!(report.verdict, Verdict::Broken, "{report:?}");
    assert_eq!(report.verdict.exit_code(), 1);
});

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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

/// A journal killed with 300 records after its last checkpoint, its `db` file then cut at 48
/// points spread over the whole file: no cut is ever reported as complete at start, nor
/// offline unless back to an earlier clean stop whose counter is behind the TPM's. Software backend only: its counter is a file, so each cut starts from the same
/// counter (a TPM's cannot be put back).
#[test]
fn no_cut_of_a_killed_journals_tail_is_reported_complete() {
    let f = Fixture::new(false);
    f.session(10, true);
    let (j, _) = f.open();
    for i in 0..300u64 {
        j.append_blocking(event(EventKind::CachePurged {
            purged: i,
            remaining: 0,
        }))
        .unwrap();
    }
    let live = j.status_blocking().unwrap();
    let (full_head, counter) = (live.head_seq, live.last_checkpoint_counter.unwrap());
    // Every append above is durable: a copy now is what a kill leaves.
    let snapshot = f.dir.path().join("snapshot");
    copy_dir(&f.journal_dir(), &snapshot.join("journal"));
    let Backend::Software(keys) = &f.backend else {
        unreachable!()
    };
    copy_dir(&keys.path().join("keys"), &snapshot.join("keys"));
    j.shutdown_blocking().unwrap();
    drop(j);

    let len = std::fs::metadata(snapshot.join("journal/db"))
        .unwrap()
        .len();
    let (mut offline_unanchored, mut offline_broken, mut offline_err) = (0, 0, 0);
    let mut offline_earlier_stop = 0;
    let (mut start_findings, mut start_unclean, mut start_err) = (0, 0, 0);
    let mut lowest_head = full_head;
    let mut cut = 1u64;
    let step = (len / 48).max(1);
    while cut < len {
        let work = f.dir.path().join("work");
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&snapshot, &work);
        // The software backend insists on a private key directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.join("keys"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(work.join("journal/db"))
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        match verify_dir(&work.join("journal"), None) {
            Ok(r) => {
                // Offline, only a cut back to an earlier clean stop can look complete, and then
                // its checkpoint's counter is below the terminal's: what the agent compares.
                if r.verdict == Verdict::Anchored {
                    assert!(
                        r.last_checkpoint.is_some_and(|(_, c)| c < counter),
                        "cut {cut}: {r:?}"
                    );
                }
                assert!(r.head_seq <= full_head, "cut {cut}: {r:?}");
                lowest_head = lowest_head.min(r.head_seq);
                match r.verdict {
                    Verdict::Broken => offline_broken += 1,
                    Verdict::UnanchoredTail => offline_unanchored += 1,
                    Verdict::Anchored => offline_earlier_stop += 1,
                }
            }
            Err(_) => offline_err += 1,
        }
        let se = posguard_hal::open(&SecureElementConfig::software(work.join("keys"))).unwrap();
        let config = JournalConfig::at(work.join("journal"));
        match Journal::open(&config, device(), se, Clock::system()) {
            Ok((j, report)) => {
                if report.finding.is_some() {
                    start_findings += 1;
                } else {
                    assert!(
                        !report.start_tail.clean_stop,
                        "cut {cut}: a start without a finding must not look clean: {:?}",
                        report.start_tail
                    );
                    start_unclean += 1;
                }
                j.shutdown_blocking().unwrap();
            }
            Err(e) => {
                if start_err == 0 {
                    println!("cut {cut}: refused: {e}");
                }
                start_err += 1
            }
        }
        cut += step;
    }
    println!(
        "db {len} bytes, head {full_head}, lowest head after a cut {lowest_head}; offline: {offline_unanchored} unanchored, {offline_earlier_stop} back to an earlier stop, {offline_broken} broken, {offline_err} unreadable; at start: {start_findings} findings, {start_unclean} unclean tails, {start_err} refused"
    );
    assert!(
        offline_unanchored > 0 && start_unclean > 0,
        "some cuts kept a verifying prefix"
    );
    assert!(lowest_head < full_head, "the cuts did cut records");
}
