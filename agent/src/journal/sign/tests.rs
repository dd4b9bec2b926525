//! The agent refuses to certify a journal key the signature rule refuses, before the secure
//! element signs anything; a generated key is always certified, and the collector's verifier
//! accepts the certificate.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use posguard_hal::{KeyMode, SecureElementConfig};
use posguard_proto::ed25519::Ed25519KeyError;
use posguard_proto::keys::DikPublicKey;

use super::*;

fn element(dir: &tempfile::TempDir) -> std::sync::Arc<dyn SecureElement> {
    let se = posguard_hal::open(&SecureElementConfig::software(dir.path().join("keys"))).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    se
}

/// Keys the rule refuses, each with the reason expected.
fn refused_keys() -> Vec<(&'static str, [u8; 32], Ed25519KeyError)> {
    let good = JournalKey::generate().unwrap().public;
    let point = CompressedEdwardsY(good).decompress().unwrap();
    let mut out = vec![];
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        out.push((
            "small-order",
            t.compress().to_bytes(),
            Ed25519KeyError::SmallOrder,
        ));
        if i > 0 {
            let mixed = (point + t).compress().to_bytes();
            out.push(("mixed-order", mixed, Ed25519KeyError::MixedOrder));
        }
    }
    // The identity as y = p + 1, and with the sign bit of x = 0 set.
    let mut y_p_plus_one = [0xff; 32];
    y_p_plus_one[0] = 0xee;
    y_p_plus_one[31] = 0x7f;
    let mut minus_zero = [0u8; 32];
    minus_zero[0] = 1;
    minus_zero[31] = 0x80;
    out.push(("y = p + 1", y_p_plus_one, Ed25519KeyError::NonCanonical));
    out.push(("x = -0", minus_zero, Ed25519KeyError::NonCanonical));
    out
}

#[test]
fn a_generated_key_is_certified_and_the_certificate_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let se = element(&dir);
    let device = DeviceId::new("term-0001").unwrap();
    for _ in 0..32 {
        let key = JournalKey::generate().unwrap();
        let cert = key
            .certify(se.as_ref(), &device, &Clock::system(), 1)
            .unwrap();
        let dik = DikPublicKey::from_der_or_point(&se.identity_public_key().unwrap()).unwrap();
        cert.verify(&dik, &device).unwrap();
    }
}

#[test]
fn keys_the_rule_refuses_are_never_certified() {
    let dir = tempfile::tempdir().unwrap();
    let se = element(&dir);
    let device = DeviceId::new("term-0001").unwrap();
    let cases = refused_keys();
    assert!(cases.len() >= 17);
    for (what, public, reason) in cases {
        match certify_public(public, se.as_ref(), &device, &Clock::system(), 1) {
            Err(JournalError::BadJournalKey(r)) => assert_eq!(r, reason, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}
