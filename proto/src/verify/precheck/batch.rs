//! Ed25519 batch verification with the public-key terms folded per key.
//!
//! Batch verification checks, for random 128-bit `z_i`,
//!
//! ```text
//! [-Σ z_i s_i] B + Σ [z_i] R_i + Σ [z_i k_i] A_i == identity,   k_i = SHA-512(R_i || A_i || M_i) mod l
//! ```
//!
//! with one multiscalar multiplication. `ed25519_dalek::verify_batch` gives every signature its
//! own `A_i` term: 2n + 1 points, half of them with full-width scalars. A journal is signed by
//! one key per agent start, so here the `A` terms of signatures under the same key are summed
//! into one, `[Σ_{i: A_i = A} z_i k_i] A`: n + 1 + (distinct keys) points, all but a few with
//! 128-bit scalars. The sum is the same group element, so the check accepts exactly what the
//! per-signature form accepts for the same `z_i`.
//!
//! The checks on the inputs mirror ed25519-dalek 2.2's `verify_batch`: `s` must be canonical
//! (below l; no malleable `s + l`), `R` must decompress, and the result is compared with the
//! identity without multiplying by the cofactor. One check is added: `R` must be canonically
//! encoded, because single verification (ring, and ed25519-dalek's `verify`) compares the
//! recomputed `R` byte for byte and so refuses the few non-canonical encodings of a point;
//! without it a batch would accept signatures that one-by-one verification refuses.
//!
//! One difference from single verification remains, as in every cofactorless batch verifier: a
//! signature whose error is a small-order point (a torsion component put into `R` or `A`) can
//! pass when its `z_i` happens to kill that component. Only the holder of the signing key can
//! make such a signature, and it gains nothing it could not get by signing honestly.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use ring::digest;

/// Domain separation for the derivation of the `z_i`.
const Z_TAG: &[u8] = b"posguard/ed25519-batch-z/v1";

/// One signature of a batch given to [`verify_ed25519_batch`].
#[derive(Debug, Clone, Copy)]
pub struct SignedMessage<'a> {
    /// The signer's public key, as an index into the batch's key list.
    pub key: usize,
    /// The signed message.
    pub message: &'a [u8],
    /// The Ed25519 signature, `R || s`.
    pub signature: &'a [u8; 64],
}

