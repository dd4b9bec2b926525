//! The operations key: Ed25519, kept in a file readable by its owner only (PKCS#8 v2, DER),
//! used offline by `posguard-collector command` to sign commands. The server only knows the
//! public half (`ops_public_key`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use posguard_proto::text::DeviceId;
use posguard_proto::uplink::{CommandKind, SignedCommand, command_signing_bytes};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// Why the ops key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsKeyError {
    /// File error.
    #[error("ops key file")]
    Io(#[from] std::io::Error),
    /// Not an Ed25519 PKCS#8 key.
    #[error("ops key file is not an Ed25519 PKCS#8 key")]
    BadKey,
}

/// Generates a key, writes it to `path` (mode 0600, refusing to overwrite) and returns the hex
/// public key.
pub fn generate(path: &Path) -> Result<String, OpsKeyError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| OpsKeyError::BadKey)?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| OpsKeyError::BadKey)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pkcs8.as_ref())?;
    f.sync_all()?;
    Ok(crate::clock::hex(key.public_key().as_ref()))
}

/// Signs a command with the key in `path`.
pub fn sign(
    path: &Path,
    device_id: DeviceId,
    id: u64,
    kind: CommandKind,
    issued_wall_ms: u64,
) -> Result<SignedCommand, OpsKeyError> {
    let pkcs8 = std::fs::read(path)?;
    let key =
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|_| OpsKeyError::BadKey)?;
    let sig = key.sign(&command_signing_bytes(&device_id, id, kind, issued_wall_ms));
    let signature = <[u8; 64]>::try_from(sig.as_ref()).map_err(|_| OpsKeyError::BadKey)?;
    Ok(SignedCommand {
        device_id,
        id,
        kind,
        issued_wall_ms,
        signature,
    })
}

/// The hex public key of the key in `path`.
pub fn public_hex(path: &Path) -> Result<String, OpsKeyError> {
    let pkcs8 = std::fs::read(path)?;
    let key =
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|_| OpsKeyError::BadKey)?;
    Ok(crate::clock::hex(key.public_key().as_ref()))
}
