//! A sealed data-key file the secure element rejects as data: moved aside untouched, so that a
//! damaged file cannot keep the agent from starting (docs/journal.md, "Damaged databases never
//! stop the agent").

use std::path::Path;

use posguard_hal::{HalError, SecureElement};

use super::{DataKey, DataKeyError, SEALED_FILE};
use crate::storeguard::MovedAside;

impl DataKey {
    /// [`DataKey::load_or_create`] for the daemon: a blob the secure element rejects as data
    /// (damaged, truncated, sealed by another TPM) is moved aside untouched and a new key is
    /// made, so that a damaged file cannot keep the agent from starting. What the old key
    /// protected (admins' TOTP seeds, cached records of key version 1) cannot be opened any
    /// more; the caller journals and reports the [`MovedAside`]. Any other error (the TPM
    /// unreachable) is returned: nothing is moved for a fault that is not in the file.
    pub fn load_or_replace(
        element: &dyn SecureElement,
        state_dir: &Path,
    ) -> Result<(Self, Option<MovedAside>), DataKeyError> {
        match Self::load_or_create(element, state_dir) {
            Ok(key) => Ok((key, None)),
            Err(DataKeyError::Hal(HalError::SealedBlob { reason })) => {
                let path = state_dir.join(SEALED_FILE);
                let moved = move_blob_aside(&path, "datakey", reason)?;
                Ok((Self::load_or_create(element, state_dir)?, Some(moved)))
            }
            Err(e) => Err(e),
        }
    }
}

pub(super) fn move_blob_aside(
    path: &Path,
    store: &'static str,
    reason: String,
) -> Result<MovedAside, DataKeyError> {
    let moved_to = crate::storeguard::move_aside(path).map_err(|source| DataKeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::error!(file = %path.display(), %reason, moved_to = %moved_to.display(), "sealed data key unreadable: moved aside");
    Ok(MovedAside {
        store,
        reason,
        moved_to,
    })
}
