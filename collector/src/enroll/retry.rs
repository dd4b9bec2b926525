//! Idempotent enrollment: a technician whose terminal failed after the collector issued its
//! certificate (power cut, full disk, a dropped answer) reruns `posguard-provision init` with
//! the same token. The token is spent, but the request comes from the same TPM-held key: the
//! collector issues again for that key instead of answering `token_used`. A different key with
//! a used token is still refused, as is a retry after the token expired or after a certificate
//! of the device was revoked (operations then issue a new token on purpose).

use rcgen::PublicKeyData as _;

use crate::store::{StoreError, StoreTx};

/// SHA-256 of the certified key's subjectPublicKey bits (the SEC1 point).
pub fn key_hash(key: &super::csr::CsrKey) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key.der_bytes());
    // SHA-256 output is always 32 bytes: the fallback is never taken.
    <[u8; 32]>::try_from(d.as_ref()).unwrap_or([0; 32])
}

/// Whether a request with the used token `hash` (used at `used_ms`, for `device_id`) and a CSR
/// for `key` may be issued again.
pub fn may_reissue(
    tx: &mut dyn StoreTx,
    hash: &[u8; 32],
    device_id: &str,
    used_ms: u64,
    key: &[u8; 32],
) -> Result<bool, StoreError> {
    let Some(recorded) = tx.token_key(hash)? else {
        // Used before keys were recorded: nothing to compare with, so refuse.
        return Ok(false);
    };
    if !super::token::hashes_equal(&recorded, key) {
        return Ok(false);
    }
    Ok(!tx.revoked_since(device_id, used_ms)?)
}
