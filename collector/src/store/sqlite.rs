//! The default store: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives a power loss before the agent is told its records are stored.

mod enroll;
mod fleet;
mod lifecycle;
mod read;
mod received;
mod rules;
mod triage;
mod tx;

pub use fleet::{CommandRow, FleetFacts};

use std::path::Path;

use posguard_proto::uplink::SignedCommand;
use rusqlite::{Connection, OptionalExtension, params};

use crate::alerts::triage::{AlertFilter, Triage};
use triage::{Shown, Triaged};

use super::{
    AlertRow, DeviceRow, EnrollmentRow, EventQuery, Store, StoreError, StoredEvent, TokenRow, TxFn,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    cert_not_after_unix INTEGER NOT NULL,
    chain_state TEXT,
    highest_stored INTEGER NOT NULL,
    agent_version TEXT,
    journal_head INTEGER NOT NULL,
    journal_shipped INTEGER NOT NULL,
    device_wall_ms INTEGER NOT NULL,
    silent_alerted INTEGER NOT NULL,
    expiry_alerted_for INTEGER NOT NULL,
    dik BLOB
);
CREATE TABLE IF NOT EXISTS records (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    wall_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    clerk TEXT,
    received_seq INTEGER,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX IF NOT EXISTS records_by_time ON records (wall_ms);
CREATE INDEX IF NOT EXISTS records_by_kind ON records (kind, wall_ms);
CREATE TABLE IF NOT EXISTS forks (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    UNIQUE (device_id, seq, hash)
);
CREATE TABLE IF NOT EXISTS certs (
    device_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, raw)
);
-- The certificates a batch's chain walk needs are found by seq, never by reading them all
-- (a device adds one per agent start that wrote records: thousands over its lifetime).
CREATE INDEX IF NOT EXISTS certs_by_seq ON certs (device_id, first_seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    nv_counter INTEGER NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, nv_counter)
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_kind ON alerts (kind, at_ms);
-- Looking up an alert's cause before raising it again (one alert per cause per device).
CREATE INDEX IF NOT EXISTS alerts_by_device ON alerts (device_id, kind);
CREATE TABLE IF NOT EXISTS commands (
    device_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    issued_wall_ms INTEGER NOT NULL,
    signature BLOB NOT NULL,
    queued_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    PRIMARY KEY (device_id, id)
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enroll_tokens (
    token_hash BLOB PRIMARY KEY,
    device_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER
);
CREATE TABLE IF NOT EXISTS enrollments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    device_id TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    serial TEXT,
    not_after_unix INTEGER,
    peer TEXT
);
CREATE INDEX IF NOT EXISTS enrollments_by_device ON enrollments (device_id, at_ms);
";

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache (the default is 2 MiB): ingest from many devices touches index
        // pages all over the records table, and each miss is a read system call.
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Self { conn })
    }
}

/// WAL size (pages) at which the writer checkpoints by itself: only a safety net once
/// [`spawn_checkpointer`] runs (64 MiB of 4 KiB pages).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

impl SqliteStore {
    /// Leaves WAL checkpoints to [`spawn_checkpointer`]: the writer copies the WAL into the
    /// database itself only when the WAL has grown past 64 MiB.
    pub fn leave_checkpoints_to_background(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        Ok(())
    }

    /// Keeps this connection's temporary files in memory. Ingest runs every batch of a group
    /// commit in its own savepoint, and SQLite copies each page a savepoint changes first into
    /// a sub-journal, a temporary file by default: a `pwrite` per page, a fifth of the store
    /// thread's time in `./scripts/bench.sh ingest`. Only for the serving connection, whose
    /// statements touch a few rows each: the ops CLI's connections (large sorted exports) keep
    /// spilling to disk.
    pub fn keep_temporary_files_in_memory(&self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(())
    }
}

