//! The store lock: an exclusive `flock(2)` on `<store>.lock`, held by `serve` for as long as it
//! runs and by `restore` while it replaces the store, so that a store is never replaced under
//! a running collector. The kernel drops the lock when the process exits, however it exits.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds it: a collector is serving this store.
    #[error("{} is held by another process: stop posguard-collector first", .0.display())]
    Held(PathBuf),
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A held store lock; released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    /// The lock file of `store`: the store's path with `.lock` appended.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of `store` without waiting.
    pub fn try_acquire(store: &Path) -> Result<Self, LockError> {
        let path = Self::path_for(store);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(LockError::Held(path)),
            Err(e) => Err(io(e.into())),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("c.db");
        let first = StoreLock::try_acquire(&store).unwrap();
        assert_eq!(first.path(), dir.path().join("c.db.lock"));
        assert!(matches!(
            StoreLock::try_acquire(&store),
            Err(LockError::Held(_))
        ));
        drop(first);
        StoreLock::try_acquire(&store).unwrap();
    }
}
