//! The agent ships its journal to a real collector (both real binaries, swtpm, loopback).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use posguard_e2e::{AgentProcess, CollectorProcess, Fleet, collector_cli, free_port};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use posguard_proto::event::{CommandRefusal, EventKind, Source};
use serde_json::{Value, json};

struct Central {
    fleet: Fleet,
    config: PathBuf,
    port: u16,
    ops_key: PathBuf,
    ops_public: String,
}

/// A collector with a rate limit too high to matter.
fn central(extra: &str) -> Central {
    central_limited(1000.0, 1000, extra)
}

/// A collector allowing each device `per_second` requests, `burst` at once.
fn central_limited(per_second: f64, burst: u32, extra: &str) -> Central {
    let fleet = Fleet::new("posguard e2e fleet CA");
    let port = free_port();
    let ops_key = fleet.path("ops.key");
    let config = fleet.path("collector.toml");
    std::fs::write(&config, "").unwrap();
    let out = collector_cli(
        &config,
        &["ops-key", "generate", "--out", ops_key.to_str().unwrap()],
    );
    let ops_public = out
        .split_whitespace()
        .find(|w| w.len() == 64)
        .expect("public key in hex")
        .to_owned();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nserver_cert = \"{}\"\nserver_key = \"{}\"\nfleet_ca = \"{}\"\nstore = \"{}\"\nops_public_key = \"{ops_public}\"\nmaintenance_retry_after_s = 2\n[rate_limit]\nper_second = {per_second:?}\nburst = {burst}\n{extra}",
            fleet.path("server.pem").display(),
            fleet.path("server.key").display(),
            fleet.path("fleet-ca.pem").display(),
            fleet.path("collector.db").display(),
        ),
    )
    .unwrap();
    Central {
        fleet,
        config,
        port,
        ops_key,
        ops_public,
    }
}

