//! Issue 15, point 10, on the real collector: a journal key that is not the canonical encoding
//! of a prime-order point is refused when its certificate arrives; records of the edge-case
//! classes get the verdict of the one signature rule at ingest, wherever they stand in a batch,
//! and the same verdict again from `restore`'s verifier.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use posguard_collector::backup;
use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::event::{Actor, Event, EventKind, Stamp};
use posguard_proto::record::Record;
use posguard_proto::text::ClerkId;
use posguard_proto::uplink::UplinkAck;
use ring::digest;

/// The secret scalar of the test devices' journal key (seed [9; 32], RFC 8032 derivation).
fn secret() -> Scalar {
    let h = digest::digest(&digest::SHA512, &[9; 32]);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h.as_ref()[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

fn k(r: &[u8; 32], public: &[u8; 32], m: &[u8]) -> Scalar {
    let mut h = digest::Context::new(&digest::SHA512);
    h.update(r);
    h.update(public);
    h.update(m);
    Scalar::from_bytes_mod_order_wide(&h.finish().as_ref().try_into().unwrap())
}

fn nonce(m: &[u8]) -> Scalar {
    let d = digest::digest(&digest::SHA512, &[b"nonce".as_slice(), m].concat());
    Scalar::from_bytes_mod_order_wide(&d.as_ref().try_into().unwrap())
}

fn sig(r: &[u8; 32], s: &Scalar) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r);
    out[32..].copy_from_slice(s.as_bytes());
    out
}

/// How a record is signed, by whoever holds the secret of the key published as `public`.
#[derive(Clone, Copy)]
enum Sign {
    Honest,
    /// R = [r]B + an order-8 point: valid only with the cofactor; the rule accepts it.
    MixedOrderR,
    /// R an order-8 point, S = k·a: its error is that point; the rule refuses it.
    SmallOrderR,
    /// R = [r]B, S = r: valid for any message under a small-order key, with the cofactor.
    AnyMessage,
}

fn sign(how: Sign, public: &[u8; 32], m: &[u8]) -> [u8; 64] {
    let a = secret();
    let r = nonce(m);
    let big_r = match how {
        Sign::Honest | Sign::AnyMessage => B * r,
        Sign::MixedOrderR => B * r + EIGHT_TORSION[1],
        Sign::SmallOrderR => EIGHT_TORSION[1],
    };
    let rb = big_r.compress().to_bytes();
    let k = k(&rb, public, m);
    let s = match how {
        Sign::Honest | Sign::MixedOrderR => r + k * a,
        Sign::SmallOrderR => k * a,
        Sign::AnyMessage => r,
    };
    sig(&rb, &s)
}

/// The record after `head`, as `Device::record` builds it, signed `how` under `public`.
fn record(head: &ChainHead, public: &[u8; 32], how: Sign) -> Record {
    let event = Event::new(
        Stamp {
            wall_ms: 1_763_900_000_000 + head.seq,
            mono_ns: head.seq,
            boot_id: BOOT,
        },
        Actor::System,
        None,
        EventKind::LoggedOut {
            clerk: ClerkId::new("anna").unwrap(),
        },
    );
    Record::build(head, journal_key_id(public), &event, |m| {
        sign(how, public, m)
    })
    .unwrap()
}

fn journal_public(dev: &Device) -> [u8; 32] {
    use ring::signature::KeyPair as _;
    dev.journal.public_key().as_ref().try_into().unwrap()
}

/// `n` records after `dev.head`, record `bad_at` signed `how`, the others honestly; advances
/// `dev.head` past them.
fn run(dev: &mut Device, n: usize, bad_at: Option<usize>, how: Sign) -> Vec<Record> {
    let public = journal_public(dev);
    (0..n)
        .map(|i| {
            let sign = if Some(i) == bad_at { how } else { Sign::Honest };
            let r = record(&dev.head, &public, sign);
            dev.head = r.head();
            r
        })
        .collect()
}

