//! SQL of the device lifecycle: the `device_lifecycle` table (added to stores made before it
//! by `CREATE TABLE IF NOT EXISTS`) and the archiving of a device's rows under an archived id.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::StoreError;
use crate::store::lifecycle::{LifeState, LifecycleRow};

/// Created on open; idempotent, so an existing store gains it unchanged otherwise.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_lifecycle (
    device_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL,
    reason TEXT,
    changed_ms INTEGER NOT NULL
);
";

const COLUMNS: &str = "device_id, state, generation, reason, changed_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<LifecycleRow> {
    let state: String = r.get(1)?;
    let state = LifeState::from_name(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown lifecycle state {state:?}").into(),
        )
    })?;
    Ok(LifecycleRow {
        device_id: r.get(0)?,
        state,
        generation: r.get(2)?,
        reason: r.get(3)?,
        changed_ms: r.get(4)?,
    })
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<LifecycleRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM device_lifecycle WHERE device_id = ?1"),
            params![id],
            from_row,
        )
        .optional()?)
}

pub(super) fn all(conn: &Connection) -> Result<Vec<LifecycleRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM device_lifecycle ORDER BY device_id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn put(conn: &Connection, row: &LifecycleRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO device_lifecycle ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            row.device_id,
            row.state.name(),
            row.generation,
            row.reason,
            row.changed_ms
        ],
    )?;
    Ok(())
}

/// Moves every row of the device's chain (device row, records, certificates, checkpoints,
/// forks), its alerts and its undelivered commands under `archived`. The enrollment history
/// and tokens stay under the device id: they are the id's history across generations.
pub(super) fn archive(conn: &Connection, id: &str, archived: &str) -> Result<(), StoreError> {
    for table in [
        "records",
        "certs",
        "checkpoints",
        "forks",
        "alerts",
        "commands",
    ] {
        conn.execute(
            &format!("UPDATE {table} SET device_id = ?2 WHERE device_id = ?1"),
            params![id, archived],
        )?;
    }
    // An archived generation never ships again: it is never reported silent either.
    conn.execute(
        "UPDATE devices SET device_id = ?2, silent_alerted = 1 WHERE device_id = ?1",
        params![id, archived],
    )?;
    Ok(())
}
