//! The one Ed25519 signature rule of posguard (docs/audit-format.md, "Signature rule").
//!
//! Every path that checks a journal signature — the collector's grouped check
//! ([`crate::verify::precheck`]), the one-by-one check of the chain walk, `verify-journal` and
//! `restore` — applies this rule through the functions here, so a record gets the same verdict
//! however it is checked and however records are grouped:
//!
//! 1. the public key A is the canonical encoding of a point of prime order ℓ (not small order,
//!    no torsion component): [`JournalPublicKey::from_bytes`], checked once per key, when its
//!    certificate is made and when it is accepted;
//! 2. the signature's `S` is below ℓ, its `R` is canonically encoded, decodes to a point, and
//!    that point is not of small order ([`parse_signature`]);
//! 3. with `k = SHA-512(R || A || M) mod ℓ`, the cofactored equation `[8]([S]B − R − [k]A) = 0`
//!    holds ([`holds`]).
//!
//! Why cofactored: a grouped check sums many signatures' equations with random coefficients, and
//! without the factor 8 a small-order error in one signature vanishes whenever its coefficient
//! is a multiple of the error's order (1 chance in 2 to 8), which the holder of a journal key can
//! retry for offline. With it, the grouped check accepts exactly the signatures the one-by-one
//! check accepts (up to a 2^-128 chance). The price is that an `R` with a small torsion component
//! added (only the key's holder can make one; it changes nothing signed) passes every path, where
//! a cofactorless verifier (ring, OpenSSL, libsodium) refuses it. Refusing such an `R` instead
//! would need a full scalar multiplication per signature (`[ℓ]R`), tripling the collector's cost.

use std::sync::OnceLock;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ring::digest;

/// Why 32 bytes were refused as an Ed25519 journal (or operator) public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ed25519KeyError {
    /// Not the canonical encoding (y at or above p, or a sign bit on x = 0).
    #[error("the public key is not a canonical point encoding")]
    NonCanonical,
    /// No curve point has this y.
    #[error("the public key is not a curve point")]
    NotAPoint,
    /// A point of order 1, 2, 4 or 8: any signature would verify for any message.
    #[error("the public key is a small-order point")]
    SmallOrder,
    /// A point with a torsion component (not of prime order).
    #[error("the public key is not of prime order (it has a torsion component)")]
    MixedOrder,
}

/// An Ed25519 public key that satisfies point 1 of the rule: canonical, prime order.
#[derive(Clone, Copy)]
pub struct JournalPublicKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl JournalPublicKey {
    /// Checks `bytes` against point 1 of the rule. Costs one scalar multiplication (~20 µs):
    /// done once per key, not per signature.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Ed25519KeyError> {
        if !is_canonical_encoding(bytes) {
            return Err(Ed25519KeyError::NonCanonical);
        }
        let point = CompressedEdwardsY(*bytes)
            .decompress()
            .ok_or(Ed25519KeyError::NotAPoint)?;
        if point.is_small_order() {
            return Err(Ed25519KeyError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(Ed25519KeyError::MixedOrder);
        }
        Ok(Self {
            bytes: *bytes,
            point,
        })
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub(crate) fn point(&self) -> &EdwardsPoint {
        &self.point
    }
}

impl PartialEq for JournalPublicKey {
    fn eq(&self, other: &Self) -> bool {
        // A canonical encoding names one point: comparing bytes compares points.
        self.bytes == other.bytes
    }
}

impl Eq for JournalPublicKey {}

impl core::fmt::Debug for JournalPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "JournalPublicKey({})", crate::codec::to_hex(&self.bytes))
    }
}

/// A signature that satisfies point 2 of the rule.
pub(crate) struct SignatureParts {
    pub(crate) r: EdwardsPoint,
    pub(crate) s: Scalar,
}

/// Point 2 of the rule: `S < ℓ`, `R` canonical, a point, not of small order.
pub(crate) fn parse_signature(signature: &[u8; 64]) -> Option<SignatureParts> {
    let (r_bytes, s_bytes) = split(signature);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    if !is_canonical_encoding(&r_bytes) || is_small_order_encoding(&r_bytes) {
        return None;
    }
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    Some(SignatureParts { r, s })
}

/// `R` and `S` of a signature `R || S`.
pub(crate) fn split(signature: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    let (rb, sb) = signature.split_at(32);
    r.copy_from_slice(rb);
    s.copy_from_slice(sb);
    (r, s)
}

/// `SHA-512(R || A || M)`, before reduction (the grouped check also hashes it into its seed).
pub(crate) fn challenge_hash(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> [u8; 64] {
    let mut h = digest::Context::new(&digest::SHA512);
    h.update(r);
    h.update(a);
    h.update(message);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(h.finish().as_ref());
    wide
}

/// Point 3 of the rule, given the value of the left side before the factor 8: whether
/// `[8]point` is the identity. The one-by-one check passes `[S]B − R − [k]A`; the grouped check
/// passes its sum `Σ z_i ([S_i]B − R_i − [k_i]A_i)`.
pub(crate) fn holds(point: &EdwardsPoint) -> bool {
    point.mul_by_cofactor().is_identity()
}

/// The whole rule for one signature, the key already checked.
pub fn verify(key: &JournalPublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
    let Some(parts) = parse_signature(signature) else {
        return false;
    };
    let (r_bytes, _) = split(signature);
    let k = Scalar::from_bytes_mod_order_wide(&challenge_hash(&r_bytes, &key.bytes, message));
    // [S]B − [k]A in one double-scalar multiplication, then − R.
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-k, &key.point, &parts.s);
    holds(&(sb_minus_ka - parts.r))
}

/// The whole rule for one signature under a key given as bytes (points 1 to 3).
pub fn verify_bytes(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    JournalPublicKey::from_bytes(public_key).is_ok_and(|key| verify(&key, message, signature))
}

/// The base point, for the grouped check's multiscalar multiplication.
pub(crate) const BASE: EdwardsPoint = ED25519_BASEPOINT_POINT;

/// Whether the canonical encoding `bytes` is that of a point of small order. Each of the eight
/// small-order points has one canonical encoding, so for a canonical encoding this is exactly
/// `[8]P = 0`, for 8 byte comparisons instead of three point doublings (which were 6% of the
/// grouped check).
pub(crate) fn is_small_order_encoding(bytes: &[u8; 32]) -> bool {
    static ENCODINGS: OnceLock<[[u8; 32]; 8]> = OnceLock::new();
    ENCODINGS
        .get_or_init(|| EIGHT_TORSION.map(|t| t.compress().to_bytes()))
        .contains(bytes)
}

/// Whether `bytes` is the canonical encoding of whatever point it decodes to: y below
/// p = 2^255 - 19, and no sign bit on x = 0 (y = ±1). Decompression alone accepts the others.
pub(crate) fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    let [low, middle @ .., top] = bytes;
    let y_at_least_p = *top & 0x7f == 0x7f && middle.iter().all(|&b| b == 0xff) && *low >= 0xed;
    let sign = *top & 0x80 != 0;
    let y_is_one = *low == 1 && middle.iter().all(|&b| b == 0) && *top & 0x7f == 0;
    let y_is_minus_one = *low == 0xec && middle.iter().all(|&b| b == 0xff) && *top & 0x7f == 0x7f;
    !y_at_least_p && !(sign && (y_is_one || y_is_minus_one))
}

#[cfg(test)]
mod tests;
