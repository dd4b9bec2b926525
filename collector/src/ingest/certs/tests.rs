#![allow(clippy::unwrap_used, clippy::expect_used)]

use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::verify::VerifyReason;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use super::*;

fn dik() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

fn public(key: &EcdsaKeyPair) -> DikPublicKey {
    DikPublicKey::from_der_or_point(key.public_key().as_ref()).unwrap()
}

fn device() -> DeviceId {
    DeviceId::new("pos-0001").unwrap()
}

fn cert_bytes(dik: &EcdsaKeyPair) -> Vec<u8> {
    let fields = UnsignedJournalKeyCert {
        device_id: device(),
        boot_id: [7; 16],
        // A real Ed25519 key: the signature rule refuses a certificate for any 32 bytes.
        journal_public_key: ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32])
            .unwrap()
            .public_key()
            .as_ref()
            .try_into()
            .unwrap(),
        first_seq: 1,
        issued_wall_ms: 1_700_000_000_000,
    };
    let signature = dik
        .sign(&SystemRandom::new(), &fields.signing_bytes())
        .unwrap();
    fields
        .into_cert(signature.as_ref().to_vec())
        .unwrap()
        .as_bytes()
        .to_vec()
}

#[test]
fn a_certificate_is_verified_once_and_then_served_from_the_cache() {
    let key = dik();
    let bytes = cert_bytes(&key);
    let cache = CertCache::default();
    let first = cache.verified(&bytes, &public(&key), &device()).unwrap();
    assert_eq!(cache.len(), 1);
    let again = cache.verified(&bytes, &public(&key), &device()).unwrap();
    assert_eq!(first, again);
    assert_eq!(again.cert().as_bytes(), bytes.as_slice());
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_cached_certificate_is_checked_again_for_another_peer() {
    let key = dik();
    let bytes = cert_bytes(&key);
    let cache = CertCache::default();
    cache.verified(&bytes, &public(&key), &device()).unwrap();
    // Same bytes, presented by a peer with another DIK: refused, not taken from the cache.
    let other = dik();
    match cache.verified(&bytes, &public(&other), &device()) {
        Err(CertError::Refused(e)) => assert_eq!(e.reason, VerifyReason::BadCertSignature),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And for another device id.
    let elsewhere = DeviceId::new("pos-0002").unwrap();
    match cache.verified(&bytes, &public(&key), &elsewhere) {
        Err(CertError::Refused(e)) => assert_eq!(e.reason, VerifyReason::WrongDevice),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_no_certificate_are_named_undecodable() {
    let key = dik();
    let cache = CertCache::default();
    assert!(matches!(
        cache.verified(b"not a certificate", &public(&key), &device()),
        Err(CertError::Undecodable(_))
    ));
    assert_eq!(cache.len(), 0);
}