/// A connection of its own to the database, for copying the WAL into the database file (and
/// the fsync that goes with it) off the store thread that ingest waits on.
#[derive(Debug)]
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// Opens a connection to the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Self { conn })
    }

    /// One PASSIVE checkpoint: copies what it can without waiting for the writer.
    pub fn run_once(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(0)
            })?;
        Ok(())
    }

    /// Runs a checkpoint every `every` on a thread of its own until the process ends; failures
    /// are logged (each new kind once) and retried.
    pub fn spawn(self, name: String, every: std::time::Duration) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("posguard-wal".into())
            .spawn(move || {
                let mut last_error: Option<String> = None;
                loop {
                    std::thread::sleep(every);
                    match self.run_once() {
                        Ok(()) => last_error = None,
                        Err(e) => {
                            let e = e.to_string();
                            if last_error.as_deref() != Some(e.as_str()) {
                                tracing::warn!(store = %name, error = %e, "background WAL checkpoint failed; the writer checkpoints past 64 MiB");
                                last_error = Some(e);
                            }
                        }
                    }
                }
            })?;
        Ok(())
    }
}

/// Brings a store created by an older collector up to [`SCHEMA`]: columns added or dropped since.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(lifecycle::SCHEMA)?;
    let has_dik: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('devices') WHERE name = 'dik'",
        [],
        |r| r.get(0),
    )?;
    if !has_dik {
        conn.execute_batch("ALTER TABLE devices ADD COLUMN dik BLOB")?;
    }
    // Stores before 2026-11-23 kept each event a second time as JSON; it is rendered from `raw`
    // when read now (half the bytes written per record). Dropping it rewrites the table once.
    let has_event_json: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('records') WHERE name = 'event_json'",
        [],
        |r| r.get(0),
    )?;
    if has_event_json {
        conn.execute_batch("ALTER TABLE records DROP COLUMN event_json")?;
    }
    enroll::migrate(conn)?;
    triage::migrate(conn)?;
    received::migrate(conn)?;
    Ok(())
}

impl Store for SqliteStore {
    fn transaction(&mut self, f: TxFn<'_>) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut wrapped = tx::SqliteTx(&tx);
        f(&mut wrapped)?;
        tx.commit()?;
        Ok(())
    }

