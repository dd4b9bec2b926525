//! Ed25519 edge cases over real records: the classes of "Taming the many EdDSAs" (Chalkias,
//! Garillot, Nikolaenko, 2020) and of Wycheproof's Ed25519 vectors, made by the holder of a
//! journal key (who knows its secret scalar) for any message, so that they can sign a record
//! in a real chain.
//!
//! The vectors themselves cannot be downloaded here and no crate in the registry ships them
//! (ed25519-dalek's `validation_criteria` test reads a file left out of the crate), so each
//! class is rebuilt from its definition.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ring::digest;

/// The group order l, little-endian.
pub(crate) const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The torsion point of order 8 used for mixed-order points.
pub(crate) fn t8() -> EdwardsPoint {
    EIGHT_TORSION[1]
}

/// The identity encoded as y = p + 1 (decodes; not canonical).
pub(crate) fn identity_y_p_plus_one() -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = 0xee;
    b[31] = 0x7f;
    b
}

/// The identity with the sign bit of x = 0 set (decodes; not canonical).
pub(crate) fn identity_minus_zero() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = 1;
    b[31] = 0x80;
    b
}

/// The point (0, -1) of order 2 with the sign bit set (decodes; not canonical).
pub(crate) fn order_two_minus_zero() -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = 0xec;
    b
}

/// A signer holding the secret scalar of a journal key, publishing `public` (the key's point
/// plus `key_torsion`, encoded as `public_bytes`).
#[derive(Clone)]
pub(crate) struct EdgeSigner {
    pub(crate) secret: Scalar,
    pub(crate) public: EdwardsPoint,
    pub(crate) public_bytes: [u8; 32],
    nonce_seed: [u8; 32],
}

impl EdgeSigner {
    /// The signer of `testkit::journal_key(seed)` (RFC 8032 key derivation from the seed).
    pub(crate) fn of_seed(seed: u8) -> Self {
        let h = digest::digest(&digest::SHA512, &[seed; 32]);
        let mut a = [0u8; 32];
        a.copy_from_slice(&h.as_ref()[..32]);
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        let secret = Scalar::from_bytes_mod_order(a);
        let public = B * secret;
        let mut nonce_seed = [0u8; 32];
        nonce_seed.copy_from_slice(&h.as_ref()[32..]);
        let s = Self {
            secret,
            public,
            public_bytes: public.compress().to_bytes(),
            nonce_seed,
        };
        assert_eq!(s.public_bytes, super::journal_key(seed).public());
        s
    }

    /// The same secret with `torsion` added to the public point (a mixed-order key).
    pub(crate) fn with_key_torsion(&self, torsion: EdwardsPoint) -> Self {
        let public = self.public + torsion;
        Self {
            public,
            public_bytes: public.compress().to_bytes(),
            ..self.clone()
        }
    }

    /// A small-order public key (the secret is then meaningless: s = r signs anything under
    /// the cofactored equation).
    pub(crate) fn small_order(torsion: EdwardsPoint, public_bytes: [u8; 32]) -> Self {
        Self {
            secret: Scalar::ZERO,
            public: torsion,
            public_bytes,
            nonce_seed: [9; 32],
        }
    }

