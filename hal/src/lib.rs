//! posguard-hal: the hardware boundary. Everything posguard asks of secure hardware goes through
//! one trait, [`SecureElement`], with two backends that behave the same:
//!
//! - [`tpm`]: a TPM 2.0 through `tss-esapi`. One thread owns the ESYS context; every other thread
//!   sends it jobs. All TPM rules (templates, handles, sessions, flushing) live under `tpm/`.
//! - [`software`]: key files on disk for development machines without a TPM. Refused unless the
//!   configuration explicitly allows it, and loud about itself when it starts.
//!
//! Around them:
//! - [`config`]: the `[secure_element]` configuration.
//! - [`blob`]: the envelope of sealed secrets.
//! - [`der`]: the small DER encodings the backends produce (ECDSA signatures, P-256 SPKI).
//! - [`tls`]: a rustls `SigningKey` whose signatures come from the secure element.
//! - [`csr`]: an rcgen signing key backed by the secure element, for CSRs.
//! - `testing` (feature `testing`): a swtpm harness for the tests of every crate.
//!
//! Every call is synchronous and may take tens of milliseconds on a discrete TPM: async callers
//! run them with `spawn_blocking` or on a thread of their own.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )
)]

pub mod blob;
pub mod config;
pub mod csr;
pub mod der;
mod error;
pub mod software;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod tpm;

use std::sync::Arc;

use zeroize::Zeroizing;

pub use blob::SealedBlob;
pub use config::{Backend, SecureElementConfig};
pub use error::HalError;

/// The largest secret `seal` accepts, in bytes (a TPM's sealed data object holds up to 128).
pub const MAX_SEALED_SECRET: usize = 128;

/// What `ensure_identity_key` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// Open the key if it exists; otherwise fail with [`HalError::NoIdentityKey`].
    OpenExisting,
    /// Open the key if it exists, create it if not. Never replaces anything.
    OpenOrCreate,
    /// Make a new key beside the current one (provisioning `--force --new-key`) without touching
    /// it: from now on this handle's `identity_public_key` and `sign_digest` use the new key, but what is
    /// stored at the configured place changes only at [`SecureElement::commit_identity_key`].
    /// Dropped without a commit, the new key is gone and the old one is as it was. An object
    /// posguard did not create at the configured place is refused, never replaced.
    Replace,
}

/// Whether `ensure_identity_key` found, made or replaced the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The key was already there and was opened.
    Opened,
    /// No key was there; a new one was created.
    Created,
    /// posguard's previous key was there and was replaced by the new one (at commit).
    Replaced,
    /// A new key exists beside the stored one, waiting for [`SecureElement::commit_identity_key`].
    Staged,
}

/// What [`SecureElement::evict_foreign`] did at the handle the technician named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignEviction {
    /// An object posguard did not create was there and was evicted; what it was.
    Evicted(String),
    /// Nothing was there (already free: a rerun after an earlier eviction).
    Absent,
    /// posguard's own object is there: kept (a rerun after posguard created its key there).
    Ours,
}

/// The device identity key as seen from outside: its public half and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityKey {
    /// SubjectPublicKeyInfo DER of the ECC P-256 public key.
    pub spki_der: Vec<u8>,
    /// What happened to get it.
    pub origin: KeyOrigin,
    /// Where it lives: a persistent handle (hex) or a file path.
    pub location: String,
}

/// Which backend and where: for status output and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// `tpm` or `software`.
    pub kind: Backend,
    /// The TCTI or the key directory.
    pub location: String,
    /// TPM manufacturer and firmware, when known.
    pub description: String,
}

/// What posguard needs from secure hardware. Both backends pass the same conformance suite
/// (`hal/tests/conformance.rs`).
pub trait SecureElement: Send + Sync + std::fmt::Debug {
    /// Which backend this is and where it lives.
    fn info(&self) -> BackendInfo;

    /// Creates or opens the device identity key (ECC P-256, signing only, non-exportable in a
    /// TPM). Opening never replaces; [`KeyMode::Replace`] stages a new key (`--force --new-key`).
    /// An object at the configured place that posguard did not create is never used (so no
    /// authorisation is tried on it) nor evicted: [`HalError::Foreign`].
    fn ensure_identity_key(&self, mode: KeyMode) -> Result<IdentityKey, HalError>;

    /// Stores the key staged by [`KeyMode::Replace`] at the configured place, replacing
    /// posguard's previous key there (origin `Replaced`) or a free place (`Created`). Called once
    /// the new key's certificate is issued. Fails, keeping the new key staged, if nothing was
    /// staged or the place now holds an object posguard did not create.
    fn commit_identity_key(&self) -> Result<IdentityKey, HalError>;

    /// Evicts the object at `handle` if posguard did not create it: the technician's explicit,
    /// named confirmation (`--evict-foreign HANDLE`). Only the configured identity key, storage
    /// root key or counter handle is accepted; posguard's own objects are kept.
    fn evict_foreign(&self, handle: u32) -> Result<ForeignEviction, HalError>;

    /// SPKI DER of the identity public key. Fails with [`HalError::NoIdentityKey`] if absent.
    fn identity_public_key(&self) -> Result<Vec<u8>, HalError>;

    /// Signs a SHA-256 digest with the identity key; returns a DER ECDSA signature, which
    /// verifies as ECDSA-P256-SHA256 over the message whose digest this is.
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, HalError>;

    /// Seals a secret of 1 to [`MAX_SEALED_SECRET`] bytes; the caller stores the blob.
    fn seal(&self, secret: &[u8]) -> Result<SealedBlob, HalError>;

    /// Recovers a sealed secret. A malformed, tampered or foreign blob is an error, never a panic.
    fn unseal(&self, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>, HalError>;

    /// Creates the monotonic counter if it does not exist; returns its current value.
    fn counter_create(&self) -> Result<u64, HalError>;

    /// Reads the monotonic counter.
    fn counter_read(&self) -> Result<u64, HalError>;

    /// Increments the monotonic counter and returns the new value.
    fn counter_increment(&self) -> Result<u64, HalError>;

    /// `len` random bytes from the secure element's RNG.
    fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, HalError>;

    /// Whether the secure element refuses authorisations because of dictionary-attack lockout
    /// (a TPM in lockout cannot be provisioned). The software backend never is.
    fn in_lockout(&self) -> Result<bool, HalError>;

    /// Removes the identity key, the counter and (software) the storage key: decommissioning.
    /// What is already absent is not an error.
    fn destroy(&self) -> Result<(), HalError>;
}

/// Opens the secure element the configuration names. The software backend is refused unless
/// `allow_software_keys` is set, and warns loudly when it starts.
pub fn open(config: &SecureElementConfig) -> Result<Arc<dyn SecureElement>, HalError> {
    match config.backend {
        Backend::Tpm => Ok(Arc::new(tpm::TpmElement::open(config)?)),
        Backend::Software => Ok(Arc::new(software::SoftwareElement::open(config)?)),
    }
}

/// SHA-256 of `message`, the digest `sign_digest` expects.
pub fn sha256(message: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, message);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
