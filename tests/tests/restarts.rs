//! Hundreds of agent starts — clean stops, SIGKILL after logging, kills during start-up — with
//! events each time, against one real collector: every record is stored exactly once, no alert
//! is raised, and the agent's key ring stays bounded. Every start certifies a new journal key;
//! before batches carried the certificates their records need, shipping stopped for good after
//! about 64 starts (`unknown_journal_key` on every retry).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use posguard_e2e::{
    AgentProcess, CollectorProcess, Fleet, agent_status, append_business_events, collector_cli,
    command, free_port, stored_seqs,
};
use posguard_hal::testing::Swtpm;

/// Agent starts in the test.
const STARTS: u64 = 300;
/// Events logged by each start that lives long enough.
const EVENTS: u64 = 8;

/// xorshift64: reproducible fault timing from the printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn hundreds_of_starts_and_kills_ship_every_record_exactly_once_without_alerts() {
    let fleet = Fleet::new("posguard restarts CA");
    let port = free_port();
    let config = fleet.collector_config(port, "[rate_limit]\nper_second = 1000.0\nburst = 1000\n");
    let _collector = CollectorProcess::start(&config, port);
    let tpm = Swtpm::start().unwrap();
    // A 1 MiB journal: its live budget (256 KiB) is passed after about 1,000 records, so
    // shipped records are pruned and their keys' certificates retired during the run.
    let t = fleet.bench_terminal(&tpm, "term-restarts", port, 1024 * 1024, "");
    let mut seed = std::env::var("POSGUARD_RESTART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) << 20 ^ 0x9E37_79B9_7F4A_7C15 | 1);
    println!("seed {seed} (POSGUARD_RESTART_SEED replays the kill timing)");
    let started = Instant::now();
    let mut start_ms: u64 = 300;
    let (mut clean, mut killed, mut early) = (0u32, 0u32, 0u32);
    let (mut up_ms, mut events_ms, mut stop_ms) = (0u64, 0u64, 0u64);
    for i in 0..STARTS {
        match next(&mut seed) % 3 {
            0 => {
                let t0 = Instant::now();
                let agent = AgentProcess::start(&t.config, &t.socket);
                start_ms = t0.elapsed().as_millis() as u64;
                up_ms += start_ms;
                let t1 = Instant::now();
                append_business_events(&t.socket, 1, EVENTS, i);
                events_ms += t1.elapsed().as_millis() as u64;
                let t2 = Instant::now();
                let status = agent.stop();
                stop_ms += t2.elapsed().as_millis() as u64;
                assert!(status.success(), "start {i}: clean stop failed: {status}");
                clean += 1;
            }
            1 => {
                let mut agent = AgentProcess::start(&t.config, &t.socket);
                append_business_events(&t.socket, 1, EVENTS, i);
                assert!(agent.is_running());
                drop(agent); // SIGKILL
                tpm.flush_after_kill().unwrap();
                killed += 1;
            }
            _ => {
                // Killed somewhere in start-up: before, while or after the journal certifies
                // its key and writes its first records. The delay is the fault's timing, not a
                // wait for anything.
                let mut child = command("posguard-agent")
                    .args(["run", "--config"])
                    .arg(&t.config)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                let delay = next(&mut seed) % (start_ms.max(20) * 5 / 4);
                std::thread::sleep(Duration::from_millis(delay));
                let _ = child.kill();
                let _ = child.wait();
                tpm.flush_after_kill().unwrap();
                early += 1;
            }
        }
    }
    println!(
        "{STARTS} starts ({clean} clean stops, {killed} SIGKILL, {early} killed during start-up) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let per = |ms: u64| ms / u64::from(clean.max(1));
    println!(
        "clean starts: {} ms to start, {} ms for {EVENTS} events, {} ms to stop (means)",
        per(up_ms),
        per(events_ms),
        per(stop_ms)
    );

    // One last start: everything must arrive.
    let agent = AgentProcess::start(&t.config, &t.socket);
    append_business_events(&t.socket, 1, EVENTS, STARTS);
    let deadline = Instant::now() + Duration::from_secs(120);
    let head = loop {
        let s = agent_status(&t.socket);
        let head = s["journal"]["head_seq"].as_u64().unwrap();
        let shipped = s["journal"]["shipped_seq"].as_u64().unwrap();
        if shipped == head {
            break head;
        }
        assert!(
            Instant::now() < deadline,
            "the agent stopped shipping: shipped {shipped} of {head}; alerts: {}",
            collector_cli(&config, &["alerts"])
        );
        // Polling interval while waiting for the condition above.
        std::thread::sleep(Duration::from_millis(100));
    };
    let seqs = stored_seqs(&config, "term-restarts");
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a seq stored twice");
    assert_eq!(
        unique,
        (1..=head).collect::<BTreeSet<u64>>(),
        "every seq 1..={head} stored exactly once"
    );
    let alerts = collector_cli(&config, &["alerts"]);
    assert!(alerts.trim().is_empty(), "alerts raised: {alerts}");
    let status = agent.stop();
    assert!(status.success());

    let ring = posguard_agent::journal::key_ring(&t.journal).unwrap();
    println!(
        "{head} records shipped; the journal holds {} certificates for {} keys that sign stored records",
        ring.certificates, ring.signing_keys
    );
    assert!(
        ring.certificates <= ring.signing_keys + 1,
        "certificates of keys that sign nothing stored were kept: {ring:?}"
    );
    // Without pruning (this journal stays far below its bound) every start that wrote a record
    // keeps its key; what bounds the ring over a terminal's lifetime is that shipped records are
    // pruned and their keys retired with them (agent/tests/key_ring.rs). Starts killed before
    // their first record leave no key behind:
    assert!(
        ring.certificates < STARTS as usize,
        "a key kept for every start, even those that wrote nothing: {ring:?}"
    );
}
