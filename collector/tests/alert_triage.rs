//! The alert queue through the real `posguard-collector` binary, on a store fed by real signed
//! batches over TLS: a repeated cause is counted on one alert and opens a new one after it was
//! resolved; acknowledge, resolve and reopen are recorded with who, when and why; an
//! acknowledgement with `--for` lapses back to open; the filters (state, severity, kind,
//! device, time) select exactly what they say (tests/alert_filters.rs); every wrong value
//! exits 64 naming it.
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

#[tokio::test]
async fn a_repeated_cause_is_counted_and_recurs_as_a_new_alert_after_resolve() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "till-a");
    let body = forged(&mut dev);
    let cfg = client_config(&pki, Some(&dev));
    for _ in 0..3 {
        assert_eq!(
            post(srv.addr, cfg.clone(), body.clone()).await.unwrap().0,
            422
        );
    }
    let open = lines(&cli(&srv.db, Some("ann"), &["alerts"]));
    assert_eq!(open.len(), 1, "three tries, one alert: {open:?}");
    let a = &open[0];
    assert_eq!(
        (a["kind"].as_str(), a["state"].as_str(), a["count"].as_u64()),
        (Some("bad_signature"), Some("open"), Some(3))
    );
    for field in ["first_at", "last_at"] {
        assert!(is_fixed_rfc3339(&a[field]), "{field}: {a}");
    }
    // The fields of before are still there.
    for field in ["id", "device_id", "severity", "detail", "time", "at_ms"] {
        assert!(!a[field].is_null(), "{field}: {a}");
    }
    assert!(a["last_at"].as_str() >= a["first_at"].as_str());
    let id = a["id"].as_i64().unwrap().to_string();
    let done = lines(&cli(
        &srv.db,
        Some("ann"),
        &[
            "alerts",
            "resolve",
            &id,
            "--note",
            "bench test, forged on purpose",
        ],
    ));
    assert_eq!(done[0]["state"], "resolved");
    assert!(lines(&cli(&srv.db, Some("ann"), &["alerts"])).is_empty());
    // The same cause again: a new alert, the resolved one untouched.
    assert_eq!(post(srv.addr, cfg, body).await.unwrap().0, 422);
    let all = lines(&cli(&srv.db, Some("ann"), &["alerts", "--state", "all"]));
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (all[0]["state"].as_str(), all[0]["count"].as_u64()),
        (Some("resolved"), Some(3))
    );
    assert_eq!(
        (all[1]["state"].as_str(), all[1]["count"].as_u64()),
        (Some("open"), Some(1))
    );
    assert_eq!(all[0]["detail"], all[1]["detail"]);
    srv.stop().await;
}

