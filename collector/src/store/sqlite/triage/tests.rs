//! The upgrade of a store written before triage, and grouping on it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::store::Store as _;
use crate::store::sqlite::SqliteStore;
use posguard_proto::event::Severity;

/// A store written before triage: `alerts` has its first six columns, and repeats of one
/// cause were stacked as rows.
#[test]
fn an_older_store_gains_triage_and_groups_on_its_latest_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT,
                 kind TEXT NOT NULL, severity TEXT NOT NULL, detail TEXT NOT NULL,
                 at_ms INTEGER NOT NULL);
             INSERT INTO alerts (device_id, kind, severity, detail, at_ms) VALUES
                 ('t-1', 'fork', 'critical', 'second record for seq 4', 10),
                 ('t-1', 'mfa_failures', 'critical', '5 mfa_failed events', 20),
                 ('t-1', 'mfa_failures', 'critical', '6 mfa_failed events', 30);",
        )
        .unwrap();
    }
    let mut store = SqliteStore::open(&db).unwrap();
    let rows = store.alerts(None, None).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!((r.state.as_str(), r.count, r.last_ms), ("open", 1, r.at_ms));
    }
    let raise = |store: &mut SqliteStore, kind, detail: &str, at_ms| {
        let mut raised = None;
        store
            .transaction(&mut |tx| {
                raised = Some(tx.raise_alert(&NewAlert {
                    device_id: Some("t-1".into()),
                    kind,
                    severity: Severity::Critical,
                    detail: detail.into(),
                    at_ms,
                })?);
                Ok(())
            })
            .unwrap();
        raised.unwrap()
    };
    // The fork's cause is its detail (migrated); mfa_failures has one cause per device.
    assert_eq!(
        raise(&mut store, AlertKind::Fork, "second record for seq 4", 40),
        Raised::Repeated(1)
    );
    assert_eq!(
        raise(&mut store, AlertKind::Fork, "second record for seq 9", 41),
        Raised::New(4)
    );
    assert_eq!(
        raise(&mut store, AlertKind::MfaFailures, "7 codes", 50),
        Raised::Repeated(3)
    );
    let rows = store.alerts(None, None).unwrap();
    assert_eq!((rows[0].count, rows[0].last_ms), (2, 40));
    assert_eq!((rows[2].count, rows[2].last_ms), (2, 50));
    assert_eq!(rows[2].detail, "7 codes", "the latest detail");
    // Opening again is a no-op.
    drop(store);
    assert_eq!(
        SqliteStore::open(&db)
            .unwrap()
            .alerts(None, None)
            .unwrap()
            .len(),
        4
    );
}