/// Verifies every signature of `batch` at once, each under `keys[key]`: true only if all are
/// valid (up to the small-order caveat in the module documentation). False as well if a key
/// is not a valid point or an index is out of range. An empty batch is valid.
///
/// Cheapest when many signatures share a key: the work per signature is a hash, a point
/// decompression and one point with a 128-bit scalar in the multiscalar multiplication.
pub fn verify_ed25519_batch(keys: &[[u8; 32]], batch: &[SignedMessage<'_>]) -> bool {
    let parsed: Option<Vec<VerifyingKey>> = keys
        .iter()
        .map(|k| VerifyingKey::from_bytes(k).ok())
        .collect();
    parsed.is_some_and(|keys| verify_batch(&keys, batch))
}

/// [`verify_ed25519_batch`] with the keys already parsed.
pub(crate) fn verify_batch(keys: &[VerifyingKey], batch: &[SignedMessage<'_>]) -> bool {
    if batch.is_empty() {
        return true;
    }
    let mut rs: Vec<EdwardsPoint> = Vec::with_capacity(batch.len());
    let mut ss: Vec<Scalar> = Vec::with_capacity(batch.len());
    let mut ks: Vec<Scalar> = Vec::with_capacity(batch.len());
    // The seed of the z_i: a hash of every H(R || A || M) and every s, in order.
    let mut seed = digest::Context::new(&digest::SHA512);
    seed.update(Z_TAG);
    seed.update(&u64::try_from(batch.len()).unwrap_or(u64::MAX).to_le_bytes());
    for item in batch {
        let Some(key) = keys.get(item.key) else {
            return false;
        };
        let sig = Signature::from_bytes(item.signature);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        if !is_canonical_encoding(sig.r_bytes()) {
            return false;
        }
        let Some(r) = CompressedEdwardsY(*sig.r_bytes()).decompress() else {
            return false;
        };
        let mut h = digest::Context::new(&digest::SHA512);
        h.update(sig.r_bytes());
        h.update(key.as_bytes());
        h.update(item.message);
        let hram = h.finish();
        let Ok(wide) = <[u8; 64]>::try_from(hram.as_ref()) else {
            return false; // SHA-512 output is 64 bytes: never taken.
        };
        seed.update(&wide);
        seed.update(sig.s_bytes());
        rs.push(r);
        ss.push(s);
        ks.push(Scalar::from_bytes_mod_order_wide(&wide));
    }
    let zs = derive_zs(seed.finish().as_ref(), batch.len());

    // Scalars and points of the multiscalar multiplication: B first, then every R_i, then one
    // A per key that signed something.
    let mut b_coefficient = Scalar::ZERO;
    let mut a_coefficients: Vec<Option<Scalar>> = vec![None; keys.len()];
    for (((z, s), k), item) in zs.iter().zip(&ss).zip(&ks).zip(batch) {
        b_coefficient += z * s;
        if let Some(a) = a_coefficients.get_mut(item.key) {
            *a = Some(a.unwrap_or(Scalar::ZERO) + z * k);
        }
    }
    let mut scalars: Vec<Scalar> =
        Vec::with_capacity(batch.len().saturating_add(keys.len()).saturating_add(1));
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(scalars.capacity());
    scalars.push(-b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    scalars.extend(zs);
    points.extend(rs);
    for (a, key) in a_coefficients.iter().zip(keys) {
        if let Some(a) = a {
            scalars.push(*a);
            points.push(key.to_edwards());
        }
    }
    if scalars.len() != points.len() {
        // curve25519-dalek asserts equal lengths; they are equal by construction (one scalar
        // pushed with each point, |zs| = |rs| = batch length), so this is never taken.
        return false;
    }
    // Cofactorless, as ed25519-dalek's batch check and as single verification.
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points).is_identity()
}

/// The batch's `z_i`: 128-bit scalars from SHA-512 in counter mode over `seed`.
///
/// They must be unpredictable to whoever chose the signatures, or a forger could pick an
/// invalid signature whose error cancels against another's. proto has no randomness of its own
/// (it is pure), so, as ed25519-dalek does with its merlin transcript, the `z_i` are derived
/// from the whole batch: `seed` hashes every `H(R || A || M)` (so every R, A and message) and
/// every `s`. Changing any signature to steer the `z_i` changes all of them unpredictably, so
/// a forger is left guessing 128-bit values, as with fresh random ones: being deterministic
/// only lets them retry offline, one whole batch per ~2^-128 chance. (The small-order caveat in
/// the module documentation is the exception: there the chance per try is 1/8 or more.)
fn derive_zs(seed: &[u8], n: usize) -> Vec<Scalar> {
    let mut zs = Vec::with_capacity(n);
    let mut block: u64 = 0;
    while zs.len() < n {
        let mut h = digest::Context::new(&digest::SHA512);
        h.update(seed);
        h.update(&block.to_le_bytes());
        let out = h.finish();
        for chunk in out
            .as_ref()
            .chunks_exact(16)
            .take(n.saturating_sub(zs.len()))
        {
            if let Ok(bytes) = <[u8; 16]>::try_from(chunk) {
                zs.push(Scalar::from(u128::from_le_bytes(bytes)));
            }
        }
        block = block.wrapping_add(1);
    }
    zs
}

/// Whether `bytes` is the canonical encoding of whatever point it decodes to: y below
/// p = 2^255 - 19, and no sign bit on x = 0 (y = ±1). Single verification re-encodes R and
/// compares bytes, so it refuses every other encoding; decompression alone accepts them.
fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    let [low, middle @ .., top] = bytes;
    let y_at_least_p = *top & 0x7f == 0x7f && middle.iter().all(|&b| b == 0xff) && *low >= 0xed;
    let sign = *top & 0x80 != 0;
    let y_is_one = *low == 1 && middle.iter().all(|&b| b == 0) && *top & 0x7f == 0;
    let y_is_minus_one = *low == 0xec && middle.iter().all(|&b| b == 0xff) && *top & 0x7f == 0x7f;
    !y_at_least_p && !(sign && (y_is_one || y_is_minus_one))
}

#[cfg(test)]
mod tests;
