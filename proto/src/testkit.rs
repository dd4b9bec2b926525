//! Test keys and builders. The keys are fixed so that failures reproduce; they are test keys,
//! published here, and sign nothing real.

pub(crate) mod arb;
pub(crate) mod edge;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

use crate::cert::{JournalKeyCert, UnsignedJournalKeyCert};
use crate::chain::{ChainHead, journal_key_id};
use crate::checkpoint::{Checkpoint, UnsignedCheckpoint};
use crate::event::{Actor, Event, EventKind, PosAction, PosEvent, Stamp};
use crate::keys::DikPublicKey;
use crate::record::Record;
use crate::text::{ClerkId, DeviceId};

/// PKCS#8 of a P-256 test key (made with `openssl genpkey` + `openssl pkcs8 -topk8`).
pub(crate) const DIK_PKCS8: &[u8] = &[
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20, 0x24, 0xed, 0xbd, 0xc1, 0x1c, 0x2e, 0x5d, 0x8e, 0x62, 0xc4, 0xf4, 0x7a,
    0xd2, 0x8e, 0x2b, 0x57, 0x51, 0x5b, 0x88, 0xbc, 0x8e, 0xe7, 0xe2, 0x56, 0xcb, 0xa6, 0x30, 0x90,
    0x6a, 0x62, 0x34, 0x47, 0xa1, 0x44, 0x03, 0x42, 0x00, 0x04, 0xc1, 0xfa, 0xb3, 0xab, 0xfd, 0x2f,
    0x0b, 0x26, 0x3a, 0xd8, 0x0f, 0xd9, 0x50, 0x59, 0x87, 0xae, 0xa5, 0x60, 0xb8, 0x6a, 0x4c, 0x6c,
    0x90, 0x95, 0xab, 0xeb, 0x63, 0x98, 0x30, 0x74, 0x8e, 0x5a, 0x3e, 0xbc, 0x9b, 0x78, 0xe0, 0x49,
    0xbc, 0x30, 0xa2, 0x4f, 0xa0, 0x9c, 0x8c, 0xa9, 0x83, 0x80, 0x1f, 0x91, 0xa7, 0x97, 0x20, 0xcb,
    0x61, 0xa8, 0xb8, 0x1b, 0x77, 0xa8, 0x06, 0xf5, 0xd7, 0xb4,
];

/// `openssl pkey -pubout -outform DER` of the same key.
pub(crate) const DIK_SPKI_DER: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0xc1, 0xfa, 0xb3, 0xab, 0xfd,
    0x2f, 0x0b, 0x26, 0x3a, 0xd8, 0x0f, 0xd9, 0x50, 0x59, 0x87, 0xae, 0xa5, 0x60, 0xb8, 0x6a, 0x4c,
    0x6c, 0x90, 0x95, 0xab, 0xeb, 0x63, 0x98, 0x30, 0x74, 0x8e, 0x5a, 0x3e, 0xbc, 0x9b, 0x78, 0xe0,
    0x49, 0xbc, 0x30, 0xa2, 0x4f, 0xa0, 0x9c, 0x8c, 0xa9, 0x83, 0x80, 0x1f, 0x91, 0xa7, 0x97, 0x20,
    0xcb, 0x61, 0xa8, 0xb8, 0x1b, 0x77, 0xa8, 0x06, 0xf5, 0xd7, 0xb4,
];

/// The device identity key of the tests.
pub(crate) struct Dik(EcdsaKeyPair);

pub(crate) fn dik() -> Dik {
    Dik(EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        DIK_PKCS8,
        &SystemRandom::new(),
    )
    .unwrap())
}

