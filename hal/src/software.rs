//! The software secure element: for development machines without a TPM. Keys live in files in
//! one directory (mode 0700, files 0600) that only the agent's user can read. This gives none of
//! a TPM's guarantees — a copy of the directory is a copy of the terminal's identity — so it is
//! refused unless the configuration sets `allow_software_keys = true`, and it says so at start.
//!
//! Files: `identity.key` (P-256 private scalar, 32 bytes), `storage.key` (AES-256-GCM key that
//! seals secrets, 32 bytes), `counter` (u64 big-endian).

mod files;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::blob::{BlobKind, HEADER_LEN, SealedBlob};
use crate::{
    Backend, BackendInfo, ForeignEviction, HalError, IdentityKey, KeyMode, KeyOrigin,
    MAX_SEALED_SECRET, SecureElement, SecureElementConfig, der,
};
use files::{read_private, remove_if_present, write_private};

const IDENTITY_FILE: &str = "identity.key";
const STORAGE_FILE: &str = "storage.key";
const COUNTER_FILE: &str = "counter";

/// Key files in a private directory. See the module documentation for what this does not protect.
#[derive(Debug)]
pub struct SoftwareElement {
    dir: PathBuf,
    rng: SystemRandom,
    /// Serialises read-modify-write of the files within this process.
    lock: Mutex<()>,
    /// A new identity key made by `KeyMode::Replace`, in memory only until committed.
    staged: Mutex<Option<SigningKey>>,
}

