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
//! The inputs are checked and the sum is tested exactly as one-by-one verification does it, by
//! the same functions ([`crate::ed25519`]: keys of prime order, `S < ℓ`, `R` canonical and not
//! of small order, and the cofactored equation): the sum is multiplied by 8 before the identity
//! test. Each term `[S_i]B − R_i − [k_i]A_i` is then a torsion point exactly when signature `i`
//! satisfies the rule, and the factor 8 removes torsion points whatever the `z_i`, so the group
//! passes exactly when every signature would pass alone (up to a 2^-128 chance over the `z_i`).
//! Without the factor 8, a signature whose error is a small-order point passed whenever its
//! `z_i` was a multiple of that point's order (1 chance in 2 to 8, retried offline by the key's
//! holder), and the collector stored records that one-by-one verification then refused. The
//! key terms folded per key are the same group element as one term per signature, so folding
//! changes nothing to that.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use ring::digest;

use crate::ed25519::{self, JournalPublicKey};

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

/// Verifies every signature of `batch` at once, each under `keys[key]`: true exactly when every
/// one satisfies the signature rule on its own (up to a 2^-128 chance). False as well if a key
/// does not satisfy the rule or an index is out of range. An empty batch is valid.
///
/// Cheapest when many signatures share a key: the work per signature is a hash, a point
/// decompression and one point with a 128-bit scalar in the multiscalar multiplication.
pub fn verify_ed25519_batch(keys: &[[u8; 32]], batch: &[SignedMessage<'_>]) -> bool {
    let parsed: Option<Vec<JournalPublicKey>> = keys
        .iter()
        .map(|k| JournalPublicKey::from_bytes(k).ok())
        .collect();
    parsed.is_some_and(|keys| verify_batch(&keys, batch))
}

/// [`verify_ed25519_batch`] with keys already checked against the signature rule, as the
/// collector's precheck has them (checking a key costs a scalar multiplication).
pub fn verify_ed25519_batch_checked(
    keys: &[JournalPublicKey],
    batch: &[SignedMessage<'_>],
) -> bool {
    verify_batch(keys, batch)
}

/// [`verify_ed25519_batch`] with the keys already parsed.
pub(crate) fn verify_batch(keys: &[JournalPublicKey], batch: &[SignedMessage<'_>]) -> bool {
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
        let Some(parts) = ed25519::parse_signature(item.signature) else {
            return false;
        };
        let (r_bytes, s_bytes) = ed25519::split(item.signature);
        let wide = ed25519::challenge_hash(&r_bytes, key.as_bytes(), item.message);
        seed.update(&wide);
        seed.update(&s_bytes);
        rs.push(parts.r);
        ss.push(parts.s);
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
    points.push(ed25519::BASE);
    scalars.extend(zs);
    points.extend(rs);
    for (a, key) in a_coefficients.iter().zip(keys) {
        if let Some(a) = a {
            scalars.push(*a);
            points.push(*key.point());
        }
    }
    if scalars.len() != points.len() {
        // curve25519-dalek asserts equal lengths; they are equal by construction (one scalar
        // pushed with each point, |zs| = |rs| = batch length), so this is never taken.
        return false;
    }
    // The rule's equation, as one-by-one verification tests it: cofactored.
    ed25519::holds(&EdwardsPoint::vartime_multiscalar_mul(&scalars, &points))
}

/// The batch's `z_i`: 128-bit scalars from SHA-512 in counter mode over `seed`.
///
/// They must be unpredictable to whoever chose the signatures, or a forger could pick an
/// invalid signature whose error cancels against another's. proto has no randomness of its own
/// (it is pure), so, as ed25519-dalek does with its merlin transcript, the `z_i` are derived
/// from the whole batch: `seed` hashes every `H(R || A || M)` (so every R, A and message) and
/// every `s`. Changing any signature to steer the `z_i` changes all of them unpredictably, so
/// a forger is left guessing 128-bit values, as with fresh random ones: being deterministic
/// only lets them retry offline, one whole batch per ~2^-128 chance. (That holds because the
/// sum is multiplied by the cofactor: a cofactorless test left small-order errors to cancel
/// with a chance of 1/8 or more per try.)
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

#[cfg(test)]
mod tests;
