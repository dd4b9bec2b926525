use proptest::prelude::*;

use super::*;
use crate::codec::{MAX_BODY_LEN, MAX_RECORD_LEN, Writer};
use crate::testkit::{self, arb};

fn one_record() -> Record {
    testkit::fixture(1).records.remove(0)
}

#[test]
fn layout_is_the_documented_one() {
    let r = one_record();
    let mut expected = vec![1u8, 1]; // format 1, seq 1
    expected.extend_from_slice(r.prev_hash());
    expected.extend_from_slice(r.journal_key_id());
    expected.push(u8::try_from(r.body().len()).unwrap()); // short body: one-byte varint
    expected.extend_from_slice(r.body());
    expected.extend_from_slice(r.hash());
    expected.extend_from_slice(r.signature());
    assert_eq!(r.as_bytes(), expected.as_slice());
}

#[test]
fn layout_is_postcard() {
    let r = one_record();
    let (sig_a, sig_b) = r.signature().split_at(32);
    let sig_a: [u8; 32] = sig_a.try_into().unwrap();
    let sig_b: [u8; 32] = sig_b.try_into().unwrap();
    let shadow = (
        r.format(),
        r.seq(),
        *r.prev_hash(),
        *r.journal_key_id(),
        r.body().to_vec(),
        *r.hash(),
        (sig_a, sig_b),
    );
    assert_eq!(postcard::to_stdvec(&shadow).unwrap(), r.as_bytes());
}

#[test]
fn built_record_hash_and_signature_are_consistent() {
    let f = testkit::fixture(1);
    let r = &f.records[0];
    assert_eq!(r.seq(), 1);
    assert_eq!(
        r.prev_hash(),
        &crate::chain::genesis_hash(&testkit::device())
    );
    assert_eq!(&r.computed_hash(), r.hash());
    assert!(crate::keys::verify_ed25519(
        &f.key.public(),
        &crate::chain::record_signing_message(r.hash()),
        r.signature()
    ));
}

#[test]
fn unknown_format_refused() {
    let mut bytes = one_record().into_bytes();
    bytes[0] = 2;
    assert_eq!(
        Record::from_bytes(&bytes),
        Err(DecodeError::UnsupportedFormat(2))
    );
}

#[test]
fn oversized_input_refused() {
    let bytes = vec![1u8; MAX_RECORD_LEN + 1];
    assert!(matches!(
        Record::from_bytes(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn oversized_body_refused() {
    let mut w = Writer::new();
    w.u16(1);
    w.varint(1);
    w.raw(&[0; 40]);
    w.bytes(&vec![0; MAX_BODY_LEN + 1]);
    w.raw(&[0; 96]);
    assert!(matches!(
        Record::from_bytes(&w.into_vec()),
        Err(DecodeError::OutOfRange(_))
    ));
}

#[test]
fn seq_exhausted() {
    let f = testkit::fixture(0);
    let head = ChainHead {
        seq: u64::MAX,
        hash: [0; 32],
    };
    let e = testkit::routine_event(testkit::boot(1), 0);
    assert_eq!(
        Record::build(&head, f.key.key_id(), &e, |m| f.key.sign(m)),
        Err(BuildError::SeqExhausted)
    );
}

#[test]
fn nested_in_serde_as_bytes() {
    let f = testkit::fixture(3);
    let batch = postcard::to_stdvec(&f.records).unwrap();
    let back: Vec<Record> = postcard::from_bytes(&batch).unwrap();
    assert_eq!(back, f.records);
    let mut bad = batch.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1; // still decodes as a record: the signature byte is not checked here
    assert!(postcard::from_bytes::<Vec<Record>>(&bad).is_ok());
    let first = f.records[0].as_bytes();
    let at = batch.windows(first.len()).position(|w| w == first).unwrap();
    bad[at] = 9; // the first record's format number
    assert!(postcard::from_bytes::<Vec<Record>>(&bad).is_err());
}

proptest! {
    #[test]
    fn round_trip(event in arb::event(), seq in 0u64..u64::MAX, prev: [u8; 32], kid: [u8; 8]) {
        let key = testkit::journal_key(3);
        let head = ChainHead { seq, hash: prev };
        let r = Record::build(&head, kid, &event, |m| key.sign(m)).unwrap();
        let back = Record::from_bytes(r.as_bytes()).unwrap();
        prop_assert_eq!(back.event().unwrap(), event);
        prop_assert_eq!(back.seq(), seq + 1);
        prop_assert_eq!(&back, &r);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Record::from_bytes(&bytes);
    }

    #[test]
    fn decoder_never_panics_near_valid(idx: usize, byte: u8, cut: usize) {
        let mut bytes = one_record().into_bytes();
        let i = idx % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(r) = Record::from_bytes(&bytes) {
            prop_assert_eq!(r.as_bytes(), bytes.as_slice());
        }
    }
}
