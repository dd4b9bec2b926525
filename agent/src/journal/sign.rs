//! Keys of the journal. A fresh Ed25519 journal key is made in memory at each start (zeroized on
//! drop) and certified by the device identity key: the TPM signs once per start, not per event.
//! Checkpoints are signed by the device identity key over (seq, head hash, TPM counter).
//!
//! A key is certified only if the signature rule accepts it (a canonical encoding of a point of
//! prime order, `posguard_proto::ed25519`): a generated key always is, but the check belongs
//! where certificates are made, so that nothing the verifiers would refuse ever gets the DIK's
//! signature.

use posguard_hal::{SecureElement, sha256};
use posguard_proto::cert::{JournalKeyCert, UnsignedJournalKeyCert};
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::checkpoint::{Checkpoint, UnsignedCheckpoint};
use posguard_proto::text::DeviceId;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::JournalError;
use crate::clock::Clock;

/// The per-start journal key.
pub(crate) struct JournalKey {
    key: ed25519_dalek::SigningKey,
    pub(crate) id: [u8; 8],
    pub(crate) public: [u8; 32],
}

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalKey(id {:02x?})", self.id)
    }
}

impl JournalKey {
    pub(crate) fn generate() -> Result<Self, JournalError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut seed[..])
            .map_err(|_| JournalError::Build("the OS RNG failed".to_owned()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes();
        Ok(JournalKey {
            key,
            id: journal_key_id(&public),
            public,
        })
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }

    /// The certificate binding this key to the device, signed by the device identity key.
    pub(crate) fn certify(
        &self,
        element: &dyn SecureElement,
        device_id: &DeviceId,
        clock: &Clock,
        first_seq: u64,
    ) -> Result<JournalKeyCert, JournalError> {
        certify_public(self.public, element, device_id, clock, first_seq)
    }
}

/// Has the device identity key certify `public`, after checking it against the signature rule
/// (the secure element is not asked to sign a key the verifiers would refuse).
fn certify_public(
    public: [u8; 32],
    element: &dyn SecureElement,
    device_id: &DeviceId,
    clock: &Clock,
    first_seq: u64,
) -> Result<JournalKeyCert, JournalError> {
    let unsigned = UnsignedJournalKeyCert {
        device_id: device_id.clone(),
        boot_id: clock.boot_id(),
        journal_public_key: public,
        first_seq,
        issued_wall_ms: Clock::wall_ms(),
    };
    unsigned.check_key().map_err(JournalError::BadJournalKey)?;
    let signature = element.sign_digest(&sha256(&unsigned.signing_bytes()))?;
    unsigned
        .into_cert(signature)
        .map_err(|e| JournalError::Build(format!("journal key certificate: {e}")))
}

/// Increments the TPM counter and signs a checkpoint at `head` — or, with `adopt`, signs it with
/// the counter's current value: an interrupted checkpoint's increment taken over.
pub(crate) fn checkpoint(
    element: &dyn SecureElement,
    device_id: &DeviceId,
    head: ChainHead,
    adopt: Option<u64>,
) -> Result<Checkpoint, JournalError> {
    let counter = match adopt {
        Some(value) => value,
        None => element.counter_increment()?,
    };
    let unsigned = UnsignedCheckpoint {
        device_id: device_id.clone(),
        seq: head.seq,
        head_hash: head.hash,
        nv_counter: counter,
        wall_ms: Clock::wall_ms(),
    };
    let signature = element.sign_digest(&sha256(&unsigned.signing_bytes()))?;
    unsigned
        .into_checkpoint(signature)
        .map_err(|e| JournalError::Build(format!("checkpoint: {e}")))
}

#[cfg(test)]
mod tests;