impl SoftwareElement {
    /// Opens (creating if needed) the key directory. Refused unless explicitly allowed.
    pub fn open(config: &SecureElementConfig) -> Result<Self, HalError> {
        if config.backend != Backend::Software || !config.allow_software_keys {
            return Err(HalError::SoftwareNotAllowed);
        }
        let dir = config.software_key_dir.clone();
        files::ensure_private_dir(&dir)?;
        tracing::warn!(
            dir = %dir.display(),
            "SOFTWARE SECURE ELEMENT: device keys are stored in files, not in a TPM. \
             Anyone who can read this directory can impersonate this terminal. \
             Development use only."
        );
        Ok(SoftwareElement {
            dir,
            rng: SystemRandom::new(),
            lock: Mutex::new(()),
            staged: Mutex::new(None),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned lock carries no broken invariant.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load_identity(&self) -> Result<Option<SigningKey>, HalError> {
        let path = self.path(IDENTITY_FILE);
        let Some(bytes) = read_private(&path)? else {
            return Ok(None);
        };
        SigningKey::from_slice(&bytes)
            .map(Some)
            .map_err(|_| occupied_by_garbage(&path, bytes.len()))
    }

    fn fresh_identity(&self) -> Result<SigningKey, HalError> {
        loop {
            let bytes = self.random_array::<32>()?;
            // A scalar of zero or >= the group order is refused: draw again (p ≈ 2^-32).
            if let Ok(key) = SigningKey::from_slice(&bytes[..]) {
                return Ok(key);
            }
        }
    }

    fn store_identity(&self, key: &SigningKey) -> Result<(), HalError> {
        let bytes = Zeroizing::new(key.to_bytes());
        write_private(&self.path(IDENTITY_FILE), &bytes[..])
    }

    fn new_identity(&self) -> Result<SigningKey, HalError> {
        let key = self.fresh_identity()?;
        self.store_identity(&key)?;
        Ok(key)
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Option<SigningKey>> {
        // A poisoned lock still holds a whole key or none: nothing half-written.
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key that signs: the staged one if there is one, else the stored one.
    fn identity(&self) -> Result<SigningKey, HalError> {
        if let Some(key) = self.staged().as_ref() {
            return Ok(key.clone());
        }
        self.load_identity()?
            .ok_or_else(|| HalError::NoIdentityKey {
                location: self.path(IDENTITY_FILE).display().to_string(),
            })
    }

    fn storage_key(&self, create: bool) -> Result<LessSafeKey, HalError> {
        let path = self.path(STORAGE_FILE);
        let bytes = match read_private(&path)? {
            Some(b) => b,
            None if create => {
                let fresh = self.random_array::<32>()?;
                write_private(&path, &fresh[..])?;
                Zeroizing::new(fresh.to_vec())
            }
            None => {
                return Err(HalError::blob(format!(
                    "storage key {} is missing",
                    path.display()
                )));
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| occupied_by_garbage(&path, bytes.len()))?;
        Ok(LessSafeKey::new(key))
    }

    fn random_array<const N: usize>(&self) -> Result<Zeroizing<[u8; N]>, HalError> {
        let mut out = Zeroizing::new([0u8; N]);
        self.rng.fill(&mut out[..]).map_err(|_| rng_failed())?;
        Ok(out)
    }

    fn read_counter(&self) -> Result<Option<u64>, HalError> {
        let path = self.path(COUNTER_FILE);
        let Some(bytes) = read_private(&path)? else {
            return Ok(None);
        };
        let arr: [u8; 8] = bytes[..]
            .try_into()
            .map_err(|_| occupied_by_garbage(&path, bytes.len()))?;
        Ok(Some(u64::from_be_bytes(arr)))
    }

    fn no_counter(&self) -> HalError {
        HalError::NoCounter {
            location: self.path(COUNTER_FILE).display().to_string(),
        }
    }
}

fn occupied_by_garbage(path: &Path, len: usize) -> HalError {
    HalError::Occupied {
        what: "software key file",
        location: path.display().to_string(),
        found: format!("{len} bytes that are not a valid key"),
    }
}

fn rng_failed() -> HalError {
    HalError::Unexpected {
        operation: "random",
        detail: "the operating system RNG failed".to_owned(),
    }
}

fn spki_of(key: &SigningKey) -> Result<Vec<u8>, HalError> {
    let point = key.verifying_key().to_encoded_point(false);
    der::p256_spki_from_point(point.as_bytes()).ok_or_else(|| HalError::Unexpected {
        operation: "public key",
        detail: "P-256 point of unexpected length".to_owned(),
    })
}

impl SecureElement for SoftwareElement {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: Backend::Software,
            location: self.dir.display().to_string(),
            description: "software key files (development only)".to_owned(),
        }
    }

    fn ensure_identity_key(&self, mode: KeyMode) -> Result<IdentityKey, HalError> {
        let _g = self.guard();
        let location = self.path(IDENTITY_FILE).display().to_string();
        let (key, origin) = match mode {
            KeyMode::Replace => {
                // The stored key must be sound (or absent) before a replacement is staged.
                self.load_identity()?;
                let key = self.fresh_identity()?;
                *self.staged() = Some(key.clone());
                (key, KeyOrigin::Staged)
            }
            KeyMode::OpenExisting => (self.identity()?, KeyOrigin::Opened),
            KeyMode::OpenOrCreate => match self.load_identity()? {
                Some(key) => (key, KeyOrigin::Opened),
                None => (self.new_identity()?, KeyOrigin::Created),
            },
        };
        Ok(IdentityKey {
            spki_der: spki_of(&key)?,
            origin,
            location,
        })
    }

    fn commit_identity_key(&self) -> Result<IdentityKey, HalError> {
        let _g = self.guard();
        let mut staged = self.staged();
        let key = staged.as_ref().ok_or_else(|| HalError::Unexpected {
            operation: "commit identity key",
            detail: "no new identity key was staged in this session".to_owned(),
        })?;
        let existed = self.path(IDENTITY_FILE).exists();
        self.store_identity(key)?;
        let spki_der = spki_of(key)?;
        *staged = None;
        Ok(IdentityKey {
            spki_der,
            origin: if existed {
                KeyOrigin::Replaced
            } else {
                KeyOrigin::Created
            },
            location: self.path(IDENTITY_FILE).display().to_string(),
        })
    }

    fn evict_foreign(&self, handle: u32) -> Result<ForeignEviction, HalError> {
        Err(HalError::EvictRefused {
            handle: format!("{handle:#010x}"),
            reason: "the software secure element has no TPM handles".to_owned(),
        })
    }

    fn identity_public_key(&self) -> Result<Vec<u8>, HalError> {
        spki_of(&self.identity()?)
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, HalError> {
        let key = self.identity()?;
        let sig: p256::ecdsa::Signature =
            key.sign_prehash(digest).map_err(|e| HalError::Unexpected {
                operation: "sign",
                detail: e.to_string(),
            })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn seal(&self, secret: &[u8]) -> Result<SealedBlob, HalError> {
        if secret.is_empty() || secret.len() > MAX_SEALED_SECRET {
            return Err(HalError::SecretSize {
                len: secret.len(),
                max: MAX_SEALED_SECRET,
            });
        }
        let _g = self.guard();
        let key = self.storage_key(true)?;
        let nonce_bytes = self.random_array::<NONCE_LEN>()?;
        let mut out = SealedBlob::header(BlobKind::Software);
        let aad = out.clone();
        out.extend_from_slice(&nonce_bytes[..]);
        let mut sealed = Zeroizing::new(secret.to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(*nonce_bytes),
            Aad::from(&aad),
            &mut *sealed,
        )
        .map_err(|_| HalError::blob("encryption failed"))?;
        out.extend_from_slice(&sealed);
        Ok(SealedBlob::from_bytes(out))
    }

    fn unseal(&self, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>, HalError> {
        let payload = blob.payload(BlobKind::Software)?;
        let aad = blob.as_bytes().get(..HEADER_LEN).unwrap_or_default();
        let (nonce, ciphertext) = payload
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| HalError::blob("truncated (no nonce)"))?;
        let key = self.storage_key(false)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| {
                HalError::blob("authentication failed: tampered, or sealed under another key")
            })?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    fn counter_create(&self) -> Result<u64, HalError> {
        let _g = self.guard();
        match self.read_counter()? {
            Some(v) => Ok(v),
            None => {
                write_private(&self.path(COUNTER_FILE), &1u64.to_be_bytes())?;
                Ok(1)
            }
        }
    }

    fn counter_read(&self) -> Result<u64, HalError> {
        let _g = self.guard();
        self.read_counter()?.ok_or_else(|| self.no_counter())
    }

    fn counter_increment(&self) -> Result<u64, HalError> {
        let _g = self.guard();
        let current = self.read_counter()?.ok_or_else(|| self.no_counter())?;
        let next = current.checked_add(1).ok_or_else(|| HalError::Unexpected {
            operation: "counter increment",
            detail: "counter is at its maximum".to_owned(),
        })?;
        write_private(&self.path(COUNTER_FILE), &next.to_be_bytes())?;
        Ok(next)
    }

    fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, HalError> {
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.rng.fill(&mut out).map_err(|_| rng_failed())?;
        Ok(out)
    }

    fn in_lockout(&self) -> Result<bool, HalError> {
        Ok(false)
    }

    fn destroy(&self) -> Result<(), HalError> {
        let _g = self.guard();
        *self.staged() = None;
        for name in [IDENTITY_FILE, STORAGE_FILE, COUNTER_FILE] {
            remove_if_present(&self.path(name))?;
        }
        Ok(())
    }
}
