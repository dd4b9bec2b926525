//! [`on_issued`] and [`decommission`] over a real SQLite store: which issues start a new
//! generation (decommissioned, or another key over a stored chain) and which keep the chain.

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{DeviceRow, Store as _};

fn issued_for(key: &rcgen::KeyPair) -> Issued {
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(key)
        .unwrap();
    Issued {
        device_id: "till-1".into(),
        certificate_pem: cert.pem(),
        ca_pem: String::new(),
        serial: "01".into(),
        not_after_unix: 0,
    }
}

fn key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A store where till-1 has shipped under `stored` (if given) and was decommissioned (if so);
/// then a certificate is issued for `new`. What happened, and the lifecycle rows.
fn case(
    stored: Option<&rcgen::KeyPair>,
    decommissioned: bool,
    new: &rcgen::KeyPair,
) -> (NewGeneration, Vec<LifecycleRow>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    let mut outcome = None;
    store
        .transaction(&mut |tx| {
            if let Some(k) = stored {
                let mut row = DeviceRow::new("till-1", 1);
                row.dik = Some(k.public_key_raw().to_vec());
                row.highest_stored = 3;
                tx.put_device(&row)?;
                tx.put_cert("till-1", 1, b"cert", 1)?;
            }
            if decommissioned {
                decommission(tx, "till-1", "gone", 2)?;
            }
            outcome = Some(on_issued(tx, "till-1", &issued_for(new), 3)?);
            Ok(())
        })
        .unwrap();
    let devices = store
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    (outcome.unwrap(), store.lifecycles().unwrap(), devices)
}

fn states(rows: &[LifecycleRow]) -> Vec<(String, &'static str, u64)> {
    rows.iter()
        .map(|r| (r.device_id.clone(), r.state.name(), r.generation))
        .collect()
}

#[test]
fn a_first_enrollment_and_the_same_key_again_keep_the_chain() {
    let k = key();
    let (done, rows, devices) = case(None, false, &k);
    assert_eq!(done, NewGeneration::Continues);
    assert!(rows.is_empty(), "{rows:?}");
    assert!(devices.is_empty());
    let (done, rows, devices) = case(Some(&k), false, &k);
    assert_eq!(done, NewGeneration::Continues);
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(devices, ["till-1"]);
}

#[test]
fn another_key_over_a_stored_chain_archives_it_as_replaced() {
    let (old, new) = (key(), key());
    let (done, rows, devices) = case(Some(&old), false, &new);
    assert_eq!(done, NewGeneration::Archived("till-1@gen1".into()));
    assert_eq!(
        states(&rows),
        [
            ("till-1".into(), "active", 2),
            ("till-1@gen1".into(), "replaced", 1)
        ]
    );
    assert_eq!(devices, ["till-1@gen1"]);
}

#[test]
fn only_a_replacement_without_decommission_raises_an_alert() {
    for decommissioned in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        store
            .transaction(&mut |tx| {
                let mut row = DeviceRow::new("till-1", 1);
                row.dik = Some(key().public_key_raw().to_vec());
                tx.put_device(&row)?;
                if decommissioned {
                    decommission(tx, "till-1", "gone", 2)?;
                }
                on_issued(tx, "till-1", &issued_for(&key()), 3)?;
                Ok(())
            })
            .unwrap();
        let kinds: Vec<(Option<String>, String)> = store
            .alerts(None, None)
            .unwrap()
            .into_iter()
            .map(|a| (a.device_id, a.kind))
            .collect();
        if decommissioned {
            assert!(kinds.is_empty(), "{kinds:?}");
        } else {
            assert_eq!(kinds, [(Some("till-1".into()), "device_replaced".into())]);
        }
    }
}

#[test]
fn a_decommissioned_id_starts_a_new_generation_with_any_key() {
    for same_key in [true, false] {
        let old = key();
        let other = key();
        let new = if same_key { &old } else { &other };
        let (done, rows, devices) = case(Some(&old), true, new);
        assert_eq!(done, NewGeneration::Archived("till-1@gen1".into()));
        assert_eq!(
            states(&rows),
            [
                ("till-1".into(), "active", 2),
                ("till-1@gen1".into(), "decommissioned", 1)
            ],
            "same key: {same_key}"
        );
        assert_eq!(rows[1].reason.as_deref(), Some("gone"));
        assert_eq!(devices, ["till-1@gen1"]);
    }
    // Decommissioned before it ever shipped: nothing to archive, the next generation starts.
    let (done, rows, devices) = case(None, true, &key());
    assert_eq!(done, NewGeneration::Continues);
    assert_eq!(states(&rows), [("till-1".into(), "active", 2)]);
    assert!(devices.is_empty());
}

#[test]
fn decommissioning_twice_keeps_the_first_reason_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    store
        .transaction(&mut |tx| {
            tx.put_device(&DeviceRow::new("till-1", 1))?;
            let first = decommission(tx, "till-1", "stolen", 5)?;
            let again = decommission(tx, "till-1", "other", 9)?;
            assert_eq!(first, again);
            assert!(tx.device("till-1")?.unwrap().silent_alerted);
            Ok(())
        })
        .unwrap();
}