struct Terminal {
    _tpm: Swtpm,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

fn terminal(central: &Central, id: &str, collector: &str, uplink_extra: &str) -> Terminal {
    let tpm = Swtpm::start().unwrap();
    let se = posguard_hal::open(&tpm.config()).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("device.pem");
    central.fleet.device_cert(se, id, &cert);
    let socket = dir.path().join("agent.sock");
    let config = dir.path().join("agent.toml");
    let ops = if uplink_extra.contains("ops_public_key") {
        String::new()
    } else {
        format!("ops_public_key = \"{}\"\n", central.ops_public)
    };
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"{id}\"\n[secure_element]\ntcti = \"{}\"\n[journal]\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n[uplink]\ncollector = \"{collector}\"\nserver_name = \"localhost\"\nfleet_ca = \"{}\"\ncertificate = \"{}\"\nheartbeat_secs = 1\nbackoff_max_secs = 4\n{ops}{uplink_extra}",
            tpm.tcti(),
            dir.path().join("journal").display(),
            dir.path().join("state").display(),
            socket.display(),
            central.fleet.path("fleet-ca.pem").display(),
            cert.display(),
        ),
    )
    .unwrap();
    Terminal {
        _tpm: tpm,
        dir,
        config,
        socket,
    }
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    let s = UnixStream::connect(socket).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(
        format!(
            "{}\n",
            json!({"v": 1, "id": 1, "method": method, "params": params})
        )
        .as_bytes(),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn status(socket: &Path) -> Value {
    call(socket, "status", json!({}))["result"].clone()
}

/// Waits (polling the agent's status) until `pred` holds, at most `secs`.
fn wait_for(socket: &Path, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(socket);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stored_seqs(central: &Central, device: &str) -> Vec<u64> {
    posguard_e2e::stored_seqs(&central.config, device)
}

/// A TCP proxy that cuts some connections at a random byte count (in either direction): the
/// first connection always (so that every run sees a cut however few connections the agent
/// needs), then one in `cut_one_in`.
fn cutting_proxy(target: u16, cut_one_in: u64) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicU64::new(0));
    let cuts2 = cuts.clone();
    std::thread::spawn(move || {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(port);
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let first = cuts2.load(Ordering::Relaxed) == 0;
            let limit = if first || seed.is_multiple_of(cut_one_in) {
                Some(200 + (seed >> 8) % 60_000)
            } else {
                None
            };
            if limit.is_some() {
                cuts2.fetch_add(1, Ordering::Relaxed);
            }
            let pump = move |mut from: TcpStream, mut to: TcpStream, limit: Option<u64>| {
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    let mut buf = [0u8; 8192];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = match limit {
                            Some(l) if sent + n as u64 > l => (l - sent) as usize,
                            _ => n,
                        };
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        if limit.is_some_and(|l| sent >= l) {
                            break;
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pump(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                limit,
            );
            pump(server, client, limit);
        }
    });
    (port, cuts)
}

#[test]
fn ten_thousand_events_arrive_exactly_once_through_kills_and_cut_connections() {
    let c = central("");
    let mut collector = CollectorProcess::start(&c.config, c.port);
    let (proxy, cuts) = cutting_proxy(c.port, 3);
    let t = terminal(
        &c,
        "term-e2e-1",
        &format!("127.0.0.1:{proxy}"),
        "batch_records = 500\n",
    );
    let agent = AgentProcess::start(&t.config, &t.socket);

    let producing = Arc::new(AtomicBool::new(true));
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let socket = t.socket.clone();
            std::thread::spawn(move || {
                let s = UnixStream::connect(&socket).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                for i in 0..1250 {
                    w.write_all(format!("{}\n", json!({"v":1,"id":i,"method":"audit.record","params":{"action":"drawer_open","reference":format!("p{p}-{i}")}})).as_bytes()).unwrap();
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    assert!(line.contains("\"ok\":true"), "{line}");
                }
            })
        })
        .collect();
    // Kill the collector three times during the stream.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        collector = collector.kill_and_restart();
    }
    for p in producers {
        p.join().unwrap();
    }
    producing.store(false, Ordering::Relaxed);
    let head = status(&t.socket)["journal"]["head_seq"].as_u64().unwrap();
    let s = wait_for(&t.socket, 120, "every record acknowledged", |s| {
        s["uplink"]["acked_seq"].as_u64().unwrap_or(0) >= head
    });
    let seqs = stored_seqs(&c, "term-e2e-1");
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "nothing stored twice");
    assert!(
        unique.len() as u64 >= head && head >= 10_000,
        "stored {} of {head}",
        unique.len()
    );
    assert_eq!(unique.iter().next(), Some(&1));
    assert!((1..=head).all(|seq| unique.contains(&seq)), "no gap");
    assert!(
        cuts.load(Ordering::Relaxed) > 0,
        "the proxy cut connections"
    );
    let attempts = s["uplink"]["connection_attempts"].as_u64().unwrap();
    eprintln!(
        "uplink: {} ; proxy cuts {}",
        s["uplink"],
        cuts.load(Ordering::Relaxed)
    );

    // Down for 5 s: the agent backs off instead of hammering.
    collector.kill();
    let before = status(&t.socket)["uplink"]["connection_attempts"]
        .as_u64()
        .unwrap();
    call(&t.socket, "audit.record", json!({"action": "no_sale"}));
    std::thread::sleep(Duration::from_secs(5));
    let during = status(&t.socket)["uplink"]["connection_attempts"]
        .as_u64()
        .unwrap()
        - before;
    assert!(
        during <= 6,
        "{during} connection attempts in 5 s while the collector was down"
    );
    assert!(attempts < 2_000, "{attempts} connection attempts in all");
    assert!(agent.stop().success());
}

