//! Backup and restore on real sockets: back up while serving, destroy the store, restore
//! (every chain re-verified), and ingest continues where it stopped without storing anything
//! twice; a tampered backup is refused naming the device and seq.
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

    {
        let conn = rusqlite::Connection::open(&out).unwrap();
        let mut raw: Vec<u8> = conn
            .query_row(
                "SELECT raw FROM records WHERE device_id = 'term-b' AND seq = 3",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        conn.execute(
            "UPDATE records SET raw = ?1 WHERE device_id = 'term-b' AND seq = 3",
            [&raw],
        )
        .unwrap();
    }
    let target = pki.dir.path().join("restored.db");
    let err = backup::restore(&target, &out, false).unwrap_err();
    let BackupError::Invalid(inv) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((inv.device.as_str(), inv.seq), ("term-b", Some(3)), "{inv}");
    assert!(
        inv.to_string().starts_with("device term-b at seq 3: "),
        "{inv}"
    );
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(pki.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty());
}
