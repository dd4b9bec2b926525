//! `restore --from`: copy the backup next to the store, verify the copy (what is verified is
//! what is installed), then rename it over the store while holding the store lock.
//!
//! A device whose chain does not verify is set aside: its rows (records, certificates,
//! checkpoints, forks and its device row) are removed from the copy before it is installed, the
//! other devices are restored, and the summary names it with the first thing found wrong. Its
//! rows stay in the backup file, which restore never changes. One bad device (a forged record, a
//! damaged row) must not cost the whole fleet its restore; but a backup in which no device
//! verifies is refused whole, as is a store-wide fault (a damaged database).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::verify::Invalid;
use super::{BackupError, RemoveOnDrop, Summary, create_new, io, snapshot_into, sqlite, summary};
use crate::lock::StoreLock;

/// Restores the backup `from` as the store `store`. Refuses while a collector holds the store,
/// when the store exists and `force` is not given, and when the backup does not verify as a
/// whole (a store-wide fault, or no device verifies). Devices that do not verify are left out
/// and listed in [`Summary::unverified`].
pub fn restore(store: &Path, from: &Path, force: bool) -> Result<Summary, BackupError> {
    let _lock = StoreLock::try_acquire(store)?;
    if store.exists() {
        if !force {
            return Err(BackupError::Exists {
                path: store.to_owned(),
                hint: "; pass --force to replace it",
            });
        }
        ensure_unused(store)?;
    }
    let tmp = temp_path(store);
    let file = create_new(&tmp, "; a restore was interrupted: remove it")?;
    let guard = RemoveOnDrop(Some(&tmp));
    {
        let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(from))?;
        snapshot_into(&src, &tmp, &file)?;
    }
    let verified = {
        let copy = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(&tmp))?;
        super::verify(&copy).map_err(sqlite(from))??
    };
    if verified.heads.is_empty()
        && let Some(first) = verified.unverified.first()
    {
        return Err(BackupError::Invalid(first.clone()));
    }
    set_aside(&tmp, &verified.unverified)?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    // A stale WAL of the old store would be replayed into the new one.
    for suffix in ["-wal", "-shm"] {
        let mut side = store.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(&side)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", Path::new(&side))(e));
            }
            _ => {}
        }
    }
    std::fs::rename(&tmp, store).map_err(io("rename the restored copy to", store))?;
    guard.keep();
    super::sync_parent(store)?;
    let mut s = summary(store, verified.heads)?;
    s.unverified = verified.unverified;
    Ok(s)
}

/// Tables holding a device's chain, by `device_id`. Alerts, commands and enrollment history
/// stay: they are the collector's own records about the device, not its chain.
const CHAIN_TABLES: [&str; 5] = ["records", "certs", "checkpoints", "forks", "devices"];

/// Removes the chains of `devices` from the copy at `path`, in one transaction.
fn set_aside(path: &Path, devices: &[Invalid]) -> Result<(), BackupError> {
    if devices.is_empty() {
        return Ok(());
    }
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite(path))?;
    // Rollback journal, so that the commit lands in this one file (a WAL beside it would not
    // follow it through the rename).
    conn.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    })
    .map_err(sqlite(path))?;
    let tx = conn.transaction().map_err(sqlite(path))?;
    for d in devices {
        for table in CHAIN_TABLES {
            tx.execute(
                &format!("DELETE FROM {table} WHERE device_id = ?1"),
                [&d.device],
            )
            .map_err(sqlite(path))?;
        }
    }
    tx.commit().map_err(sqlite(path))?;
    // Durable once the file is synced, which the caller does before the rename.
    Ok(())
}

/// Refuses a store that another process has open: leaving WAL mode needs every other
/// connection closed (it also folds the WAL into the file, which is replaced anyway).
fn ensure_unused(store: &Path) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite(store))?;
    conn.busy_timeout(std::time::Duration::ZERO)
        .map_err(sqlite(store))?;
    match conn.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    }) {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        // SQLite answers with the mode it stayed in when it could not switch.
        Ok(_) => Err(BackupError::InUse(store.to_owned())),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Err(BackupError::InUse(store.to_owned()))
        }
        // Not a database at all (a damaged store is what a restore is for): replace it.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Ok(())
        }
        Err(e) => Err(sqlite(store)(e)),
    }
}

fn temp_path(store: &Path) -> PathBuf {
    let name = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_owned());
    store.with_file_name(format!(".{name}.restore-{}", std::process::id()))
}
