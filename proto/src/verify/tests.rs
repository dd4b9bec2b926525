use super::*;
use crate::event::{EventKind, Overflow};
use crate::testkit::{self, Fixture};

pub(super) const N: u64 = 8;

mod edge_cases;
mod overflow;
mod precheck;
mod tampering;

pub(super) fn encoded(f: &Fixture) -> Vec<Vec<u8>> {
    f.records.iter().map(|r| r.as_bytes().to_vec()).collect()
}

pub(super) fn genesis() -> ChainHead {
    ChainHead::genesis(&testkit::device())
}

/// Feeds `run` to a strict verifier from genesis; returns the index of the first refused record
/// (and the error), or the summary.
pub(super) fn first_refused(
    f: &Fixture,
    run: &[Vec<u8>],
) -> Result<RunSummary, (usize, VerifyError)> {
    let mut v = ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis())
        .expect("certs verify");
    for (i, bytes) in run.iter().enumerate() {
        v.push_bytes(bytes).map_err(|e| (i, e))?;
    }
    v.finish().map_err(|e| (run.len(), e))
}

#[test]
fn good_chain_verifies() {
    let f = testkit::fixture(N);
    let s = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &f.certs,
        genesis(),
        &f.records,
    )
    .unwrap();
    assert_eq!(s.count, N);
    assert_eq!(s.first_seq, Some(1));
    assert_eq!(s.last_seq, Some(N));
    assert_eq!(s.head, f.head);
    let s2 = verify_encoded_run(
        &f.dik.public(),
        &testkit::device(),
        &f.certs,
        genesis(),
        &encoded(&f),
    )
    .unwrap();
    assert_eq!(s2, s);
}

#[test]
fn empty_run_ends_at_the_anchor() {
    let f = testkit::fixture(0);
    let s = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &f.certs,
        genesis(),
        &[],
    )
    .unwrap();
    assert_eq!(
        (s.count, s.first_seq, s.last_seq, s.head),
        (0, None, None, genesis())
    );
}

#[test]
fn verifies_from_a_trusted_midpoint() {
    let f = testkit::fixture(N);
    let anchor = f.records[3].head();
    let s = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &f.certs,
        anchor,
        &f.records[4..],
    )
    .unwrap();
    assert_eq!(s.first_seq, Some(5));
    let wrong_anchor = ChainHead {
        seq: 4,
        hash: [0; 32],
    };
    let err = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &f.certs,
        wrong_anchor,
        &f.records[4..],
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError {
            seq: Some(5),
            reason: VerifyReason::BrokenLink
        }
    );
}

#[test]
fn names_the_first_bad_seq() {
    let f = testkit::fixture(N);
    let mut run = encoded(&f);
    let last = run[4].len() - 1;
    run[4][last] ^= 1; // signature of seq 5
    run[6][last] ^= 1; // and of seq 7
    let (i, err) = first_refused(&f, &run).unwrap_err();
    assert_eq!(i, 4);
    assert_eq!(
        err,
        VerifyError {
            seq: Some(5),
            reason: VerifyReason::BadSignature
        }
    );
    assert_eq!(err.to_string(), "at seq 5: bad record signature");
}

#[test]
fn missing_certificate_means_unknown_key() {
    let f = testkit::fixture(2);
    let err = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &[],
        genesis(),
        &f.records,
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError {
            seq: Some(1),
            reason: VerifyReason::UnknownJournalKey
        }
    );
}

#[test]
fn forged_certificate_refused() {
    let f = testkit::fixture(2);
    let mut bytes = f.certs[0].as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    // The last byte of a DER signature is the low byte of `s`: the DER stays well formed.
    let forged = crate::cert::JournalKeyCert::from_bytes(&bytes).unwrap();
    let err = verify_run(
        &f.dik.public(),
        &testkit::device(),
        &[forged],
        genesis(),
        &f.records,
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError {
            seq: None,
            reason: VerifyReason::BadCertSignature
        }
    );
}

