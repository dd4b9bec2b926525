//! Leaving maintenance does not make the fleet look silent (issue 17, point 6), on the real
//! `posguard-collector serve` and its silent sweep: terminals quiet through a maintenance
//! window longer than `silent_after_s` raise no `silent` alert during it nor until
//! `silent_after_s` after `maintenance off`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use common::enroll::{fleet, stdout};
use common::{client_config, device, post};
use posguard_collector::clock::{SystemClock, WallClock as _};
use serde_json::Value;

/// The real `serve` and its silent sweep: terminals quiet through a maintenance window longer
/// than `silent_after_s` raise no `silent` alert during it nor right after it; the first comes
/// `silent_after_s` after `maintenance off` (the control that the sweep runs at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_silent_sweep_waits_silent_after_s_from_the_end_of_maintenance() {
    let f = fleet("");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = f.dir().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "{}\nsilent_after_s = 3\nmaintenance_retry_after_s = 1\n",
            f.text.replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\"")
            )
        ),
    )
    .unwrap();
    struct Serve(std::process::Child);
    impl Drop for Serve {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut serve = Serve(
        std::process::Command::new(env!("CARGO_BIN_EXE_posguard-collector"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(serve.0.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let fleet_ids = ["till-a", "till-b", "till-c"];
    for id in fleet_ids {
        let mut d = device(&f.pki, id);
        let body = common::batch(vec![d.journal_cert(1)], &[d.logout()]);
        let (status, _, _) = post(addr, client_config(&f.pki, Some(&d)), body)
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    let contact = SystemClock.now_ms();
    let cli = |args: &[&str]| {
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        stdout(&common::enroll::bin(f.dir(), &full))
    };
    cli(&["maintenance", "on"]);
    // Maintenance lasts longer than silent_after_s (waiting for time itself to pass).
    while SystemClock.now_ms() < contact + 5000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut d = device(&f.pki, "till-a");
    let (status, headers, _) = post(
        addr,
        client_config(&f.pki, Some(&d)),
        common::batch(vec![], &[d.logout()]),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, headers["retry-after"].to_str().unwrap()),
        (503, "1")
    );
    let off_ms = SystemClock.now_ms();
    cli(&["maintenance", "off"]);
    let alerts = loop {
        let alerts: Vec<Value> = cli(&["alerts"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|a: &Value| a["kind"] == "silent")
            .collect();
        if alerts.len() == fleet_ids.len() {
            break alerts;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "{alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for a in &alerts {
        let at = a["at_ms"].as_u64().unwrap();
        assert!(
            at >= off_ms + 3000,
            "silent alert {}ms after maintenance off, before silent_after_s: {a}",
            at as i64 - off_ms as i64
        );
    }
}