#[test]
fn lockdown_from_operations_is_verified_applied_and_journaled_and_a_forged_one_refused() {
    let c = central("");
    let _collector = CollectorProcess::start(&c.config, c.port);
    let addr = format!("127.0.0.1:{}", c.port);
    let good = terminal(&c, "term-e2e-2", &addr, "");
    let forged = terminal(
        &c,
        "term-e2e-3",
        &addr,
        &format!("ops_public_key = \"{}\"\n", "11".repeat(32)),
    );
    let a = AgentProcess::start(&good.config, &good.socket);
    let b = AgentProcess::start(&forged.config, &forged.socket);
    // Commands are refused for devices the collector does not know yet: wait for first contact.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !["term-e2e-2", "term-e2e-3"]
        .iter()
        .all(|d| collector_cli(&c.config, &["devices", "--json"]).contains(&format!("\"{d}\"")))
    {
        assert!(
            Instant::now() < deadline,
            "the terminals never reached the collector"
        );
        // Polling interval while waiting for first contact, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(50));
    }
    for device in ["term-e2e-2", "term-e2e-3"] {
        let ops_key = c.ops_key.to_str().unwrap();
        collector_cli(
            &c.config,
            &[
                "command",
                "--device",
                device,
                "--ops-key",
                ops_key,
                "lockdown",
            ],
        );
    }
    wait_for(&good.socket, 30, "lockdown applied", |s| {
        s["lockdown"] == true
    });
    // The collector's view: the command delivered, the terminal in lockdown (from its shipped
    // lockdown_changed record), the one that refused the forged command not.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = collector_cli(&c.config, &["command", "list", "--device", "term-e2e-2"]);
        let locked = collector_cli(&c.config, &["devices", "--json", "--state", "lockdown"]);
        if delivered.contains("\"state\":\"delivered\"") && locked.contains("\"term-e2e-2\"") {
            assert!(!locked.contains("\"term-e2e-3\""), "{locked}");
            let v: Value = serde_json::from_str(delivered.lines().next().unwrap()).unwrap();
            assert!(v["delivered"].as_str().unwrap().ends_with('Z'), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} {locked}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait for the forged terminal's refusal to reach the collector (its journal event, shipped
    // like any other), then check it did not lock down.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let refused = collector_cli(
            &c.config,
            &[
                "query",
                "--device",
                "term-e2e-3",
                "--kind",
                "command_refused",
            ],
        );
        if !refused.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged command's refusal never arrived"
        );
        // Polling interval of the wait for that event.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        status(&forged.socket)["lockdown"],
        false,
        "a command the agent cannot verify is not applied"
    );
    assert!(a.stop().success());
    assert!(b.stop().success());

    let events = posguard_agent::journal::read_events(&good.dir.path().join("journal")).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(&e.kind, EventKind::CommandApplied { .. }))
    );
    assert!(events.iter().any(|(_, e)| matches!(
        &e.kind,
        EventKind::LockdownChanged {
            enabled: true,
            source: Source::Collector
        }
    )));
    let events = posguard_agent::journal::read_events(&forged.dir.path().join("journal")).unwrap();
    assert!(events.iter().any(|(_, e)| matches!(
        &e.kind,
        EventKind::CommandRefused {
            reason: CommandRefusal::BadSignature,
            ..
        }
    )));
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(&e.kind, EventKind::LockdownChanged { .. }))
    );
}

