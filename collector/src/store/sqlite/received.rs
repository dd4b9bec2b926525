//! The columns and indexes investigation and export read records by, added to stores created
//! before them (an idempotent step of its own, run at every open):
//!
//! - `received_seq`: the order the collector stored records in (1, 2, …), what an export cursor
//!   counts. A device that was offline ships old events late; ordered by event time they would
//!   land before a SIEM's last window and never be exported. Existing rows get their `rowid`,
//!   which is their insertion order (records are never deleted).
//! - `clerk`: the clerk an event concerns, for `--clerk` (existing rows: decoded once here).
//! - `record_hours` (device, hour of event time → lowest and highest seq stored in it): one
//!   device over a window reads the seq range of the window's hours through the primary key,
//!   not the device's whole history. A (device, time) index would do the same at the price of
//!   one more B-tree insert at a random place per record (it doubled the cost of storing a
//!   record in `./scripts/bench.sh query`); this table has one row per device and hour, so an
//!   ingest transaction touches a few of its pages. Invariant: every stored record lies in the
//!   seq range of its (device, hour) row, written in the same transaction.
//! - `records_by_received` (unique): an export cursor resumes by a seek.

use rusqlite::{Connection, params};

use crate::store::StoreError;

fn has_column(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('records') WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )?)
}

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    if !has_column(conn, "received_seq")? {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE records ADD COLUMN received_seq INTEGER;
             UPDATE records SET received_seq = rowid;
             COMMIT;",
        )?;
    }
    if !has_column(conn, "clerk")? {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let filled = add_clerks(conn);
        conn.execute_batch(if filled.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
        filled?;
    }
    let has_hours: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'record_hours'",
        [],
        |r| r.get(0),
    )?;
    if !has_hours {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE record_hours (
                 device_id TEXT NOT NULL, hour INTEGER NOT NULL,
                 min_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL,
                 PRIMARY KEY (device_id, hour)) WITHOUT ROWID;
             INSERT INTO record_hours
                 SELECT device_id, wall_ms / {HOUR_MS}, MIN(seq), MAX(seq) FROM records
                 GROUP BY device_id, wall_ms / {HOUR_MS};
             COMMIT;"
        ))?;
    }
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS records_by_received ON records (received_seq);",
    )?;
    Ok(())
}

/// The width of a `record_hours` row (event time, ms).
pub(super) const HOUR_MS: u64 = 3_600_000;

/// Widens the (device, hour) row of a record being stored to include its seq (same
/// transaction as the record).
pub(super) const MARK_HOUR: &str = "INSERT INTO record_hours (device_id, hour, min_seq, max_seq)
     VALUES (?1, ?2 / 3600000, ?3, ?3)
     ON CONFLICT (device_id, hour) DO UPDATE SET
         min_seq = MIN(min_seq, excluded.min_seq), max_seq = MAX(max_seq, excluded.max_seq)";

