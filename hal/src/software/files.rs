//! Private files for the software backend: created 0600 in a 0700 directory, written atomically
//! (temp file, fsync, rename, fsync directory), and refused when others can read them.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::HalError;

/// Largest key file we read; anything bigger is not ours.
const MAX_FILE: u64 = 4096;

pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), HalError> {
    match fs::metadata(dir) {
        Ok(meta) => check_mode(dir, meta.permissions().mode()),
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| HalError::io("create directory", dir, e)),
        Err(e) => Err(HalError::io("inspect", dir, e)),
    }
}

fn check_mode(path: &Path, mode: u32) -> Result<(), HalError> {
    if mode & 0o077 != 0 {
        return Err(HalError::InsecurePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Reads a private file; `None` if it does not exist.
pub(super) fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, HalError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HalError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| HalError::io("inspect", path, e))?;
    check_mode(path, meta.permissions().mode())?;
    let mut buf = Zeroizing::new(Vec::with_capacity(64));
    file.take(MAX_FILE)
        .read_to_end(&mut buf)
        .map_err(|e| HalError::io("read", path, e))?;
    Ok(Some(buf))
}

/// Replaces `path` atomically with `bytes`, mode 0600, durable when this returns.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HalError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| HalError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| HalError::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| HalError::io("rename into place", path, e))?;
    sync_parent(path)
}

pub(super) fn remove_if_present(path: &Path) -> Result<(), HalError> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HalError::io("remove", path, e)),
    }
}

fn sync_parent(path: &Path) -> Result<(), HalError> {
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| HalError::io("sync directory", parent, e))?;
    }
    Ok(())
}
