//! The agent's journal and the collector's store disagreeing about where the chain stands, with
//! the real agent, a real collector and swtpm: a collector restored from an older backup while
//! the terminal kept logging gets back everything it lost (no permanent `chain_gap`); a journal
//! that went back (deleted and started again) raises one `chain_regressed` alert, and the
//! refused batches the agent then retries raise no second alert.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use posguard_e2e::{
    AgentProcess, CollectorProcess, Fleet, agent_status, append_business_events, collector_cli,
    free_port, stored_seqs,
};
use posguard_hal::testing::Swtpm;
use posguard_proto::event::{EventKind, TamperFinding};
use serde_json::Value;

const HIGH_LIMIT: &str = "[rate_limit]\nper_second = 1000.0\nburst = 1000\n";

/// Polls `f` every 100 ms until it returns `Some`, at most `secs`.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the collector acknowledged the journal's head; returns the head.
fn shipped(socket: &Path, secs: u64) -> u64 {
    poll(secs, "the journal's head acknowledged", || {
        let j = agent_status(socket)["journal"].clone();
        let head = j["head_seq"].as_u64()?;
        (j["shipped_seq"].as_u64()? == head).then_some(head)
    })
}

fn alerts(config: &Path) -> Vec<Value> {
    collector_cli(config, &["alerts"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(config: &Path) -> Vec<String> {
    alerts(config)
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_collector_restored_from_an_older_backup_gets_back_what_it_lost_while_the_agent_kept_logging() {
    let fleet = Fleet::new("posguard restore CA");
    let port = free_port();
    let config = fleet.collector_config(port, HIGH_LIMIT);
    let collector = CollectorProcess::start(&config, port);
    let tpm = Swtpm::start().unwrap();
    let t = fleet.bench_terminal(&tpm, "till-restore", port, 64 * 1024 * 1024, "");
    let agent = AgentProcess::start(&t.config, &t.socket);

    append_business_events(&t.socket, 2, 15, 1);
    let backed_up = shipped(&t.socket, 60);
    let backup = fleet.path("backup.db");
    collector_cli(&config, &["backup", "--out", backup.to_str().unwrap()]);
    append_business_events(&t.socket, 2, 10, 2);
    let lost = shipped(&t.socket, 60);
    assert!(lost > backed_up);

    // The collector dies; the till keeps selling; the store is replaced by the older backup.
    collector.kill();
    append_business_events(&t.socket, 2, 8, 3);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(fleet.path(&format!("collector.db{suffix}")));
    }
    collector_cli(&config, &["restore", "--from", backup.to_str().unwrap()]);
    let restored: Value = serde_json::from_str(
        collector_cli(&config, &["devices"])
            .lines()
            .find(|l| l.contains("till-restore"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(restored["highest_stored"], backed_up, "{restored}");
    let _collector = CollectorProcess::start(&config, port);

    let head = shipped(&t.socket, 90);
    let seqs = stored_seqs(&config, "till-restore");
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a seq stored twice");
    assert_eq!(
        unique,
        (1..=head).collect::<BTreeSet<u64>>(),
        "seqs {}..={lost} lost by the restore, and the outage's, must be resent",
        backed_up + 1
    );
    assert!(kinds(&config).is_empty(), "{:?}", alerts(&config));
    assert!(agent.stop().success());
}

#[test]
fn a_journal_that_went_back_raises_one_alert_and_retries_add_none() {
    let fleet = Fleet::new("posguard regress CA");
    let port = free_port();
    let config = fleet.collector_config(port, HIGH_LIMIT);
    let _collector = CollectorProcess::start(&config, port);
    let tpm = Swtpm::start().unwrap();
    let t = fleet.bench_terminal(&tpm, "till-regress", port, 64 * 1024 * 1024, "");
    let agent = AgentProcess::start(&t.config, &t.socket);
    append_business_events(&t.socket, 1, 20, 1);
    let stored = shipped(&t.socket, 60);
    assert!(agent.stop().success());

    // The journal is deleted (moved away here): the agent starts a new chain at seq 1.
    std::fs::rename(&t.journal, t.dir.path().join("journal.gone")).unwrap();
    let agent = AgentProcess::start(&t.config, &t.socket);
    poll(30, "a chain_regressed alert", || {
        kinds(&config)
            .contains(&"chain_regressed".to_owned())
            .then_some(())
    });
    // The agent has taken in the refusal (it journals behind_collector before it counts the
    // failure) before its chain grows: a head already past the collector's would hide it.
    poll(30, "the refusal counted by the agent", || {
        let f = agent_status(&t.socket)["uplink"]["failures"].as_u64()?;
        (f >= 1).then_some(())
    });
    // The new chain grows past the stored head: its next record does not link to what the
    // collector holds, and the agent retries that refused batch again and again.
    append_business_events(&t.socket, 1, stored + 5, 2);
    let before = agent_status(&t.socket)["uplink"]["failures"]
        .as_u64()
        .unwrap();
    poll(60, "three refused retries", || {
        let f = agent_status(&t.socket)["uplink"]["failures"].as_u64()?;
        (f >= before + 3).then_some(())
    });
    assert!(agent.stop().success());
    // Another start reports the lower head again (heartbeats included): nothing new.
    let agent = AgentProcess::start(&t.config, &t.socket);
    let start = agent_status(&t.socket)["uplink"]["failures"]
        .as_u64()
        .unwrap();
    poll(60, "a refused retry after the restart", || {
        let f = agent_status(&t.socket)["uplink"]["failures"].as_u64()?;
        (f > start).then_some(())
    });
    assert!(agent.stop().success());

    let mut k = kinds(&config);
    k.sort();
    assert_eq!(
        k,
        vec!["chain_broken".to_owned(), "chain_regressed".to_owned()],
        "one alert per cause: {:?}",
        alerts(&config)
    );
    // The agent saw it too: the collector acknowledged records beyond its head.
    let events = posguard_agent::journal::read_events(&t.journal).unwrap();
    let findings = events
        .iter()
        .filter(|(_, e)| {
            matches!(&e.kind, EventKind::TamperDetected { finding: TamperFinding::Other(code) }
                if code.as_str() == "behind_collector")
        })
        .count();
    assert!(findings >= 1, "no behind_collector finding in the journal");
}
