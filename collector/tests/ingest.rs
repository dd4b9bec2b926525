//! Ingest over real TLS sockets with a real SQLite store in a temp dir: stored exactly once,
//! forks kept aside, forged and reordered batches refused, counter rollback, limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use posguard_collector::store::Store as _;
use posguard_collector::store::sqlite::SqliteStore;
use posguard_proto::event::EventKind;
use posguard_proto::record::Record;
use posguard_proto::text::ClerkId;
use posguard_proto::uplink::{UplinkAck, UplinkBatch};
use rcgen::{CertificateParams, SanType};

#[tokio::test]
async fn ingest_stored_once_and_resend_deduplicated() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0001");
    let records: Vec<Record> = (0..5).map(|_| dev.logout()).collect();
    let body = batch(vec![dev.journal_cert(1)], &records);
    let cfg = client_config(&pki, Some(&dev));
    let (status, _, bytes) = post(srv.addr, cfg.clone(), body.clone()).await.unwrap();
    assert_eq!(status, 200, "{bytes:?}");
    let ack = UplinkAck::from_bytes(&bytes).unwrap();
    assert_eq!((ack.highest_stored, ack.next_expected), (5, 6));
    let (status, _, bytes) = post(srv.addr, cfg, body).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(UplinkAck::from_bytes(&bytes).unwrap().highest_stored, 5);
    assert_eq!(count_records(&srv.db), 5);
    let text = srv.metrics.render();
    assert!(
        text.contains("posguard_collector_events_stored_total 5"),
        "{text}"
    );
    assert!(
        text.contains("posguard_collector_duplicate_records_total 5"),
        "{text}"
    );
    assert!(
        text.contains("posguard_collector_requests_total{status=\"200\"} 2"),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn fork_kept_aside_with_alert() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0002");
    let first: Vec<Record> = (0..3).map(|_| dev.logout()).collect();
    let cfg = client_config(&pki, Some(&dev));
    let cert = dev.journal_cert(1);
    let (status, _, _) = post(srv.addr, cfg.clone(), batch(vec![cert.clone()], &first))
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Rewind to seq 2 and write a different record 3.
    dev.head = first[1].head();
    let other = dev.record(EventKind::HoneypotTriggered {
        clerk: ClerkId::new("admin").unwrap(),
    });
    let (status, _, _) = post(srv.addr, cfg, batch(vec![cert], &[other]))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(count_records(&srv.db), 3);
    assert!(alert_kinds(&srv.db).contains(&"fork".to_owned()));
    let mut s = SqliteStore::open(&srv.db).unwrap();
    assert_eq!(s.forks().unwrap().len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn forged_signature_refused_and_alerted() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0003");
    let good = dev.logout();
    let bad = dev.logout();
    let mut bytes = bad.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // damage the signature
    let mut b = UplinkBatch::new();
    b.certs = vec![dev.journal_cert(1)];
    b.records = vec![good.as_bytes().to_vec(), bytes];
    let cfg = client_config(&pki, Some(&dev));
    let (status, headers, body) = post(srv.addr, cfg, b.to_bytes().unwrap()).await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(&body[..], b"bad_signature");
    assert_eq!(headers["x-posguard-highest-stored"], "1");
    assert_eq!(count_records(&srv.db), 1, "the good prefix is stored");
    assert!(alert_kinds(&srv.db).contains(&"bad_signature".to_owned()));
    srv.stop().await;
}

#[tokio::test]
async fn refuses_missing_and_foreign_client_certificates() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0004");
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    // Without a certificate the handshake completes (enrollment needs that); the journal
    // answers 401.
    let (status, _, _) = post(srv.addr, client_config(&pki, None), body.clone())
        .await
        .unwrap();
    assert_eq!(status, 401);
    let other = pki_other(&pki);
    let stranger = device(&other, "term-0004");
    assert!(
        post(srv.addr, client_config(&pki, Some(&stranger)), body)
            .await
            .is_err()
    );
    assert_eq!(count_records(&srv.db), 0);
    srv.stop().await;
}

fn pki_other(_: &Pki) -> Pki {
    pki()
}

#[tokio::test]
async fn device_id_comes_from_the_certificate() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut claimed = device(&pki, "term-9999");
    let body = batch(vec![claimed.journal_cert(1)], &[claimed.logout()]);
    // Same key material, but the certificate names term-0005: the body's term-9999 certs fail.
    let real = Device {
        cert_pem: {
            let mut p = CertificateParams::new(vec![]).unwrap();
            p.subject_alt_names = vec![SanType::URI(
                "urn:posguard:device:term-0005".try_into().unwrap(),
            )];
            p.signed_by(&claimed.key, &pki.issuer).unwrap().pem()
        },
        ..claimed
    };
    let (status, _, body) = post(srv.addr, client_config(&pki, Some(&real)), body)
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(&body[..], b"wrong_device");
    assert_eq!(count_records(&srv.db), 0);
    srv.stop().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let pki = pki();
    let srv = start(&pki, "[rate_limit]\nper_second = 0.01\nburst = 1\n").await;
    let mut dev = device(&pki, "term-0006");
    let cfg = client_config(&pki, Some(&dev));
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    assert_eq!(
        post(srv.addr, cfg.clone(), body.clone()).await.unwrap().0,
        200
    );
    let (status, headers, _) = post(srv.addr, cfg, body).await.unwrap();
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    srv.stop().await;
}

