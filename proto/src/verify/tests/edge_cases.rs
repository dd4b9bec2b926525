//! One record, one verdict: every Ed25519 edge-case class (testkit::edge), signing a real record
//! alone or inside runs of honest records at the first, a middle and the last position, gets the
//! same verdict from the one-by-one check, the grouped check (every group size), the collector's
//! precheck + chain walk, and the offline verifier (`verify_run`, which `verify-journal` and
//! `restore` use).

use proptest::prelude::*;

use super::*;
use crate::chain::record_signing_message;
use crate::keys::verify_ed25519;
use crate::record::Record;
use crate::testkit::Dik;
use crate::testkit::edge::{self, EdgeSigner, Verdict};

/// Group sizes of the grouped check: one by one, small groups that cut runs anywhere, the real one.
const GROUPS: [usize; 6] = [1, 2, 3, 4, 8, crate::verify::precheck::GROUP];

/// A chain of `n` records under `signer` (certified as it publishes its key), record `at`
/// signed by `sign(message)` and every other one honestly.
fn chain(
    dik: &Dik,
    signer: &EdgeSigner,
    n: usize,
    at: usize,
    sign: impl Fn(&[u8]) -> [u8; 64],
) -> (Vec<Record>, Vec<JournalKeyCert>) {
    let cert = testkit::cert_for_public(dik, signer.public_bytes, testkit::boot(1), 1);
    let key_id = cert.journal_key_id();
    let mut head = genesis();
    let records = (0..n)
        .map(|i| {
            let event = testkit::routine_event(testkit::boot(1), i as u64);
            let r = Record::build(&head, key_id, &event, |m| {
                if i == at { sign(m) } else { signer.sign(m) }
            })
            .unwrap();
            head = r.head();
            r
        })
        .collect();
    (records, vec![cert])
}

fn message(r: &Record) -> Vec<u8> {
    record_signing_message(r.hash())
}

/// Every path's verdict on `records[at]` (all others honest), asserted equal; returns it.
fn one_verdict(
    dik: &Dik,
    records: &[Record],
    certs: &[JournalKeyCert],
    at: usize,
    what: &str,
) -> Verdict {
    let public = certs[0].fields().journal_public_key;
    let key_ok = crate::ed25519::JournalPublicKey::from_bytes(&public).is_ok();
    let verdict = |ok: bool| {
        if ok {
            Verdict::Accepted
        } else {
            Verdict::Refused
        }
    };
    let target = &records[at];
    // One by one.
    let single = verdict(verify_ed25519(
        &public,
        &message(target),
        target.signature(),
    ));
    // The grouped check, on the record alone and with the others in one group.
    let messages: Vec<Vec<u8>> = records.iter().map(message).collect();
    let alone = [SignedMessage {
        key: 0,
        message: &messages[at],
        signature: target.signature(),
    }];
    assert_eq!(
        verdict(verify_ed25519_batch(&[public], &alone)),
        single,
        "{what}: alone in a group"
    );
    let all: Vec<SignedMessage<'_>> = records
        .iter()
        .zip(&messages)
        .map(|(r, m)| SignedMessage {
            key: 0,
            message: m,
            signature: r.signature(),
        })
        .collect();
    assert_eq!(
        verdict(verify_ed25519_batch(&[public], &all)),
        single,
        "{what}: one group of {}",
        all.len()
    );
    // The collector: precheck in groups, then the chain walk on the prechecked records.
    for g in GROUPS {
        let pre = precheck_in_groups(records.to_vec(), certs, g);
        for (i, p) in pre.iter().enumerate() {
            let marked = p.signed_by().is_some();
            if i < at && key_ok {
                assert!(marked, "{what}: honest record {i} before it, groups of {g}");
            } else if i == at {
                assert_eq!(verdict(marked), single, "{what}: precheck, groups of {g}");
            }
        }
        let walked = ChainVerifier::new(&dik.public(), &testkit::device(), certs, genesis())
            .and_then(|mut v| {
                pre.iter()
                    .try_for_each(|p| v.push_prechecked(p).map(|_| ()))
            });
        assert_eq!(
            walk_verdict(walked, at, what),
            single,
            "{what}: collector walk, groups of {g}"
        );
    }
    // The offline verifier (verify-journal, restore).
    let run = verify_run(&dik.public(), &testkit::device(), certs, genesis(), records);
    assert_eq!(
        walk_verdict(run.map(|_| ()), at, what),
        single,
        "{what}: verify_run"
    );
    single
}

/// The verdict a walk gave record `at`: accepted if it went past, refused if it stopped there
/// for its signature (or for its key).
fn walk_verdict(result: Result<(), VerifyError>, at: usize, what: &str) -> Verdict {
    match result {
        Ok(()) => Verdict::Accepted,
        Err(VerifyError {
            seq,
            reason: VerifyReason::BadSignature,
        }) => {
            assert_eq!(seq, Some(at as u64 + 1), "{what}: stopped elsewhere");
            Verdict::Refused
        }
        Err(VerifyError {
            seq: None,
            reason: VerifyReason::BadJournalKey(_),
        }) => Verdict::Refused,
        Err(e) => panic!("{what}: unexpected {e:?}"),
    }
}

/// Runs of 1, 3, 9 and 17 records with the case at the first, a middle and the last position.
fn placements() -> Vec<(usize, usize)> {
    let mut out = vec![];
    for n in [1, 3, 9, 17] {
        for at in [0, n / 2, n - 1] {
            if !out.contains(&(n, at)) {
                out.push((n, at));
            }
        }
    }
    out
}

