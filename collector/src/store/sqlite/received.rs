//! The columns and indexes investigation and export read records by, added to stores created
//! before them (an idempotent step of its own, run at every open):
//!
//! - `received_seq`: the order the collector stored records in (1, 2, …), what an export cursor
//!   counts. A device that was offline ships old events late; ordered by event time they would
//!   land before a SIEM's last window and never be exported. Existing rows get their `rowid`,
//!   which is their insertion order (records are never deleted).
//! - `clerk`: the clerk an event concerns, for `--clerk` (existing rows: decoded once here).
//! - `records_by_device_time` (device, event time, seq): one device over a window reads the
//!   window, not the device's whole history; `records_by_received` (unique): a cursor resumes
//!   by a seek. The price is at ingest: the device-keyed index is one more B-tree insert at a
//!   random place per stored record (+3 to +5 µs a record measured alone by `./scripts/bench.sh
//!   query`; the time-keyed indexes are appends and cost little): docs/PERFORMANCE.md.

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
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS records_by_device_time ON records (device_id, wall_ms, seq);
         CREATE UNIQUE INDEX IF NOT EXISTS records_by_received ON records (received_seq);",
    )?;
    Ok(())
}

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
        let p = plan(conn, &device);
        assert!(
            p.contains(
                "USING INDEX records_by_device_time (device_id=? AND wall_ms>? AND wall_ms<?)"
            ),
            "{p}"
        );
        assert!(
            !p.contains("TEMP B-TREE"),
            "sorted by the index, not afterwards: {p}"
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
    fn an_older_store_gets_its_received_order_and_clerks() {
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
        }
    }
}
