//! Backup and restore on real sockets: back up while serving, destroy the store, restore
//! (every chain re-verified), and ingest continues where it stopped without storing anything
//! twice; a device that does not verify is left out and named while the others are restored;
//! a backup in which no device verifies is refused naming the device and seq.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::*;
use posguard_collector::backup::{self, BackupError};
use posguard_proto::record::Record;
use posguard_proto::uplink::{UplinkAck, UplinkBatch};

async fn send(srv: &Running, pki: &Pki, dev: &Device, body: Vec<u8>) -> UplinkAck {
    let (status, _, bytes) = post(srv.addr, client_config(pki, Some(dev)), body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{bytes:?}");
    UplinkAck::from_bytes(&bytes).unwrap()
}

fn with_checkpoint(dev: &Device, certs: Vec<Vec<u8>>, records: &[Record], nv: u64) -> Vec<u8> {
    let mut b = UplinkBatch::from_bytes(&batch(certs, records)).unwrap();
    b.checkpoints = vec![dev.checkpoint(nv)];
    b.to_bytes().unwrap()
}

fn remove_store(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[tokio::test]
async fn backup_destroy_restore_and_ingest_continues() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut a = device(&pki, "term-a");
    let mut b = device(&pki, "term-b");
    let a1: Vec<Record> = (0..5).map(|_| a.logout()).collect();
    let first = with_checkpoint(&a, vec![a.journal_cert(1)], &a1, 7);
    let ack = send(&srv, &pki, &a, first).await;
    assert_eq!(ack.next_expected, 6);
    let b1: Vec<Record> = (0..4).map(|_| b.logout()).collect();
    send(&srv, &pki, &b, batch(vec![b.journal_cert(1)], &b1)).await;

    // Online: the collector keeps serving.
    let out = pki.dir.path().join("backup.db");
    let s = backup::backup(&srv.db, &out).unwrap();
    assert_eq!((s.devices, s.records), (2, 9));
    assert!(s.bytes > 0);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        backup::backup(&srv.db, &out),
        Err(BackupError::Exists { .. })
    ));
    // Ingest after the backup: the restored store lacks it and the terminal resends it.
    let a2: Vec<Record> = (0..2).map(|_| a.logout()).collect();
    send(&srv, &pki, &a, batch(vec![], &a2)).await;

    // The running collector has the store open: refused even with --force.
    let refused = backup::restore(&srv.db, &out, true).unwrap_err();
    assert!(matches!(refused, BackupError::InUse(_)), "{refused:?}");
    srv.stop().await;
    // A collector holding the store lock: refused.
    let held = posguard_collector::lock::StoreLock::try_acquire(&srv_db(&pki)).unwrap();
    assert!(matches!(
        backup::restore(&srv_db(&pki), &out, true),
        Err(BackupError::Locked(_))
    ));
    drop(held);

    remove_store(&srv_db(&pki));
    let s = backup::restore(&srv_db(&pki), &out, false).unwrap();
    assert_eq!((s.devices, s.records), (2, 9));
    let heads: Vec<(String, u64, u64)> = s
        .heads
        .iter()
        .map(|h| (h.device_id.clone(), h.highest_stored, h.checkpoints))
        .collect();
    assert_eq!(
        heads,
        [("term-a".into(), 5, 1), ("term-b".into(), 4, 0)].to_vec()
    );
    assert!(matches!(
        backup::restore(&srv_db(&pki), &out, false),
        Err(BackupError::Exists { .. })
    ));

    let srv = start(&pki, "").await;
    // Term-a resends what the restored store lacks (and one record it has).
    let mut resend = vec![a1[4].clone()];
    resend.extend(a2.iter().cloned());
    resend.push(a.logout());
    let ack = send(&srv, &pki, &a, batch(vec![], &resend)).await;
    assert_eq!((ack.highest_stored, ack.next_expected), (8, 9));
    let next = batch(vec![], &[b.logout()]);
    let ack = send(&srv, &pki, &b, next).await;
    assert_eq!(ack.next_expected, 6);
    assert_eq!(count_records(&srv.db), 8 + 5);
    srv.stop().await;
    // The live store verifies as a whole too.
    let out2 = pki.dir.path().join("backup2.db");
    backup::backup(&srv_db(&pki), &out2).unwrap();
    let s = backup::restore(&srv_db(&pki), &out2, true).unwrap();
    assert_eq!(s.records, 13);
}

fn srv_db(pki: &Pki) -> std::path::PathBuf {
    pki.dir.path().join("c.db")
}

