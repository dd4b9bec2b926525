//! Read-only queries of the SQLite store (CLI and the transaction's device reads).

use posguard_proto::record::Record;
use rusqlite::types::Value;
use rusqlite::{Connection, Row, params};

use super::received::HOUR_MS;
use crate::clock::hex;
use crate::store::{DeviceRow, EventQuery, StoreError, StoredEvent};

pub(super) const DEVICE_COLUMNS: &str = "device_id, first_seen_ms, last_seen_ms,
    cert_not_after_unix, chain_state, highest_stored, agent_version, journal_head,
    journal_shipped, device_wall_ms, silent_alerted, expiry_alerted_for, dik";

pub(super) fn device_from_row(r: &Row<'_>) -> rusqlite::Result<DeviceRow> {
    let state: Option<String> = r.get(4)?;
    let chain_state = match state {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?),
        None => None,
    };
    Ok(DeviceRow {
        device_id: r.get(0)?,
        first_seen_ms: r.get(1)?,
        last_seen_ms: r.get(2)?,
        cert_not_after_unix: r.get(3)?,
        chain_state,
        highest_stored: r.get(5)?,
        agent_version: r.get(6)?,
        journal_head: r.get(7)?,
        journal_shipped: r.get(8)?,
        device_wall_ms: r.get(9)?,
        silent_alerted: r.get(10)?,
        expiry_alerted_for: r.get(11)?,
        dik: r.get(12)?,
    })
}

pub(super) fn devices(
    conn: &Connection,
    last_seen_before: Option<u64>,
) -> Result<Vec<DeviceRow>, StoreError> {
    let sql = match last_seen_before {
        Some(_) => format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE last_seen_ms < ?1 AND silent_alerted = 0
             ORDER BY device_id"
        ),
        None => format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id"),
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = match last_seen_before {
        Some(t) => stmt.query_map(params![t], device_from_row)?,
        None => stmt.query_map([], device_from_row)?,
    };
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn query(
    conn: &Connection,
    q: &EventQuery,
    out: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let (sql, args) = query_sql(q);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    while let Some(r) = rows.next()? {
        let hash: Vec<u8> = r.get(2)?;
        let raw: Vec<u8> = r.get(7)?;
        out(StoredEvent {
            device_id: r.get(0)?,
            seq: r.get(1)?,
            hash: hex(&hash),
            kind: r.get(3)?,
            severity: r.get(4)?,
            wall_ms: r.get(5)?,
            actor: r.get(6)?,
            event: event_json(&raw)?,
            received_ms: r.get(8)?,
            clerk: r.get(9)?,
            received_seq: r.get::<_, Option<u64>>(10)?.unwrap_or(0),
        })?;
    }
    Ok(())
}

/// The statement for `q` and its arguments. Public to the store's tests, which check with
/// `EXPLAIN QUERY PLAN` that it reads through an index.
pub(super) fn query_sql(q: &EventQuery) -> (String, Vec<Value>) {
    let mut sql = String::from(
        "SELECT device_id, seq, hash, kind, severity, wall_ms, actor, raw, received_ms, clerk,
                received_seq
         FROM records",
    );
    if q.after_received_seq.is_some() {
        // An export resumes after its cursor: what was stored since is a short range of this
        // index, whatever else is filtered (by a kind's index, the planner would read that
        // kind's whole history and sort it).
        sql.push_str(" INDEXED BY records_by_received");
    }
    sql.push_str(" WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    // Appends `clause` with its `?` numbered; returns the number.
    let mut bind = |sql: &mut String, clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        args.len()
    };
    if let Some(d) = &q.device_id {
        let n = bind(&mut sql, " AND device_id = ?", Value::Text(d.clone()));
        if q.after_received_seq.is_none() && (q.since_ms.is_some() || q.until_ms.is_some()) {
            // One device over a window: the seq range of the window's hours (every record lies
            // in its hour's range), read through the primary key.
            let from = q.since_ms.map_or(0, |t| to_i64(t / HOUR_MS));
            let to = q
                .until_ms
                .map_or(i64::MAX, |t| to_i64(t.saturating_sub(1) / HOUR_MS));
            sql.push_str(&format!(
                " AND seq BETWEEN
                     (SELECT COALESCE(MIN(min_seq), 1) FROM record_hours
                      WHERE device_id = ?{n} AND hour BETWEEN {from} AND {to})
                 AND (SELECT COALESCE(MAX(max_seq), 0) FROM record_hours
                      WHERE device_id = ?{n} AND hour BETWEEN {from} AND {to})"
            ));
        }
    }
    // With a device, the window is read by seq range (above); `+` keeps the planner off the
    // fleet-wide time index, which would read every device's records in the window.
    let (at_least, before) = if q.device_id.is_some() {
        (" AND +wall_ms >= ?", " AND +wall_ms < ?")
    } else {
        (" AND wall_ms >= ?", " AND wall_ms < ?")
    };
    if let Some(t) = q.since_ms {
        bind(&mut sql, at_least, Value::Integer(to_i64(t)));
    }
    if let Some(t) = q.until_ms {
        bind(&mut sql, before, Value::Integer(to_i64(t)));
    }
    if let Some(k) = &q.kind {
        bind(&mut sql, " AND kind = ?", Value::Text(k.clone()));
    }
    if let Some(sevs) = &q.severities {
        sql.push_str(" AND severity IN ('_'");
        for s in sevs {
            bind(&mut sql, ", ?", Value::Text(s.clone()));
        }
        sql.push(')');
    }
    if let Some(c) = &q.clerk {
        // The clerk the event names, or the clerk who acted (an admin's own actions).
        // (Both `?` become the same numbered parameter.)
        bind(
            &mut sql,
            " AND (clerk = ? OR actor = 'clerk:' || ?)",
            Value::Text(c.clone()),
        );
    }
    if let Some(t) = q.received_since_ms {
        bind(&mut sql, " AND received_ms >= ?", Value::Integer(to_i64(t)));
    }
    if let Some(t) = q.received_until_ms {
        bind(&mut sql, " AND received_ms < ?", Value::Integer(to_i64(t)));
    }
    if let Some(after) = q.after_received_seq {
        bind(
            &mut sql,
            " AND received_seq > ?",
            Value::Integer(to_i64(after)),
        );
        sql.push_str(" ORDER BY received_seq");
    } else {
        sql.push_str(" ORDER BY wall_ms, device_id, seq");
    }
    (sql, args)
}

/// The event of a stored record, as JSON: rendered when read rather than stored twice. The
/// record was verified before it was stored; one that no longer decodes was altered since.
fn event_json(raw: &[u8]) -> Result<serde_json::Value, StoreError> {
    let corrupt = || StoreError::Corrupt("stored record");
    let event = Record::from_bytes(raw)
        .map_err(|_| corrupt())?
        .event()
        .map_err(|_| corrupt())?;
    serde_json::to_value(&event).map_err(|_| corrupt())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn forks(conn: &Connection) -> Result<Vec<(String, u64, String, u64)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT device_id, seq, hash, received_ms FROM forks ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        let hash: Vec<u8> = r.get(2)?;
        Ok((r.get(0)?, r.get(1)?, hex(&hash), r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