#[test]
fn a_certificate_verified_once_is_trusted_for_its_dik_and_device_only() {
    let f = testkit::fixture(4);
    let verified = f.certs[0]
        .clone()
        .into_verified(&f.dik.public(), &testkit::device())
        .unwrap();
    let start = ChainState {
        head: genesis(),
        pending_gaps: Vec::new(),
    };
    // For the DIK and device it was verified for: its key signs the journal.
    let mut v = ChainVerifier::resume_verified(
        &f.dik.public(),
        &testkit::device(),
        std::slice::from_ref(&verified),
        start.clone(),
    )
    .unwrap();
    for r in &f.records {
        v.push(r).unwrap();
    }
    // For another DIK the certificate is checked again, and refused.
    let other = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let other = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        other.as_ref(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let other = crate::keys::DikPublicKey::from_der_or_point(
        ring::signature::KeyPair::public_key(&other).as_ref(),
    )
    .unwrap();
    assert!(!verified.verified_for(&other, &testkit::device()));
    let err =
        ChainVerifier::resume_verified(&other, &testkit::device(), &[verified], start).unwrap_err();
    assert_eq!(err.reason, VerifyReason::BadCertSignature);
    // And a certificate that does not verify is never made into a `VerifiedCert`.
    let mut bytes = f.certs[0].as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let forged = crate::cert::JournalKeyCert::from_bytes(&bytes).unwrap();
    assert_eq!(
        forged
            .into_verified(&f.dik.public(), &testkit::device())
            .unwrap_err()
            .reason,
        VerifyReason::BadCertSignature
    );
}

#[test]
fn keys_rotate_per_boot_and_old_keys_retire() {
    let dik = testkit::dik();
    let (k1, k2) = (testkit::journal_key(1), testkit::journal_key(2));
    let mut head = genesis();
    let mut records = testkit::append(
        &mut head,
        &k1,
        &[testkit::routine_event(testkit::boot(1), 0)],
    );
    let certs = vec![
        testkit::cert(&dik, &k1, testkit::boot(1), 1),
        testkit::cert(&dik, &k2, testkit::boot(2), 2),
    ];
    records.extend(testkit::append(
        &mut head,
        &k2,
        &[testkit::routine_event(testkit::boot(2), 1)],
    ));
    verify_run(
        &dik.public(),
        &testkit::device(),
        &certs,
        genesis(),
        &records,
    )
    .unwrap();

    // The first boot's key signing after the second boot's first_seq is refused.
    let stale = testkit::append(
        &mut head,
        &k1,
        &[testkit::routine_event(testkit::boot(1), 2)],
    );
    records.extend(stale);
    let err = verify_run(
        &dik.public(),
        &testkit::device(),
        &certs,
        genesis(),
        &records,
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError {
            seq: Some(3),
            reason: VerifyReason::UnknownJournalKey
        }
    );
}

#[test]
fn boot_id_must_match_the_key() {
    let dik = testkit::dik();
    let key = testkit::journal_key(1);
    let certs = vec![testkit::cert(&dik, &key, testkit::boot(1), 1)];
    let mut head = genesis();
    let records = testkit::append(
        &mut head,
        &key,
        &[testkit::routine_event(testkit::boot(9), 0)],
    );
    let err = verify_run(
        &dik.public(),
        &testkit::device(),
        &certs,
        genesis(),
        &records,
    )
    .unwrap_err();
    assert_eq!(err.reason, VerifyReason::BootIdMismatch);
}

#[test]
fn checkpoint_at_head() {
    let f = testkit::fixture(N);
    let mut v =
        ChainVerifier::new(&f.dik.public(), &testkit::device(), &f.certs, genesis()).unwrap();
    for r in &f.records[..5] {
        v.push(r).unwrap();
    }
    let good = testkit::checkpoint(&f.dik, &f.records[4].head(), 1);
    v.check_checkpoint(&f.dik.public(), &testkit::device(), &good)
        .unwrap();
    let forked = testkit::checkpoint(
        &f.dik,
        &ChainHead {
            seq: 5,
            hash: [1; 32],
        },
        2,
    );
    assert_eq!(
        v.check_checkpoint(&f.dik.public(), &testkit::device(), &forked)
            .unwrap_err()
            .reason,
        VerifyReason::CheckpointMismatch
    );
    let ahead = testkit::checkpoint(&f.dik, &f.records[6].head(), 3);
    assert_eq!(
        v.check_checkpoint(&f.dik.public(), &testkit::device(), &ahead)
            .unwrap_err()
            .reason,
        VerifyReason::CheckpointNotAtHead { head: 5 }
    );
}

#[test]
fn signatures_below_the_threshold_are_skipped_and_nothing_else_is() {
    let f = testkit::fixture(N);
    let mut run = encoded(&f);
    let last = run[2].len() - 1;
    run[2][last] ^= 1; // signature of seq 3
    let records: Vec<Record> = run.iter().map(|b| Record::from_bytes(b).unwrap()).collect();
    let device = testkit::device();
    let anchor = ChainHead::genesis(&device);
    let skipping = |from| {
        let mut v = ChainVerifier::new(&f.dik.public(), &device, &f.certs, anchor)
            .unwrap()
            .with_signatures_from(from);
        records.iter().try_for_each(|r| v.push(r).map(|_| ()))
    };
    assert_eq!(skipping(4), Ok(()));
    assert_eq!(skipping(3).unwrap_err().seq, Some(3));
    // A changed body is still caught below the threshold: the hash is always checked.
    let mut body_changed = encoded(&f);
    body_changed[1][20] ^= 1;
    let mut v = ChainVerifier::new(&f.dik.public(), &device, &f.certs, anchor)
        .unwrap()
        .with_signatures_from(u64::MAX);
    let refused = body_changed.iter().find_map(|b| v.push_bytes(b).err());
    assert!(refused.is_some());
}
