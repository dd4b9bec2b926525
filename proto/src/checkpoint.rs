//! Checkpoints: the device identity key signs the chain head together with the TPM's NV
//! monotonic counter, which makes a restored old database (rollback) detectable.
//!
//! Format 1 layout (postcard): `format: varint u16 (= 1) | device_id: string | seq: varint u64
//! | head_hash: [u8; 32] | nv_counter: varint u64 | wall_ms: varint u64
//! | signature: varint length + DER ECDSA`. The DIK signs
//! `CHECKPOINT_TAG || every field before the signature`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chain::CHECKPOINT_TAG;
use crate::codec::{self, DecodeError, MAX_SIGNED_STRUCT_LEN, Writer, byte_array, encoded_bytes};
use crate::keys::{DikPublicKey, SignatureLengthError, check_der_signature_len};
use crate::text::DeviceId;
use crate::verify::{VerifyError, VerifyReason};
use crate::version::CHECKPOINT_FORMAT;

/// The fields of a checkpoint, before the DIK signs them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnsignedCheckpoint {
    /// The device.
    pub device_id: DeviceId,
    /// Sequence number of the last record covered.
    pub seq: u64,
    /// Hash of that record.
    pub head_hash: [u8; 32],
    /// The TPM NV counter value after this checkpoint's increment.
    pub nv_counter: u64,
    /// When (UTC, Unix ms).
    pub wall_ms: u64,
}

impl UnsignedCheckpoint {
    /// What the device identity key signs: `CHECKPOINT_TAG || postcard(format, fields)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_prefix(CHECKPOINT_TAG);
        self.write_fields(&mut w);
        w.into_vec()
    }

    /// Attaches the DIK's DER-encoded ECDSA signature over [`Self::signing_bytes`] (its length is
    /// checked, not its validity).
    pub fn into_checkpoint(
        self,
        der_signature: Vec<u8>,
    ) -> Result<Checkpoint, SignatureLengthError> {
        check_der_signature_len(&der_signature)?;
        let mut w = Writer::new();
        self.write_fields(&mut w);
        w.bytes(&der_signature);
        Ok(Checkpoint {
            fields: self,
            signature: der_signature,
            encoded: w.into_vec(),
        })
    }

    fn write_fields(&self, w: &mut Writer) {
        w.u16(CHECKPOINT_FORMAT);
        w.str(self.device_id.as_str());
        w.varint(self.seq);
        w.raw(&self.head_hash);
        w.varint(self.nv_counter);
        w.varint(self.wall_ms);
    }
}

/// A checkpoint signed by the device identity key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    fields: UnsignedCheckpoint,
    signature: Vec<u8>,
    encoded: Vec<u8>,
}

#[derive(Deserialize)]
struct V1 {
    device_id: DeviceId,
    seq: u64,
    #[serde(with = "byte_array")]
    head_hash: [u8; 32],
    nv_counter: u64,
    wall_ms: u64,
    signature: Vec<u8>,
}

impl Checkpoint {
    /// The signed fields.
    pub fn fields(&self) -> &UnsignedCheckpoint {
        &self.fields
    }

    /// Format number.
    pub fn format(&self) -> u16 {
        CHECKPOINT_FORMAT
    }

    /// The DIK's DER-encoded signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        self.fields.signing_bytes()
    }

    /// The canonical encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Decodes a checkpoint; never panics; refuses unknown formats, oversized, trailing and
    /// non-canonical input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::check_len(bytes, MAX_SIGNED_STRUCT_LEN)?;
        let (format, rest) = codec::take_format(bytes)?;
        if format != CHECKPOINT_FORMAT {
            return Err(DecodeError::UnsupportedFormat(format));
        }
        let v1: V1 = codec::decode_exact(rest)?;
        let fields = UnsignedCheckpoint {
            device_id: v1.device_id,
            seq: v1.seq,
            head_hash: v1.head_hash,
            nv_counter: v1.nv_counter,
            wall_ms: v1.wall_ms,
        };
        let cp = fields
            .into_checkpoint(v1.signature)
            .map_err(|_| DecodeError::OutOfRange("DER signature length"))?;
        codec::ensure_canonical(bytes, &cp.encoded)?;
        Ok(cp)
    }

    /// Checks that the checkpoint names `device_id` and is signed by `dik`; when
    /// `record_hash_at_seq` is given (the verified hash of the record at the checkpoint's seq),
    /// also that the checkpoint's head hash equals it.
    pub fn verify(
        &self,
        dik: &DikPublicKey,
        device_id: &DeviceId,
        record_hash_at_seq: Option<&[u8; 32]>,
    ) -> Result<(), VerifyError> {
        let fail = |reason| {
            Err(VerifyError {
                seq: Some(self.fields.seq),
                reason,
            })
        };
        if &self.fields.device_id != device_id {
            return fail(VerifyReason::WrongDevice);
        }
        if !dik.verify(&self.signing_bytes(), &self.signature) {
            return fail(VerifyReason::BadCheckpointSignature);
        }
        if let Some(hash) = record_hash_at_seq
            && hash != &self.fields.head_hash
        {
            return fail(VerifyReason::CheckpointMismatch);
        }
        Ok(())
    }

    /// Checks that `self` may follow `previous` (both already verified): the NV counter strictly
    /// grows and the sequence number does not go back. A failure means a rollback or a replayed
    /// checkpoint.
    pub fn check_follows(&self, previous: &Checkpoint) -> Result<(), VerifyError> {
        let fail = |reason| {
            Err(VerifyError {
                seq: Some(self.fields.seq),
                reason,
            })
        };
        if self.fields.device_id != previous.fields.device_id {
            return fail(VerifyReason::WrongDevice);
        }
        if self.fields.nv_counter <= previous.fields.nv_counter {
            return fail(VerifyReason::CounterRollback {
                previous: previous.fields.nv_counter,
                found: self.fields.nv_counter,
            });
        }
        if self.fields.seq < previous.fields.seq {
            return fail(VerifyReason::CheckpointRegressed {
                previous: previous.fields.seq,
            });
        }
        if self.fields.seq == previous.fields.seq
            && self.fields.head_hash != previous.fields.head_hash
        {
            // Two heads for one seq: the chain forked.
            return fail(VerifyReason::CheckpointMismatch);
        }
        Ok(())
    }
}

/// In serde a checkpoint is its canonical encoding as a byte string.
impl Serialize for Checkpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        encoded_bytes::serialize(&self.encoded, s)
    }
}

impl<'de> Deserialize<'de> for Checkpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = encoded_bytes::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
