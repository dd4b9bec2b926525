//! Journal-key certificates already verified, so that each is checked once, not per batch.
//!
//! An agent sends its current journal-key certificate with every batch, and the chain walk of
//! each batch needs the device's stored certificates too: two ECDSA P-256 checks per batch on
//! the store thread (7% of it in `./scripts/bench.sh ingest`). [`CertCache`] keeps the
//! [`VerifiedCert`]s made from certificate bytes; proto trusts one without a new check only for
//! the DIK and device it was verified for, so a hit for another peer is checked again.

use std::collections::HashMap;
use std::sync::Mutex;

use posguard_proto::cert::{JournalKeyCert, VerifiedCert};
use posguard_proto::codec::DecodeError;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::text::DeviceId;
use posguard_proto::verify::VerifyError;

/// Certificates kept, at most; the cache starts over when full (one certificate per agent
/// start, so a fleet of 10,000 devices needs about that many).
const MAX_ENTRIES: usize = 16_384;

/// Why certificate bytes gave no verified certificate.
#[derive(Debug)]
pub enum CertError {
    /// The bytes are not a certificate.
    Undecodable(DecodeError),
    /// The certificate does not verify for the peer.
    Refused(VerifyError),
}

/// Verified certificates by their canonical bytes (shared by the ingest threads).
#[derive(Debug, Default)]
pub struct CertCache {
    verified: Mutex<HashMap<Vec<u8>, VerifiedCert>>,
}

impl CertCache {
    /// The certificate encoded in `bytes`, verified for `dik` and `device_id`: from the cache
    /// when it was verified for them before, checked (and kept) otherwise.
    pub fn verified(
        &self,
        bytes: &[u8],
        dik: &DikPublicKey,
        device_id: &DeviceId,
    ) -> Result<VerifiedCert, CertError> {
        if let Some(hit) = self
            .lock()
            .get(bytes)
            .filter(|v| v.verified_for(dik, device_id))
        {
            return Ok(hit.clone());
        }
        let cert = JournalKeyCert::from_bytes(bytes).map_err(CertError::Undecodable)?;
        let verified = cert
            .into_verified(dik, device_id)
            .map_err(CertError::Refused)?;
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(bytes.to_vec(), verified.clone());
        Ok(verified)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, VerifiedCert>> {
        // The map holds no invariant a panic could break half way: use it as it is.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Certificates held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests;
