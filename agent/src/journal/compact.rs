//! Compaction: sled's log only grows to its high-water mark and reclaims space lazily, so when
//! the database directory nears its bound the live data (small, because pruning keeps it well
//! under the bound) is copied into a fresh database that replaces the old one.
//!
//! Crash safety: the copy is made in `<dir>.compacting` and marked complete only once durable;
//! then `<dir>` becomes `<dir>.old`, the copy becomes `<dir>`, and `<dir>.old` is removed.
//! [`finish_interrupted`] (run before every open) completes or discards a half-done swap, so a
//! kill at any point leaves exactly one intact journal.

use std::path::{Path, PathBuf};

use super::JournalError;
use super::store::Store;
use crate::walk::walk_all;

const COMPLETE_MARKER: &str = "posguard-compaction-complete";

fn staging(dir: &Path) -> PathBuf {
    dir.with_extension("compacting")
}

fn old(dir: &Path) -> PathBuf {
    dir.with_extension("old")
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |e| JournalError::io(action, path, e)
}

/// Completes or discards a compaction that a kill interrupted.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<(), JournalError> {
    let staging = staging(dir);
    let old = old(dir);
    let staged_complete = staging.join(COMPLETE_MARKER).exists();
    if !dir.exists() && staged_complete {
        std::fs::rename(&staging, dir).map_err(io("install compacted journal", dir))?;
    } else if !dir.exists() && old.exists() {
        std::fs::rename(&old, dir).map_err(io("restore journal", dir))?;
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    if old.exists() && dir.exists() {
        std::fs::remove_dir_all(&old).map_err(io("remove", &old))?;
    }
    Ok(())
}

fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<(), JournalError> {
    for item in walk_all(from) {
        let (k, v) = item.map_err(|source| JournalError::Db {
            context: "compact: read",
            source,
        })?;
        to.insert(k, v).map_err(|source| JournalError::Db {
            context: "compact: write",
            source,
        })?;
    }
    Ok(())
}

/// Replaces `store` by a compacted copy of itself.
pub(crate) fn compact(store: &mut Store, cache_bytes: u64) -> Result<(), JournalError> {
    let dir = store.dir.clone();
    let staging = staging(&dir);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    {
        let fresh = Store::open(&staging, cache_bytes)?;
        copy_tree(&store.records, &fresh.records)?;
        copy_tree(&store.certs, &fresh.certs)?;
        copy_tree(&store.checkpoints, &fresh.checkpoints)?;
        copy_tree(&store.meta, &fresh.meta)?;
        fresh.make_durable()?;
    }
    let marker = staging.join(COMPLETE_MARKER);
    std::fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io("mark compaction complete", &marker))?;
    store.make_durable()?;
    // Close the old database before moving directories: a temporary stands in meanwhile.
    let closed = std::mem::replace(store, Store::temporary()?);
    drop(closed);
    let old = old(&dir);
    std::fs::rename(&dir, &old).map_err(io("move aside", &dir))?;
    std::fs::rename(&staging, &dir).map_err(io("install compacted journal", &dir))?;
    std::fs::remove_dir_all(&old).map_err(io("remove", &old))?;
    *store = Store::open(&dir, cache_bytes)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn marker_dir(path: &Path, tag: &str) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("tag"), tag).unwrap();
    }

    fn tag(path: &Path) -> String {
        std::fs::read_to_string(path.join("tag")).unwrap()
    }

    #[test]
    fn a_kill_at_any_step_leaves_one_journal() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("journal");
        // Killed while copying: the staging copy is incomplete and discarded.
        marker_dir(&dir, "live");
        marker_dir(&staging(&dir), "partial");
        finish_interrupted(&dir).unwrap();
        assert_eq!(tag(&dir), "live");
        assert!(!staging(&dir).exists());
        // Killed after the old one moved aside, before the copy was installed.
        std::fs::rename(&dir, old(&dir)).unwrap();
        marker_dir(&staging(&dir), "compacted");
        std::fs::write(staging(&dir).join(COMPLETE_MARKER), b"").unwrap();
        finish_interrupted(&dir).unwrap();
        assert_eq!(tag(&dir), "compacted");
        assert!(!old(&dir).exists() && !staging(&dir).exists());
        // Killed after installing, before removing the old one.
        marker_dir(&old(&dir), "stale");
        finish_interrupted(&dir).unwrap();
        assert_eq!(tag(&dir), "compacted");
        assert!(!old(&dir).exists());
        // Moved aside with no complete copy: the old one comes back.
        std::fs::rename(&dir, old(&dir)).unwrap();
        finish_interrupted(&dir).unwrap();
        assert_eq!(tag(&dir), "compacted");
    }
}