/// Adds the `clerk` column and fills it from each stored record (one pass, in rowid order). A
/// record that no longer decodes keeps no clerk: reading it reports the damage, not this step.
fn add_clerks(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("ALTER TABLE records ADD COLUMN clerk TEXT")?;
    let mut read = conn.prepare("SELECT rowid, raw FROM records")?;
    let mut write = conn.prepare("UPDATE records SET clerk = ?2 WHERE rowid = ?1")?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let rowid: i64 = r.get(0)?;
        let raw: Vec<u8> = r.get(1)?;
        let clerk = posguard_proto::record::Record::from_bytes(&raw)
            .ok()
            .and_then(|rec| rec.event().ok())
            .and_then(|e| crate::document::event_clerk(&e));
        if clerk.is_some() {
            write.execute(params![rowid, clerk])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventQuery;
    use crate::store::sqlite::read::query_sql;

    fn plan(conn: &Connection, q: &EventQuery) -> String {
        let (sql, args) = query_sql(q);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join(" | ")
    }

    #[test]
    fn a_device_window_and_a_cursor_read_through_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let conn = &store.conn;
        // Statistics as on a real store, so the planner weighs the indexes it would there.
        conn.execute_batch("ANALYZE").unwrap();
        let device = EventQuery {
            device_id: Some("term-1".into()),
            since_ms: Some(1),
            until_ms: Some(2),
            ..EventQuery::default()
        };
        // The window's seq range from its hours, then the primary key (device, seq) over that
        // range only (its index is SQLite's automatic one of the PRIMARY KEY constraint).
        let p = plan(conn, &device);
        assert!(
            p.contains("SEARCH records USING INDEX sqlite_autoindex_records_1 (device_id=? AND seq>? AND seq<?)"),
            "{p}"
        );
        assert!(
            p.contains("SEARCH record_hours USING PRIMARY KEY (device_id=? AND hour>? AND hour<?)"),
            "{p}"
        );
        for q in [
            EventQuery {
                after_received_seq: Some(5),
                ..EventQuery::default()
            },
            EventQuery {
                after_received_seq: Some(5),
                kind: Some("login_failed".into()),
                clerk: Some("anna".into()),
                ..EventQuery::default()
            },
        ] {
            let p = plan(conn, &q);
            assert!(
                p.contains("USING INDEX records_by_received (received_seq>?)"),
                "{p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "{p}");
        }
    }

    #[test]
    fn an_older_store_gets_its_received_order_clerks_and_hours() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE records (
                     device_id TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
                     kind TEXT NOT NULL, severity TEXT NOT NULL, wall_ms INTEGER NOT NULL,
                     actor TEXT NOT NULL, raw BLOB NOT NULL,
                     received_ms INTEGER NOT NULL, PRIMARY KEY (device_id, seq));
                 INSERT INTO records VALUES ('b', 1, x'00', 'pos', 'info', 9, 'system', x'01', 7);
                 INSERT INTO records VALUES ('a', 1, x'00', 'pos', 'info', 5, 'system', x'02', 8);",
            )
            .unwrap();
        }
        for _ in 0..2 {
            let store = crate::store::sqlite::SqliteStore::open(&db).unwrap();
            let rows: Vec<(String, i64, Option<String>)> = store
                .conn
                .prepare("SELECT device_id, received_seq, clerk FROM records ORDER BY received_seq")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            // Insertion order, and undecodable rows keep no clerk instead of failing the open.
            assert_eq!(rows, [("b".into(), 1, None), ("a".into(), 2, None)]);
            let hours: Vec<(String, i64, i64, i64)> = store
                .conn
                .prepare("SELECT device_id, hour, min_seq, max_seq FROM record_hours ORDER BY 1")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(hours, [("a".into(), 0, 1, 1), ("b".into(), 0, 1, 1)]);
        }
    }

    /// A device whose clock jumps back and forth across hours: every window (a sweep of
    /// boundaries) returns exactly the records whose event time is in it, as a scan would.
    #[test]
    fn device_windows_through_the_hours_match_a_scan_under_clock_jumps() {
        use crate::store::{RecordRow, Store as _};
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::sqlite::SqliteStore::open(&dir.path().join("h.db")).unwrap();
        let h = HOUR_MS;
        // seq i at these times: forward, a jump back two hours, forward again, far ahead.
        let times: Vec<u64> = (0..60u64)
            .map(|i| match i {
                0..=19 => 10 * h + i * 600_000,
                20..=29 => 9 * h + (i - 20) * 300_000,
                30..=49 => 12 * h + (i - 30) * 1_000,
                _ => 40 * h + i,
            })
            .collect();
        store
            .transaction(&mut |tx| {
                for (i, t) in times.iter().enumerate() {
                    for device in ["a", "b"] {
                        tx.put_record(
                            &RecordRow {
                                device_id: device,
                                seq: i as u64 + 1,
                                hash: &[0; 32],
                                kind: "pos",
                                severity: "info",
                                wall_ms: *t + u64::from(device == "b") * 7 * h,
                                actor: "system",
                                clerk: None,
                                raw: &[1],
                            },
                            5,
                        )?;
                    }
                }
                Ok(())
            })
            .unwrap();
        let bounds: Vec<u64> = (0..=45u64).map(|k| k * h / 2 + k).collect();
        for since in bounds.iter().copied().chain([0]) {
            for until in bounds.iter().copied() {
                let q = EventQuery {
                    device_id: Some("a".into()),
                    since_ms: (since > 0).then_some(since),
                    until_ms: Some(until),
                    ..EventQuery::default()
                };
                let (sql, args) = query_sql(&q);
                let got: Vec<u64> = store
                    .conn
                    .prepare(&sql)
                    .unwrap()
                    .query_map(rusqlite::params_from_iter(args), |r| r.get(1))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let mut want: Vec<(u64, u64)> = times
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| **t >= since && **t < until)
                    .map(|(i, t)| (*t, i as u64 + 1))
                    .collect();
                want.sort();
                let want: Vec<u64> = want.into_iter().map(|(_, s)| s).collect();
                assert_eq!(got, want, "window [{since}, {until})");
            }
        }
    }
}
