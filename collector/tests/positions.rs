//! Where a device's journal stands against the collector's store, over real TLS sockets with a
//! real SQLite store: one alert per cause however often a refused batch is retried, one
//! `chain_regressed` alert when a device's journal falls below what is stored or restarts at
//! seq 1, and a collector that lost records (restored from a backup) asks for them again rather
//! than storing past a gap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use posguard_proto::event::EventKind;
use posguard_proto::record::Record;
use posguard_proto::text::ClerkId;
use posguard_proto::uplink::{DeviceStatus, UplinkAck, UplinkBatch};

fn with_status(certs: Vec<Vec<u8>>, records: &[Record], head: u64, shipped: u64) -> Vec<u8> {
    let mut b = UplinkBatch::new();
    b.certs = certs;
    b.records = records.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.status = Some(DeviceStatus {
        agent_version: "test".to_owned(),
        cert_not_after_unix: 4_000_000_000,
        journal_head: head,
        journal_shipped: shipped,
        wall_ms: 1_763_900_000_000,
    });
    b.to_bytes().unwrap()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

#[tokio::test]
async fn a_refused_batch_sent_again_raises_no_second_alert() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0101");
    let good = dev.logout();
    let bad = dev.logout();
    let mut forged = bad.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut b = UplinkBatch::new();
    b.certs = vec![dev.journal_cert(1)];
    b.records = vec![good.as_bytes().to_vec(), forged];
    let body = b.to_bytes().unwrap();
    let cfg = client_config(&pki, Some(&dev));
    for attempt in 0..5 {
        let (status, headers, answer) = post(srv.addr, cfg.clone(), body.clone()).await.unwrap();
        assert_eq!(status, 422, "attempt {attempt}");
        assert_eq!(&answer[..], b"bad_signature");
        assert_eq!(headers["x-posguard-highest-stored"], "1");
    }
    let kinds = alert_kinds(&srv.db);
    assert_eq!(
        kinds,
        vec!["bad_signature".to_owned()],
        "one alert for five tries"
    );
    // A different cause (another forged record further on) is a new alert.
    let mut b = UplinkBatch::new();
    b.certs = vec![dev.journal_cert(1)];
    let next = dev.logout();
    let mut forged = next.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    b.records = vec![bad.as_bytes().to_vec(), forged];
    let (status, _, _) = post(srv.addr, cfg.clone(), b.to_bytes().unwrap())
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(count(&alert_kinds(&srv.db), "bad_signature"), 2);
    srv.stop().await;
}

#[tokio::test]
async fn a_head_below_what_is_stored_raises_one_alert() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0102");
    let cfg = client_config(&pki, Some(&dev));
    let records: Vec<Record> = (0..5).map(|_| dev.logout()).collect();
    let body = with_status(vec![dev.journal_cert(1)], &records, 5, 0);
    let (status, _, _) = post(srv.addr, cfg.clone(), body).await.unwrap();
    assert_eq!(status, 200);
    assert!(alert_kinds(&srv.db).is_empty());
    // The device now reports a head of 2 (its tail was cut), in heartbeats, again and again.
    for _ in 0..4 {
        let (status, _, answer) = post(srv.addr, cfg.clone(), with_status(vec![], &[], 2, 2))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(UplinkAck::from_bytes(&answer).unwrap().highest_stored, 5);
    }
    assert_eq!(alert_kinds(&srv.db), vec!["chain_regressed".to_owned()]);
    srv.stop().await;
}

#[tokio::test]
async fn a_chain_restarted_at_seq_1_raises_one_alert_and_is_kept_aside() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0103");
    let cfg = client_config(&pki, Some(&dev));
    let records: Vec<Record> = (0..6).map(|_| dev.logout()).collect();
    let (status, _, _) = post(
        srv.addr,
        cfg.clone(),
        with_status(vec![dev.journal_cert(1)], &records, 6, 0),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // The journal was deleted: a new chain from the genesis, with other events, and a head
    // beyond the stored one by the time it ships (so the head check alone would not see it).
    dev.head = posguard_proto::chain::ChainHead::genesis(&dev.id);
    let restarted: Vec<Record> = (0..8)
        .map(|_| {
            dev.record(EventKind::LoggedOut {
                clerk: ClerkId::new("bruno").unwrap(),
            })
        })
        .collect();
    let body = with_status(vec![dev.journal_cert(1)], &restarted[..4], 8, 0);
    for _ in 0..3 {
        let (status, _, answer) = post(srv.addr, cfg.clone(), body.clone()).await.unwrap();
        assert_eq!(status, 200, "forks are kept aside, not refused");
        assert_eq!(UplinkAck::from_bytes(&answer).unwrap().highest_stored, 6);
    }
    assert_eq!(alert_kinds(&srv.db), vec!["chain_regressed".to_owned()]);
    assert_eq!(count_records(&srv.db), 6, "the stored chain is untouched");
    srv.stop().await;
}

