//! Memory of the real `posguard-agent` daemon with a full journal (identity key in swtpm).
//!
//! 1. The agent runs with its default journal bound (64 MiB) and no collector; the POS side
//!    appends business events through the local API until the journal overflows (full).
//! 2. The agent is restarted on that full journal (the start-up check reads all of it), then
//!    1,000 more events are appended.
//! 3. A collector comes up and the agent ships the whole backlog.
//!
//! The agent's resident set (`VmRSS`) is read from `/proc` after each step; the agent runs with
//! the environment its systemd unit sets. Target (issue 3): at most 24 MiB with a full 64 MiB
//! journal.
//!
//! Run: `./scripts/bench.sh agent_memory`. Under `cargo test` (no `--bench`) it runs as a smoke
//! test with a 1 MiB journal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::time::{Duration, Instant};

use posguard_e2e::{
    AgentProcess, CollectorProcess, Fleet, agent_status, append_business_events, free_port,
};
use posguard_hal::testing::Swtpm;

/// The `Environment=` lines of `systemd/posguard-agent.service`, read from the unit itself so
/// that the benchmark measures what is deployed, plus quiet logs (the agent warns at every
/// failed delivery while the collector is down).
fn unit_env() -> Vec<(String, String)> {
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/posguard-agent.service"
    );
    let text = std::fs::read_to_string(unit).unwrap();
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("RUST_LOG".to_string(), "error".to_string())])
        .collect();
    assert!(env.len() > 1, "no Environment= line in {unit}");
    env
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// One `kB` line of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// What the resident set is made of: heap and stacks, mapped files (the binary, libraries).
fn rss_parts(pid: u32) -> String {
    format!(
        "anon {:.1}, file {:.1}",
        status_mib(pid, "RssAnon:"),
        status_mib(pid, "RssFile:")
    )
}

fn dir_mib(dir: &Path) -> f64 {
    posguard_agent::journal::dir_size(dir) as f64 / 1_048_576.0
}

/// [`unit_env`] plus `POSGUARD_BENCH_AGENT_ENV` (space-separated `NAME=value`, `{start}` in a
/// value replaced by 1 for the first start and 2 for the restart), for trying allocator
/// settings or a heap profiler (`LD_PRELOAD=…/libheaptrack_preload.so
/// DUMP_HEAPTRACK_OUTPUT=/tmp/agent-{start}.raw`) without editing the unit.
fn agent_env(start: u32) -> Vec<(String, String)> {
    let extra = std::env::var("POSGUARD_BENCH_AGENT_ENV").unwrap_or_default();
    unit_env()
        .into_iter()
        .chain(extra.split_whitespace().filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.replace("{start}", &start.to_string())))
        }))
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let max_bytes: u64 = if full { 64 << 20 } else { 1 << 20 };
    // Appends per filling round and after the restart.
    let (round_events, more) = if full { (32_000, 1_000) } else { (3_200, 100) };

    let fleet = Fleet::new("posguard memory bench fleet CA");
    let port = free_port();
    let collector_config =
        fleet.collector_config(port, "[rate_limit]\nper_second = 1000.0\nburst = 1000\n");
    let tpm = Swtpm::start().unwrap();
    let terminal = fleet.bench_terminal(&tpm, "mem-term-1", port, max_bytes, "");
    let (config, socket, journal) = (&terminal.config, &terminal.socket, &terminal.journal);

    println!(
        "agent memory with a full journal (bound {} MiB):",
        max_bytes >> 20
    );
    let env = agent_env(1);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let agent = AgentProcess::start_with_env(config, socket, &env);
    println!(
        "  started on an empty journal:            RSS {:5.1} MiB ({})",
        rss_mib(agent.pid()),
        rss_parts(agent.pid())
    );
    // Fill until the bound makes the journal drop unshipped routine records.
    let t = Instant::now();
    let mut round = 0;
    loop {
        append_business_events(socket, 32, round_events / 32, round);
        round += 1;
        let j = &agent_status(socket)["journal"];
        if j["dropped"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(round < 1000, "the journal never reached its bound: {j}");
    }
    let j = agent_status(socket)["journal"].clone();
    println!(
        "  filled in {:.0} s: {} records, head {}, {} dropped, {:.1} MiB on disk; RSS {:5.1} MiB ({})",
        t.elapsed().as_secs_f64(),
        j["records"],
        j["head_seq"],
        j["dropped"],
        dir_mib(journal),
        rss_mib(agent.pid()),
        rss_parts(agent.pid())
    );
    assert!(agent.stop().success());

    let t = Instant::now();
    let env = agent_env(2);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let agent = AgentProcess::start_with_env(config, socket, &env);
    let j = agent_status(socket)["journal"].clone();
    assert!(j["finding"].is_null(), "the full journal verified: {j}");
    println!(
        "  restarted on the full journal ({:.2} s to the socket): RSS {:5.1} MiB ({})",
        t.elapsed().as_secs_f64(),
        rss_mib(agent.pid()),
        rss_parts(agent.pid())
    );
    append_business_events(socket, 1, more, 900);
    println!(
        "  after {more} more appends:                RSS {:5.1} MiB ({})",
        rss_mib(agent.pid()),
        rss_parts(agent.pid())
    );

    let head = agent_status(socket)["journal"]["head_seq"]
        .as_u64()
        .unwrap();
    let _collector = CollectorProcess::start(&collector_config, port);
    let started = Instant::now();
    loop {
        let acked = agent_status(socket)["uplink"]["acked_seq"]
            .as_u64()
            .unwrap_or(0);
        if acked >= head {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not shipped within 10 minutes: acked {acked} of {head}"
        );
        // Sampling interval of the measurement, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "  after shipping the backlog ({:.1} s):      RSS {:5.1} MiB ({})",
        started.elapsed().as_secs_f64(),
        rss_mib(agent.pid()),
        rss_parts(agent.pid())
    );
    assert!(agent.stop().success());
}