#[test]
fn the_agent_refuses_a_collector_from_another_ca_or_for_another_name() {
    let c = central("");
    let _collector = CollectorProcess::start(&c.config, c.port);
    let addr = format!("127.0.0.1:{}", c.port);
    let other = Fleet::new("some other CA");
    let wrong_ca = terminal(
        &c,
        "term-e2e-4",
        &addr,
        &format!("fleet_ca = \"{}\"\n", other.path("fleet-ca.pem").display())
            .replace("fleet_ca", "#"),
    );
    // Point the agent's trust at the other CA.
    let text = std::fs::read_to_string(&wrong_ca.config).unwrap().replace(
        &format!("fleet_ca = \"{}\"", c.fleet.path("fleet-ca.pem").display()),
        &format!("fleet_ca = \"{}\"", other.path("fleet-ca.pem").display()),
    );
    std::fs::write(&wrong_ca.config, text).unwrap();
    let wrong_name = terminal(&c, "term-e2e-5", &addr, "");
    let text = std::fs::read_to_string(&wrong_name.config)
        .unwrap()
        .replace(
            "server_name = \"localhost\"",
            "server_name = \"collector.other.example\"",
        );
    std::fs::write(&wrong_name.config, text).unwrap();
    for t in [&wrong_ca, &wrong_name] {
        let agent = AgentProcess::start(&t.config, &t.socket);
        wait_for(&t.socket, 20, "a failed attempt", |s| {
            s["uplink"]["failures"].as_u64().unwrap_or(0) >= 1
        });
        assert_eq!(status(&t.socket)["uplink"]["acked_seq"], 0);
        assert!(agent.stop().success());
    }
    assert!(stored_seqs(&c, "term-e2e-4").is_empty());
    assert!(stored_seqs(&c, "term-e2e-5").is_empty());
}

#[test]
fn the_rate_limit_is_honoured_without_a_hot_loop() {
    // One request per 4 s: after its first batch the agent's next attempts (its heartbeat
    // every second, the events below) are answered 429 with a Retry-After of up to 4 s.
    let c = central_limited(0.25, 1, "");
    let _collector = CollectorProcess::start(&c.config, c.port);
    let t = terminal(&c, "term-e2e-7", &format!("127.0.0.1:{}", c.port), "");
    let agent = AgentProcess::start(&t.config, &t.socket);
    wait_for(&t.socket, 30, "the first batch", |s| {
        s["uplink"]["acked_seq"].as_u64().unwrap_or(0) > 0
    });
    let before = status(&t.socket)["uplink"]["failures"].as_u64().unwrap();
    for i in 0..20 {
        let r = call(
            &t.socket,
            "audit.record",
            json!({"action": "drawer_open", "reference": format!("rl-{i}")}),
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    // Waiting is the test: the refusals counted over this window show how the agent retried.
    // Honouring Retry-After (3-4 s here) it is refused at most once per 4 s cycle: 3 at most in
    // 8 s. Its own backoff alone (full jitter from 1 s) would retry after 0.5 s, 1 s, 2 s on
    // average, about three refusals a cycle; a hot loop, hundreds.
    std::thread::sleep(Duration::from_secs(8));
    let s = status(&t.socket);
    let refused = s["uplink"]["failures"].as_u64().unwrap() - before;
    assert!(
        (1..=3).contains(&refused),
        "{refused} refused batches in 8 s at one request per 4 s: {s}"
    );
    let head = s["journal"]["head_seq"].as_u64().unwrap();
    wait_for(&t.socket, 30, "every event delivered", |s| {
        s["uplink"]["acked_seq"].as_u64().unwrap_or(0) >= head
    });
    assert!(agent.stop().success());
}

#[test]
fn maintenance_mode_is_honoured_without_a_hot_loop() {
    let c = central("");
    let _collector = CollectorProcess::start(&c.config, c.port);
    collector_cli(&c.config, &["maintenance", "on"]);
    let t = terminal(&c, "term-e2e-6", &format!("127.0.0.1:{}", c.port), "");
    let agent = AgentProcess::start(&t.config, &t.socket);
    std::thread::sleep(Duration::from_secs(5));
    let s = status(&t.socket);
    let failures = s["uplink"]["failures"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&failures),
        "{failures} refused batches in 5 s with Retry-After 2 s: {s}"
    );
    assert_eq!(s["uplink"]["acked_seq"], 0);
    collector_cli(&c.config, &["maintenance", "off"]);
    let head = status(&t.socket)["journal"]["head_seq"].as_u64().unwrap();
    wait_for(&t.socket, 30, "shipping resumes", |s| {
        s["uplink"]["acked_seq"].as_u64().unwrap_or(0) >= head
    });
    assert!(agent.stop().success());
}
