//! The aggregated batch verifier against one-by-one verification.

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, VerifyingKey};
use proptest::prelude::*;

use super::*;
use crate::testkit::{self, JournalKey};

/// The group order l, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `n` signed messages, message `i` signed by `keys[i % keys.len()]`.
#[derive(Clone)]
struct Case {
    keys: Vec<[u8; 32]>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<[u8; 64]>,
    signers: Vec<usize>,
}

impl Case {
    fn new(n: usize, keys: &[JournalKey]) -> Self {
        let messages: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("posguard test message {i}").into_bytes())
            .collect();
        let signers: Vec<usize> = (0..n).map(|i| i % keys.len()).collect();
        let signatures = messages
            .iter()
            .zip(&signers)
            .map(|(m, &k)| keys[k].sign(m))
            .collect();
        Self {
            keys: keys.iter().map(JournalKey::public).collect(),
            messages,
            signatures,
            signers,
        }
    }

    fn batch(&self) -> Vec<SignedMessage<'_>> {
        self.messages
            .iter()
            .zip(&self.signatures)
            .zip(&self.signers)
            .map(|((message, signature), &key)| SignedMessage {
                key,
                message,
                signature,
            })
            .collect()
    }

    fn verifies(&self) -> bool {
        verify_ed25519_batch(&self.keys, &self.batch())
    }

    /// Whether signature `i` verifies on its own (the rule's one-by-one check).
    fn one_verifies(&self, i: usize) -> bool {
        crate::keys::verify_ed25519(
            &self.keys[self.signers[i]],
            &self.messages[i],
            &self.signatures[i],
        )
    }

    /// Whether signature `i` verifies under ed25519-dalek's `verify_strict` (an independent
    /// implementation: it differs from the rule only on mixed-order R, which no random edit of
    /// an honest signature makes).
    fn dalek_strict_verifies(&self, i: usize) -> bool {
        let vk = VerifyingKey::from_bytes(&self.keys[self.signers[i]]).unwrap();
        vk.verify_strict(
            &self.messages[i],
            &Signature::from_bytes(&self.signatures[i]),
        )
        .is_ok()
    }

    /// What verifying each signature on its own says of the whole batch.
    fn each_verifies(&self) -> bool {
        (0..self.signatures.len()).all(|i| self.one_verifies(i))
    }

    fn each_dalek_strict_verifies(&self) -> bool {
        (0..self.signatures.len()).all(|i| self.dalek_strict_verifies(i))
    }
}

fn keys(n: u8) -> Vec<JournalKey> {
    (1..=n).map(testkit::journal_key).collect()
}

/// `s + l`: the same scalar mod l, not canonically encoded.
fn plus_l(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(s[i]) + u16::from(L[i]) + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "s < l < 2^253, so s + l fits");
    out
}

/// A y whose encoding does not decompress (no x on the curve for it).
fn not_a_point() -> [u8; 32] {
    (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| CompressedEdwardsY(*b).decompress().is_none())
        .unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Corruption {
    FlipR,
    FlipS,
    NonCanonicalS,
    RNotAPoint,
}

const CORRUPTIONS: [Corruption; 4] = [
    Corruption::FlipR,
    Corruption::FlipS,
    Corruption::NonCanonicalS,
    Corruption::RNotAPoint,
];

fn corrupt(sig: &mut [u8; 64], how: Corruption) {
    match how {
        Corruption::FlipR => sig[7] ^= 0x20,
        Corruption::FlipS => sig[40] ^= 0x01,
        Corruption::NonCanonicalS => {
            let s = plus_l(&sig[32..]);
            sig[32..].copy_from_slice(&s);
        }
        Corruption::RNotAPoint => sig[..32].copy_from_slice(&not_a_point()),
    }
}

#[test]
fn valid_batches_verify_under_one_and_several_keys() {
    for key_count in 1..=3 {
        let keys = keys(key_count);
        for n in [1, 2, 255, 256, 257, 1000] {
            let case = Case::new(n, &keys);
            assert!(case.verifies(), "{n} signatures under {key_count} key(s)");
        }
    }
}

#[test]
fn an_empty_batch_verifies() {
    assert!(verify_ed25519_batch(&[], &[]));
}

#[test]
fn one_corrupted_signature_fails_the_batch_wherever_it_is() {
    for key_count in [1, 3] {
        let keys = keys(key_count);
        let clean = Case::new(257, &keys);
        for at in [0, 128, 256] {
            for how in CORRUPTIONS {
                let mut case = clean.clone();
                corrupt(&mut case.signatures[at], how);
                assert!(!case.one_verifies(at), "{how:?} at {at} is a bad signature");
                assert!(!case.verifies(), "{how:?} at {at} under {key_count} key(s)");
            }
        }
    }
}

#[test]
fn a_valid_signature_on_another_message_is_refused() {
    let mut case = Case::new(10, &keys(1));
    case.signatures.swap(3, 4);
    assert!(!case.verifies());
    // Also when the moved signature is the only one.
    let mut one = Case::new(2, &keys(1));
    one.messages.truncate(1);
    one.signers.truncate(1);
    one.signatures.remove(0);
    assert!(!one.verifies());
}

#[test]
fn a_signature_under_another_key_is_refused() {
    let mut case = Case::new(10, &keys(2));
    case.signers[5] = 1 - case.signers[5];
    assert!(!case.verifies());
}

#[test]
fn bad_key_lists_are_refused_not_panicked_on() {
    let case = Case::new(3, &keys(1));
    let mut batch = case.batch();
    batch[1].key = 1;
    assert!(!verify_ed25519_batch(&case.keys, &batch));
    let mut bad_keys = case.keys.clone();
    bad_keys[0] = not_a_point();
    assert!(!verify_ed25519_batch(&bad_keys, &case.batch()));
}

#[test]
fn a_non_canonical_r_is_refused_as_single_verification_refuses_it() {
    // The identity as R, encoded as y = p + 1, in an otherwise good batch: whatever s says,
    // the bytes can never equal a re-encoded R.
    let mut case = Case::new(4, &keys(1));
    let mut r = [0xff; 32];
    r[0] = 0xee;
    r[31] = 0x7f;
    case.signatures[2][..32].copy_from_slice(&r);
    assert!(!case.one_verifies(2));
    assert!(!case.verifies());
}

#[test]
fn the_zs_are_distinct_and_depend_on_the_seed() {
    let a = derive_zs(&[1; 64], 9);
    let b = derive_zs(&[2; 64], 9);
    assert_eq!(a.len(), 9);
    assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    for (i, x) in a.iter().enumerate() {
        assert!(a[i + 1..].iter().all(|y| x != y));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn agrees_with_one_by_one_verification(
        n in 1usize..12,
        key_count in 1u8..=3,
        edits in proptest::collection::vec((any::<usize>(), any::<usize>(), 1u8..=255, 0u8..4), 0..3),
    ) {
        let mut case = Case::new(n, &keys(key_count));
        for (which, byte, flip, kind) in edits {
            let i = which % n;
            match kind {
                // Any byte of R or s.
                0 => case.signatures[i][byte % 64] ^= flip,
                // The message.
                1 => {
                    let m = &mut case.messages[i];
                    let at = byte % m.len();
                    m[at] ^= flip;
                }
                // Another message's signature.
                2 => {
                    let j = byte % n;
                    case.signatures[i] = case.signatures[j];
                }
                // Another key.
                _ => case.signers[i] = byte % case.keys.len(),
            }
        }
        prop_assert_eq!(case.verifies(), case.each_verifies());
        prop_assert_eq!(case.verifies(), case.each_dalek_strict_verifies());
    }
}
