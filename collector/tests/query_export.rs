//! Investigation and export through the real `posguard-collector` binary, on a store filled by
//! a collector over real TLS: flat documents with the common fields for every kind, the clerk
//! and received-time filters, an export that resumes from its cursor without missing the
//! records a terminal ships late, and mistyped filters refused with the nearest match.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use posguard_proto::chain::journal_key_id;
use posguard_proto::event::{Actor, Event, EventKind, LoginFailure, Role, Stamp};
use posguard_proto::record::Record;
use posguard_proto::text::ClerkId;
use ring::signature::KeyPair as _;
use serde_json::Value;

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posguard-collector"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn config(pki: &Pki) -> PathBuf {
    let d = pki.dir.path();
    let path = d.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nserver_cert = \"{0}/server.pem\"\n\
             server_key = \"{0}/server.key\"\nfleet_ca = \"{0}/ca.pem\"\nstore = \"{0}/c.db\"\n",
            d.display()
        ),
    )
    .unwrap();
    path
}

fn clerk(id: &str) -> ClerkId {
    ClerkId::new(id).unwrap()
}

/// The next record of `dev`, written at `wall_ms` on the device's clock by `actor`.
fn record_at(dev: &mut Device, wall_ms: u64, actor: Actor, kind: EventKind) -> Record {
    let public: [u8; 32] = dev.journal.public_key().as_ref().try_into().unwrap();
    let event = Event::new(
        Stamp {
            wall_ms,
            mono_ns: dev.head.seq,
            boot_id: BOOT,
        },
        actor,
        None,
        kind,
    );
    let r = Record::build(&dev.head, journal_key_id(&public), &event, |m| {
        dev.journal.sign(m).as_ref().try_into().unwrap()
    })
    .unwrap();
    dev.head = r.head();
    r
}

async fn ship(srv: &Running, pki: &Pki, dev: &Device, records: &[Record]) {
    let body = batch(vec![dev.journal_cert(1)], records);
    let (status, _, bytes) = post(srv.addr, client_config(pki, Some(dev)), body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{bytes:?}");
}

/// A mix of kinds: each clerk-related kind, an admin action on another clerk, a POS event.
fn mixed(dev: &mut Device, wall_ms: u64, n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let t = wall_ms + i * 1_000;
            match i % 5 {
                0 => record_at(
                    dev,
                    t,
                    Actor::System,
                    EventKind::LoginFailed {
                        clerk: Some(clerk("anna")),
                        reason: LoginFailure::BadSecret,
                    },
                ),
                1 => record_at(
                    dev,
                    t,
                    Actor::Clerk(clerk("bob")),
                    EventKind::LoginSucceeded {
                        clerk: clerk("bob"),
                        role: Role::Clerk,
                        mfa: true,
                    },
                ),
                2 => record_at(
                    dev,
                    t,
                    Actor::Clerk(clerk("boss")),
                    EventKind::ClerkDisabled {
                        clerk: clerk("anna"),
                    },
                ),
                3 => record_at(
                    dev,
                    t,
                    Actor::System,
                    EventKind::LockedOut {
                        clerk: clerk("anna"),
                        failures: 5,
                        until_wall_ms: None,
                    },
                ),
                _ => record_at(
                    dev,
                    t,
                    Actor::System,
                    EventKind::CachePurged {
                        purged: i,
                        remaining: 0,
                    },
                ),
            }
        })
        .collect()
}

/// The stderr of a refused `export --cursor`.
fn out_of(config: &Path, cursor: &str) -> Vec<u8> {
    let out = cli(config, &["export", "--cursor", cursor]);
    assert_eq!(out.status.code(), Some(64));
    out.stderr
}

fn key(v: &Value) -> (String, u64) {
    (
        v["device"].as_str().unwrap().to_owned(),
        v["seq"].as_u64().unwrap(),
    )
}

const T0: u64 = 1_765_000_000_000;

