//! Ed25519 signature checking per record, as the collector's precheck does it: one at a time
//! (posguard's signature rule, which the chain walk uses, and ed25519-dalek), ed25519-dalek's batch verification in
//! groups of 256, the parts of proto's batch verification that are paid per signature, and
//! that verification (the key terms folded) in groups of 8 (a live upload) to 1024, all
//! signatures under one journal key.
//! Times are the benchmark thread's CPU time (µs a record).
//! `cargo bench -p posguard-proto --bench verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::chain::record_signing_message;
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::event::{Actor, Event, EventKind, PosAction, PosEvent, Stamp};
use posguard_proto::keys::verify_ed25519;
use posguard_proto::record::Record;
use posguard_proto::text::{ClerkId, DeviceId};
use posguard_proto::verify::{
    SignedMessage, precheck, verify_ed25519_batch, verify_ed25519_batch_checked,
};

/// Records per measurement: a multiple of every group size.
const RECORDS: usize = 4096;
/// Measurements per variant; the median is reported.
const ROUNDS: usize = 7;

/// CPU time of this thread, in seconds: on a shared machine (other builds on the same cores)
/// wall time varied threefold between runs, the thread's own CPU time far less.
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn measure(name: &str, mut f: impl FnMut()) {
    f(); // warm-up
    let mut per_record: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = cpu_seconds();
            f();
            (cpu_seconds() - t) * 1e6 / RECORDS as f64
        })
        .collect();
    per_record.sort_by(f64::total_cmp);
    println!(
        "{name:<40} {:>7.2} µs/record   (median of {ROUNDS} × {RECORDS}; min {:.2})",
        per_record[ROUNDS / 2],
        per_record[0]
    );
}

fn main() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let messages: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            record_signing_message(&hash)
        })
        .collect();
    let signatures: Vec<Signature> = messages.iter().map(|m| key.sign(m)).collect();
    let bytes: Vec<[u8; 64]> = signatures.iter().map(Signature::to_bytes).collect();

    measure("single, the rule, key checked each time", || {
        for (m, s) in messages.iter().zip(&bytes) {
            assert!(verify_ed25519(public.as_bytes(), m, s));
        }
    });
    let checked = posguard_proto::ed25519::JournalPublicKey::from_bytes(public.as_bytes()).unwrap();
    measure("single, the rule, key checked once", || {
        for (m, s) in messages.iter().zip(&bytes) {
            assert!(posguard_proto::ed25519::verify(&checked, m, s));
        }
    });
    measure("single, ed25519-dalek verify", || {
        for (m, s) in messages.iter().zip(&signatures) {
            public.verify(m, s).unwrap();
        }
    });
    measure("ed25519_dalek::verify_batch, group 256", || {
        let keys: Vec<VerifyingKey> = vec![public; 256];
        for (m, s) in messages.chunks(256).zip(signatures.chunks(256)) {
            let refs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
            ed25519_dalek::verify_batch(&refs, s, &keys[..s.len()]).unwrap();
        }
    });
    breakdown(&bytes, &messages, &public);
    whole_precheck(&key);
    // Keys checked once, as the collector's precheck has them (`precheck_verified`).
    let keys = [checked];
    for group in [8, 64, 256, 512, 1024] {
        measure(&format!("folded batch (proto), group {group}"), || {
            for (m, s) in messages.chunks(group).zip(bytes.chunks(group)) {
                let batch: Vec<SignedMessage<'_>> = m
                    .iter()
                    .zip(s)
                    .map(|(message, signature)| SignedMessage {
                        key: 0,
                        message,
                        signature,
                    })
                    .collect();
                assert!(verify_ed25519_batch_checked(&keys, &batch));
            }
        });
    }
    // The same from key bytes: the key is checked at each call (a scalar multiplication).
    let key_bytes = [*public.as_bytes()];
    measure("folded batch, group 8, key checked per group", || {
        for (m, s) in messages.chunks(8).zip(bytes.chunks(8)) {
            let batch: Vec<SignedMessage<'_>> = m
                .iter()
                .zip(s)
                .map(|(message, signature)| SignedMessage {
                    key: 0,
                    message,
                    signature,
                })
                .collect();
            assert!(verify_ed25519_batch(&key_bytes, &batch));
        }
    });
}

/// Where the folded batch's time goes, per record: the parts it cannot share between signatures.
fn breakdown(bytes: &[[u8; 64]], messages: &[Vec<u8>], public: &VerifyingKey) {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::VartimeMultiscalarMul;
    measure("  part: R decompression", || {
        for s in bytes {
            let mut r = [0u8; 32];
            r.copy_from_slice(&s[..32]);
            assert!(CompressedEdwardsY(r).decompress().is_some());
        }
    });
    measure("  part: SHA-512 of R||A||M", || {
        for (s, m) in bytes.iter().zip(messages) {
            let mut h = ring::digest::Context::new(&ring::digest::SHA512);
            h.update(&s[..32]);
            h.update(public.as_bytes());
            h.update(m);
            std::hint::black_box(h.finish());
        }
    });
    let points: Vec<EdwardsPoint> = bytes
        .iter()
        .map(|s| {
            let mut r = [0u8; 32];
            r.copy_from_slice(&s[..32]);
            CompressedEdwardsY(r).decompress().unwrap()
        })
        .collect();
    let scalars: Vec<Scalar> = bytes
        .iter()
        .map(|s| {
            let mut z = [0u8; 16];
            z.copy_from_slice(&s[40..56]);
            Scalar::from(u128::from_le_bytes(z))
        })
        .collect();
    for group in [256, 1024] {
        measure(&format!("  part: MSM, 128-bit scalars, {group}"), || {
            for (p, s) in points.chunks(group).zip(scalars.chunks(group)) {
                std::hint::black_box(EdwardsPoint::vartime_multiscalar_mul(s, p));
            }
        });
    }
}

/// `precheck` itself on a chain of routine records: hash, decode and signature, in its groups.
fn whole_precheck(key: &SigningKey) {
    let device = DeviceId::new("term-0001").unwrap();
    let public = key.verifying_key().to_bytes();
    let cert = UnsignedJournalKeyCert {
        device_id: device.clone(),
        boot_id: [1; 16],
        journal_public_key: public,
        first_seq: 1,
        issued_wall_ms: 1_763_900_000_000,
    }
    // The precheck does not look at the certificate's signature (the chain walk does).
    .into_cert(vec![0x30; 70])
    .unwrap();
    let mut head = ChainHead::genesis(&device);
    let records: Vec<Record> = (0..RECORDS as u64)
        .map(|i| {
            let event = Event::new(
                Stamp {
                    wall_ms: 1_763_900_000_000 + i,
                    mono_ns: 1_000_000 * i,
                    boot_id: [1; 16],
                },
                Actor::Clerk(ClerkId::new("anna").unwrap()),
                None,
                EventKind::Pos(PosEvent {
                    action: PosAction::NoSale,
                    amount: None,
                    reference: None,
                }),
            );
            let r = Record::build(&head, journal_key_id(&public), &event, |m| {
                key.sign(m).to_bytes()
            })
            .unwrap();
            head = r.head();
            r
        })
        .collect();
    let certs = [cert];
    measure("precheck (hash, decode, signature)", || {
        let out = precheck(records.clone(), &certs);
        assert!(out.iter().all(|p| p.event().is_ok()));
    });
}
