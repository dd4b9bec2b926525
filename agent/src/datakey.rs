//! The data key: 256 bits from the secure element's RNG, sealed to it, stored only as the sealed
//! blob (`<state>/datakey.sealed`, mode 0600), unsealed once at start into memory that is
//! zeroized on drop. It encrypts secrets at rest (TOTP seeds) and the transaction cache.
//!
//! [`DataKey::seal_value`] / [`DataKey::open_value`]: AES-256-GCM with a random 96-bit nonce;
//! the caller's AAD binds what the value is (tree, record id, key version), so a ciphertext
//! copied under another name does not open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use posguard_hal::{HalError, SealedBlob, SecureElement};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::storeguard::MovedAside;

mod damaged;
use damaged::move_blob_aside;

/// What can go wrong with the data key or a value it protects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataKeyError {
    /// Reading or writing the sealed blob failed.
    #[error("data key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The secure element refused to seal or unseal.
    #[error("data key: {0}")]
    Hal(#[from] HalError),
    /// The unsealed key has the wrong length.
    #[error("the unsealed data key has {0} bytes instead of 32")]
    BadLength(usize),
    /// The keyring holds no key (never after a successful open).
    #[error("the data keyring is empty")]
    NoKey,
    /// A value does not decrypt: tampered, truncated, or stored under another name.
    #[error("encrypted value rejected: tampered, truncated, or not stored under this name")]
    Rejected,
}

/// The unsealed data key. Its bytes are zeroized on drop; `Debug` shows nothing of them.
pub struct DataKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The sealed blob's file name under the state directory (key version 1 of the [`Keyring`]).
pub const SEALED_FILE: &str = "datakey.sealed";