#[tokio::test]
async fn export_resumes_from_its_cursor_and_misses_no_late_record() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let config = config(&pki);
    let cursor = pki.dir.path().join("siem.cursor");
    let cursor_arg = cursor.to_str().unwrap();
    let mut a = device(&pki, "till-a");
    let mut b = device(&pki, "till-b");
    let mut exported: Vec<(String, u64)> = Vec::new();
    let mut shipped = 0;
    // Rounds: till-a ships live; till-b was offline and ships events older than anything
    // exported so far (the case a device-time window misses).
    for round in 0..4u64 {
        let live = mixed(&mut a, T0 + round * 3_600_000, 3 + round);
        ship(&srv, &pki, &a, &live).await;
        shipped += live.len();
        let late = mixed(&mut b, T0 - 86_400_000 + round * 1_000_000, 2 * round);
        if !late.is_empty() {
            ship(&srv, &pki, &b, &late).await;
            shipped += late.len();
        }
        let docs = lines(&cli(&config, &["export", "--cursor", cursor_arg]));
        assert_eq!(docs.len(), live.len() + late.len(), "round {round}");
        // In the order stored: received_seq strictly increasing.
        let seqs: Vec<u64> = docs
            .iter()
            .map(|d| d["received_seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        exported.extend(docs.iter().map(key));
        // Nothing new: an empty export, and the cursor stays.
        let before = std::fs::read_to_string(&cursor).unwrap();
        assert!(lines(&cli(&config, &["export", "--cursor", cursor_arg])).is_empty());
        assert_eq!(std::fs::read_to_string(&cursor).unwrap(), before);
    }
    let unique: BTreeSet<_> = exported.iter().cloned().collect();
    assert_eq!(unique.len(), exported.len(), "exported twice");
    assert_eq!(exported.len(), shipped);
    let all: BTreeSet<_> = lines(&cli(&config, &["export"])).iter().map(key).collect();
    assert_eq!(unique, all, "the union of the runs is everything stored");
    srv.stop().await;
}

#[tokio::test]
async fn documents_are_flat_with_fixed_precision_times_and_filters_hold() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let config = config(&pki);
    let mut a = device(&pki, "till-a");
    let first = mixed(&mut a, T0 + 7, 10);
    ship(&srv, &pki, &a, &first).await;
    let between = posguard_collector::clock::SystemClock;
    let cut = posguard_collector::clock::WallClock::now_ms(&between);
    // A record received at `cut` or later (the collector clock is in ms).
    while posguard_collector::clock::WallClock::now_ms(&between) <= cut {
        std::thread::yield_now();
    }
    let second = mixed(&mut a, T0 - 5_000, 5);
    ship(&srv, &pki, &a, &second).await;
    let docs = lines(&cli(&config, &["query"]));
    assert_eq!(docs.len(), 15);
    let time = |v: &Value| {
        let s = v.as_str().unwrap();
        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.' && s.starts_with("20")
    };
    for d in &docs {
        for f in [
            "@timestamp",
            "received",
            "device",
            "seq",
            "kind",
            "outcome",
            "clerk",
            "severity",
        ] {
            assert!(d.get(f).is_some(), "{f} missing: {d}");
        }
        assert!(time(&d["@timestamp"]) && time(&d["received"]), "{d}");
        assert!(
            d.as_object().unwrap().values().all(|v| !v.is_object()),
            "not flat: {d}"
        );
    }
    assert_eq!(docs[0]["@timestamp"], "2025-12-06T05:46:35.000Z");
    // --clerk: events naming anna (her failed logins, her lockout, an admin disabling her).
    let anna = lines(&cli(&config, &["query", "--clerk", "anna"]));
    assert_eq!(anna.len(), 9);
    assert!(anna.iter().all(|d| d["clerk"] == "anna"), "{anna:?}");
    // The admin's own actions, by the admin.
    let boss = lines(&cli(&config, &["query", "--clerk", "boss"]));
    assert_eq!(boss.len(), 3);
    assert!(
        boss.iter()
            .all(|d| d["actor"] == "clerk:boss" && d["kind"] == "clerk_disabled")
    );
    // --received-since: only the second batch, although its device times are the oldest.
    let cut = cut.to_string();
    for cmd in ["query", "export"] {
        let late = lines(&cli(&config, &[cmd, "--received-since", &cut]));
        let got: BTreeSet<u64> = late.iter().map(|d| d["seq"].as_u64().unwrap()).collect();
        assert_eq!(got, (11..=15).collect(), "{cmd}");
        let early = lines(&cli(&config, &[cmd, "--received-until", &cut]));
        assert_eq!(early.len(), 10, "{cmd}");
    }
    let both = lines(&cli(
        &config,
        &[
            "query",
            "--device",
            "till-a",
            "--kind",
            "locked_out",
            "--clerk",
            "anna",
        ],
    ));
    assert_eq!(both.len(), 3);
    srv.stop().await;
}