    fn maintenance(&mut self) -> Result<bool, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM settings WHERE key = 'maintenance'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.as_deref() == Some("on"))
    }

    fn set_maintenance(&mut self, on: bool) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES ('maintenance', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![if on { "on" } else { "off" }],
        )?;
        Ok(())
    }

    fn setting(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn query(
        &mut self,
        q: &EventQuery,
        out: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        read::query(&self.conn, q, out)
    }

    fn last_received_seq(&mut self) -> Result<u64, StoreError> {
        let max: Option<u64> =
            self.conn
                .query_row("SELECT MAX(received_seq) FROM records", [], |r| r.get(0))?;
        Ok(max.unwrap_or(0))
    }

    fn received_record(&mut self, received_seq: u64) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT device_id, seq FROM records WHERE received_seq = ?1",
                params![i64::try_from(received_seq).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn alerts(
        &mut self,
        since_ms: Option<u64>,
        device_id: Option<&str>,
    ) -> Result<Vec<AlertRow>, StoreError> {
        triage::alerts(&self.conn, since_ms, device_id)
    }

    fn alert_list(
        &mut self,
        f: &AlertFilter,
        now_ms: u64,
        out: &mut dyn FnMut(AlertRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        triage::list(&mut self.conn, f, now_ms, out)
    }

    fn alert_show(&mut self, id: i64, now_ms: u64) -> Result<Option<Shown>, StoreError> {
        triage::in_tx(&mut self.conn, |c| triage::show(c, id, now_ms), |_| true)
    }

    fn alert_triage(&mut self, id: i64, t: &Triage, now_ms: u64) -> Result<Triaged, StoreError> {
        triage::in_tx(
            &mut self.conn,
            |c| triage::triage(c, id, t, now_ms),
            Result::is_ok,
        )
    }

    fn devices(&mut self) -> Result<Vec<DeviceRow>, StoreError> {
        read::devices(&self.conn, None)
    }

    fn forks(&mut self) -> Result<Vec<(String, u64, String, u64)>, StoreError> {
        read::forks(&self.conn)
    }

    fn next_command_id(&mut self, device_id: &str) -> Result<u64, StoreError> {
        let max: Option<u64> = self.conn.query_row(
            "SELECT MAX(id) FROM commands WHERE device_id = ?1",
            params![device_id],
            |r| r.get(0),
        )?;
        max.unwrap_or(0)
            .checked_add(1)
            .ok_or(StoreError::Corrupt("command id"))
    }

    fn queue_command(&mut self, cmd: &SignedCommand, at_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO commands (device_id, id, kind, issued_wall_ms, signature, queued_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                cmd.device_id.as_str(),
                cmd.id,
                cmd.kind.name(),
                cmd.issued_wall_ms,
                cmd.signature.as_slice(),
                at_ms
            ],
        )?;
        Ok(())
    }

    fn lifecycles(&mut self) -> Result<Vec<crate::store::LifecycleRow>, StoreError> {
        lifecycle::all(&self.conn)
    }

    fn enroll_tokens(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        enroll::tokens(&self.conn)
    }

    fn enrollments(
        &mut self,
        since_ms: Option<u64>,
        device_id: Option<&str>,
    ) -> Result<Vec<EnrollmentRow>, StoreError> {
        enroll::enrollments(&self.conn, since_ms, device_id)
    }
}

#[cfg(test)]
mod checkpoint_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{DeviceRow, Store};

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let mut store = SqliteStore::open(&db).unwrap();
        store.leave_checkpoints_to_background().unwrap();
        let before = std::fs::metadata(&db).unwrap().len();
        store
            .transaction(&mut |tx| {
                for i in 0..2000 {
                    tx.put_device(&DeviceRow::new(&format!("device-{i:05}"), 1))?;
                }
                Ok(())
            })
            .unwrap();
        // Committed to the WAL; the writer itself does not checkpoint below 64 MiB.
        assert_eq!(std::fs::metadata(&db).unwrap().len(), before);
        Checkpointer::open(&db).unwrap().run_once().unwrap();
        assert!(
            std::fs::metadata(&db).unwrap().len() > before,
            "pages copied into the database"
        );
        assert_eq!(store.devices().unwrap().len(), 2000);
    }
}

#[cfg(test)]
mod migration_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{EventQuery, Store};

    /// A store written before the event was rendered at read time: `records` has `event_json`.
    #[test]
    fn an_older_store_loses_its_event_json_column_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE records (
                     device_id TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
                     kind TEXT NOT NULL, severity TEXT NOT NULL, wall_ms INTEGER NOT NULL,
                     actor TEXT NOT NULL, event_json TEXT NOT NULL, raw BLOB NOT NULL,
                     received_ms INTEGER NOT NULL, PRIMARY KEY (device_id, seq));
                 INSERT INTO records VALUES
                     ('term-1', 1, x'00', 'pos_business', 'info', 5, 'system', '{}', x'0102', 7);",
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&db).unwrap();
        let columns: Vec<String> = store
            .conn
            .prepare("SELECT name FROM pragma_table_info('records')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!columns.iter().any(|c| c == "event_json"), "{columns:?}");
        let raw: Vec<u8> = store
            .conn
            .query_row("SELECT raw FROM records WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(raw, [1, 2]);
        // That row's bytes are not a record: reading it says the store is corrupt, not a panic.
        let result = store.query(&EventQuery::default(), &mut |_| Ok(()));
        assert!(
            matches!(result, Err(StoreError::Corrupt("stored record"))),
            "{result:?}"
        );
        // Opening again is a no-op.
        drop(store);
        SqliteStore::open(&db).unwrap();
    }
}