#[test]
fn every_signature_class_gets_one_verdict_on_every_path_and_position() {
    let dik = testkit::dik();
    let signer = EdgeSigner::of_seed(1);
    let cases = edge::signature_cases();
    assert!(cases.len() >= 20);
    for case in &cases {
        for (n, at) in placements() {
            let other = signer.sign(b"another message");
            let (records, certs) = chain(&dik, &signer, n, at, |m| (case.sign)(&signer, m, &other));
            let what = format!("{} (record {at} of {n})", case.name);
            assert_eq!(
                one_verdict(&dik, &records, &certs, at, &what),
                case.verdict,
                "{what}"
            );
        }
    }
}

#[test]
fn keys_the_rule_refuses_verify_nothing_on_any_path() {
    let dik = testkit::dik();
    for case in edge::key_cases(1) {
        let cert = testkit::cert_for_public(&dik, case.signer.public_bytes, testkit::boot(1), 1);
        let err = cert.verify(&dik.public(), &testkit::device()).unwrap_err();
        assert!(
            matches!(err.reason, VerifyReason::BadJournalKey(_)),
            "{}: {err:?}",
            case.name
        );
        assert!(
            cert.clone()
                .into_verified(&dik.public(), &testkit::device())
                .is_err()
        );
        for (n, at) in placements() {
            let signer = &case.signer;
            let (records, certs) = chain(&dik, signer, n, at, |m| signer.sign(m));
            // Each signature is valid under the cofactored equation: only the key is wrong.
            for r in &records {
                let error = signer.error_term(&message(r), r.signature()).unwrap();
                assert!(error.is_small_order(), "{}", case.name);
            }
            let what = format!("{} (record {at} of {n})", case.name);
            assert_eq!(
                one_verdict(&dik, &records, &certs, at, &what),
                Verdict::Refused,
                "{what}"
            );
            // Nothing under it is marked, wherever it stands.
            for g in GROUPS {
                let pre = precheck_in_groups(records.clone(), &certs, g);
                assert!(pre.iter().all(|p| p.signed_by().is_none()), "{what}");
            }
        }
    }
}

/// The cofactorless grouped check the collector used before (a reference for the attack test):
/// `Σ z_i ([S_i]B − R_i − [k_i]A) = 0`, without the factor 8, for the given `z_i`.
fn cofactorless_group_passes(signer: &EdgeSigner, records: &[&Record], zs: &[u64]) -> bool {
    use curve25519_dalek::scalar::Scalar;
    let mut sum = curve25519_dalek::edwards::EdwardsPoint::default();
    for (r, z) in records.iter().zip(zs) {
        let Some(e) = signer.error_term(&message(r), r.signature()) else {
            return false;
        };
        sum += e * Scalar::from(*z);
    }
    curve25519_dalek::traits::IsIdentity::is_identity(&sum)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The attack of issue 15: the holder of the journal key signs a record with R a point of
    /// order 8 (S = k·a), whose error `[S]B − R − [k]A` is that point. A cofactorless grouped
    /// check passes it whenever its coefficient is a multiple of 8 (shown here for the drawn
    /// coefficients' residues), while the one-by-one check refuses it: that split is gone. For
    /// every grouping, every path now refuses it, at its position and nowhere before.
    #[test]
    fn the_small_order_error_record_is_refused_in_every_grouping(
        n in 1usize..24,
        at_frac in 0.0f64..1.0,
        g in 1usize..26,
        r_order in prop::sample::select(vec![1usize, 2, 4, 8]),
    ) {
        let at = ((n as f64) * at_frac) as usize % n;
        let dik = testkit::dik();
        let signer = EdgeSigner::of_seed(1);
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[8 / r_order % 8];
        let (records, certs) = chain(&dik, &signer, n, at, |m| {
            signer.sign_small_order_r(m, torsion.compress().to_bytes())
        });
        // The reference: with coefficient 8 on the attack record (and any on the others) a
        // cofactorless group passes; with 1 it passes only for the identity.
        let refs: Vec<&Record> = records.iter().collect();
        let mut zs: Vec<u64> = (0..n as u64).map(|i| 2 * i + 3).collect();
        zs[at] = 8;
        prop_assert!(cofactorless_group_passes(&signer, &refs, &zs));
        let pre = precheck_in_groups(records.clone(), &certs, g);
        for (i, p) in pre.iter().enumerate() {
            prop_assert_eq!(p.signed_by().is_some(), i < at, "record {} of {}, groups of {}", i, n, g);
        }
        prop_assert_eq!(one_verdict(&dik, &records, &certs, at, "attack"), Verdict::Refused);
    }

    /// Its twin with R of mixed order ([r]B plus a torsion point, S = r + k·a): the error is the
    /// torsion point as well, but here the rule (cofactored) accepts, and so does every path in
    /// every grouping: the verdict is one, whichever it is.
    #[test]
    fn the_mixed_order_r_record_is_accepted_in_every_grouping(
        n in 1usize..24,
        at_frac in 0.0f64..1.0,
        g in 1usize..26,
        t in 1usize..8,
    ) {
        let at = ((n as f64) * at_frac) as usize % n;
        let dik = testkit::dik();
        let signer = EdgeSigner::of_seed(1);
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[t];
        let (records, certs) = chain(&dik, &signer, n, at, |m| signer.sign_with(m, 0, torsion, None));
        let pre = precheck_in_groups(records.clone(), &certs, g);
        prop_assert!(pre.iter().all(|p| p.signed_by().is_some()));
        prop_assert_eq!(one_verdict(&dik, &records, &certs, at, "mixed R"), Verdict::Accepted);
    }
}
