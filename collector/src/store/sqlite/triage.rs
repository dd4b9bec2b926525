//! Alert rows in SQLite: the triage columns and the action history (added to the store of an
//! older collector by [`migrate`], rows raised before then counting as open), grouping of a
//! cause that repeats, the filters of `alerts`, and triage actions with their history.
//!
//! An acknowledgement with an expiry lapses lazily: every read and every action first reopens
//! the acknowledgements past their time and records an `expire` action at that time, so the
//! state and history read the same whether or not a collector was running then.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::alerts::triage::{
    ActionRow, AlertFilter, AlertState, Triage, TriageAction, TriageRefusal,
};
use crate::alerts::{
    AlertKind, NewAlert, Raised, grouped_by_detail, parse_severity, severity_name,
};
use crate::store::{AlertRow, StoreError};

/// Columns added to `alerts` since the first schema, with their definitions.
const ALERT_COLUMNS_ADDED: [(&str, &str); 8] = [
    ("state", "TEXT NOT NULL DEFAULT 'open'"),
    ("count", "INTEGER NOT NULL DEFAULT 1"),
    ("last_ms", "INTEGER"),
    ("cause", "TEXT NOT NULL DEFAULT ''"),
    ("state_by", "TEXT"),
    ("state_at_ms", "INTEGER"),
    ("state_note", "TEXT"),
    ("ack_until_ms", "INTEGER"),
];

const TABLES: &str = "
-- Every triage action on an alert, never updated or deleted: who did what, when and why.
CREATE TABLE IF NOT EXISTS alert_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    note TEXT,
    until_ms INTEGER
);
CREATE INDEX IF NOT EXISTS alert_actions_by_alert ON alert_actions (alert_id, id);
-- The open or acknowledged alert of a cause, looked up at every raise.
CREATE INDEX IF NOT EXISTS alerts_by_cause ON alerts (kind, device_id, cause, state);
-- Acknowledgements to expire, and listings by state.
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, ack_until_ms);
";

/// An alert and its history.
pub(super) type Shown = (AlertRow, Vec<ActionRow>);
/// A triage action's outcome.
pub(super) type Triaged = Result<AlertRow, TriageRefusal>;

/// Runs `f` in one immediate transaction, committed if `keep` says so (a refused action
/// changes nothing, not even the expiry of lapsed acknowledgements it found).
pub(super) fn in_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    keep: impl FnOnce(&T) -> bool,
) -> Result<T, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done = f(&tx)?;
    if keep(&done) {
        tx.commit()?;
    }
    Ok(done)
}

/// Adds the triage columns and tables to a store that lacks them; a no-op on a current store.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for (name, definition) in ALERT_COLUMNS_ADDED {
        let present: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('alerts') WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        if present {
            continue;
        }
        conn.execute_batch(&format!(
            "ALTER TABLE alerts ADD COLUMN {name} {definition}"
        ))?;
        if name == "cause" {
            // Alerts raised before: their cause is their detail where the kind says so.
            for kind in AlertKind::ALL.into_iter().filter(|k| grouped_by_detail(*k)) {
                conn.execute(
                    "UPDATE alerts SET cause = detail WHERE kind = ?1",
                    params![kind.name()],
                )?;
            }
        }
    }
    conn.execute_batch(TABLES)?;
    Ok(())
}

const SELECT: &str = "SELECT id, device_id, kind, severity, detail, at_ms, state, count,
    COALESCE(last_ms, at_ms), state_by, state_at_ms, state_note, ack_until_ms FROM alerts";

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        device_id: r.get(1)?,
        kind: r.get(2)?,
        severity: r.get(3)?,
        detail: r.get(4)?,
        at_ms: r.get(5)?,
        state: r.get(6)?,
        count: r.get(7)?,
        last_ms: r.get(8)?,
        state_by: r.get(9)?,
        state_at_ms: r.get(10)?,
        state_note: r.get(11)?,
        ack_until_ms: r.get(12)?,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores `a`, or adds to the count of the open or acknowledged alert of its cause.
pub(super) fn raise(conn: &Connection, a: &NewAlert) -> Result<Raised, StoreError> {
    let cause = if grouped_by_detail(a.kind) {
        a.detail.as_str()
    } else {
        ""
    };
    let open: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT id, severity FROM alerts
             WHERE kind = ?1 AND device_id IS ?2 AND cause = ?3 AND state != 'resolved'
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![a.kind.name(), a.device_id, cause], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((id, severity)) = open else {
        conn.prepare_cached(
            "INSERT INTO alerts (device_id, kind, severity, detail, at_ms, state, count, last_ms,
                                 cause)
             VALUES (?1, ?2, ?3, ?4, ?5, 'open', 1, ?5, ?6)",
        )?
        .execute(params![
            a.device_id,
            a.kind.name(),
            severity_name(a.severity),
            a.detail,
            to_i64(a.at_ms),
            cause
        ])?;
        return Ok(Raised::New(conn.last_insert_rowid()));
    };
    // An acknowledgement that lapsed before this repeat: the repeat finds the alert open.
    expire_lapsed(conn, a.at_ms)?;
    let severity = match parse_severity(&severity) {
        Some(old) => old.max(a.severity),
        None => a.severity,
    };
    conn.prepare_cached(
        "UPDATE alerts SET count = count + 1, last_ms = MAX(COALESCE(last_ms, at_ms), ?2),
                           detail = ?3, severity = ?4
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        to_i64(a.at_ms),
        a.detail,
        severity_name(severity)
    ])?;
    Ok(Raised::Repeated(id))
}