impl Dik {
    pub(crate) fn public_point(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    pub(crate) fn public(&self) -> DikPublicKey {
        DikPublicKey::from_der_or_point(&self.public_point()).unwrap()
    }

    /// DER ECDSA over SHA-256 of `msg`, as a TPM signing the digest produces.
    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0
            .sign(&SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

/// A journal key from a fixed seed.
pub(crate) struct JournalKey(Ed25519KeyPair);

pub(crate) fn journal_key(seed: u8) -> JournalKey {
    JournalKey(Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap())
}

impl JournalKey {
    pub(crate) fn public(&self) -> [u8; 32] {
        self.0.public_key().as_ref().try_into().unwrap()
    }

    pub(crate) fn key_id(&self) -> [u8; 8] {
        journal_key_id(&self.public())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).as_ref().try_into().unwrap()
    }
}

pub(crate) fn device() -> DeviceId {
    DeviceId::new("term-0001").unwrap()
}

pub(crate) fn boot(n: u8) -> [u8; 16] {
    [n; 16]
}

pub(crate) fn cert(
    dik: &Dik,
    key: &JournalKey,
    boot_id: [u8; 16],
    first_seq: u64,
) -> JournalKeyCert {
    cert_for_public(dik, key.public(), boot_id, first_seq)
}

/// A certificate for any 32 bytes as the journal key (the DIK signs what it is given).
pub(crate) fn cert_for_public(
    dik: &Dik,
    public: [u8; 32],
    boot_id: [u8; 16],
    first_seq: u64,
) -> JournalKeyCert {
    let unsigned = UnsignedJournalKeyCert {
        device_id: device(),
        boot_id,
        journal_public_key: public,
        first_seq,
        issued_wall_ms: 1_763_900_000_000,
    };
    let sig = dik.sign(&unsigned.signing_bytes());
    unsigned.into_cert(sig).unwrap()
}

pub(crate) fn checkpoint(dik: &Dik, head: &ChainHead, nv_counter: u64) -> Checkpoint {
    let unsigned = UnsignedCheckpoint {
        device_id: device(),
        seq: head.seq,
        head_hash: head.hash,
        nv_counter,
        wall_ms: 1_763_900_000_000,
    };
    let sig = dik.sign(&unsigned.signing_bytes());
    unsigned.into_checkpoint(sig).unwrap()
}

pub(crate) fn event(boot_id: [u8; 16], i: u64, kind: EventKind) -> Event {
    let stamp = Stamp {
        wall_ms: 1_763_900_000_000 + i,
        mono_ns: 1_000_000 * i,
        boot_id,
    };
    Event::new(
        stamp,
        Actor::Clerk(ClerkId::new("anna").unwrap()),
        None,
        kind,
    )
}

pub(crate) fn routine_event(boot_id: [u8; 16], i: u64) -> Event {
    event(
        boot_id,
        i,
        EventKind::Pos(PosEvent {
            action: PosAction::NoSale,
            amount: None,
            reference: None,
        }),
    )
}

/// Appends `events` after `head`, signed by `key`.
pub(crate) fn append(head: &mut ChainHead, key: &JournalKey, events: &[Event]) -> Vec<Record> {
    events
        .iter()
        .map(|e| {
            let r = Record::build(head, key.key_id(), e, |m| key.sign(m)).unwrap();
            *head = r.head();
            r
        })
        .collect()
}

/// A verified-good chain of `n` routine records from genesis under one key (boot 1).
pub(crate) struct Fixture {
    pub(crate) dik: Dik,
    pub(crate) key: JournalKey,
    pub(crate) certs: Vec<JournalKeyCert>,
    pub(crate) records: Vec<Record>,
    pub(crate) head: ChainHead,
}

pub(crate) fn fixture(n: u64) -> Fixture {
    let dik = dik();
    let key = journal_key(1);
    let certs = vec![cert(&dik, &key, boot(1), 1)];
    let mut head = ChainHead::genesis(&device());
    let events: Vec<Event> = (0..n).map(|i| routine_event(boot(1), i)).collect();
    let records = append(&mut head, &key, &events);
    Fixture {
        dik,
        key,
        certs,
        records,
        head,
    }
}
