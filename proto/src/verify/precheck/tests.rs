//! Which records the precheck marks when one signature in a run is bad.

use super::*;
use crate::chain::ChainHead;
use crate::testkit::{self, JournalKey};

/// `n` chained records, record `i` signed by `keys[i % keys.len()]` (so a cert per key), with
/// the signature of record `bad` (if any) replaced by `tamper(its signature, the signature of
/// the record before it)`.
fn run(
    n: u64,
    keys: &[JournalKey],
    bad: Option<u64>,
    tamper: impl Fn([u8; 64], [u8; 64]) -> [u8; 64],
) -> (Vec<Record>, Vec<JournalKeyCert>) {
    let dik = testkit::dik();
    let certs = keys
        .iter()
        .map(|k| testkit::cert(&dik, k, testkit::boot(1), 1))
        .collect();
    let mut head = ChainHead::genesis(&testkit::device());
    let mut previous = keys[0].sign(b"some other message");
    let mut records = Vec::new();
    for i in 0..n {
        let key = &keys[(i % keys.len() as u64) as usize];
        let event = testkit::routine_event(testkit::boot(1), i);
        let r = Record::build(&head, key.key_id(), &event, |m| {
            let good = key.sign(m);
            let sig = if bad == Some(i) {
                tamper(good, previous)
            } else {
                good
            };
            previous = good;
            sig
        })
        .unwrap();
        head = r.head();
        records.push(r);
    }
    (records, certs)
}

/// Which records a precheck in groups of `group_size` marked as signed.
fn marked(records: Vec<Record>, certs: &[JournalKeyCert], group_size: usize) -> Vec<bool> {
    precheck_in_groups(records, certs, group_size)
        .iter()
        .map(|p| p.signed_by().is_some())
        .collect()
}

fn expect_marked_before(marks: &[bool], bad: usize, what: &str) {
    for (i, &m) in marks.iter().enumerate() {
        assert_eq!(m, i < bad, "{what}: record {i}, bad at {bad}");
    }
}

/// A small group, so that short runs cross group boundaries.
const G: usize = 16;
const N: u64 = 40;

/// The first, a middle and the last record of the run, and both sides of group boundaries.
fn positions() -> Vec<u64> {
    let g = G as u64;
    vec![0, 1, g / 2, g - 1, g, g + 1, N / 2, N - 1]
}

#[test]
fn a_good_run_is_all_marked_under_one_or_several_keys() {
    for key_count in [1u8, 3] {
        let keys: Vec<_> = (1..=key_count).map(testkit::journal_key).collect();
        let (records, certs) = run(N, &keys, None, |s, _| s);
        assert!(marked(records, &certs, G).iter().all(|&m| m));
    }
}

/// The group order l, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// y = 2 encodes no point (asserted in the test).
fn not_a_point() -> [u8; 32] {
    let mut y = [0u8; 32];
    y[0] = 2;
    y
}

type Tamper = fn([u8; 64], [u8; 64]) -> [u8; 64];

const TAMPERS: [(&str, Tamper); 5] = [
    ("flipped R", |mut s, _| {
        s[3] ^= 0x04;
        s
    }),
    ("flipped s", |mut s, _| {
        s[50] ^= 0x80;
        s
    }),
    ("s + l", |mut s, _| {
        let mut carry = 0u16;
        for (b, l) in s[32..].iter_mut().zip(L) {
            let v = u16::from(*b) + u16::from(l) + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        s
    }),
    ("R not a point", |mut s, _| {
        s[..32].copy_from_slice(&not_a_point());
        s
    }),
    ("another record's signature", |_, previous| previous),
];

#[test]
fn a_corrupted_signature_stops_the_marking_exactly_there() {
    assert!(
        curve25519_dalek::edwards::CompressedEdwardsY(not_a_point())
            .decompress()
            .is_none()
    );
    for key_count in [1u8, 3] {
        let keys: Vec<_> = (1..=key_count).map(testkit::journal_key).collect();
        for bad in positions() {
            for (what, tamper) in TAMPERS {
                let (records, certs) = run(N, &keys, Some(bad), tamper);
                let marks = marked(records, &certs, G);
                expect_marked_before(&marks, bad as usize, what);
            }
        }
    }
}

#[test]
fn records_without_a_usable_key_or_hash_are_skipped_not_fatal() {
    // As before aggregation: a record with a bad hash or an unknown key id is left unmarked
    // for the chain walk to refuse, and the precheck goes on past it.
    let keys = [testkit::journal_key(1)];
    let (records, certs) = run(20, &keys, None, |s, _| s);
    let unknown = testkit::journal_key(7);
    let (stranger, _) = run(1, &[unknown], None, |s, _| s);
    let mut mixed = records.clone();
    mixed.insert(5, stranger[0].clone());
    let marks = marked(mixed, &certs, G);
    assert!(!marks[5]);
    assert_eq!(marks.iter().filter(|&&m| m).count(), 20);
}

#[test]
fn with_the_real_group_a_bad_record_at_either_side_of_the_boundary_stops_the_marking() {
    let keys = [testkit::journal_key(1)];
    let n = GROUP as u64 + 2;
    for bad in [GROUP as u64 - 1, GROUP as u64] {
        let (records, certs) = run(n, &keys, Some(bad), |mut s, _| {
            s[0] ^= 1;
            s
        });
        let marks: Vec<bool> = precheck(records, &certs)
            .iter()
            .map(|p| p.signed_by().is_some())
            .collect();
        expect_marked_before(&marks, bad as usize, "flipped R");
    }
}
