//! Public keys the verifiers use: the device identity key (ECDSA P-256, held in the TPM) and
//! journal keys (Ed25519, one per agent start). Only verification lives here: proto never holds
//! a private key.

use ring::signature::{self, UnparsedPublicKey};

/// The fixed DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point:
/// `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) }`.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Length of an uncompressed SEC1 P-256 point (`0x04 || x || y`).
pub const P256_POINT_LEN: usize = 65;

/// Longest DER-encoded ECDSA P-256 signature (`SEQUENCE { INTEGER r, INTEGER s }`, each up to
/// 33 bytes with a leading zero).
pub const MAX_DER_SIGNATURE_LEN: usize = 72;

/// Shortest DER-encoded ECDSA signature (`30 06 02 01 r 02 01 s`).
pub const MIN_DER_SIGNATURE_LEN: usize = 8;

/// A DER signature outside [`MIN_DER_SIGNATURE_LEN`]`..=`[`MAX_DER_SIGNATURE_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a DER ECDSA P-256 signature has 8 to 72 bytes, not {0}")]
pub struct SignatureLengthError(pub usize);

pub(crate) fn check_der_signature_len(sig: &[u8]) -> Result<(), SignatureLengthError> {
    if (MIN_DER_SIGNATURE_LEN..=MAX_DER_SIGNATURE_LEN).contains(&sig.len()) {
        Ok(())
    } else {
        Err(SignatureLengthError(sig.len()))
    }
}

/// Why bytes were refused as a device identity public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Neither a 91-byte P-256 SPKI nor a 65-byte point.
    #[error("{0} bytes is neither a P-256 SubjectPublicKeyInfo (91) nor a raw point (65)")]
    WrongLength(usize),
    /// 91 bytes, but not the SPKI of a P-256 key.
    #[error("not a P-256 SubjectPublicKeyInfo")]
    NotP256Spki,
    /// The point is not in uncompressed form (`0x04 || x || y`).
    #[error("not an uncompressed P-256 point")]
    NotUncompressedPoint,
}

/// The device identity key's public half: an uncompressed P-256 point.
///
/// Whether the point is on the curve is checked by `ring` at each verification (an invalid
/// point verifies nothing); `ring` offers no separate check.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DikPublicKey([u8; P256_POINT_LEN]);

impl DikPublicKey {
    /// Accepts a DER SubjectPublicKeyInfo of a P-256 key (as found in the device certificate and
    /// given by `rustls::sign::SigningKey::public_key`), or a raw 65-byte uncompressed point.
    pub fn from_der_or_point(bytes: &[u8]) -> Result<Self, KeyError> {
        let point = match bytes.len() {
            P256_POINT_LEN => bytes,
            91 => bytes
                .strip_prefix(P256_SPKI_PREFIX.as_slice())
                .ok_or(KeyError::NotP256Spki)?,
            other => return Err(KeyError::WrongLength(other)),
        };
        let point = <[u8; P256_POINT_LEN]>::try_from(point)
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        if point.first() != Some(&0x04) {
            return Err(KeyError::NotUncompressedPoint);
        }
        Ok(Self(point))
    }

    /// The uncompressed point.
    pub fn point(&self) -> &[u8; P256_POINT_LEN] {
        &self.0
    }

    /// The key as DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        [P256_SPKI_PREFIX.as_slice(), self.0.as_slice()].concat()
    }

    /// Whether `der_signature` is a valid ECDSA P-256 / SHA-256 signature of `message` (ring
    /// hashes the message, which equals a TPM signing the SHA-256 digest of it).
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.0)
            .verify(message, der_signature)
            .is_ok()
    }
}

impl core::fmt::Debug for DikPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DikPublicKey({})", crate::codec::to_hex(&self.0))
    }
}

/// Whether `signature` is a valid Ed25519 signature of `message` by `public_key` under
/// posguard's one signature rule ([`crate::ed25519`]; docs/audit-format.md, "Signature rule").
pub fn verify_ed25519(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    crate::ed25519::verify_bytes(public_key, message, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn accepts_spki_and_point_of_the_same_key() {
        let dik = testkit::dik();
        let point = dik.public_point();
        let from_point = DikPublicKey::from_der_or_point(&point).unwrap();
        let spki = from_point.to_spki_der();
        assert_eq!(spki.len(), 91);
        assert_eq!(DikPublicKey::from_der_or_point(&spki).unwrap(), from_point);
    }

    #[test]
    fn matches_openssl_spki() {
        // `openssl pkey -pubout -outform DER` of the test key.
        let spki = testkit::DIK_SPKI_DER;
        let key = DikPublicKey::from_der_or_point(spki).unwrap();
        assert_eq!(
            key.point().as_slice(),
            testkit::dik().public_point().as_slice()
        );
    }

    #[test]
    fn refuses_other_shapes() {
        let point = testkit::dik().public_point();
        assert_eq!(
            DikPublicKey::from_der_or_point(&[]),
            Err(KeyError::WrongLength(0))
        );
        assert_eq!(
            DikPublicKey::from_der_or_point(&point[..33]),
            Err(KeyError::WrongLength(33))
        );
        let mut compressed_tag = point.clone();
        compressed_tag[0] = 0x02;
        assert_eq!(
            DikPublicKey::from_der_or_point(&compressed_tag),
            Err(KeyError::NotUncompressedPoint)
        );
        let mut spki = DikPublicKey::from_der_or_point(&point)
            .unwrap()
            .to_spki_der();
        spki[10] ^= 1; // damage the algorithm OID
        assert_eq!(
            DikPublicKey::from_der_or_point(&spki),
            Err(KeyError::NotP256Spki)
        );
    }

    #[test]
    fn verifies_ring_signatures() {
        let dik = testkit::dik();
        let key = DikPublicKey::from_der_or_point(&dik.public_point()).unwrap();
        let sig = dik.sign(b"hello");
        assert!(key.verify(b"hello", &sig));
        assert!(!key.verify(b"hellp", &sig));
    }

    #[test]
    fn ed25519_verifies() {
        let jk = testkit::journal_key(1);
        let sig = jk.sign(b"m");
        assert!(verify_ed25519(&jk.public(), b"m", &sig));
        assert!(!verify_ed25519(&jk.public(), b"n", &sig));
    }
}
