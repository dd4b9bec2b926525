use proptest::prelude::*;

use super::*;
use crate::chain::ChainHead;
use crate::testkit;

fn good(seq: u64, nv: u64) -> (testkit::Dik, Checkpoint) {
    let dik = testkit::dik();
    let head = ChainHead {
        seq,
        hash: [seq as u8; 32],
    };
    let cp = testkit::checkpoint(&dik, &head, nv);
    (dik, cp)
}

#[test]
fn round_trip_and_verify() {
    let (dik, cp) = good(10, 3);
    let back = Checkpoint::from_bytes(cp.as_bytes()).unwrap();
    assert_eq!(back, cp);
    back.verify(&dik.public(), &testkit::device(), None)
        .unwrap();
    back.verify(&dik.public(), &testkit::device(), Some(&[10; 32]))
        .unwrap();
}

#[test]
fn layout_is_postcard() {
    let (_, cp) = good(10, 3);
    let f = cp.fields();
    let shadow = (
        1u16,
        f.device_id.as_str(),
        f.seq,
        f.head_hash,
        f.nv_counter,
        f.wall_ms,
        cp.signature(),
    );
    assert_eq!(postcard::to_stdvec(&shadow).unwrap(), cp.as_bytes());
    assert!(cp.signing_bytes().starts_with(CHECKPOINT_TAG));
}

#[test]
fn head_mismatch_names_the_seq() {
    let (dik, cp) = good(10, 3);
    let err = cp
        .verify(&dik.public(), &testkit::device(), Some(&[0; 32]))
        .unwrap_err();
    assert_eq!(err.seq, Some(10));
    assert_eq!(err.reason, VerifyReason::CheckpointMismatch);
    assert_eq!(
        err.to_string(),
        "at seq 10: checkpoint head hash differs from the record at its seq"
    );
}

#[test]
fn counter_must_grow() {
    let (_, older) = good(10, 3);
    let (_, newer) = good(12, 4);
    newer.check_follows(&older).unwrap();
    let (_, replayed) = good(12, 3);
    assert_eq!(
        replayed.check_follows(&older).unwrap_err().reason,
        VerifyReason::CounterRollback {
            previous: 3,
            found: 3
        }
    );
    let (_, back_in_seq) = good(9, 5);
    assert_eq!(
        back_in_seq.check_follows(&older).unwrap_err().reason,
        VerifyReason::CheckpointRegressed { previous: 10 }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_byte_change_is_detected(idx: usize, flip in 1u8..=255) {
        let (dik, cp) = good(10, 3);
        let mut bytes = cp.as_bytes().to_vec();
        let i = idx % bytes.len();
        bytes[i] ^= flip;
        let ok = Checkpoint::from_bytes(&bytes)
            .is_ok_and(|c| c.verify(&dik.public(), &testkit::device(), Some(&[10; 32])).is_ok());
        prop_assert!(!ok);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Checkpoint::from_bytes(&bytes);
    }

    #[test]
    fn round_trip(seq: u64, head: [u8; 32], nv: u64, wall: u64, sig_len in 8usize..=72) {
        let unsigned = UnsignedCheckpoint {
            device_id: testkit::device(),
            seq,
            head_hash: head,
            nv_counter: nv,
            wall_ms: wall,
        };
        let cp = unsigned.into_checkpoint(vec![0x30; sig_len]).unwrap();
        prop_assert_eq!(Checkpoint::from_bytes(cp.as_bytes()).unwrap(), cp);
    }
}
