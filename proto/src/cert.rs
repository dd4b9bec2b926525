//! Journal-key certificates: the device identity key vouches for one agent start's journal key.
//!
//! Format 1 layout (postcard): `format: varint u16 (= 1) | device_id: string | boot_id: [u8; 16]
//! | journal_public_key: [u8; 32] | first_seq: varint u64 | issued_wall_ms: varint u64
//! | signature: varint length + DER ECDSA`. The DIK signs
//! `JOURNAL_KEY_CERT_TAG || every field before the signature` (see [`UnsignedJournalKeyCert::signing_bytes`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chain::{self, JOURNAL_KEY_CERT_TAG};
use crate::codec::{self, DecodeError, MAX_SIGNED_STRUCT_LEN, Writer, byte_array, encoded_bytes};
use crate::ed25519::{Ed25519KeyError, JournalPublicKey};
use crate::keys::{DikPublicKey, SignatureLengthError, check_der_signature_len};
use crate::text::DeviceId;
use crate::verify::{VerifyError, VerifyReason};
use crate::version::JOURNAL_KEY_CERT_FORMAT;

/// The fields of a journal-key certificate, before the DIK signs them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnsignedJournalKeyCert {
    /// The device whose journal this key signs.
    pub device_id: DeviceId,
    /// Boot id of the agent start that made the key; the records it signs carry the same.
    pub boot_id: [u8; 16],
    /// The Ed25519 public key.
    pub journal_public_key: [u8; 32],
    /// The first sequence number the key may sign.
    pub first_seq: u64,
    /// When the certificate was made (UTC, Unix ms).
    pub issued_wall_ms: u64,
}

impl UnsignedJournalKeyCert {
    /// What the device identity key signs: `JOURNAL_KEY_CERT_TAG || postcard(format, fields)`.
    /// A TPM signs SHA-256 of these bytes.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_prefix(JOURNAL_KEY_CERT_TAG);
        self.write_fields(&mut w);
        w.into_vec()
    }

    /// Checks the journal key against the signature rule (a canonical encoding of a point of
    /// prime order, [`crate::ed25519`]): the agent calls it before asking the TPM to certify a
    /// key, and verifiers refuse a certificate whose key fails it.
    pub fn check_key(&self) -> Result<JournalPublicKey, Ed25519KeyError> {
        JournalPublicKey::from_bytes(&self.journal_public_key)
    }

    /// Attaches the DIK's DER-encoded ECDSA signature over [`Self::signing_bytes`].
    /// The signature is not checked here (see [`JournalKeyCert::verify`]), only its length.
    pub fn into_cert(self, der_signature: Vec<u8>) -> Result<JournalKeyCert, SignatureLengthError> {
        check_der_signature_len(&der_signature)?;
        let mut w = Writer::new();
        self.write_fields(&mut w);
        w.bytes(&der_signature);
        Ok(JournalKeyCert {
            fields: self,
            signature: der_signature,
            encoded: w.into_vec(),
        })
    }

    fn write_fields(&self, w: &mut Writer) {
        w.u16(JOURNAL_KEY_CERT_FORMAT);
        w.str(self.device_id.as_str());
        w.raw(&self.boot_id);
        w.raw(&self.journal_public_key);
        w.varint(self.first_seq);
        w.varint(self.issued_wall_ms);
    }
}

/// A journal-key certificate signed by the device identity key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JournalKeyCert {
    fields: UnsignedJournalKeyCert,
    signature: Vec<u8>,
    encoded: Vec<u8>,
}

#[derive(Deserialize)]
struct V1 {
    device_id: DeviceId,
    #[serde(with = "byte_array")]
    boot_id: [u8; 16],
    #[serde(with = "byte_array")]
    journal_public_key: [u8; 32],
    first_seq: u64,
    issued_wall_ms: u64,
    signature: Vec<u8>,
}

impl JournalKeyCert {
    /// The signed fields.
    pub fn fields(&self) -> &UnsignedJournalKeyCert {
        &self.fields
    }

    /// Format number.
    pub fn format(&self) -> u16 {
        JOURNAL_KEY_CERT_FORMAT
    }

    /// The key id records signed by this key carry.
    pub fn journal_key_id(&self) -> [u8; 8] {
        chain::journal_key_id(&self.fields.journal_public_key)
    }

