//! What the operations CLI reads about the fleet beyond the device rows: each device's last
//! stored record (a clean stop ends with `agent_stopped`), its lockdown as the agent last
//! reported it, its last delivered command, its newest issued certificate and the revocations
//! recorded, and the queued commands with their delivery state. Read-only, one pass per table
//! (or per device for the per-device maxima, through the primary key): the CLI's connection.

use std::collections::{BTreeSet, HashMap, HashSet};

use posguard_proto::event::EventKind;
use posguard_proto::record::Record;
use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::store::StoreError;

/// Facts per device id that the devices table does not hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetFacts {
    /// The highest stored record's kind and device wall time (Unix ms).
    pub last_record: HashMap<String, (String, u64)>,
    /// Lockdown as the agent last journaled it (`lockdown_changed`), with its device time.
    pub lockdown_reported: HashMap<String, (bool, u64)>,
    /// The last delivered `lockdown`/`unlock` command: (lockdown?, delivered at, Unix ms).
    pub lockdown_commanded: HashMap<String, (bool, u64)>,
    /// The serial (hex) of the newest certificate issued to the device.
    pub newest_serial: HashMap<String, String>,
    /// Serials (hex) recorded as revoked by `ca revoke`.
    pub revoked_serials: HashSet<String>,
    /// A lifecycle state (`decommissioned`, `replaced`, …) where the store keeps one.
    pub lifecycle: HashMap<String, String>,
}

/// A queued command and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// The device.
    pub device_id: String,
    /// Its id (per device, increasing).
    pub id: u64,
    /// `lockdown` or `unlock`.
    pub kind: String,
    /// When it was queued (collector time, Unix ms).
    pub queued_ms: u64,
    /// When the device acknowledged receiving it, if it has.
    pub delivered_ms: Option<u64>,
}

impl SqliteStore {
    /// Every device id the collector knows: seen, enrolled, or holding an enrollment token.
    pub fn known_device_ids(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id FROM devices
             UNION SELECT device_id FROM enrollments WHERE device_id IS NOT NULL
             UNION SELECT device_id FROM enroll_tokens",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The queued commands, oldest first, optionally of one device.
    pub fn commands(&self, device_id: Option<&str>) -> Result<Vec<CommandRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id, id, kind, queued_ms, delivered_ms FROM commands
             WHERE ?1 IS NULL OR device_id = ?1 ORDER BY queued_ms, device_id, id",
        )?;
        let rows = stmt.query_map(params![device_id], |r| {
            Ok(CommandRow {
                device_id: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                queued_ms: r.get(3)?,
                delivered_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The facts `devices` shows beside each device row.
    pub fn fleet_facts(&self) -> Result<FleetFacts, StoreError> {
        let conn = &self.conn;
        let mut f = FleetFacts::default();
        let mut stmt = conn.prepare(
            "SELECT d.device_id, r.kind, r.wall_ms FROM devices d
             JOIN records r ON r.device_id = d.device_id AND r.seq = d.highest_stored",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        f.last_record = rows.collect::<Result<_, _>>()?;
        f.lockdown_reported = lockdown_reported(conn)?;
        let mut stmt = conn.prepare(
            "SELECT device_id, kind, delivered_ms FROM commands
             WHERE delivered_ms IS NOT NULL ORDER BY delivered_ms, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        for row in rows {
            let (device, kind, at) = row?;
            f.lockdown_commanded
                .insert(device, (kind == "lockdown", at));
        }
        let mut stmt = conn.prepare(
            "SELECT device_id, serial FROM enrollments
             WHERE outcome = 'issued' AND serial IS NOT NULL AND device_id IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        f.newest_serial = rows.collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT serial FROM enrollments WHERE outcome = 'revoked' AND serial IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        f.revoked_serials = rows
            .map(|s| s.map(|s| s.to_lowercase()))
            .collect::<Result<_, _>>()?;
        f.lifecycle = lifecycle(conn)?;
        Ok(f)
    }
}

/// The newest `lockdown_changed` record of each device, decoded (the kind column alone does
/// not say on or off).
fn lockdown_reported(conn: &Connection) -> Result<HashMap<String, (bool, u64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT r.device_id, r.raw, r.wall_ms FROM records r
         JOIN (SELECT device_id, MAX(seq) AS seq FROM records WHERE kind = 'lockdown_changed'
               GROUP BY device_id) m ON m.device_id = r.device_id AND m.seq = r.seq",
    )?;
    let mut out = HashMap::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let raw: Vec<u8> = r.get(1)?;
        let event = Record::from_bytes(&raw)
            .and_then(|rec| rec.event())
            .map_err(|_| StoreError::Corrupt("stored record"))?;
        if let EventKind::LockdownChanged { enabled, .. } = event.kind {
            out.insert(r.get(0)?, (enabled, r.get(2)?));
        }
    }
    Ok(out)
}

/// Devices the lifecycle took out of service (`decommissioned`, `replaced`; docs/collector.md,
/// "Device lifecycle"). Active devices have no entry.
fn lifecycle(conn: &Connection) -> Result<HashMap<String, String>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT device_id, state FROM device_lifecycle WHERE state != 'active'")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeviceRow, Store as _};

    /// A decommissioned device shows its lifecycle state; an active one none.
    #[test]
    fn the_lifecycle_state_is_read_from_the_device_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        store
            .transaction(&mut |tx| {
                tx.put_device(&DeviceRow::new("till-1", 1))?;
                tx.put_device(&DeviceRow::new("till-2", 1))
            })
            .unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO device_lifecycle (device_id, state, generation, changed_ms)
                 VALUES ('till-1', 'decommissioned', 1, 1), ('till-2', 'active', 2, 1);",
            )
            .unwrap();
        let facts = store.fleet_facts().unwrap();
        assert_eq!(
            facts.lifecycle.get("till-1").map(String::as_str),
            Some("decommissioned")
        );
        assert!(!facts.lifecycle.contains_key("till-2"));
    }
}