#[tokio::test]
async fn a_collector_behind_the_device_asks_for_what_it_lost() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0104");
    let cfg = client_config(&pki, Some(&dev));
    let records: Vec<Record> = (0..12).map(|_| dev.logout()).collect();
    let cert = dev.journal_cert(1);
    let (status, _, _) = post(
        srv.addr,
        cfg.clone(),
        with_status(vec![cert.clone()], &records[..5], 5, 0),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // As after a restore: the device was told 1..=9 were stored, the collector holds 1..=5.
    // Its next batch (10..=12) must not be stored past the gap.
    let (status, _, answer) = post(
        srv.addr,
        cfg.clone(),
        with_status(vec![cert.clone()], &records[9..], 12, 9),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let ack = UplinkAck::from_bytes(&answer).unwrap();
    assert_eq!((ack.highest_stored, ack.next_expected), (5, 6));
    assert_eq!(
        count_records(&srv.db),
        5,
        "nothing stored past the lost records"
    );
    // The device resends from 6: all stored, no gap, no alert.
    let (status, _, answer) = post(
        srv.addr,
        cfg.clone(),
        with_status(vec![cert], &records[5..], 12, 5),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(UplinkAck::from_bytes(&answer).unwrap().highest_stored, 12);
    assert_eq!(count_records(&srv.db), 12);
    assert!(
        alert_kinds(&srv.db).is_empty(),
        "{:?}",
        alert_kinds(&srv.db)
    );
    srv.stop().await;
}

#[tokio::test]
async fn an_older_checkpoint_arriving_late_is_no_rollback_but_a_real_one_is() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "term-0105");
    let cfg = client_config(&pki, Some(&dev));
    let cert = dev.journal_cert(1);
    let first: Vec<Record> = (0..3).map(|_| dev.logout()).collect();
    // A start with head 3 checkpointed (counter 5) after 1..=3 had been shipped without it.
    let late = dev.checkpoint(5);
    let second: Vec<Record> = (0..3).map(|_| dev.logout()).collect();
    let newer = dev.checkpoint(6);
    let mut b = UplinkBatch::new();
    b.certs = vec![cert.clone()];
    b.records = first.iter().map(|r| r.as_bytes().to_vec()).collect();
    assert_eq!(
        post(srv.addr, cfg.clone(), b.to_bytes().unwrap())
            .await
            .unwrap()
            .0,
        200
    );
    b.records = second.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.checkpoints = vec![newer];
    assert_eq!(
        post(srv.addr, cfg.clone(), b.to_bytes().unwrap())
            .await
            .unwrap()
            .0,
        200
    );
    // A resend from seq 1 carries the older checkpoint: it fits between what is stored.
    b.records = first
        .iter()
        .chain(&second)
        .map(|r| r.as_bytes().to_vec())
        .collect();
    b.checkpoints = vec![late];
    let (status, _, body) = post(srv.addr, cfg.clone(), b.to_bytes().unwrap())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:?}");
    assert!(
        alert_kinds(&srv.db).is_empty(),
        "{:?}",
        alert_kinds(&srv.db)
    );
    // A higher counter at a lower seq is a rollback (the journal was put back).
    dev.head = first[2].head();
    let rolled_back = dev.checkpoint(7);
    b.records = first.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.checkpoints = vec![rolled_back];
    let (status, _, body) = post(srv.addr, cfg, b.to_bytes().unwrap()).await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(&body[..], b"counter_rollback");
    srv.stop().await;
}
