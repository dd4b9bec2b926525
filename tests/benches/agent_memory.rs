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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use posguard_e2e::{AgentProcess, CollectorProcess, Fleet, free_port};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

fn call(socket: &Path, method: &str) -> Value {
    let s = UnixStream::connect(socket).unwrap();
    let mut w = s.try_clone().unwrap();
    let req = json!({"v": 1, "id": 1, "method": method, "params": {}});
    w.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str::<Value>(&line).unwrap()["result"].clone()
}

/// Appends `count` business events from `clients` connections.
fn append(socket: &Path, clients: u64, count: u64, tag: u64) {
    let per = count / clients;
    let threads: Vec<_> = (0..clients)
        .map(|p| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let s = UnixStream::connect(&socket).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                for i in 0..per {
                    let req = json!({"v": 1, "id": i, "method": "audit.record", "params": {
                        "action": "sale", "amount_minor": 1000 + i, "currency": "EUR",
                        "reference": format!("receipt t{tag} c{p} n{i}")}});
                    w.write_all(format!("{req}\n").as_bytes()).unwrap();
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    assert!(line.contains("\"ok\":true"), "{line}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The environment `systemd/posguard-agent.service` gives the agent.
/// (Plus quiet logs: the agent warns at every failed delivery while the collector is down.)
const UNIT_ENV: &[(&str, &str)] = &[("MALLOC_ARENA_MAX", "2"), ("RUST_LOG", "error")];

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn dir_mib(dir: &Path) -> f64 {
    posguard_agent::journal::dir_size(dir) as f64 / 1_048_576.0
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
    let se = posguard_hal::open(&tpm.config()).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("device.pem");
    fleet.device_cert(se, "mem-term-1", &cert);
    let socket = dir.path().join("agent.sock");
    let journal = dir.path().join("journal");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"mem-term-1\"\n[secure_element]\ntcti = \"{}\"\n[journal]\n\
             max_bytes = {max_bytes}\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n\
             [uplink]\ncollector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n\
             fleet_ca = \"{}\"\ncertificate = \"{}\"\nheartbeat_secs = 1\nbackoff_max_secs = 1\n",
            tpm.tcti(),
            journal.display(),
            dir.path().join("state").display(),
            socket.display(),
            fleet.path("fleet-ca.pem").display(),
            cert.display(),
        ),
    )
    .unwrap();

    println!(
        "agent memory with a full journal (bound {} MiB):",
        max_bytes >> 20
    );
    let agent = AgentProcess::start_with_env(&config, &socket, UNIT_ENV);
    println!(
        "  started on an empty journal:            RSS {:5.1} MiB",
        rss_mib(agent.pid())
    );
    // Fill until the bound makes the journal drop unshipped routine records.
    let t = Instant::now();
    let mut round = 0;
    loop {
        append(&socket, 32, round_events, round);
        round += 1;
        let j = &call(&socket, "status")["journal"];
        if j["dropped"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(round < 1000, "the journal never reached its bound: {j}");
    }
    let j = call(&socket, "status")["journal"].clone();
    println!(
        "  filled in {:.0} s: {} records, head {}, {} dropped, {:.1} MiB on disk; RSS {:5.1} MiB",
        t.elapsed().as_secs_f64(),
        j["records"],
        j["head_seq"],
        j["dropped"],
        dir_mib(&journal),
        rss_mib(agent.pid())
    );
    assert!(agent.stop().success());

    let t = Instant::now();
    let agent = AgentProcess::start_with_env(&config, &socket, UNIT_ENV);
    let j = call(&socket, "status")["journal"].clone();
    assert!(j["finding"].is_null(), "the full journal verified: {j}");
    println!(
        "  restarted on the full journal ({:.2} s to the socket): RSS {:5.1} MiB",
        t.elapsed().as_secs_f64(),
        rss_mib(agent.pid())
    );
    append(&socket, 1, more, 900);
    println!(
        "  after {more} more appends:                RSS {:5.1} MiB",
        rss_mib(agent.pid())
    );

    let head = call(&socket, "status")["journal"]["head_seq"]
        .as_u64()
        .unwrap();
    let _collector = CollectorProcess::start(&collector_config, port);
    let started = Instant::now();
    loop {
        let acked = call(&socket, "status")["uplink"]["acked_seq"]
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
        "  after shipping the backlog ({:.1} s):      RSS {:5.1} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib(agent.pid())
    );
    assert!(agent.stop().success());
}
