//! A refused batch changes nothing stored but its alert (issue 16, point 3): for every refusal
//! cause a test can provoke over a real TLS socket, the store's tables other than `alerts` are
//! the same before and after, the device's identity key is never replaced, a backup taken
//! after the refusals restores (every chain re-verified), and the device ships on afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use posguard_collector::backup;
use posguard_proto::chain::ChainHead;
use posguard_proto::event::EventKind;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;
use posguard_proto::uplink::{UplinkAck, UplinkBatch};
use ring::signature::Ed25519KeyPair;

/// Every table but `alerts`, row by row, as text.
fn snapshot(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('alerts', 'sqlite_sequence') ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = Vec::new();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let n = stmt.column_count();
        let mut q = stmt.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            rows.push(format!("{t}: {}", cols.join(" | ")));
        }
        // Some tables have no rowid (record_hours); the comparison needs an order, not that one.
        rows.sort();
    }
    rows
}

fn alerts(db: &std::path::Path) -> usize {
    alert_kinds(db).len()
}

fn with_checkpoint(certs: Vec<Vec<u8>>, records: &[Record], cp: Vec<u8>) -> Vec<u8> {
    let mut b = UplinkBatch::from_bytes(&batch(certs, records)).unwrap();
    b.checkpoints = vec![cp];
    b.to_bytes().unwrap()
}

#[tokio::test]
async fn every_refusal_leaves_the_store_as_it_was_and_backups_restore() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "till-1");
    let first: Vec<Record> = (0..3).map(|_| dev.logout()).collect();
    let cfg = client_config(&pki, Some(&dev));
    let (status, _, _) = post(
        srv.addr,
        cfg.clone(),
        batch(vec![dev.journal_cert(1)], &first),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let head = dev.head;

    // The same device id with another identity key (a terminal re-provisioned without the
    // collector knowing): its new chain from seq 1, certified by the new key.
    let mut other = device(&pki, "till-1");
    other.journal = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let other_records: Vec<Record> = (0..2).map(|_| other.logout()).collect();
    // Records made by this device's own key material, bent one way each (restored after).
    let fake = ChainHead {
        seq: head.seq,
        hash: [0xee; 32],
    };
    // A chain link that does not match (seq 4 after a head that is not ours).
    dev.head = fake;
    let broken = dev.logout();
    // A new journal key, certified in the batch, whose first record does not link: the
    // certificate must not stay stored.
    dev.journal = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
    dev.head = fake;
    let rekeyed_broken = dev.logout();
    let rekeyed_cert = dev.journal_cert(head.seq + 1);
    // A record signed by a journal key no certificate names.
    dev.journal = Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap();
    dev.head = head;
    let unknown_key = dev.logout();
    // A journal-key certificate for another device, signed by this device's key.
    dev.id = DeviceId::new("till-2").unwrap();
    let wrong_device_cert = dev.journal_cert(head.seq + 1);
    dev.id = DeviceId::new("till-1").unwrap();
    dev.journal = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    dev.head = head;
    // A checkpoint of the stored head signed by another identity key.
    let mut cp_forger = device(&pki, "till-1");
    cp_forger.head = head;
    let bad_cp = cp_forger.checkpoint(9);

    let cases: Vec<(&str, std::sync::Arc<rustls::ClientConfig>, Vec<u8>)> = vec![
        (
            "bad_cert_signature",
            client_config(&pki, Some(&other)),
            batch(vec![other.journal_cert(1)], &other_records),
        ),
        ("broken_link", cfg.clone(), batch(vec![], &[broken])),
        (
            "broken_link",
            cfg.clone(),
            batch(vec![rekeyed_cert], &[rekeyed_broken]),
        ),
        (
            "unknown_journal_key",
            cfg.clone(),
            batch(vec![], &[unknown_key]),
        ),
        ("malformed_record", cfg.clone(), {
            let mut b = UplinkBatch::new();
            b.records = vec![vec![0xff; 40]];
            b.to_bytes().unwrap()
        }),
        (
            "bad_checkpoint_signature",
            cfg.clone(),
            with_checkpoint(vec![], &[], bad_cp),
        ),
        (
            "wrong_device",
            cfg.clone(),
            batch(vec![wrong_device_cert], &[]),
        ),
    ];
    let mut n = 0;
    for (want, client, body) in cases {
        let before = snapshot(&srv.db);
        let alerts_before = alerts(&srv.db);
        for attempt in 0..2 {
            let (status, headers, bytes) =
                post(srv.addr, client.clone(), body.clone()).await.unwrap();
            let code = headers
                .get("x-posguard-error")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                (status, code.as_deref()),
                (422, Some(want)),
                "{want} (attempt {attempt}): {bytes:?}"
            );
            let after = snapshot(&srv.db);
            let gone: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
            let new: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
            assert!(
                gone.is_empty() && new.is_empty(),
                "{want}: the store changed: rows gone {gone:?}, rows new {new:?}"
            );
        }
        // At most one alert for the cause, not one per retry (the two `broken_link` cases
        // are one cause: the second raises none).
        let raised = alerts(&srv.db) - alerts_before;
        assert!(raised <= 1, "{want}: {raised} alerts");
        if n == 0 {
            assert_eq!(raised, 1, "{want}");
        }
        // A backup taken now restores, every chain re-verified.
        n += 1;
        let out = pki.dir.path().join(format!("after-{n}.db"));
        backup::backup(&srv.db, &out).unwrap();
        let restored = backup::restore(&pki.dir.path().join(format!("r-{n}.db")), &out, false)
            .unwrap_or_else(|e| panic!("{want}: the backup does not restore: {e}"));
        assert!(restored.unverified.is_empty(), "{want}: {restored:?}");
        assert_eq!(restored.records, 3, "{want}");
    }

    assert_eq!(alerts(&srv.db), 6, "{:?}", alert_kinds(&srv.db));

    // Another key claiming the collector lost records (as after a restore) is answered without
    // verifying anything: it must not replace the stored identity key either.
    let dik = |db: &std::path::Path| -> Vec<u8> {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT dik FROM devices WHERE device_id = 'till-1'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let stored_dik = dik(&srv.db);
    let later: Vec<Record> = (0..8).map(|_| other.logout()).collect();
    let mut claim =
        UplinkBatch::from_bytes(&batch(vec![other.journal_cert(1)], &later[6..])).unwrap();
    claim.status = Some(posguard_proto::uplink::DeviceStatus {
        agent_version: "test".to_owned(),
        cert_not_after_unix: 4_000_000_000,
        journal_head: 10,
        journal_shipped: 9,
        wall_ms: 1_763_900_000_000,
    });
    let (status, _, _) = post(
        srv.addr,
        client_config(&pki, Some(&other)),
        claim.to_bytes().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(dik(&srv.db), stored_dik, "the identity key was replaced");

    // The device itself ships on from where it was.
    let (status, _, bytes) = post(
        srv.addr,
        cfg,
        batch(
            vec![],
            &[dev.record(EventKind::LoggedOut {
                clerk: posguard_proto::text::ClerkId::new("anna").unwrap(),
            })],
        ),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(UplinkAck::from_bytes(&bytes).unwrap().highest_stored, 4);
    srv.stop().await;
}