    fn nonce(&self, message: &[u8], attempt: u64) -> Scalar {
        let mut h = digest::Context::new(&digest::SHA512);
        h.update(&self.nonce_seed);
        h.update(&attempt.to_le_bytes());
        h.update(message);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(h.finish().as_ref());
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    fn k(&self, r_bytes: &[u8; 32], message: &[u8]) -> Scalar {
        let mut h = digest::Context::new(&digest::SHA512);
        h.update(r_bytes);
        h.update(&self.public_bytes);
        h.update(message);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(h.finish().as_ref());
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    /// `R = [r]B + r_torsion` (encoded as `r_bytes` if given), `S = r + k·secret`: valid under
    /// the cofactored equation whenever the torsion parts are the only errors.
    pub(crate) fn sign_with(
        &self,
        message: &[u8],
        attempt: u64,
        r_torsion: EdwardsPoint,
        r_bytes: Option<[u8; 32]>,
    ) -> [u8; 64] {
        let r = self.nonce(message, attempt);
        let big_r = B * r + r_torsion;
        let r_bytes = r_bytes.unwrap_or_else(|| big_r.compress().to_bytes());
        let s = r + self.k(&r_bytes, message) * self.secret;
        join(&r_bytes, &s.to_bytes())
    }

    /// `R` a small-order point (`r_bytes` its encoding, canonical or not), `S = k·secret`.
    pub(crate) fn sign_small_order_r(&self, message: &[u8], r_bytes: [u8; 32]) -> [u8; 64] {
        let s = self.k(&r_bytes, message) * self.secret;
        join(&r_bytes, &s.to_bytes())
    }

    /// An honest signature (the same as ring's for a prime-order key, up to the nonce).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.sign_with(message, 0, EdwardsPoint::default(), None)
    }

    /// The error term `[S]B − R − [k]A` of `signature`, if R decodes and S is below 2^253.
    pub(crate) fn error_term(&self, message: &[u8], signature: &[u8; 64]) -> Option<EdwardsPoint> {
        let (r_bytes, s_bytes) = crate::ed25519::split(signature);
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        let s = Scalar::from_bytes_mod_order(s_bytes);
        Some(B * s - r - self.public * self.k(&r_bytes, message))
    }
}

pub(crate) fn join(r: &[u8; 32], s: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r);
    out[32..].copy_from_slice(s);
    out
}

/// `s + n·l` as 32 little-endian bytes, if it fits.
pub(crate) fn plus_l_times(s: &[u8], n: u16) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u32;
    for i in 0..32 {
        let v = u32::from(s[i]) + u32::from(L[i]) * u32::from(n) + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    (carry == 0).then_some(out)
}

/// Whether the record's key is refused, or only the signature (see [`signature_case`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every path accepts it.
    Accepted,
    /// Every path refuses it.
    Refused,
}

/// A class of signature under a good (prime-order) key, made over `message`.
pub(crate) struct SignatureCase {
    pub(crate) name: &'static str,
    pub(crate) verdict: Verdict,
    pub(crate) sign: fn(&EdgeSigner, &[u8], &[u8; 64]) -> [u8; 64],
}

fn with_s(sig: &[u8; 64], s: [u8; 32]) -> [u8; 64] {
    let (r, _) = crate::ed25519::split(sig);
    join(&r, &s)
}

