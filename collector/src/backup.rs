//! `backup` and `restore` of the SQLite store.
//!
//! [`backup`] takes an online, consistent copy (`VACUUM INTO`, one read transaction, so the
//! collector keeps ingesting) into a new file of mode 0600. [`restore`] copies a backup next to
//! the store, re-verifies every device's chain in that copy ([`verify`]), leaves out any device
//! that does not verify (naming it), and only then renames the copy over the store, refusing
//! while a collector holds the store ([`crate::lock`]).

mod install;
pub mod verify;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

pub use install::restore;
pub use verify::{Invalid, Verified, verify};

/// A backup or restore failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// SQLite refused (not a database, damaged, busy).
    #[error("database error on {}", .path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("cannot {what} {}", .path.display())]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The output (or the store, without `--force`) already exists.
    #[error("{} already exists{hint}", .path.display())]
    Exists {
        /// The file.
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
    },
    /// The backup does not verify.
    #[error("backup does not verify")]
    Invalid(#[from] Invalid),
    /// A collector is running on the store.
    #[error("store is in use")]
    Locked(#[from] crate::lock::LockError),
    /// Another process has the store open (a collector without the lock file, a shell).
    #[error("{} is open in another process: stop posguard-collector first", .0.display())]
    InUse(PathBuf),
}

/// What `backup` and `restore` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The file written (the backup, or the restored store).
    pub path: String,
    /// Devices in it.
    pub devices: u64,
    /// Records in it.
    pub records: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Every device's verified head, for `restore` (empty for `backup`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<verify::DeviceHead>,
    /// Devices `restore` left out because they do not verify (their rows stay in the backup).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<Invalid>,
}

pub(crate) fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl Fn(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Creates `path` (mode 0600), refusing an existing file.
pub(crate) fn create_new(path: &Path, hint: &'static str) -> Result<File, BackupError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists {
                path: path.to_owned(),
                hint,
            },
            _ => io("create", path)(e),
        })
}

/// Writes a consistent snapshot of the database open on `conn` into the empty file `out`
/// (SQLite keeps an existing file's mode) and makes it durable.
pub(crate) fn snapshot_into(conn: &Connection, out: &Path, file: &File) -> Result<(), BackupError> {
    let target = out
        .to_str()
        .ok_or_else(|| io("name", out)(std::io::Error::other("path is not UTF-8")))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(sqlite(out))?;
    file.sync_all().map_err(io("fsync", out))?;
    sync_parent(out)
}

/// fsyncs the directory holding `path`, so that a new name in it survives a power loss.
pub(crate) fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory of", path))
}

/// Counts devices and records in the database at `path`.
pub(crate) fn summary(path: &Path, heads: Vec<verify::DeviceHead>) -> Result<Summary, BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite(path))?;
    let count = |table: &str| -> Result<u64, BackupError> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sqlite(path))
    };
    Ok(Summary {
        path: path.display().to_string(),
        devices: count("devices")?,
        records: count("records")?,
        bytes: std::fs::metadata(path).map_err(io("stat", path))?.len(),
        heads,
        unverified: Vec::new(),
    })
}

/// Removes a file it created unless [`Self::keep`] is called: no half-written backup or
/// restore copy is left behind by a failure.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl RemoveOnDrop<'_> {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `backup --out`: an online, consistent copy of the store at `store` into the new file `out`
/// (mode 0600, never overwritten). The collector may be running.
pub fn backup(store: &Path, out: &Path) -> Result<Summary, BackupError> {
    // Read-write without create: a missing store is an error, not a new empty one; WAL
    // readers need the shared-memory file.
    let conn = Connection::open_with_flags(
        store,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(store))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite(store))?;
    let file = create_new(out, "; choose a new --out")?;
    let guard = RemoveOnDrop(Some(out));
    snapshot_into(&conn, out, &file)?;
    let s = summary(out, Vec::new())?;
    guard.keep();
    Ok(s)
}