#[tokio::test]
async fn maintenance_answers_503_with_retry_after_and_stores_nothing() {
    let pki = pki();
    let srv = start(&pki, "").await;
    // Switched on before the first request, as the ops CLI does from its own process (a
    // serving collector rereads the flag at most once a second: see the server's unit test).
    SqliteStore::open(&srv.db)
        .unwrap()
        .set_maintenance(true)
        .unwrap();
    let mut dev = device(&pki, "term-0016");
    let cfg = client_config(&pki, Some(&dev));
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    let (status, headers, _) = post(srv.addr, cfg, body).await.unwrap();
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(count_records(&srv.db), 0);
    srv.stop().await;
}

#[tokio::test]
async fn reordered_batch_refused_nothing_overwritten() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0007");
    let r: Vec<Record> = (0..3).map(|_| dev.logout()).collect();
    let cfg = client_config(&pki, Some(&dev));
    let body = batch(
        vec![dev.journal_cert(1)],
        &[r[0].clone(), r[2].clone(), r[1].clone()],
    );
    let (status, _, body) = post(srv.addr, cfg, body).await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(&body[..], b"reordered");
    let kinds = alert_kinds(&srv.db);
    assert!(kinds.contains(&"chain_broken".to_owned()), "{kinds:?}");
    srv.stop().await;
}

#[tokio::test]
async fn replayed_old_batch_is_deduplicated() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0008");
    let cfg = client_config(&pki, Some(&dev));
    let cert = dev.journal_cert(1);
    let old: Vec<Record> = (0..2).map(|_| dev.logout()).collect();
    let old_body = batch(vec![cert.clone()], &old);
    assert_eq!(
        post(srv.addr, cfg.clone(), old_body.clone())
            .await
            .unwrap()
            .0,
        200
    );
    let newer: Vec<Record> = (0..2).map(|_| dev.logout()).collect();
    assert_eq!(
        post(srv.addr, cfg.clone(), batch(vec![cert], &newer))
            .await
            .unwrap()
            .0,
        200
    );
    let (status, _, bytes) = post(srv.addr, cfg, old_body).await.unwrap();
    assert_eq!(status, 200);
    let ack = UplinkAck::from_bytes(&bytes).unwrap();
    assert_eq!(
        ack.highest_stored, 4,
        "the replay does not move the head back"
    );
    assert_eq!(count_records(&srv.db), 4);
    srv.stop().await;
}

#[tokio::test]
async fn counter_rollback_is_refused_and_alerted() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0009");
    let cfg = client_config(&pki, Some(&dev));
    let cert = dev.journal_cert(1);
    let first: Vec<Record> = (0..2).map(|_| dev.logout()).collect();
    let mut b = UplinkBatch::new();
    b.certs = vec![cert.clone()];
    b.records = first.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.checkpoints = vec![dev.checkpoint(10)];
    assert_eq!(
        post(srv.addr, cfg.clone(), b.to_bytes().unwrap())
            .await
            .unwrap()
            .0,
        200
    );
    // The same checkpoint again is a harmless resend.
    assert_eq!(
        post(srv.addr, cfg.clone(), b.to_bytes().unwrap())
            .await
            .unwrap()
            .0,
        200
    );
    let second: Vec<Record> = (0..2).map(|_| dev.logout()).collect();
    let mut b = UplinkBatch::new();
    b.records = second.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.checkpoints = vec![dev.checkpoint(7)];
    let (status, _, body) = post(srv.addr, cfg, b.to_bytes().unwrap()).await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(&body[..], b"counter_rollback");
    assert!(alert_kinds(&srv.db).contains(&"counter_rollback".to_owned()));
    srv.stop().await;
}

