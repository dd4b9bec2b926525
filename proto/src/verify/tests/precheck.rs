//! The bulk precheck gives the same verdicts as the one-record-at-a-time walk.

use proptest::prelude::*;

use super::*;
use crate::record::Record;

/// Walks `run` with prechecked records; the index of the first refused one, or the summary.
/// An undecodable record is refused where it stands, as `first_refused` does.
fn first_refused_prechecked(
    f: &Fixture,
    run: &[Vec<u8>],
) -> Result<RunSummary, (usize, VerifyError)> {
    let mut v = ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis())
        .expect("certs verify");
    let decoded: Vec<Record> = run
        .iter()
        .map_while(|b| Record::from_bytes(b).ok())
        .collect();
    let undecodable_at = decoded.len();
    let pre = precheck(decoded, &f.certs);
    for (i, p) in pre.iter().enumerate() {
        v.push_prechecked(p).map_err(|e| (i, e))?;
    }
    if undecodable_at < run.len() {
        let e = v.push_bytes(&run[undecodable_at]).unwrap_err();
        return Err((undecodable_at, e));
    }
    v.finish().map_err(|e| (run.len(), e))
}

#[test]
fn a_long_good_run_is_verified_in_groups_with_the_same_events() {
    // More records than one verification group.
    let f = testkit::fixture(300);
    let pre = precheck(f.records.clone(), &f.certs);
    assert!(pre.iter().all(|p| p.signed_by() == Some(&f.key.public())));
    let mut one =
        ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis()).unwrap();
    let mut bulk = one.clone();
    for (r, p) in f.records.iter().zip(&pre) {
        assert_eq!(one.push(r).unwrap(), *bulk.push_prechecked(p).unwrap());
    }
    assert_eq!(one.finish().unwrap(), bulk.finish().unwrap());
}

#[test]
fn a_forged_signature_in_a_group_is_named_and_the_records_before_it_stand() {
    let mut f = testkit::fixture(200);
    let forger = testkit::journal_key(9);
    let mut head = f.head;
    // Seq 201: linked and hashed correctly, named as the certified key's, signed by another.
    let forged = Record::build(
        &head,
        f.key.key_id(),
        &testkit::routine_event(testkit::boot(1), 200),
        |m| forger.sign(m),
    )
    .unwrap();
    head = forged.head();
    f.records.push(forged);
    f.records.extend(testkit::append(
        &mut head,
        &f.key,
        &[testkit::routine_event(testkit::boot(1), 201)],
    ));
    let pre = precheck(f.records.clone(), &f.certs);
    let unsigned: Vec<u64> = pre
        .iter()
        .filter(|p| p.signed_by().is_none())
        .map(|p| p.record().seq())
        .collect();
    assert_eq!(
        unsigned,
        vec![201, 202],
        "everything before the forged record verified; nothing after it was checked"
    );
    let (at, e) = first_refused_prechecked(&f, &encoded(&f)).unwrap_err();
    assert_eq!((at, e.seq), (200, Some(201)));
    assert_eq!(e.reason, VerifyReason::BadSignature);
}

#[test]
fn a_precheck_under_an_uncertified_key_is_not_trusted() {
    // The forger passes its own (uncertified) certificate to the precheck: its signatures
    // verify there, but the walk trusts only the DIK-certified key and checks again.
    let f = testkit::fixture(4);
    let forger = testkit::journal_key(9);
    let mut head = genesis();
    let events: Vec<_> = (0..4)
        .map(|i| testkit::routine_event(testkit::boot(1), i))
        .collect();
    let forged = testkit::append(&mut head, &forger, &events);
    let other_dik_cert = testkit::cert(&f.dik, &forger, testkit::boot(1), 1);
    let pre = precheck(forged, &[other_dik_cert]);
    assert!(pre[0].signed_by().is_some());
    let mut v =
        ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis()).unwrap();
    let e = v.push_prechecked(&pre[0]).unwrap_err();
    assert_eq!(e.reason, VerifyReason::UnknownJournalKey);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_byte_change_is_caught_at_the_same_record_as_without_precheck(
        rec in 0..N as usize, idx: usize, flip in 1u8..=255,
    ) {
        let f = testkit::fixture(N);
        let mut run = encoded(&f);
        let i = idx % run[rec].len();
        run[rec][i] ^= flip;
        let plain = first_refused(&f, &run).unwrap_err();
        let bulk = first_refused_prechecked(&f, &run).unwrap_err();
        prop_assert_eq!(bulk.0, plain.0);
        prop_assert_eq!(bulk.1.seq, plain.1.seq);
    }
}

#[test]
fn precheck_with_verified_certificates_marks_what_precheck_marks() {
    let f = testkit::fixture(40);
    let verified: Vec<_> = f
        .certs
        .iter()
        .map(|c| {
            c.clone()
                .into_verified(&f.dik.public(), &testkit::device())
                .unwrap()
        })
        .collect();
    let marks = |pre: Vec<Prechecked>| -> Vec<bool> {
        pre.iter().map(|p| p.signed_by().is_some()).collect()
    };
    let mut records = f.records.clone();
    assert!(
        marks(precheck_verified(records.clone(), &verified))
            .iter()
            .all(|&m| m)
    );
    // A bad signature at 17: both stop marking there.
    let mut bytes = records[17].as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the signature is the last field
    records[17] = Record::from_bytes(&bytes).unwrap();
    let a = marks(precheck(records.clone(), &f.certs));
    let b = marks(precheck_verified(records, &verified));
    assert_eq!(a, b);
    assert_eq!(a.iter().filter(|&&m| m).count(), 17);
}
