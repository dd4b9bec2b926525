//! Revocation with the real binaries (agent with its key in swtpm, collector, loopback TLS):
//!
//! - a terminal revoked while it ships continuously stops shipping within seconds, and its
//!   refused attempts are visible to operations (metrics, a `revoked_certificate` alert);
//! - a stolen collector key: once the collector's certificate is on the fleet CRL and the
//!   agent has that CRL (fetched from the re-keyed collector, signature checked), the agent
//!   refuses a server presenting the stolen certificate, even one serving an older CRL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use posguard_e2e::{
    AgentProcess, CollectorProcess, Fleet, agent_status, append_business_events, collector_cli,
    free_port, stored_seqs,
};
use posguard_hal::testing::Swtpm;

/// Polls `what` every 100 ms until it returns `Some`, for at most `secs`.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling interval, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Appends business events through the agent's API until stopped; counts them.
struct Appender {
    stop: Arc<AtomicBool>,
    appended: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Appender {
    fn start(socket: &Path) -> Self {
        let (stop, appended) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, a, socket) = (stop.clone(), appended.clone(), socket.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut tag = 0;
            while !s.load(Ordering::Relaxed) {
                append_business_events(&socket, 1, 20, tag);
                a.fetch_add(20, Ordering::Relaxed);
                tag += 1;
            }
        });
        Appender {
            stop,
            appended,
            thread: Some(thread),
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_terminal_revoked_while_shipping_stops_within_seconds_and_operations_see_it() {
    let fleet = Fleet::new("posguard e2e revocation CA");
    let crl = fleet.write_crl(&[], 1);
    let (port, metrics_port) = (free_port(), free_port());
    let config = fleet.collector_config(
        port,
        &format!(
            "crl = \"{}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            crl.display()
        ),
    );
    let _collector = CollectorProcess::start(&config, port);
    let tpm = Swtpm::start().unwrap();
    let id = "till-rev-1";
    let t = fleet.bench_terminal(&tpm, id, port, 16 << 20, "");
    let agent = AgentProcess::start(&t.config, &t.socket);
    let appender = Appender::start(&agent.socket);
    poll(60, "continuous shipping", || {
        (stored_seqs(&config, id).len() >= 200).then_some(())
    });

    fleet.write_crl(&[&t.dir.path().join("device.pem")], 2);
    let revoked_at = Instant::now();
    // Shipping has stopped once the stored count has not moved for 3 s; record when it last
    // moved.
    let mut last = stored_seqs(&config, id).len();
    let mut last_change = Instant::now();
    poll(60, "shipping to stop", || {
        let n = stored_seqs(&config, id).len();
        if n != last {
            last = n;
            last_change = Instant::now();
        }
        (last_change.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    let stopped_after = last_change.saturating_duration_since(revoked_at);
    eprintln!("shipping stopped {stopped_after:?} after the CRL was replaced");
    assert!(
        stopped_after < Duration::from_secs(5),
        "a revoked terminal kept shipping for {stopped_after:?}"
    );
    // The terminal kept recording; the collector took none of it.
    let appended = appender.appended.load(Ordering::Relaxed);
    assert!(
        appended > last as u64,
        "appended {appended}, stored {last}: the refusal must not be for lack of events"
    );
    let head = agent_status(&agent.socket)["journal"]["head_seq"]
        .as_u64()
        .unwrap();
    assert!(head > last as u64, "head {head}, stored {last}");

    // Operations see the refused attempts: the counter grows as the agent retries, and one
    // alert names the terminal.
    let refused = poll(30, "refusals in the metrics", || {
        let n = metric(
            &metrics(metrics_port),
            "posguard_collector_revoked_refusals_total",
        );
        (n >= 2).then_some(n)
    });
    eprintln!("refused attempts counted: {refused}");
    let alerts = poll(30, "a revoked_certificate alert", || {
        let out = collector_cli(&config, &["alerts"]);
        out.contains("revoked_certificate").then_some(out)
    });
    let rows: Vec<serde_json::Value> = alerts
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "revoked_certificate")
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "one alert however often it retries: {alerts}"
    );
    assert_eq!(rows[0]["device_id"], id, "{alerts}");
    drop(appender);
}

#[test]
fn agents_refuse_a_stolen_collector_certificate_once_it_is_on_the_fleet_crl() {
    let fleet = Fleet::new("posguard e2e collector-key CA");
    let crl = fleet.write_crl(&[], 1);
    let old_crl = std::fs::read(&crl).unwrap();
    let port = free_port();
    let config = fleet.collector_config(port, &format!("crl = \"{}\"\n", crl.display()));
    let collector = CollectorProcess::start(&config, port);
    let tpm = Swtpm::start().unwrap();
    let id = "till-key-1";
    let agent_crl = tempfile::tempdir().unwrap().keep().join("fleet.crl");
    let t = fleet.bench_terminal(
        &tpm,
        id,
        port,
        16 << 20,
        &format!("crl = \"{}\"\n", agent_crl.display()),
    );
    let agent = AgentProcess::start(&t.config, &t.socket);
    append_business_events(&agent.socket, 1, 10, 0);
    poll(60, "first records stored", || {
        (!stored_seqs(&config, id).is_empty()).then_some(())
    });
    let first_crl = poll(30, "the agent to fetch the CRL", || {
        std::fs::read(&agent_crl).ok()
    });

    // The server key is stolen. Operations revoke the collector's certificate (CRL number 2)
    // and re-key the collector; the agent gets the new CRL from it.
    let stolen = (fleet.path("server.pem"), fleet.path("server.key"));
    fleet.write_crl(&[&stolen.0], 2);
    let (new_pem, new_key) = fleet.new_server_cert("server-2");
    let rekeyed = std::fs::read_to_string(&config)
        .unwrap()
        .replace(stolen.0.to_str().unwrap(), new_pem.to_str().unwrap())
        .replace(stolen.1.to_str().unwrap(), new_key.to_str().unwrap());
    std::fs::write(&config, rekeyed).unwrap();
    collector.kill();
    let collector = CollectorProcess::start(&config, port);
    let before = stored_seqs(&config, id).len();
    append_business_events(&agent.socket, 1, 10, 1);
    poll(60, "shipping to the re-keyed collector", || {
        (stored_seqs(&config, id).len() > before).then_some(())
    });
    let newer = poll(30, "the agent to take CRL number 2", || {
        std::fs::read(&agent_crl).ok().filter(|c| *c != first_crl)
    });
    collector.kill();

    // The attacker answers on the collector's address with the stolen key, serving the old CRL
    // (number 1, genuinely signed) in the hope that the agent goes back to it.
    let attacker_crl = fleet.path("attacker.crl");
    std::fs::write(&attacker_crl, &old_crl).unwrap();
    let attacker_db = fleet.path("attacker.db");
    let attacker_config = fleet.path("attacker.toml");
    std::fs::write(
        &attacker_config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nserver_cert = \"{}\"\nserver_key = \"{}\"\n\
             fleet_ca = \"{}\"\nstore = \"{}\"\ncrl = \"{}\"\n",
            stolen.0.display(),
            stolen.1.display(),
            fleet.path("fleet-ca.pem").display(),
            attacker_db.display(),
            attacker_crl.display(),
        ),
    )
    .unwrap();
    let _attacker = CollectorProcess::start(&attacker_config, port);
    let failures = |s: &serde_json::Value| s["uplink"]["failures"].as_u64().unwrap_or(0);
    let failed_before = failures(&agent_status(&agent.socket));
    append_business_events(&agent.socket, 1, 10, 2);
    poll(60, "the agent to refuse the attacker three times", || {
        (failures(&agent_status(&agent.socket)) >= failed_before + 3).then_some(())
    });
    assert!(
        stored_seqs(&attacker_config, id).is_empty(),
        "the agent shipped to a revoked collector certificate"
    );
    assert_eq!(
        std::fs::read(&agent_crl).unwrap(),
        newer,
        "an older CRL never replaces a newer one"
    );
}
