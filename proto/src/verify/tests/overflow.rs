//! Gaps declared by journal-overflow events.

use super::*;
use crate::record::Record;

/// Records 1..=10 where 4..=6 are dropped and record 11 declares it.
fn overflowed(declared_dropped: u64) -> (Fixture, Vec<Record>) {
    let mut f = testkit::fixture(10);
    let overflow = testkit::event(
        testkit::boot(1),
        10,
        EventKind::JournalOverflow(Overflow {
            first_seq: 4,
            last_seq: 6,
            dropped: declared_dropped,
            dropped_critical: 0,
        }),
    );
    let tail = testkit::append(&mut f.head, &f.key, &[overflow]);
    let mut kept: Vec<_> = f
        .records
        .iter()
        .filter(|r| !(4..=6).contains(&r.seq()))
        .cloned()
        .collect();
    kept.extend(tail);
    (f, kept)
}

#[test]
fn declared_overflow_gap_is_accepted_only_when_allowed() {
    let (f, kept) = overflowed(3);
    let err = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &f.certs,
        genesis(),
        &kept,
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError {
            seq: Some(7),
            reason: VerifyReason::SeqGap { expected: 4 }
        }
    );

    let mut v = ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis())
        .unwrap()
        .with_gap_policy(GapPolicy::AllowDeclared);
    for r in &kept[..7] {
        v.push(r).unwrap();
    }
    assert_eq!(v.pending_gaps(), &[GapRange { first: 4, last: 6 }]);
    // Saved and resumed between batches.
    let state = v.state();
    let mut v =
        ChainVerifier::resume(&f.dik.public(), &testkit::device(), &f.certs, state).unwrap();
    v.push(&kept[7]).unwrap();
    assert_eq!(v.pending_gaps(), &[]);
    let s = v.finish().unwrap();
    assert_eq!((s.count, s.last_seq), (1, Some(11)));
}

#[test]
fn undeclared_gap_fails_at_finish() {
    let (f, kept) = overflowed(3);
    let mut v = ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis())
        .unwrap()
        .with_gap_policy(GapPolicy::AllowDeclared);
    for r in &kept[..7] {
        v.push(r).unwrap();
    }
    assert_eq!(
        v.finish().unwrap_err(),
        VerifyError {
            seq: Some(4),
            reason: VerifyReason::UnexplainedGap { last: 6 }
        }
    );
}

#[test]
fn overflow_declaring_too_few_is_refused() {
    let (f, kept) = overflowed(2);
    let mut v = ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis())
        .unwrap()
        .with_gap_policy(GapPolicy::AllowDeclared);
    for r in &kept[..7] {
        v.push(r).unwrap();
    }
    assert_eq!(
        v.push(&kept[7]).unwrap_err(),
        VerifyError {
            seq: Some(11),
            reason: VerifyReason::OverflowMismatch
        }
    );
}

#[test]
fn bad_saved_state_refused() {
    let f = testkit::fixture(0);
    let state = ChainState {
        head: ChainHead {
            seq: 3,
            hash: [0; 32],
        },
        pending_gaps: vec![GapRange { first: 2, last: 5 }],
    };
    assert_eq!(
        ChainVerifier::resume(&f.dik.public(), &testkit::device(), &f.certs, state)
            .unwrap_err()
            .reason,
        VerifyReason::BadState
    );
}
