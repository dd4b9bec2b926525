//! Property tests: any change to a run of encoded records is caught, at the changed record.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_byte_change_is_caught_at_that_record(rec in 0..N as usize, idx: usize, flip in 1u8..=255) {
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        let i = idx % run[rec].len();
        run[rec][i] ^= flip;
        let (at, _) = first_refused(&f, &run).unwrap_err();
        prop_assert_eq!(at, rec);
    }

    #[test]
    fn any_byte_deletion_is_caught_at_that_record(rec in 0..N as usize, idx: usize) {
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        let i = idx % run[rec].len();
        run[rec].remove(i);
        let (at, _) = first_refused(&f, &run).unwrap_err();
        prop_assert_eq!(at, rec);
    }

    #[test]
    fn any_byte_insertion_is_caught_at_that_record(rec in 0..N as usize, idx: usize, byte: u8) {
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        let i = idx % (run[rec].len() + 1);
        run[rec].insert(i, byte);
        let (at, _) = first_refused(&f, &run).unwrap_err();
        prop_assert_eq!(at, rec);
    }

    #[test]
    fn duplicated_record_is_caught(rec in 0..N as usize, gap in 0..N as usize) {
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        let dup = run[rec].clone();
        let at = (rec + 1 + gap).min(run.len());
        run.insert(at, dup);
        let (found, err) = first_refused(&f, &run).unwrap_err();
        prop_assert_eq!(found, at);
        let expected_reason = if at == rec + 1 {
            VerifyReason::Duplicate
        } else {
            VerifyReason::Reordered { expected: at as u64 + 1 }
        };
        prop_assert_eq!(err.reason, expected_reason);
    }

    #[test]
    fn reordered_records_are_caught(a in 0..N as usize, b in 0..N as usize) {
        prop_assume!(a != b);
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        run.swap(a, b);
        let (found, err) = first_refused(&f, &run).unwrap_err();
        prop_assert_eq!(found, a.min(b));
        prop_assert_eq!(err.reason, VerifyReason::SeqGap { expected: a.min(b) as u64 + 1 });
    }

    #[test]
    fn deleted_record_is_caught(rec in 0..N as usize) {
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        run.remove(rec);
        match first_refused(&f, &run) {
            Err((found, err)) => {
                prop_assert_eq!(found, rec);
                prop_assert_eq!(err.reason, VerifyReason::SeqGap { expected: rec as u64 + 1 });
            }
            Ok(summary) => {
                // Only the tail can go unnoticed by the chain; the checkpoint at the true head
                // catches it.
                prop_assert_eq!(rec as u64, N - 1);
                let cp = testkit::checkpoint(&f.dik, &f.head, 1);
                let at_summary = cp.verify(&f.dik.public(), &testkit::device(), Some(&summary.head.hash));
                prop_assert!(summary.head != f.head && at_summary.is_err());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let f = testkit::fixture(0);
        prop_assert!(first_refused(&f, &[bytes]).is_err());
    }
}