/// Reopens every acknowledgement whose time is up at `now_ms`, recording an `expire` action at
/// the time it lapsed.
fn expire_lapsed(conn: &Connection, now_ms: u64) -> Result<(), StoreError> {
    let lapsed: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT id, ack_until_ms FROM alerts
             WHERE state = 'acknowledged' AND ack_until_ms IS NOT NULL AND ack_until_ms <= ?1",
        )?
        .query_map(params![to_i64(now_ms)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    const NOTE: &str = "acknowledgement lapsed";
    for (id, until) in lapsed {
        conn.prepare_cached(
            "INSERT INTO alert_actions (alert_id, at_ms, action, by, note)
             VALUES (?1, ?2, 'expire', 'collector', ?3)",
        )?
        .execute(params![id, until, NOTE])?;
        conn.prepare_cached(
            "UPDATE alerts SET state = 'open', state_by = 'collector', state_at_ms = ?2,
                               state_note = ?3, ack_until_ms = NULL
             WHERE id = ?1",
        )?
        .execute(params![id, until, NOTE])?;
    }
    Ok(())
}

/// Every alert raised at or after `since_ms` (all states), optionally of one device.
pub(super) fn alerts(
    conn: &Connection,
    since_ms: Option<u64>,
    device_id: Option<&str>,
) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{SELECT} WHERE at_ms >= ?1 AND (?2 IS NULL OR device_id = ?2) ORDER BY id"
    ))?;
    let rows = stmt.query_map(
        params![to_i64(since_ms.unwrap_or(0)), device_id],
        alert_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `alerts` with filters (after lapsed acknowledgements are reopened).
/// Reopens lapsed acknowledgements (one short write transaction), then passes the alerts
/// matching `f` to `out` one at a time from a read that blocks no writer (WAL): a listing of
/// the whole history neither holds the store's write lock nor every row in memory.
pub(super) fn list(
    conn: &mut Connection,
    f: &AlertFilter,
    now_ms: u64,
    out: &mut dyn FnMut(AlertRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    in_tx(conn, |c| expire_lapsed(c, now_ms), |_| true)?;
    let mut sql = format!("{SELECT} WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    let mut any_of = |sql: &mut String, column: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        let marks = vec!["?"; items.len()].join(", ");
        sql.push_str(&format!(" AND {column} IN ({marks})"));
        values.extend(items.into_iter().map(Value::Text));
    };
    any_of(
        &mut sql,
        "state",
        f.states.iter().map(|s| s.name().to_owned()).collect(),
    );
    any_of(&mut sql, "severity", f.severities.clone());
    any_of(&mut sql, "kind", f.kinds.clone());
    if let Some(d) = &f.device_id {
        sql.push_str(" AND device_id = ?");
        values.push(Value::Text(d.clone()));
    }
    if let Some(t) = f.since_ms {
        sql.push_str(" AND COALESCE(last_ms, at_ms) >= ?");
        values.push(Value::Integer(to_i64(t)));
    }
    if let Some(t) = f.until_ms {
        sql.push_str(" AND at_ms < ?");
        values.push(Value::Integer(to_i64(t)));
    }
    sql.push_str(" ORDER BY id");
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        while let Some(row) = rows.next()? {
            out(alert_from_row(row)?)?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn one(conn: &Connection, id: i64) -> Result<Option<AlertRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{SELECT} WHERE id = ?1"),
            params![id],
            alert_from_row,
        )
        .optional()?)
}

/// One alert and its history.
pub(super) fn show(conn: &Connection, id: i64, now_ms: u64) -> Result<Option<Shown>, StoreError> {
    expire_lapsed(conn, now_ms)?;
    let Some(alert) = one(conn, id)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT at_ms, action, by, note, until_ms FROM alert_actions
         WHERE alert_id = ?1 ORDER BY id",
    )?;
    let history = stmt
        .query_map(params![id], |r| {
            Ok(ActionRow {
                at_ms: r.get(0)?,
                action: r.get(1)?,
                by: r.get(2)?,
                note: r.get(3)?,
                until_ms: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some((alert, history)))
}

/// Applies `t` to alert `id` and records it.
pub(super) fn triage(
    conn: &Connection,
    id: i64,
    t: &Triage,
    now_ms: u64,
) -> Result<Triaged, StoreError> {
    expire_lapsed(conn, now_ms)?;
    let Some(alert) = one(conn, id)? else {
        return Ok(Err(TriageRefusal::NoSuchAlert(id)));
    };
    let state = AlertState::from_name(&alert.state).ok_or(StoreError::Corrupt("alert state"))?;
    if !t.action.allowed_from(state) {
        return Ok(Err(TriageRefusal::wrong_state(id, state, &t.action)));
    }
    let until = match t.action {
        TriageAction::Acknowledge { until_ms } => until_ms.map(to_i64),
        TriageAction::Resolve | TriageAction::Reopen => None,
    };
    conn.execute(
        "INSERT INTO alert_actions (alert_id, at_ms, action, by, note, until_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, to_i64(now_ms), t.action.name(), t.by, t.note, until],
    )?;
    conn.execute(
        "UPDATE alerts SET state = ?2, state_by = ?3, state_at_ms = ?4, state_note = ?5,
                           ack_until_ms = ?6
         WHERE id = ?1",
        params![
            id,
            t.action.target().name(),
            t.by,
            to_i64(now_ms),
            t.note,
            until
        ],
    )?;
    one(conn, id)?
        .map(Ok)
        .ok_or(StoreError::Corrupt("alert vanished"))
}

#[cfg(test)]
mod tests;
