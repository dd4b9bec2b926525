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

/// The sealed blob's file name under the state directory.
pub const SEALED_FILE: &str = "datakey.sealed";

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
                std::fs::create_dir_all(state_dir).map_err(io)?;
                let tmp = path.with_extension("tmp");
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(blob.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                std::fs::File::open(state_dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
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
