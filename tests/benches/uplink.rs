//! End-to-end shipping throughput: the real `posguard-agent` (identity key in swtpm) ships its
//! journal over mTLS to the real `posguard-collector`, which verifies and stores every record.
//!
//! The journal is filled first (through the local API, as the POS application would) while the
//! collector is down; then the collector starts and the agent ships the backlog. Measured from
//! the first acknowledgement to the last (the agent's own `acked_seq`, which only moves when
//! the collector has stored the records durably): that is the sustained rate of the whole path
//! — journal read, batch, TLS, collector verification and store, acknowledgement, prune.
//! Afterwards the collector's store is queried: every seq from 1 to the head, once.
//!
//! Run: `./scripts/bench.sh uplink`. Knob: `POSGUARD_BENCH_EVENTS` (100000; the journal is given
//! 256 MiB so that the backlog fits without overflow).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use posguard_e2e::{
    AgentProcess, CollectorProcess, Fleet, agent_status, append_business_events, free_port,
};
use posguard_hal::testing::Swtpm;

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` (CI) this runs as a small
    // smoke test of the same path.
    let full = std::env::args().any(|a| a == "--bench");
    let events: u64 = std::env::var("POSGUARD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let producers = 32u64;

    let fleet = Fleet::new("posguard bench fleet CA");
    let port = free_port();
    let collector_config =
        fleet.collector_config(port, "[rate_limit]\nper_second = 1000.0\nburst = 1000\n");

    let tpm = Swtpm::start().unwrap();
    let extra = std::env::var("POSGUARD_BENCH_UPLINK_EXTRA").unwrap_or_default();
    // 256 MiB: the backlog fits without overflow.
    let terminal = fleet.bench_terminal(&tpm, "bench-term-1", port, 256 << 20, &extra);
    let socket = terminal.socket.clone();
    let agent = AgentProcess::start(&terminal.config, &socket);

    // The backlog, appended while no collector answers.
    let t = Instant::now();
    let per = events / producers;
    append_business_events(&socket, producers, per, 0);
    let filled = t.elapsed();
    let head = agent_status(&socket)["journal"]["head_seq"]
        .as_u64()
        .unwrap();
    println!(
        "backlog: {} events appended durably through the local API in {:.1} s ({:.0}/s, \
         {producers} clients); journal head {head}",
        per * producers,
        filled.as_secs_f64(),
        (per * producers) as f64 / filled.as_secs_f64()
    );

    let _collector = CollectorProcess::start(&collector_config, port);
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let done = loop {
        let acked = agent_status(&socket)["uplink"]["acked_seq"]
            .as_u64()
            .unwrap_or(0);
        let now = Instant::now();
        if acked > 0 && first.is_none() {
            first = Some((now, acked));
        }
        if acked >= head {
            break now;
        }
        assert!(
            now.duration_since(started) < Duration::from_secs(600),
            "not shipped within 10 minutes: acked {acked} of {head}"
        );
        // Sampling interval of the measurement, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(10));
    };
    let (t0, a0) = first.unwrap();
    let steady = done.duration_since(t0).as_secs_f64();
    let sustained = if a0 < head && steady > 0.0 {
        format!("{:.0} events/s", (head - a0) as f64 / steady)
    } else {
        "n/a (one batch held everything)".to_owned()
    };
    println!(
        "shipping: {head} events acknowledged {:.2} s after the collector started; sustained \
         from the first acknowledgement (seq {a0}) to the last: {sustained}",
        done.duration_since(started).as_secs_f64(),
    );

    let mut seqs = posguard_e2e::stored_seqs(&collector_config, "bench-term-1");
    let stored = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), stored, "nothing stored twice");
    assert!(seqs.len() as u64 >= head && seqs.first() == Some(&1));
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap in the stored chain"
    );
    println!(
        "collector store: seqs 1..={} each once, verified",
        seqs.len()
    );
    assert!(agent.stop().success());
}
