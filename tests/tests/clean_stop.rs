//! A clean stop is shipped when the agent stops (issue 17, point 1): real agents on swtpm and
//! a real collector. After SIGTERM the collector already holds `agent_stopped` as the device's
//! last record when the process has exited, over several stop/start cycles; `devices` then
//! shows the terminal `stopped` (clean) while one killed without warning (a power cut) turns
//! `silent` (unclean). With the collector unreachable the stop stays bounded and the record
//! ships at the next start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use posguard_e2e::{
    AgentProcess, CollectorProcess, Fleet, agent_status, append_business_events, collector_cli,
    free_port,
};
use posguard_hal::testing::Swtpm;
use serde_json::Value;

/// Cycles of start, events, SIGTERM for the cleanly stopped terminal.
const CYCLES: u64 = 3;
/// The agent's own bound on its final shipping attempt (agent/src/uplink.rs FINAL_FLUSH),
/// plus the local API and cache drains that come first.
const STOP_BOUND: Duration = Duration::from_secs(10);

fn kinds(config: &Path, device: &str) -> Vec<String> {
    let mut rows: Vec<(u64, String)> = collector_cli(config, &["query", "--device", device])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, k)| k).collect()
}

fn devices(config: &Path) -> HashMap<String, Value> {
    collector_cli(config, &["devices", "--json"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["device_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

fn wait_acked(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = agent_status(socket);
        let head = s["journal"]["head_seq"].as_u64().unwrap();
        if s["uplink"]["acked_seq"].as_u64().unwrap_or(0) >= head {
            return;
        }
        assert!(Instant::now() < deadline, "not shipped: {s}");
        // Polling interval while waiting for the acknowledgement, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stopped_terminal_ships_its_stop_and_looks_different_from_a_power_cut() {
    let fleet = Fleet::new("posguard clean-stop CA");
    let port = free_port();
    let config = fleet.collector_config(
        port,
        "silent_after_s = 3\nmaintenance_retry_after_s = 1\n\
         [rate_limit]\nper_second = 1000.0\nburst = 1000\n",
    );
    let collector = CollectorProcess::start(&config, port);
    let (tpm_a, tpm_b) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let stopped = fleet.bench_terminal(&tpm_a, "till-stopped", port, 1 << 20, "");
    let cut = fleet.bench_terminal(&tpm_b, "till-cut", port, 1 << 20, "");

    let mut stop_ms = Vec::new();
    for cycle in 0..CYCLES {
        let agent = AgentProcess::start(&stopped.config, &stopped.socket);
        append_business_events(&stopped.socket, 1, 5, cycle);
        wait_acked(&stopped.socket);
        let t0 = Instant::now();
        assert!(agent.stop().success(), "cycle {cycle}");
        stop_ms.push(t0.elapsed().as_millis());
        // No waiting: the record was stored before the process exited.
        let k = kinds(&config, "till-stopped");
        assert_eq!(
            k.last().map(String::as_str),
            Some("agent_stopped"),
            "cycle {cycle}: {k:?}"
        );
        assert_eq!(
            k.iter().filter(|k| *k == "agent_stopped").count() as u64,
            cycle + 1,
            "one stop record per stop, shipped at the stop: {k:?}"
        );
        assert_eq!(devices(&config)["till-stopped"]["state"], "stopped");
    }
    println!("clean stops took {stop_ms:?} ms");
    assert!(
        stop_ms.iter().all(|ms| *ms < STOP_BOUND.as_millis()),
        "{stop_ms:?}"
    );

    // The power cut: killed without a chance to say anything.
    let agent = AgentProcess::start(&cut.config, &cut.socket);
    append_business_events(&cut.socket, 1, 5, 99);
    wait_acked(&cut.socket);
    drop(agent); // SIGKILL
    assert_ne!(
        kinds(&config, "till-cut").last().map(String::as_str),
        Some("agent_stopped")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let v = devices(&config);
        if v["till-cut"]["state"] == "silent" {
            break v;
        }
        assert!(Instant::now() < deadline, "till-cut never silent: {v:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(view["till-cut"]["last_stop"], "unclean");
    assert_eq!(
        view["till-cut"]["silent_since"],
        view["till-cut"]["last_contact"]
    );
    // Quiet for as long, but stopped on purpose: not silent.
    assert_eq!(view["till-stopped"]["state"], "stopped", "{view:?}");
    assert_eq!(view["till-stopped"]["last_stop"], "clean");
    assert_eq!(view["till-stopped"]["silent"], false);
    // The silent alerts say which is which.
    let deadline = Instant::now() + Duration::from_secs(30);
    let details: HashMap<String, String> = loop {
        let out = posguard_e2e::collector_cli(&config, &["alerts", "--kind", "silent"]);
        let d: HashMap<String, String> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| {
                (
                    v["device_id"].as_str().unwrap_or_default().to_owned(),
                    v["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if d.len() >= 2 {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no silent alerts for both: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        details["till-stopped"].contains("stopped cleanly"),
        "{details:?}"
    );
    assert!(details["till-cut"].contains("no clean stop"), "{details:?}");

    // Collector down: the stop stays bounded, and the stop record ships at the next start.
    let agent = AgentProcess::start(&stopped.config, &stopped.socket);
    append_business_events(&stopped.socket, 1, 3, 100);
    wait_acked(&stopped.socket);
    collector.kill();
    append_business_events(&stopped.socket, 1, 2, 101);
    let t0 = Instant::now();
    assert!(agent.stop().success());
    let offline_ms = t0.elapsed().as_millis();
    println!("stop with the collector down took {offline_ms} ms");
    assert!(offline_ms < STOP_BOUND.as_millis(), "{offline_ms} ms");
    let _collector = CollectorProcess::start(&config, port);
    let before = kinds(&config, "till-stopped");
    assert_ne!(
        before.last().map(String::as_str),
        Some("agent_stopped"),
        "{before:?}"
    );
    let agent = AgentProcess::start(&stopped.config, &stopped.socket);
    wait_acked(&stopped.socket);
    let after = kinds(&config, "till-stopped");
    let stops = after.iter().filter(|k| *k == "agent_stopped").count() as u64;
    assert_eq!(
        stops,
        CYCLES + 1,
        "the offline stop arrived with the next start: {after:?}"
    );
    assert!(agent.stop().success());
}
