use proptest::prelude::*;

use super::*;
use crate::testkit;

fn good() -> (testkit::Dik, JournalKeyCert) {
    let dik = testkit::dik();
    let key = testkit::journal_key(1);
    let cert = testkit::cert(&dik, &key, testkit::boot(1), 1);
    (dik, cert)
}

#[test]
fn round_trip_and_verify() {
    let (dik, cert) = good();
    let back = JournalKeyCert::from_bytes(cert.as_bytes()).unwrap();
    assert_eq!(back, cert);
    back.verify(&dik.public(), &testkit::device()).unwrap();
    assert_eq!(back.journal_key_id(), testkit::journal_key(1).key_id());
}

#[test]
fn signing_bytes_are_tag_then_encoding_without_signature() {
    let (_, cert) = good();
    let sb = cert.signing_bytes();
    let unsigned_len = cert.as_bytes().len() - cert.signature().len() - 1;
    assert_eq!(&sb[..JOURNAL_KEY_CERT_TAG.len()], JOURNAL_KEY_CERT_TAG);
    assert_eq!(
        &sb[JOURNAL_KEY_CERT_TAG.len()..],
        &cert.as_bytes()[..unsigned_len]
    );
}

#[test]
fn layout_is_postcard() {
    let (_, cert) = good();
    let f = cert.fields();
    let shadow = (
        1u16,
        f.device_id.as_str(),
        f.boot_id,
        f.journal_public_key,
        f.first_seq,
        f.issued_wall_ms,
        cert.signature(),
    );
    assert_eq!(postcard::to_stdvec(&shadow).unwrap(), cert.as_bytes());
}

#[test]
fn wrong_device_or_key_refused() {
    let (dik, cert) = good();
    let other = DeviceId::new("term-0002").unwrap();
    assert_eq!(
        cert.verify(&dik.public(), &other).unwrap_err().reason,
        VerifyReason::WrongDevice
    );
    let mut point = dik.public_point();
    point[64] ^= 1; // another (probably invalid) point
    let not_dik = DikPublicKey::from_der_or_point(&point).unwrap();
    assert_eq!(
        cert.verify(&not_dik, &testkit::device())
            .unwrap_err()
            .reason,
        VerifyReason::BadCertSignature
    );
}

#[test]
fn first_seq_zero_refused() {
    let dik = testkit::dik();
    let cert = testkit::cert(&dik, &testkit::journal_key(1), testkit::boot(1), 0);
    assert_eq!(
        cert.verify(&dik.public(), &testkit::device())
            .unwrap_err()
            .reason,
        VerifyReason::BadCert
    );
}

#[test]
fn signature_length_bounds() {
    let (_, cert) = good();
    let unsigned = cert.fields().clone();
    assert_eq!(
        unsigned.clone().into_cert(vec![0; 73]).unwrap_err(),
        SignatureLengthError(73)
    );
    assert_eq!(
        unsigned.into_cert(vec![]).unwrap_err(),
        SignatureLengthError(0)
    );
}

#[test]
fn unknown_format_refused() {
    let (_, cert) = good();
    let mut bytes = cert.as_bytes().to_vec();
    bytes[0] = 7;
    assert_eq!(
        JournalKeyCert::from_bytes(&bytes),
        Err(DecodeError::UnsupportedFormat(7))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_byte_change_is_detected(idx: usize, flip in 1u8..=255) {
        let (dik, cert) = good();
        let mut bytes = cert.as_bytes().to_vec();
        let i = idx % bytes.len();
        bytes[i] ^= flip;
        let ok = JournalKeyCert::from_bytes(&bytes)
            .is_ok_and(|c| c.verify(&dik.public(), &testkit::device()).is_ok());
        prop_assert!(!ok);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = JournalKeyCert::from_bytes(&bytes);
    }

    #[test]
    fn round_trip(boot: [u8; 16], pk: [u8; 32], first_seq: u64, wall: u64, sig_len in 8usize..=72) {
        let unsigned = UnsignedJournalKeyCert {
            device_id: testkit::device(),
            boot_id: boot,
            journal_public_key: pk,
            first_seq,
            issued_wall_ms: wall,
        };
        let cert = unsigned.into_cert(vec![0x30; sig_len]).unwrap();
        prop_assert_eq!(JournalKeyCert::from_bytes(cert.as_bytes()).unwrap(), cert);
    }
}