#[tokio::test]
async fn every_triage_action_is_recorded_with_who_when_and_why() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "till-b");
    let r = dev.record(EventKind::HoneypotTriggered {
        clerk: ClerkId::new("trap").unwrap(),
    });
    assert_eq!(send(&srv, &pki, &dev, &[r]).await, 200);
    let id = lines(&cli(&srv.db, None, &["alerts"]))[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    // Who defaults to $USER; without it (and without --by) the command says what to do.
    let out = cli(&srv.db, None, &["alerts", "ack", &id, "--note", "looking"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("--by NAME"), "{}", stderr(&out));
    let acked = lines(&cli(
        &srv.db,
        Some("night-shift"),
        &["alerts", "ack", &id, "--note", "calling the shop"],
    ));
    assert_eq!(acked[0]["state"], "acknowledged");
    assert_eq!(acked[0]["owner"], "night-shift");
    assert!(acked[0]["ack_until"].is_null());
    // A hand-over to the morning shift, named with --by.
    lines(&cli(
        &srv.db,
        Some("night-shift"),
        &[
            "alerts",
            "ack",
            &id,
            "--by",
            "morning",
            "--note",
            "taking over",
        ],
    ));
    let out = cli(
        &srv.db,
        Some("morning"),
        &[
            "alerts",
            "resolve",
            &id,
            "--note",
            "clerk tried the trap; HR informed",
        ],
    );
    assert_eq!(lines(&out)[0]["state"], "resolved");
    // Not allowed from resolved: exit 1 saying what to do; nothing recorded.
    for action in ["resolve", "ack"] {
        let out = cli(
            &srv.db,
            Some("x"),
            &["alerts", action, &id, "--note", "again"],
        );
        assert_eq!(out.status.code(), Some(1), "{action}: {out:?}");
        assert!(
            stderr(&out).contains("is resolved; reopen it first"),
            "{}",
            stderr(&out)
        );
    }
    lines(&cli(
        &srv.db,
        Some("audit"),
        &["alerts", "reopen", &id, "--note", "second look"],
    ));
    let out = cli(
        &srv.db,
        Some("x"),
        &["alerts", "reopen", &id, "--note", "again"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let shown = lines(&cli(&srv.db, None, &["alerts", "show", &id]));
    let history = shown[0]["history"].as_array().unwrap();
    let summary: Vec<(String, String, String)> = history
        .iter()
        .map(|h| {
            assert!(is_fixed_rfc3339(&h["at"]), "{h}");
            (
                h["action"].as_str().unwrap().to_owned(),
                h["by"].as_str().unwrap().to_owned(),
                h["note"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("raised", "collector", "honeypot account trap used"),
        ("acknowledge", "night-shift", "calling the shop"),
        ("acknowledge", "morning", "taking over"),
        ("resolve", "morning", "clerk tried the trap; HR informed"),
        ("reopen", "audit", "second look"),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    );
    let times: Vec<&str> = history.iter().map(|h| h["at"].as_str().unwrap()).collect();
    let sorted = {
        let mut t = times.clone();
        t.sort();
        t
    };
    assert_eq!(times, sorted, "history in time order");
    assert_eq!(shown[0]["state"], "open");
    assert_eq!(shown[0]["state_by"], "audit");
    // Wrong input: each names what is wrong.
    for (args, needle) in [
        (vec!["alerts", "show", "999"], "no alert 999"),
        (vec!["alerts", "ack", "999", "--note", "n"], "no alert 999"),
        (
            vec!["alerts", "ack", &id, "--note", "  "],
            "--note: say why",
        ),
        (vec!["alerts", "ack", &id, "--note", "a\nb"], "one line"),
        (
            vec!["alerts", "ack", &id, "--note", "n", "--for", "4w"],
            "--for",
        ),
        (
            vec!["alerts", "ack", &id, "--note", "n", "--by", ""],
            "--by",
        ),
        (vec!["alerts", "ack", "x1", "--note", "n"], "x1"),
        (
            vec!["alerts", "--state", "all", "show", &id],
            "filter the listing",
        ),
    ] {
        let out = cli(&srv.db, Some("x"), &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    srv.stop().await;
}

#[tokio::test]
async fn an_acknowledgement_given_for_a_time_lapses_back_to_open() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "till-c");
    let body = forged(&mut dev);
    assert_eq!(
        post(srv.addr, client_config(&pki, Some(&dev)), body.clone())
            .await
            .unwrap()
            .0,
        422
    );
    let id = lines(&cli(&srv.db, None, &["alerts"]))[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let acked = lines(&cli(
        &srv.db,
        Some("eve"),
        &["alerts", "ack", &id, "--note", "short look", "--for", "2s"],
    ));
    assert_eq!(acked[0]["state"], "acknowledged");
    let until = acked[0]["ack_until"].as_str().unwrap().to_owned();
    assert!(is_fixed_rfc3339(&acked[0]["ack_until"]));
    // Poll until it lapses (deadline well past the 2 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let shown = loop {
        let shown = lines(&cli(&srv.db, None, &["alerts", "show", &id]));
        if shown[0]["state"] == "open" {
            break shown;
        }
        assert_eq!(shown[0]["state"], "acknowledged");
        assert!(
            std::time::Instant::now() < deadline,
            "never lapsed: {shown:?}"
        );
        std::thread::yield_now();
    };
    let last = shown[0]["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "expire");
    assert_eq!(last["by"], "collector");
    assert_eq!(
        last["at"].as_str(),
        Some(until.as_str()),
        "recorded when it lapsed"
    );
    assert!(shown[0]["owner"].is_null());
    // Open again: the default listing shows it, and a repeat counts on it.
    assert_eq!(
        post(srv.addr, client_config(&pki, Some(&dev)), body)
            .await
            .unwrap()
            .0,
        422
    );
    let open = lines(&cli(&srv.db, None, &["alerts", "--state", "open"]));
    assert_eq!(ids(&open), vec![id.parse::<i64>().unwrap()]);
    assert_eq!(open[0]["count"], 2);
    srv.stop().await;
}
