//! Fleet health at a glance (issue 17, point 1): `posguard-collector devices` (the real binary)
//! over a store filled by signed batches through the collector's HTTPS ingest. Each device is
//! driven into one state (ok, lagging, stopped, lockdown, revoked, then silent); the output
//! says so in words and RFC 3339 dates, `--state` filters, and a stopped terminal stays
//! `stopped` where one that just went quiet becomes `silent`. Leaving maintenance does not
//! make the fleet look silent in `devices` (and in the real `serve`'s silent sweep:
//! maintenance_silence.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::enroll::{Fleet, device_csr, enroll, enroll_body, enrolled, fleet, p256, stdout};
use common::{Device, Running, client_config, device, post};
use posguard_collector::clock::{SystemClock, WallClock as _};
use posguard_proto::event::{EventKind, Source, StopReason};
use posguard_proto::record::Record;
use posguard_proto::uplink::{DeviceStatus, UplinkBatch};
use serde_json::Value;

/// Sends `records` (with the journal-key certificate on the first batch) and a status naming
/// `head` as the journal's head; asserts it was stored.
async fn ship(srv: &Running, f: &Fleet, dev: &mut Device, records: Vec<Record>, head: u64) {
    let mut b = UplinkBatch::new();
    if records.first().is_some_and(|r| r.seq() == 1) {
        b.certs = vec![dev.journal_cert(1)];
    }
    b.records = records.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.status = Some(DeviceStatus {
        agent_version: "0.1.0".into(),
        cert_not_after_unix: 0,
        journal_head: head,
        journal_shipped: 0,
        wall_ms: SystemClock.now_ms(),
    });
    let (status, _, body) = post(
        srv.addr,
        client_config(&f.pki, Some(dev)),
        b.to_bytes().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

fn devices(f: &Fleet, config: &Path, extra: &[&str]) -> HashMap<String, Value> {
    let mut args = vec!["--config", config.to_str().unwrap(), "devices", "--json"];
    args.extend_from_slice(extra);
    stdout(&common::enroll::bin(f.dir(), &args))
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["device_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

fn states(v: &Value) -> Vec<String> {
    v["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn is_rfc3339_ms(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24
        && s.ends_with('Z')
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// A config for the same store with a different `silent_after_s`.
fn with_silent_after(f: &Fleet, secs: u64) -> std::path::PathBuf {
    let path = f.dir().join(format!("silent-{secs}.toml"));
    std::fs::write(
        &path,
        format!(
            "{}\nsilent_after_s = {secs}\nmaintenance_retry_after_s = 0\n",
            f.text
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_shows_health_in_words_and_dates_and_filters_by_state() {
    let f = fleet("");
    let srv = f.start().await;

    let mut ok = device(&f.pki, "till-ok");
    let r = vec![ok.logout(), ok.logout()];
    ship(&srv, &f, &mut ok, r, 2).await;

    let mut lag = device(&f.pki, "till-lag");
    let r: Vec<Record> = (0..5).map(|_| lag.logout()).collect();
    let newest_wall = r.last().unwrap().event().unwrap().stamp.wall_ms;
    ship(&srv, &f, &mut lag, r, 345).await;

    let mut stop = device(&f.pki, "till-stop");
    let r = vec![
        stop.logout(),
        stop.record(EventKind::AgentStopped {
            reason: StopReason::Shutdown,
        }),
    ];
    ship(&srv, &f, &mut stop, r, 2).await;

    let mut lock = device(&f.pki, "till-lock");
    let r = vec![
        lock.logout(),
        lock.record(EventKind::LockdownChanged {
            enabled: true,
            source: Source::Collector,
        }),
        lock.logout(),
    ];
    ship(&srv, &f, &mut lock, r, 3).await;

    // Enrolled through the collector, so that its certificate's serial is known; then revoked.
    let token = f.token("till-rev");
    let key = p256();
    let (status, v) = enroll(
        &srv,
        &f.pki,
        enroll_body(&token, &device_csr(&key, "till-rev")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut rev = enrolled("till-rev", key, v["chain_pem"].as_str().unwrap());
    let r = vec![rev.logout()];
    ship(&srv, &f, &mut rev, r, 1).await;
    let before_revoke = devices(&f, &f.config, &[]);
    assert_eq!(before_revoke["till-rev"]["state"], "ok");
    let days = before_revoke["till-rev"]["cert_days_left"]
        .as_i64()
        .unwrap();
    assert!((89..=90).contains(&days), "a 90-day certificate: {days}");
    stdout(&f.cli(&["ca", "revoke", "--device", "till-rev"]));

    let all = devices(&f, &f.config, &[]);
    let want: [(&str, &[&str]); 5] = [
        ("till-ok", &["ok"]),
        ("till-lag", &["lagging"]),
        ("till-stop", &["stopped"]),
        ("till-lock", &["lockdown"]),
        ("till-rev", &["revoked"]),
    ];
    assert_eq!(all.len(), want.len(), "{all:?}");
    for (id, st) in want {
        let v = &all[id];
        assert_eq!(states(v), st, "{id}: {v}");
        assert_eq!(v["state"], st[0], "{id}");
        for field in ["last_contact", "first_seen", "last_seen"] {
            assert!(v[field].is_string(), "{id} {field}: {v}");
        }
        assert!(is_rfc3339_ms(&v["last_contact"]), "{v}");
        assert_eq!(v["silent"], false);
        assert!(v["silent_since"].is_null());
    }
    let l = &all["till-lag"];
    assert_eq!(l["lag_records"], 340);
    assert!(is_rfc3339_ms(&l["lag_since"]), "{l}");
    assert_eq!(
        l["lag_since"],
        posguard_collector::health::rfc3339_ms(newest_wall)
    );
    assert_eq!(all["till-stop"]["last_stop"], "clean");
    assert!(all["till-ok"]["last_stop"].is_null(), "running");
    assert_eq!(all["till-lock"]["lockdown"], true);
    assert_eq!(all["till-rev"]["revoked"], true);
    assert!(is_rfc3339_ms(&all["till-rev"]["cert_expires"]));

    // Every state as a filter lists exactly the devices in it.
    for s in posguard_collector::health::State::ALL {
        let listed = devices(&f, &f.config, &["--state", s.name()]);
        let expected: Vec<&String> = all
            .iter()
            .filter(|(_, v)| states(v).iter().any(|x| x == s.name()))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed.len(), expected.len(), "--state {}", s.name());
        for k in expected {
            assert!(listed.contains_key(k), "--state {}: {k}", s.name());
        }
    }
    // A mistyped state is an error naming the nearest and every valid one.
    let out = f.cli(&["devices", "--state", "lagign"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean \"lagging\""), "{err}");
    for s in posguard_collector::health::State::ALL {
        assert!(err.contains(s.name()), "{err}");
    }

    // The table, for people: words and dates, no Unix numbers.
    let table = stdout(&f.cli(&["devices", "--format", "table"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("DEVICE") && lines[0].contains("STATE"),
        "{table}"
    );
    let line = |id: &str| *lines.iter().find(|l| l.starts_with(id)).unwrap();
    assert!(line("till-rev").contains("certificate revoked"), "{table}");
    assert!(
        line("till-rev").contains(&format!("expires in {days} days")),
        "{table}"
    );
    assert!(
        line("till-stop").contains("agent stopped cleanly"),
        "{table}"
    );
    assert!(
        line("till-lag").contains("340 records not shipped"),
        "{table}"
    );
    assert!(line("till-lock").contains("lockdown"), "{table}");
    assert!(
        !table.contains("1796") && !table.contains("(Unix ms)"),
        "{table}"
    );

    // With a short silent_after_s the same store shows every terminal silent except the one
    // that stopped cleanly: a power cut and a stop look different.
    let strict = with_silent_after(&f, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let silent = loop {
        let now = devices(&f, &strict, &[]);
        if now["till-ok"]["silent"] == true {
            break now;
        }
        assert!(Instant::now() < deadline, "till-ok never silent: {now:?}");
        // Polling interval while waiting for a second to pass, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(200));
    };
    for id in ["till-ok", "till-lag", "till-lock"] {
        let v = &silent[id];
        assert_eq!(v["state"], "silent", "{id}: {v}");
        assert_eq!(v["last_stop"], "unclean", "{id}");
        assert_eq!(v["silent_since"], v["last_contact"], "{id}");
    }
    assert_eq!(silent["till-stop"]["state"], "stopped");
    assert_eq!(silent["till-stop"]["silent"], false);
    assert_eq!(silent["till-stop"]["last_stop"], "clean");
    let listed = devices(&f, &strict, &["--state", "silent"]);
    assert!(listed.contains_key("till-ok") && !listed.contains_key("till-stop"));
    srv.stop().await;
}

/// Silence is measured from the end of maintenance: right after `maintenance off` no device is
/// silent in `devices`, however long it was quiet during the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_maintenance_does_not_make_the_fleet_look_silent_in_devices() {
    let f = fleet("");
    let srv = f.start().await;
    let mut d = device(&f.pki, "till-m");
    let r = vec![d.logout()];
    ship(&srv, &f, &mut d, r, 1).await;
    srv.stop().await;
    let strict = with_silent_after(&f, 3);
    let cli = |args: &[&str]| {
        let mut full = vec!["--config", strict.to_str().unwrap()];
        full.extend_from_slice(args);
        common::enroll::bin(f.dir(), &full)
    };
    let on = stdout(&cli(&["maintenance", "on"]));
    assert!(on.contains("maintenance mode on"), "{on}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // During maintenance the device stays quiet for longer than silent_after_s.
    while devices(&f, &strict, &[])["till-m"]["last_contact_ago_s"]
        .as_u64()
        .unwrap()
        < 4
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(200));
    }
    let off_at = SystemClock.now_ms();
    let off = stdout(&cli(&["maintenance", "off"]));
    assert!(off.contains("maintenance mode off"), "{off}");
    let v = devices(&f, &strict, &[]);
    if SystemClock.now_ms() < off_at + 3000 {
        assert_eq!(v["till-m"]["state"], "ok", "{v:?}");
    }
    let status = stdout(&cli(&["maintenance", "status"]));
    assert!(
        status.starts_with("maintenance mode off") && status.contains("last on until"),
        "{status}"
    );
    // And it does become silent once silent_after_s has passed since.
    loop {
        let v = devices(&f, &strict, &[]);
        if v["till-m"]["state"] == "silent" {
            assert!(SystemClock.now_ms() >= off_at + 3000);
            break;
        }
        assert!(Instant::now() < deadline, "{v:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
