//! The rule's parts on their own: which keys it takes, a known-answer vector, and that the
//! one-by-one check follows the cofactored equation.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;

use super::*;
use crate::testkit::{self, edge};

fn hex32(s: &str) -> [u8; 32] {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

#[test]
fn rfc8032_test_1_verifies() {
    // RFC 8032 §7.1, TEST 1 (empty message).
    let public = hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let r = hex32("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155");
    let s = hex32("5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
    let sig = edge::join(&r, &s);
    assert!(verify_bytes(&public, b"", &sig));
    assert!(!verify_bytes(&public, b"x", &sig));
    assert_eq!(
        JournalPublicKey::from_bytes(&public).unwrap().as_bytes(),
        &public
    );
}

#[test]
fn keys_are_refused_for_each_reason() {
    let good = testkit::journal_key(1).public();
    assert!(JournalPublicKey::from_bytes(&good).is_ok());
    let point = CompressedEdwardsY(good).decompress().unwrap();
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        let small = t.compress().to_bytes();
        assert_eq!(
            JournalPublicKey::from_bytes(&small),
            Err(Ed25519KeyError::SmallOrder),
            "{i}"
        );
        if i > 0 {
            let mixed = (point + t).compress().to_bytes();
            assert_eq!(
                JournalPublicKey::from_bytes(&mixed),
                Err(Ed25519KeyError::MixedOrder),
                "{i}"
            );
        }
    }
    for bad in [
        edge::identity_y_p_plus_one(),
        edge::identity_minus_zero(),
        edge::order_two_minus_zero(),
    ] {
        assert_eq!(
            JournalPublicKey::from_bytes(&bad),
            Err(Ed25519KeyError::NonCanonical)
        );
    }
    let not_a_point = (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| CompressedEdwardsY(*b).decompress().is_none())
        .unwrap();
    assert_eq!(
        JournalPublicKey::from_bytes(&not_a_point),
        Err(Ed25519KeyError::NotAPoint)
    );
}

#[test]
fn every_key_case_of_the_testkit_is_refused_by_the_key_check() {
    for case in edge::key_cases(1) {
        assert!(
            JournalPublicKey::from_bytes(&case.signer.public_bytes).is_err(),
            "{}",
            case.name
        );
    }
}

#[test]
fn the_one_by_one_check_is_cofactored() {
    // An R with a torsion component: refused by a cofactorless verifier (ring), accepted by
    // the rule, whose equation multiplies by 8.
    let signer = edge::EdgeSigner::of_seed(1);
    let key = JournalPublicKey::from_bytes(&signer.public_bytes).unwrap();
    for (t, torsion) in EIGHT_TORSION.iter().enumerate().skip(1) {
        let sig = signer.sign_with(b"m", 0, *torsion, None);
        assert!(verify(&key, b"m", &sig), "{t}");
        let ring =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, signer.public_bytes);
        assert!(ring.verify(b"m", &sig).is_err(), "{t}");
        assert!(!verify(&key, b"n", &sig), "{t}");
    }
    // An honest signature verifies under ring and the rule alike.
    let sig = signer.sign(b"m");
    assert!(verify(&key, b"m", &sig));
    let ring =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, signer.public_bytes);
    assert!(ring.verify(b"m", &sig).is_ok());
}

#[test]
fn non_canonical_point_encodings_are_recognised() {
    let mut y_is_p = [0xff; 32];
    y_is_p[0] = 0xed;
    y_is_p[31] = 0x7f;
    let mut y_is_p_plus_one = y_is_p;
    y_is_p_plus_one[0] = 0xee;
    let mut minus_zero_x = [0u8; 32];
    minus_zero_x[0] = 1;
    minus_zero_x[31] = 0x80;
    let mut y_is_minus_one_signed = y_is_p;
    y_is_minus_one_signed[0] = 0xec;
    y_is_minus_one_signed[31] = 0xff;
    for bad in [y_is_p, y_is_p_plus_one, minus_zero_x, y_is_minus_one_signed] {
        // Each decodes to a point, so only the encoding check refuses it.
        assert!(CompressedEdwardsY(bad).decompress().is_some(), "{bad:x?}");
        assert!(!is_canonical_encoding(&bad), "{bad:x?}");
    }
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(is_canonical_encoding(&identity));
    let mut y_is_minus_one = y_is_minus_one_signed;
    y_is_minus_one[31] = 0x7f;
    assert!(is_canonical_encoding(&y_is_minus_one));
    assert!(is_canonical_encoding(&testkit::journal_key(1).public()));
}

#[test]
fn the_small_order_table_is_exactly_the_small_order_points() {
    // Every small-order point, and points of every other kind (prime order, mixed order).
    let good = CompressedEdwardsY(testkit::journal_key(1).public())
        .decompress()
        .unwrap();
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        for p in [*t, good + t, good * Scalar::from(i as u64 + 2) + t] {
            let bytes = p.compress().to_bytes();
            assert_eq!(is_small_order_encoding(&bytes), p.is_small_order(), "{i}");
        }
    }
    // Non-canonical encodings of small-order points are refused before the table is asked.
    for bad in [edge::identity_y_p_plus_one(), edge::identity_minus_zero()] {
        assert!(!is_canonical_encoding(&bad));
    }
}