/// Every signature class under a prime-order key, given the signer, the message and another
/// message's honest signature.
pub(crate) fn signature_cases() -> Vec<SignatureCase> {
    use Verdict::*;
    let case = |name, verdict, sign| SignatureCase {
        name,
        verdict,
        sign,
    };
    vec![
        case("honest", Accepted, |k, m, _| k.sign(m)),
        // Taming: mixed-order R, "valid only with the cofactor": the rule's cofactored equation
        // accepts it on every path (docs/audit-format.md, "Signature rule").
        case(
            "mixed-order R (valid only cofactored)",
            Accepted,
            |k, m, _| k.sign_with(m, 0, t8(), None),
        ),
        case("mixed-order R, order-2 torsion", Accepted, |k, m, _| {
            k.sign_with(m, 0, EIGHT_TORSION[4], None)
        }),
        // Taming: small-order R; the identity passes the cofactorless equation too.
        case("small-order R (order 8)", Refused, |k, m, _| {
            k.sign_small_order_r(m, t8().compress().to_bytes())
        }),
        case("small-order R (identity)", Refused, |k, m, _| {
            k.sign_small_order_r(m, EdwardsPoint::default().compress().to_bytes())
        }),
        case("small-order R (order 2)", Refused, |k, m, _| {
            k.sign_small_order_r(m, EIGHT_TORSION[4].compress().to_bytes())
        }),
        // Taming: non-canonical R (every such R that can sign is small-order).
        case(
            "non-canonical R: identity as y = p + 1",
            Refused,
            |k, m, _| k.sign_small_order_r(m, identity_y_p_plus_one()),
        ),
        case(
            "non-canonical R: identity with x = -0",
            Refused,
            |k, m, _| k.sign_small_order_r(m, identity_minus_zero()),
        ),
        case(
            "non-canonical R: (0, -1) with x = -0",
            Refused,
            |k, m, _| k.sign_small_order_r(m, order_two_minus_zero()),
        ),
        // S at or above l.
        case("S = s + l", Refused, |k, m, _| {
            let sig = k.sign(m);
            with_s(&sig, plus_l_times(&sig[32..], 1).unwrap())
        }),
        case("S = l", Refused, |k, m, _| with_s(&k.sign(m), L)),
        case(
            "S non-reduced, top bit set (s + n·l)",
            Refused,
            |k, m, _| {
                let sig = k.sign(m);
                let s = (8..=15)
                    .filter_map(|n| plus_l_times(&sig[32..], n))
                    .find(|s| s[31] & 0x80 != 0)
                    .unwrap();
                with_s(&sig, s)
            },
        ),
        // Wycheproof's Ed25519 classes that a fixed 64-byte field can hold.
        case("wycheproof: S = 0, R = 0", Refused, |_, _, _| [0u8; 64]),
        case("wycheproof: all ones", Refused, |_, _, _| [0xff; 64]),
        case("wycheproof: S = 0", Refused, |k, m, _| {
            with_s(&k.sign(m), [0; 32])
        }),
        case("wycheproof: S = l - 1", Refused, |k, m, _| {
            let mut s = L;
            s[0] -= 1;
            with_s(&k.sign(m), s)
        }),
        case("wycheproof: R and S swapped", Refused, |k, m, _| {
            let (r, s) = crate::ed25519::split(&k.sign(m));
            join(&s, &r)
        }),
        case("wycheproof: R = 0 (order-4 point)", Refused, |k, m, _| {
            let (_, s) = crate::ed25519::split(&k.sign(m));
            join(&[0; 32], &s)
        }),
        case("wycheproof: bit flipped in R", Refused, |k, m, _| {
            let mut s = k.sign(m);
            s[0] ^= 1;
            s
        }),
        case("wycheproof: bit flipped in R's sign", Refused, |k, m, _| {
            let mut s = k.sign(m);
            s[31] ^= 0x80;
            s
        }),
        case("wycheproof: bit flipped in S", Refused, |k, m, _| {
            let mut s = k.sign(m);
            s[32] ^= 1;
            s
        }),
        case("wycheproof: top bit of S flipped", Refused, |k, m, _| {
            let mut s = k.sign(m);
            s[63] ^= 0x80;
            s
        }),
        case(
            "wycheproof: another message's signature",
            Refused,
            |_, _, other| *other,
        ),
    ]
}

/// A class of journal key the rule refuses, with a signature over `message` that a laxer
/// verifier accepts (cofactored always; cofactorless for some messages).
pub(crate) struct KeyCase {
    pub(crate) name: &'static str,
    pub(crate) signer: EdgeSigner,
}

pub(crate) fn key_cases(seed: u8) -> Vec<KeyCase> {
    let good = EdgeSigner::of_seed(seed);
    let case = |name, signer| KeyCase { name, signer };
    vec![
        case(
            "small-order A (order 8)",
            EdgeSigner::small_order(t8(), t8().compress().to_bytes()),
        ),
        case(
            "small-order A (identity)",
            EdgeSigner::small_order(
                EdwardsPoint::default(),
                EdwardsPoint::default().compress().to_bytes(),
            ),
        ),
        case(
            "non-canonical A: identity as y = p + 1",
            EdgeSigner::small_order(EdwardsPoint::default(), identity_y_p_plus_one()),
        ),
        case(
            "non-canonical A: (0, -1) with x = -0",
            EdgeSigner::small_order(EIGHT_TORSION[4], order_two_minus_zero()),
        ),
        case(
            "mixed-order A (order 8 torsion)",
            good.with_key_torsion(t8()),
        ),
        case(
            "mixed-order A (order 2 torsion)",
            good.with_key_torsion(EIGHT_TORSION[4]),
        ),
    ]
}