#[tokio::test]
async fn event_alerts_honeypot_and_mfa_failures() {
    let pki = pki();
    let srv = start(&pki, "[alerts]\nmfa_failure_count = 3\n").await;
    let mut dev = device(&pki, "term-0010");
    let cfg = client_config(&pki, Some(&dev));
    let anna = ClerkId::new("anna").unwrap();
    let mut records = vec![dev.record(EventKind::HoneypotTriggered {
        clerk: ClerkId::new("admin").unwrap(),
    })];
    for _ in 0..4 {
        records.push(dev.record(EventKind::MfaFailed {
            clerk: anna.clone(),
        }));
    }
    let (status, _, _) = post(srv.addr, cfg, batch(vec![dev.journal_cert(1)], &records))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let kinds = alert_kinds(&srv.db);
    assert!(kinds.contains(&"honeypot".to_owned()), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "mfa_failures").count(),
        1,
        "one alert per window: {kinds:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn tamper_findings_and_overflow_raise_their_alerts_once_each() {
    use posguard_proto::event::{Overflow, TamperFinding};
    use posguard_proto::text::ShortCode;
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0012");
    let cfg = client_config(&pki, Some(&dev));
    let clerks = ShortCode::new("clerks").unwrap();
    let mut records = vec![
        dev.record(EventKind::TamperDetected {
            finding: TamperFinding::StoreOlder {
                store: clerks.clone(),
                recorded_generation: 9,
                found_generation: 4,
            },
        }),
        dev.record(EventKind::TamperRecovered {
            finding: TamperFinding::StoreMissing {
                store: ShortCode::new("journal").unwrap(),
            },
            moved_to: None,
        }),
    ];
    // Records 3..=5 are dropped by the terminal and declared by the overflow record 6.
    for _ in 3..=5 {
        dev.record(EventKind::HoneypotTriggered {
            clerk: ClerkId::new("never-sent").unwrap(),
        });
    }
    records.push(dev.record(EventKind::JournalOverflow(Overflow {
        first_seq: 3,
        last_seq: 5,
        dropped: 3,
        dropped_critical: 0,
    })));
    let (status, _, _) = post(
        srv.addr,
        cfg.clone(),
        batch(vec![dev.journal_cert(1)], &records),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // The same batch again (a retry) stores nothing new and raises nothing new.
    let (status, _, _) = post(srv.addr, cfg, batch(vec![dev.journal_cert(1)], &records))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let alerts = SqliteStore::open(&srv.db)
        .unwrap()
        .alerts(None, None)
        .unwrap();
    assert!(
        !alerts.iter().any(|a| a.kind == "honeypot"),
        "the dropped records never arrived: {alerts:?}"
    );
    let tamper: Vec<_> = alerts.iter().filter(|a| a.kind == "tamper").collect();
    assert_eq!(tamper.len(), 2, "{alerts:?}");
    assert!(
        tamper.iter().all(|a| a.severity == "critical"),
        "{alerts:?}"
    );
    assert!(
        tamper.iter().any(|a| a
            .detail
            .contains("clerks older copy (generation 4, journal recorded 9)")),
        "{alerts:?}"
    );
    assert!(
        tamper.iter().any(|a| a.detail.contains("journal missing")),
        "{alerts:?}"
    );
    let overflow: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == "journal_overflow")
        .collect();
    assert_eq!(overflow.len(), 1, "{alerts:?}");
    assert_eq!(overflow[0].severity, "warning");
    assert!(
        overflow[0]
            .detail
            .contains("3 records dropped in seq 3..=5"),
        "{alerts:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let pki = pki();
    let srv = start(&pki, "body_limit = 1024\n").await;
    let dev = device(&pki, "term-0011");
    let (status, _, _) = post(srv.addr, client_config(&pki, Some(&dev)), vec![0; 4096])
        .await
        .unwrap();
    assert_eq!(status, 413);
    srv.stop().await;
}

#[tokio::test]
async fn queued_command_is_delivered_in_the_ack_until_received() {
    use posguard_proto::event::{CommandKind as EventCommandKind, CommandRef};
    use posguard_proto::uplink::CommandKind;

    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0012");
    let key_path = pki.dir.path().join("ops.key");
    let public = posguard_collector::opskey::generate(&key_path).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cmd = posguard_collector::opskey::sign(
        &key_path,
        dev.id.clone(),
        1,
        CommandKind::Lockdown,
        1_763_900_000_000,
    )
    .unwrap();
    SqliteStore::open(&srv.db)
        .unwrap()
        .queue_command(&cmd, 0)
        .unwrap();

    let cfg = client_config(&pki, Some(&dev));
    let cert = dev.journal_cert(1);
    let (_, _, bytes) = post(
        srv.addr,
        cfg.clone(),
        batch(vec![cert.clone()], &[dev.logout()]),
    )
    .await
    .unwrap();
    let ack = UplinkAck::from_bytes(&bytes).unwrap();
    assert_eq!(ack.commands, vec![cmd.clone()]);
    let public: [u8; 32] = posguard_collector::clock::unhex(&public)
        .unwrap()
        .try_into()
        .unwrap();
    assert!(ack.commands[0].verify(&public));

    let received = dev.record(EventKind::CommandReceived {
        command: CommandRef {
            command_seq: 1,
            kind: EventCommandKind::Lockdown,
        },
    });
    let (_, _, bytes) = post(srv.addr, cfg, batch(vec![cert], &[received]))
        .await
        .unwrap();
    assert!(UplinkAck::from_bytes(&bytes).unwrap().commands.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn silent_terminals_are_reported_once() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0013");
    let cfg = client_config(&pki, Some(&dev));
    assert_eq!(
        post(
            srv.addr,
            cfg,
            batch(vec![dev.journal_cert(1)], &[dev.logout()])
        )
        .await
        .unwrap()
        .0,
        200
    );
    let mut store = SqliteStore::open(&srv.db).unwrap();
    let far = u64::MAX / 2;
    let silent = std::time::Duration::from_secs(60);
    use posguard_collector::server::sweep::sweep_silent;
    assert_eq!(sweep_silent(&mut store, far, silent).unwrap(), 1);
    assert_eq!(sweep_silent(&mut store, far, silent).unwrap(), 0);
    assert!(alert_kinds(&srv.db).contains(&"silent".to_owned()));
    srv.stop().await;
}
