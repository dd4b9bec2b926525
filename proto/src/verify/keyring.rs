//! The journal keys a verifier trusts, each from a certificate checked against the DIK.
//!
//! A key may sign from its certificate's `first_seq` up to (not including) the next higher
//! `first_seq` among the known certificates: a journal key lives for one agent start, so once a
//! later start's key takes over, the old key (which might have leaked from memory) signs nothing
//! more.

use crate::cert::{JournalKeyCert, VerifiedCert};
use crate::ed25519::JournalPublicKey;
use crate::keys::DikPublicKey;
use crate::text::DeviceId;

use super::{VerifyError, VerifyReason};

/// Most certificates a verifier holds (one per agent start).
pub const MAX_CERTS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustedKey {
    pub(crate) key_id: [u8; 8],
    /// Checked against the signature rule when its certificate was.
    pub(crate) public_key: JournalPublicKey,
    pub(crate) boot_id: [u8; 16],
    pub(crate) first_seq: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct KeyRing {
    dik: DikPublicKey,
    device_id: DeviceId,
    /// Sorted by `first_seq`.
    keys: Vec<TrustedKey>,
}

impl KeyRing {
    pub(crate) fn new(dik: &DikPublicKey, device_id: &DeviceId) -> Self {
        Self {
            dik: dik.clone(),
            device_id: device_id.clone(),
            keys: Vec::new(),
        }
    }

    /// Verifies `cert` and adds its key. Adding the same certificate twice is harmless.
    pub(crate) fn add(&mut self, cert: &JournalKeyCert) -> Result<(), VerifyError> {
        let key = cert.check(&self.dik, &self.device_id)?;
        self.insert(cert, key)
    }

    /// Adds the key of a certificate already verified: without checking its signature again if
    /// that was for this ring's DIK and device, as [`Self::add`] otherwise.
    pub(crate) fn add_verified(&mut self, verified: &VerifiedCert) -> Result<(), VerifyError> {
        if verified.verified_for(&self.dik, &self.device_id) {
            self.insert(verified.cert(), *verified.key())
        } else {
            self.add(verified.cert())
        }
    }

    /// Adds the key of `cert`, which the caller has verified (`public_key` is its key).
    fn insert(
        &mut self,
        cert: &JournalKeyCert,
        public_key: JournalPublicKey,
    ) -> Result<(), VerifyError> {
        let f = cert.fields();
        let key = TrustedKey {
            key_id: cert.journal_key_id(),
            public_key,
            boot_id: f.boot_id,
            first_seq: f.first_seq,
        };
        if self.keys.contains(&key) {
            return Ok(());
        }
        if self.keys.len() >= MAX_CERTS {
            return Err(VerifyError {
                seq: None,
                reason: VerifyReason::TooManyCerts,
            });
        }
        let at = self.keys.partition_point(|k| k.first_seq <= key.first_seq);
        self.keys.insert(at, key);
        Ok(())
    }

    /// The key with `key_id` that may sign `seq`.
    pub(crate) fn find(&self, key_id: &[u8; 8], seq: u64) -> Option<&TrustedKey> {
        // Keys with first_seq <= seq are keys[..end]; the ones allowed to sign are those sharing
        // the highest such first_seq (several starts can certify keys at the same first_seq when
        // an agent stopped before writing a record).
        let end = self.keys.partition_point(|k| k.first_seq <= seq);
        let latest = self.keys.get(..end)?.last()?.first_seq;
        self.keys
            .get(..end)?
            .iter()
            .rev()
            .take_while(|k| k.first_seq == latest)
            .find(|k| &k.key_id == key_id)
    }
}