/// Replaces the last byte of `device`'s record `seq` in the backup at `db` (its signature).
fn damage_signature(db: &std::path::Path, device: &str, seq: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut raw: Vec<u8> = conn
        .query_row(
            "SELECT raw FROM records WHERE device_id = ?1 AND seq = ?2",
            rusqlite::params![device, seq],
            |r| r.get(0),
        )
        .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    conn.execute(
        "UPDATE records SET raw = ?1 WHERE device_id = ?2 AND seq = ?3",
        rusqlite::params![raw, device, seq],
    )
    .unwrap();
}

fn rows_of(db: &std::path::Path, device: &str) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    ["devices", "records", "certs", "checkpoints"]
        .iter()
        .map(|t| {
            conn.query_row(
                &format!("SELECT COUNT(*) FROM {t} WHERE device_id = ?1"),
                [device],
                |r| r.get::<_, u64>(0),
            )
            .unwrap()
        })
        .sum()
}

fn leftovers(pki: &Pki) -> usize {
    std::fs::read_dir(pki.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
        .count()
}

/// Issue 15, point 10: a restore that meets one device whose records do not verify restores
/// all the others and names the one it could not verify; the backup is left as it was, and the
/// device, once its terminal resends its journal, is ingested again from genesis.
#[tokio::test]
async fn a_bad_device_is_left_out_and_named_and_the_others_are_restored() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut devs: Vec<Device> = ["term-a", "term-b", "term-c"]
        .iter()
        .map(|id| device(&pki, id))
        .collect();
    let mut sent: Vec<Vec<Record>> = Vec::new();
    for (i, d) in devs.iter_mut().enumerate() {
        let rs: Vec<Record> = (0..3 + i).map(|_| d.logout()).collect();
        let body = with_checkpoint(d, vec![d.journal_cert(1)], &rs, 1);
        send(&srv, &pki, d, body).await;
        sent.push(rs);
    }
    let out = pki.dir.path().join("backup.db");
    backup::backup(&srv.db, &out).unwrap();
    srv.stop().await;
    damage_signature(&out, "term-b", 3);
    let before = std::fs::read(&out).unwrap();

    remove_store(&srv_db(&pki));
    let s = backup::restore(&srv_db(&pki), &out, false).unwrap();
    let heads: Vec<(&str, u64)> = s
        .heads
        .iter()
        .map(|h| (h.device_id.as_str(), h.highest_stored))
        .collect();
    assert_eq!(heads, [("term-a", 3), ("term-c", 5)]);
    assert_eq!(s.unverified.len(), 1, "{:?}", s.unverified);
    let bad = &s.unverified[0];
    assert_eq!((bad.device.as_str(), bad.seq), ("term-b", Some(3)), "{bad}");
    assert!(bad.reason.contains("signature"), "{bad}");
    assert_eq!((s.devices, s.records), (2, 3 + 5));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["unverified"][0]["device"], "term-b");
    assert_eq!(
        rows_of(&srv_db(&pki), "term-b"),
        0,
        "its chain is not installed"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the backup is not changed"
    );
    assert_eq!(leftovers(&pki), 0);

    // Ingest resumes: term-a continues; term-b's terminal resends its journal from genesis.
    let srv = start(&pki, "").await;
    let next = batch(vec![], &[devs[0].logout()]);
    assert_eq!(send(&srv, &pki, &devs[0], next).await.next_expected, 5);
    let resend = batch(vec![devs[1].journal_cert(1)], &sent[1]);
    let ack = send(&srv, &pki, &devs[1], resend).await;
    assert_eq!(ack.next_expected, 5);
    srv.stop().await;
}

/// A backup in which no device verifies is refused whole: nothing is installed.
#[tokio::test]
async fn tampered_backup_refused_naming_device_and_seq() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut a = device(&pki, "term-a");
    let mut b = device(&pki, "term-b");
    let ra: Vec<Record> = (0..3).map(|_| a.logout()).collect();
    send(&srv, &pki, &a, batch(vec![a.journal_cert(1)], &ra)).await;
    let rb: Vec<Record> = (0..5).map(|_| b.logout()).collect();
    send(&srv, &pki, &b, batch(vec![b.journal_cert(1)], &rb)).await;
    let out = pki.dir.path().join("backup.db");
    backup::backup(&srv.db, &out).unwrap();
    srv.stop().await;

    damage_signature(&out, "term-a", 2);
    damage_signature(&out, "term-b", 3);
    let target = pki.dir.path().join("restored.db");
    let err = backup::restore(&target, &out, false).unwrap_err();
    let BackupError::Invalid(inv) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((inv.device.as_str(), inv.seq), ("term-a", Some(2)), "{inv}");
    assert!(
        inv.to_string().starts_with("device term-a at seq 2: "),
        "{inv}"
    );
    assert!(!target.exists());
    assert_eq!(leftovers(&pki), 0);
}