/// Writes a sealed blob durably: a temporary file (mode 0600) fsynced, renamed into place, the
/// directory fsynced. A crash leaves either no file or the whole file (plus perhaps a `.tmp`).
pub(crate) fn write_sealed(dir: &Path, path: &Path, blob: &[u8]) -> Result<(), DataKeyError> {
    let io = |source| DataKeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(blob).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

impl DataKey {
    /// Unseals the data key from `<state_dir>/datakey.sealed`, creating and sealing a new one
    /// (from the secure element's RNG) if there is none yet.
    pub fn load_or_create(
        element: &dyn SecureElement,
        state_dir: &Path,
    ) -> Result<Self, DataKeyError> {
        let path = state_dir.join(SEALED_FILE);
        let io = |source| DataKeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let raw = element.unseal(&SealedBlob::from_bytes(bytes))?;
                Self::from_raw(&raw)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let raw = element.random(32)?;
                let blob = element.seal(&raw)?;
                write_sealed(state_dir, &path, blob.as_bytes())?;
                Self::from_raw(&raw)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Wraps raw key bytes (32).
    pub fn from_raw(raw: &[u8]) -> Result<Self, DataKeyError> {
        let raw = Zeroizing::new(raw.to_vec());
        let key =
            UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| DataKeyError::BadLength(raw.len()))?;
        Ok(DataKey {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts `plain`: nonce ‖ ciphertext ‖ tag. `aad` names what the value is.
    pub fn seal_value(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, DataKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| DataKeyError::Rejected)?;
        let mut out = Vec::with_capacity(NONCE_LEN.saturating_add(plain.len()).saturating_add(16));
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| DataKeyError::Rejected)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts what [`DataKey::seal_value`] made with the same `aad`.
    pub fn open_value(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DataKeyError> {
        let (nonce, body) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(DataKeyError::Rejected)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| DataKeyError::Rejected)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// The key version held in [`SEALED_FILE`]. It is also the key of the clerk database's TOTP seeds,
/// which carry no key version, so the keyring never destroys it.
pub const KEYRING_SHARED_VERSION: u32 = 1;

/// The file name of key version `version`: [`SEALED_FILE`] for version 1 (the name the data key
/// always had), `datakey.v<N>.sealed` after that.
pub fn sealed_file_name(version: u32) -> String {
    if version == KEYRING_SHARED_VERSION {
        SEALED_FILE.to_owned()
    } else {
        format!("datakey.v{version}.sealed")
    }
}

fn parse_sealed_file_name(name: &str) -> Option<u32> {
    if name == SEALED_FILE {
        return Some(KEYRING_SHARED_VERSION);
    }
    let v: u32 = name
        .strip_prefix("datakey.v")?
        .strip_suffix(".sealed")?
        .parse()
        .ok()?;
    (v > KEYRING_SHARED_VERSION && sealed_file_name(v) == name).then_some(v)
}

/// Versioned data keys for records that carry their key version (the transaction cache).
///
/// Each version is a sealed blob of its own in the state directory; the newest is the one new
/// values are sealed with. A new version's file is durable before [`Keyring::rotate`] returns,
/// so no record can use a key that a crash could lose. Versions are destroyed only by
/// [`Keyring::retire`], which the caller invokes once a durable pass shows no record uses it.
pub struct Keyring {
    dir: PathBuf,
    element: std::sync::Arc<dyn SecureElement>,
    keys: std::sync::RwLock<std::collections::BTreeMap<u32, std::sync::Arc<DataKey>>>,
    /// One rotation at a time: two would pick the same next version.
    rotating: std::sync::Mutex<()>,
    /// Damaged key files moved aside at open.
    moved: Vec<MovedAside>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .field("versions", &self.versions())
            .finish()
    }
}

impl Keyring {
    /// Unseals every key version found in `state_dir`, creating version 1 if there is none.
    /// Blocking (secure-element calls).
    pub fn open(
        element: std::sync::Arc<dyn SecureElement>,
        state_dir: &Path,
    ) -> Result<Self, DataKeyError> {
        let io = |source| DataKeyError::Io {
            path: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut keys = std::collections::BTreeMap::new();
        let mut moved = Vec::new();
        for entry in std::fs::read_dir(state_dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("datakey.v") && name.ends_with(".tmp") {
                // A rotation interrupted before its rename: no record can use that key.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(version) = parse_sealed_file_name(name) {
                let path = entry.path();
                let bytes = std::fs::read(&path).map_err(|source| DataKeyError::Io {
                    path: path.clone(),
                    source,
                })?;
                let raw = match element.unseal(&SealedBlob::from_bytes(bytes)) {
                    Ok(raw) => raw,
                    // A damaged blob of a later version: only the records sealed with it are
                    // lost (the cache answers them `unreadable`); the agent still starts.
                    Err(HalError::SealedBlob { reason }) if version != KEYRING_SHARED_VERSION => {
                        moved.push(move_blob_aside(&path, "cache_key", reason)?);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                keys.insert(version, std::sync::Arc::new(DataKey::from_raw(&raw)?));
            }
        }
        if keys.is_empty() {
            let key = DataKey::load_or_create(element.as_ref(), state_dir)?;
            keys.insert(KEYRING_SHARED_VERSION, std::sync::Arc::new(key));
        }
        Ok(Keyring {
            dir: state_dir.to_path_buf(),
            element,
            keys: std::sync::RwLock::new(keys),
            rotating: std::sync::Mutex::new(()),
            moved,
        })
    }

    /// Sealed key files found damaged at open and moved aside.
    pub fn moved_aside(&self) -> &[MovedAside] {
        &self.moved
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<u32, std::sync::Arc<DataKey>>>
    {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays valid.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::BTreeMap<u32, std::sync::Arc<DataKey>>>
    {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest version and its key: what new values are sealed with.
    pub fn current(&self) -> Result<(u32, std::sync::Arc<DataKey>), DataKeyError> {
        // open() leaves one key and retire() never removes the newest, so this is never empty.
        self.read()
            .last_key_value()
            .map(|(v, k)| (*v, k.clone()))
            .ok_or(DataKeyError::NoKey)
    }

    /// The key of `version`, if it is still held.
    pub fn get(&self, version: u32) -> Option<std::sync::Arc<DataKey>> {
        self.read().get(&version).cloned()
    }

    /// The versions held, oldest first.
    pub fn versions(&self) -> Vec<u32> {
        self.read().keys().copied().collect()
    }

    /// Makes a new key version from the secure element's RNG, seals it and writes its file
    /// durably; only then does it become current. Blocking. Returns the new version.
    pub fn rotate(&self) -> Result<u32, DataKeyError> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let (current, _) = self.current()?;
        let next = current.checked_add(1).ok_or(DataKeyError::Rejected)?;
        let raw = self.element.random(32)?;
        let blob = self.element.seal(&raw)?;
        let key = DataKey::from_raw(&raw)?;
        let path = self.dir.join(sealed_file_name(next));
        write_sealed(&self.dir, &path, blob.as_bytes())?;
        self.write().insert(next, std::sync::Arc::new(key));
        Ok(next)
    }

    /// Forgets `version` and deletes its sealed file (durably). Refused (`Ok(false)`) for the
    /// newest version and for [`KEYRING_SHARED_VERSION`]. The caller guarantees that no
    /// durable record still uses it.
    pub fn retire(&self, version: u32) -> Result<bool, DataKeyError> {
        let (current, _) = self.current()?;
        if version == current || version == KEYRING_SHARED_VERSION {
            return Ok(false);
        }
        if self.write().remove(&version).is_none() {
            return Ok(false);
        }
        let path = self.dir.join(sealed_file_name(version));
        let io = |source| DataKeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use posguard_hal::SecureElementConfig;

    #[test]
    fn sealed_once_then_unsealed_and_values_bind_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let se =
            posguard_hal::open(&SecureElementConfig::software(dir.path().join("keys"))).unwrap();
        let state = dir.path().join("state");
        let a = DataKey::load_or_create(se.as_ref(), &state).unwrap();
        let sealed = a.seal_value(b"totp/anna", b"seed bytes").unwrap();
        let b = DataKey::load_or_create(se.as_ref(), &state).unwrap();
        assert_eq!(
            &b.open_value(b"totp/anna", &sealed).unwrap()[..],
            b"seed bytes"
        );
        assert!(matches!(
            b.open_value(b"totp/bob", &sealed),
            Err(DataKeyError::Rejected)
        ));
        let mut t = sealed.clone();
        t[20] ^= 1;
        assert!(b.open_value(b"totp/anna", &t).is_err());
        assert!(b.open_value(b"totp/anna", &sealed[..5]).is_err());
        let raw = std::fs::read(state.join(SEALED_FILE)).unwrap();
        assert!(!raw.windows(10).any(|w| w == b"seed bytes"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join(SEALED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