    /// The DIK's DER-encoded ECDSA P-256 / SHA-256 signature.
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

    /// Decodes a certificate; never panics; refuses unknown formats, oversized, trailing and
    /// non-canonical input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::check_len(bytes, MAX_SIGNED_STRUCT_LEN)?;
        let (format, rest) = codec::take_format(bytes)?;
        if format != JOURNAL_KEY_CERT_FORMAT {
            return Err(DecodeError::UnsupportedFormat(format));
        }
        let v1: V1 = codec::decode_exact(rest)?;
        let fields = UnsignedJournalKeyCert {
            device_id: v1.device_id,
            boot_id: v1.boot_id,
            journal_public_key: v1.journal_public_key,
            first_seq: v1.first_seq,
            issued_wall_ms: v1.issued_wall_ms,
        };
        let cert = fields
            .into_cert(v1.signature)
            .map_err(|_| DecodeError::OutOfRange("DER signature length"))?;
        codec::ensure_canonical(bytes, &cert.encoded)?;
        Ok(cert)
    }

    /// Checks that the certificate names `device_id`, is signed by `dik`, and certifies a key
    /// the signature rule accepts ([`UnsignedJournalKeyCert::check_key`]).
    pub fn verify(&self, dik: &DikPublicKey, device_id: &DeviceId) -> Result<(), VerifyError> {
        self.check(dik, device_id).map(|_| ())
    }

    /// [`Self::verify`], returning the checked journal key.
    pub(crate) fn check(
        &self,
        dik: &DikPublicKey,
        device_id: &DeviceId,
    ) -> Result<JournalPublicKey, VerifyError> {
        let fail = |reason| Err(VerifyError { seq: None, reason });
        if &self.fields.device_id != device_id {
            return fail(VerifyReason::WrongDevice);
        }
        if self.fields.first_seq < chain::FIRST_SEQ {
            return fail(VerifyReason::BadCert);
        }
        if !dik.verify(&self.signing_bytes(), &self.signature) {
            return fail(VerifyReason::BadCertSignature);
        }
        // After the DIK's signature: a refused key the DIK did certify means the terminal's
        // agent (or whoever drives its TPM) is not ours.
        self.fields
            .check_key()
            .or_else(|e| fail(VerifyReason::BadJournalKey(e)))
    }
}

/// A certificate that [`JournalKeyCert::verify`] accepted for one DIK and one device.
///
/// A verifier given it for the same DIK and device takes its key without checking the DIK's
/// signature again ([`ChainVerifier::resume_verified`](crate::verify::ChainVerifier::resume_verified)):
/// a collector receives a device's certificate with every batch, and an ECDSA P-256 check per
/// batch and per stored certificate was 7% of its store thread. Only [`JournalKeyCert::into_verified`]
/// makes one, so holding one is proof of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCert {
    cert: JournalKeyCert,
    key: JournalPublicKey,
    dik: DikPublicKey,
    device_id: DeviceId,
}

impl JournalKeyCert {
    /// Verifies the certificate ([`Self::verify`]) and keeps the proof of it.
    pub fn into_verified(
        self,
        dik: &DikPublicKey,
        device_id: &DeviceId,
    ) -> Result<VerifiedCert, VerifyError> {
        let key = self.check(dik, device_id)?;
        Ok(VerifiedCert {
            cert: self,
            key,
            dik: dik.clone(),
            device_id: device_id.clone(),
        })
    }
}

impl VerifiedCert {
    /// The certificate.
    pub fn cert(&self) -> &JournalKeyCert {
        &self.cert
    }

    /// The certified journal key, checked against the signature rule.
    pub fn key(&self) -> &JournalPublicKey {
        &self.key
    }

    /// Whether it was verified for `dik` and `device_id`.
    pub fn verified_for(&self, dik: &DikPublicKey, device_id: &DeviceId) -> bool {
        &self.dik == dik && &self.device_id == device_id
    }
}

/// In serde a certificate is its canonical encoding as a byte string.
impl Serialize for JournalKeyCert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        encoded_bytes::serialize(&self.encoded, s)
    }
}

impl<'de> Deserialize<'de> for JournalKeyCert {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = encoded_bytes::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