async fn post_batch(
    srv: &Running,
    pki: &Pki,
    dev: &Device,
    body: Vec<u8>,
) -> (u16, String, String) {
    let (status, headers, body) = post(srv.addr, client_config(pki, Some(dev)), body)
        .await
        .unwrap();
    // The highest stored seq: in the acknowledgement, or in a header of a refusal.
    let highest = if status == 200 {
        UplinkAck::from_bytes(&body)
            .unwrap()
            .highest_stored
            .to_string()
    } else {
        headers["x-posguard-highest-stored"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    (status, String::from_utf8_lossy(&body).into_owned(), highest)
}

#[tokio::test]
async fn journal_keys_the_rule_refuses_are_refused_with_their_certificate() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let good = EdwardsPoint::mul_base(&secret());
    let mut minus_zero = [0u8; 32];
    minus_zero[0] = 1;
    minus_zero[31] = 0x80;
    let keys = [
        ("small-order", EIGHT_TORSION[1].compress().to_bytes()),
        ("identity", EdwardsPoint::default().compress().to_bytes()),
        (
            "mixed-order",
            (good + EIGHT_TORSION[2]).compress().to_bytes(),
        ),
        ("non-canonical identity", minus_zero),
    ];
    for (i, (what, public)) in keys.into_iter().enumerate() {
        let dev = device(&pki, &format!("term-k{i}"));
        let cert = UnsignedJournalKeyCert {
            device_id: dev.id.clone(),
            boot_id: BOOT,
            journal_public_key: public,
            first_seq: 1,
            issued_wall_ms: 1_763_900_000_000,
        };
        let der = dev.dik_sign(&cert.signing_bytes());
        let cert = cert.into_cert(der).unwrap().as_bytes().to_vec();
        // Records a lax (cofactored, key unchecked) verifier would accept under that key.
        let head = ChainHead::genesis(&dev.id);
        let r = record(&head, &public, Sign::AnyMessage);
        let (status, body, _) = post_batch(&srv, &pki, &dev, batch(vec![cert], &[r])).await;
        assert_eq!((status, body.as_str()), (422, "bad_journal_key"), "{what}");
    }
    assert_eq!(count_records(&srv.db), 0);
    srv.stop().await;
}

#[tokio::test]
async fn ingest_and_restore_give_one_verdict_on_edge_case_records() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut a = device(&pki, "term-a");
    // Valid only with the cofactor: the rule accepts it, at ingest as in restore.
    let first = run(&mut a, 3, Some(1), Sign::MixedOrderR);
    let (status, body, highest) =
        post_batch(&srv, &pki, &a, batch(vec![a.journal_cert(1)], &first)).await;
    assert_eq!((status, highest.as_str()), (200, "3"), "{body}");
    // A small-order error (the attack of issue 15): refused at the first, middle and last
    // place of a batch, the honest records before it stored.
    let head = a.head;
    for at in 0..3 {
        a.head = head;
        let rs = run(&mut a, 3, Some(at), Sign::SmallOrderR);
        let (status, body, highest) = post_batch(&srv, &pki, &a, batch(vec![], &rs)).await;
        assert_eq!((status, body.as_str()), (422, "bad_signature"), "at {at}");
        assert_eq!(highest, (3 + at).to_string(), "at {at}");
    }
    let mut b = device(&pki, "term-b");
    let honest = run(&mut b, 5, None, Sign::Honest);
    let (status, _, _) = post_batch(&srv, &pki, &b, batch(vec![b.journal_cert(1)], &honest)).await;
    assert_eq!(status, 200);
    let out = pki.dir.path().join("backup.db");
    backup::backup(&srv.db, &out).unwrap();
    srv.stop().await;

    // In the backup, term-b's record 3 re-signed with a small-order R (same hash, so the chain
    // still links): only the signature rule can tell.
    let forged = record(&honest[1].head(), &journal_public(&b), Sign::SmallOrderR);
    assert_eq!(forged.hash(), honest[2].hash());
    {
        let conn = rusqlite::Connection::open(&out).unwrap();
        conn.execute(
            "UPDATE records SET raw = ?1 WHERE device_id = 'term-b' AND seq = 3",
            [forged.as_bytes()],
        )
        .unwrap();
    }
    let s = backup::restore(&pki.dir.path().join("restored.db"), &out, false).unwrap();
    let heads: Vec<(&str, u64)> = s
        .heads
        .iter()
        .map(|h| (h.device_id.as_str(), h.highest_stored))
        .collect();
    assert_eq!(
        heads,
        [("term-a", 5)],
        "the mixed-order-R record is restored"
    );
    let bad = &s.unverified[0];
    assert_eq!((bad.device.as_str(), bad.seq), ("term-b", Some(3)), "{bad}");
    assert_eq!(bad.reason, "bad record signature");
}
