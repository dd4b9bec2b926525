//! Writes the fuzzers' seed corpus: a few valid records, journal-key certificates, checkpoints
//! and event bodies, one file each, under `<dir>/<target>/`.
//!
//! ```text
//! cargo run -p posguard-proto --example fuzz_seeds -- proto/fuzz/corpus
//! ```
//!
//! Keys are made up on the spot (the journal key from a fixed seed); the seeds need to decode,
//! not to verify against any real device.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::checkpoint::UnsignedCheckpoint;
use posguard_proto::event::{
    Actor, Event, EventKind, LoginFailure, MinorUnits, Money, Overflow, PeerCred, PosAction,
    PosEvent, Stamp, TamperFinding,
};
use posguard_proto::record::Record;
use posguard_proto::text::{ClerkId, Currency, DeviceId, SafeText};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: fuzz_seeds <corpus dir>")?,
    );
    let rng = SystemRandom::new();
    let device = DeviceId::new("term-0001")?;
    let boot_id = [0x5a; 16];

    let journal = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).map_err(|_| "journal key")?;
    let journal_pk: [u8; 32] = journal.public_key().as_ref().try_into()?;
    let key_id = journal_key_id(&journal_pk);
    let sign = |msg: &[u8]| {
        let mut sig = [0u8; 64];
        for (o, b) in sig.iter_mut().zip(journal.sign(msg).as_ref()) {
            *o = *b;
        }
        sig
    };

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "generate DIK")?;
    let dik = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "load DIK")?;
    // Printed so that the seeds' signatures can be checked by hand (see docs/audit-format.md).
    let dik_point = dik.public_key().as_ref();
    println!(
        "DIK SPKI: {}{}",
        hex(&posguard_proto::keys::P256_SPKI_PREFIX),
        hex(dik_point)
    );
    println!("journal public key: {}", hex(&journal_pk));
    let dik_sign = |msg: &[u8]| -> Result<Vec<u8>, Box<dyn Error>> {
        Ok(dik
            .sign(&rng, msg)
            .map_err(|_| "DIK sign")?
            .as_ref()
            .to_vec())
    };

    let anna = ClerkId::new("anna")?;
    let stamp = |i: u64| Stamp {
        wall_ms: 1_763_900_000_000 + i,
        mono_ns: 5_000_000_000 + i * 1_000_000,
        boot_id,
    };
    let peer = Some(PeerCred {
        uid: 1001,
        gid: 1001,
        pid: 4242,
    });
    let events = [
        (
            "login_failed",
            Event::new(
                stamp(0),
                Actor::Clerk(anna.clone()),
                peer,
                EventKind::LoginFailed {
                    clerk: Some(anna.clone()),
                    reason: LoginFailure::BadSecret,
                },
            ),
        ),
        (
            "pos_refund",
            Event::new(
                stamp(1),
                Actor::Clerk(anna.clone()),
                peer,
                EventKind::Pos(PosEvent {
                    action: PosAction::Refund,
                    amount: Some(Money {
                        minor: MinorUnits::new(1999)?,
                        currency: Currency::new("EUR")?,
                    }),
                    reference: Some(SafeText::new("receipt 2025-000123")?),
                }),
            ),
        ),
        (
            "journal_overflow",
            Event::new(
                stamp(2),
                Actor::System,
                None,
                EventKind::JournalOverflow(Overflow {
                    first_seq: 1,
                    last_seq: 1,
                    dropped: 0,
                    dropped_critical: 0,
                }),
            ),
        ),
        (
            "tamper_recovered",
            Event::new(
                stamp(3),
                Actor::System,
                None,
                EventKind::TamperRecovered {
                    finding: TamperFinding::BrokenChain { seq: 2 },
                    moved_to: Some(SafeText::new(
                        "/var/lib/posguard/quarantine/2025-11-23T10-00-00Z",
                    )?),
                },
            ),
        ),
    ];

    let mut head = ChainHead::genesis(&device);
    let mut batch = posguard_proto::uplink::UplinkBatch::new();
    for (name, event) in &events {
        let record = Record::build(&head, key_id, event, sign)?;
        head = record.head();
        write(&out, "decode_record", name, record.as_bytes())?;
        write(&out, "decode_event", name, &event.to_body_bytes()?)?;
        batch.records.push(record.as_bytes().to_vec());
    }
    batch.status = Some(posguard_proto::uplink::DeviceStatus {
        agent_version: "0.1.0".to_owned(),
        cert_not_after_unix: 1_800_000_000,
        journal_head: head.seq,
        journal_shipped: 0,
        wall_ms: 1_763_900_000_000,
    });
    write(&out, "decode_uplink", "batch", &batch.to_bytes()?)?;
    let ack = posguard_proto::uplink::UplinkAck {
        highest_stored: head.seq,
        next_expected: head.seq + 1,
        commands: Vec::new(),
    };
    write(&out, "decode_uplink", "ack", &ack.to_bytes()?)?;

    let cert = UnsignedJournalKeyCert {
        device_id: device.clone(),
        boot_id,
        journal_public_key: journal_pk,
        first_seq: 1,
        issued_wall_ms: 1_763_900_000_000,
    };
    let sig = dik_sign(&cert.signing_bytes())?;
    write(
        &out,
        "decode_journal_cert",
        "first_boot",
        cert.into_cert(sig)?.as_bytes(),
    )?;

    for (name, nv_counter) in [("counter_1", 1), ("counter_300", 300)] {
        let cp = UnsignedCheckpoint {
            device_id: device.clone(),
            seq: head.seq,
            head_hash: head.hash,
            nv_counter,
            wall_ms: 1_763_900_000_100,
        };
        let sig = dik_sign(&cp.signing_bytes())?;
        write(
            &out,
            "decode_checkpoint",
            name,
            cp.into_checkpoint(sig)?.as_bytes(),
        )?;
    }
    Ok(())
}

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<(), Box<dyn Error>> {
    let dir = out.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("{name}.bin")), bytes)?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