#[tokio::test]
async fn mistyped_filters_and_cursors_are_refused_with_what_to_do() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let config = config(&pki);
    let mut a = device(&pki, "till-0042");
    let recs = mixed(&mut a, T0, 5);
    ship(&srv, &pki, &a, &recs).await;
    for (args, says) in [
        (vec!["--device", "till-0024"], "did you mean \"till-0042\""),
        (vec!["--device", "nowhere"], "posguard-collector devices"),
        (
            vec!["--kind", "login_faild"],
            "did you mean \"login_failed\"",
        ),
        (vec!["--kind", "lockedout"], "did you mean \"locked_out\""),
        (vec!["--since", "2025-12-02", "--until", "1"], "--since"),
        (
            vec!["--since", "3000", "--until", "2000"],
            "window is empty",
        ),
        (vec!["--received-since", "soon"], "--received-since"),
        (vec!["--clerk", "bad clerk"], "--clerk"),
    ] {
        for cmd in ["query", "export"] {
            let mut full = vec![cmd];
            full.extend(&args);
            let out = cli(&config, &full);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{full:?}: {err}");
            assert!(err.contains(says), "{full:?}: {err}");
            assert!(out.stdout.is_empty(), "{full:?}");
        }
    }
    // A file that is not a cursor: refused, nothing printed; removing it as told works.
    let cursor = pki.dir.path().join("c.cursor");
    let c = cursor.to_str().unwrap();
    std::fs::write(&cursor, "yesterday\n").unwrap();
    let out = cli(&config, &["export", "--cursor", c]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("remove"),
        "{out:?}"
    );
    std::fs::remove_file(&cursor).unwrap();
    assert_eq!(lines(&cli(&config, &["export", "--cursor", c])).len(), 5);
    // A cursor whose record is not at its place (another store's, or this store replaced or
    // restored): refused; writing what the message offers continues from now on.
    let written = std::fs::read_to_string(&cursor).unwrap();
    let written: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(
        (
            &written["received_seq"],
            &written["device"],
            &written["seq"]
        ),
        (&5.into(), &"till-0042".into(), &5.into())
    );
    for wrong in [
        r#"{"schema":"posguard.export-cursor.v1","received_seq":99,"device":"till-0042","seq":99}"#,
        r#"{"schema":"posguard.export-cursor.v1","received_seq":3,"device":"till-0042","seq":4}"#,
        r#"{"schema":"posguard.export-cursor.v1","received_seq":3,"device":"till-9","seq":3}"#,
    ] {
        std::fs::write(&cursor, wrong).unwrap();
        let out = cli(&config, &["export", "--cursor", c]);
        assert_eq!(out.status.code(), Some(64), "{wrong}");
        assert!(out.stdout.is_empty());
    }
    let err = String::from_utf8_lossy(&out_of(&config, c)).to_string();
    let offered = &err[err.find("write ").unwrap() + 6..err.find(" into it").unwrap()];
    std::fs::write(&cursor, offered).unwrap();
    assert!(lines(&cli(&config, &["export", "--cursor", c])).is_empty());
    let more = mixed(&mut a, T0, 2);
    ship(&srv, &pki, &a, &more).await;
    let docs = lines(&cli(&config, &["export", "--cursor", c]));
    assert_eq!(
        docs.iter()
            .map(|d| d["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [6, 7]
    );
    srv.stop().await;
}
