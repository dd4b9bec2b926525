//! Filters of `posguard-collector alerts` through the real binary, on a store fed by real
//! signed batches over TLS: every value of `--state`, `--severity`, `--kind`, `--device`,
//! `--since` and `--until` selects exactly the alerts the full listing says it should, and
//! typos exit 64 naming the nearest valid value.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::triage::*;
use common::*;
use posguard_proto::event::EventKind;
use posguard_proto::text::ClerkId;
use serde_json::Value;

#[tokio::test]
async fn filters_select_exactly_what_they_name() {
    let pki = pki();
    let srv = start(&pki, "").await;
    // Alerts of several kinds, severities and devices: honeypot (critical), tamper
    // (critical), chain_gap (warning), journal_overflow (warning), bad_signature (critical).
    let mut a = device(&pki, "store1-till1");
    let mut b = device(&pki, "store2-till9");
    let hp = a.record(EventKind::HoneypotTriggered {
        clerk: ClerkId::new("trap").unwrap(),
    });
    assert_eq!(send(&srv, &pki, &a, &[hp]).await, 200);
    let first = b.logout();
    assert_eq!(send(&srv, &pki, &b, &[first]).await, 200);
    b.logout();
    let after_gap = b.logout();
    assert_eq!(send(&srv, &pki, &b, &[after_gap]).await, 200);
    let body = forged(&mut a);
    assert_eq!(
        post(srv.addr, client_config(&pki, Some(&a)), body)
            .await
            .unwrap()
            .0,
        422
    );
    let all = lines(&cli(&srv.db, None, &["alerts", "--state", "all"]));
    assert_eq!(all.len(), 3, "{all:?}");
    // Resolve one and acknowledge another, so that states differ.
    let id = |i: usize| all[i]["id"].as_i64().unwrap().to_string();
    lines(&cli(
        &srv.db,
        Some("o"),
        &["alerts", "resolve", &id(0), "--note", "n"],
    ));
    lines(&cli(
        &srv.db,
        Some("o"),
        &["alerts", "ack", &id(1), "--note", "n"],
    ));
    let all = lines(&cli(&srv.db, None, &["alerts", "--state", "all"]));
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<i64> {
        ids(&all.iter().filter(|v| keep(v)).cloned().collect::<Vec<_>>())
    };
    // Each value of each filter, checked against the full listing.
    for state in ["open", "acknowledged", "resolved"] {
        let got = lines(&cli(&srv.db, None, &["alerts", "--state", state]));
        assert_eq!(ids(&got), expect(&|v| v["state"] == state), "{state}");
    }
    let default = lines(&cli(&srv.db, None, &["alerts"]));
    assert_eq!(ids(&default), expect(&|v| v["state"] != "resolved"));
    let two = lines(&cli(&srv.db, None, &["alerts", "--state", "open,resolved"]));
    assert_eq!(ids(&two), expect(&|v| v["state"] != "acknowledged"));
    for severity in ["warning", "critical", "info"] {
        let got = lines(&cli(
            &srv.db,
            None,
            &["alerts", "--state", "all", "--severity", severity],
        ));
        assert_eq!(
            ids(&got),
            expect(&|v| v["severity"] == severity),
            "{severity}"
        );
    }
    for kind in ["honeypot", "chain_gap", "bad_signature", "tamper"] {
        let got = lines(&cli(
            &srv.db,
            None,
            &["alerts", "--state", "all", "--kind", kind],
        ));
        assert_eq!(ids(&got), expect(&|v| v["kind"] == kind), "{kind}");
    }
    for dev in ["store1-till1", "store2-till9"] {
        let got = lines(&cli(
            &srv.db,
            None,
            &["alerts", "--state", "all", "--device", dev],
        ));
        assert_eq!(ids(&got), expect(&|v| v["device_id"] == dev), "{dev}");
        assert!(!got.is_empty());
    }
    // Time: --since keeps alerts last raised at or after, --until those first raised before.
    for v in &all {
        let at = v["at_ms"].as_u64().unwrap();
        let since = lines(&cli(
            &srv.db,
            None,
            &["alerts", "--state", "all", "--since", &at.to_string()],
        ));
        assert!(ids(&since).contains(&v["id"].as_i64().unwrap()));
        let until = lines(&cli(
            &srv.db,
            None,
            &[
                "alerts",
                "--state",
                "all",
                "--until",
                v["first_at"].as_str().unwrap(),
            ],
        ));
        assert_eq!(
            ids(&until),
            expect(&|w| w["at_ms"].as_u64().unwrap() < at),
            "until {at}"
        );
    }
    // Typos: exit 64 naming the nearest valid value.
    for (args, needle) in [
        (
            vec!["alerts", "--kind", "honeypt"],
            "did you mean \"honeypot\"",
        ),
        (
            vec!["alerts", "--kind", "mfa_failure"],
            "did you mean \"mfa_failures\"",
        ),
        (vec!["alerts", "--state", "opne"], "did you mean \"open\""),
        (
            vec!["alerts", "--severity", "critcal"],
            "did you mean \"critical\"",
        ),
        (
            vec!["alerts", "--severity", "bad"],
            "expected one of: info, notice",
        ),
        (
            vec!["alerts", "--device", "store1-til1"],
            "did you mean \"store1-till1\"",
        ),
        (vec!["alerts", "--since", "yesterday"], "--since"),
        (
            vec![
                "alerts",
                "--since",
                "2026-01-02T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "--until",
        ),
    ] {
        let out = cli(&srv.db, None, &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    srv.stop().await;
}
