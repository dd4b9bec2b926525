use proptest::prelude::*;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::*;

fn status() -> impl Strategy<Value = Option<DeviceStatus>> {
    proptest::option::of(
        (
            "[!-~]{0,64}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(agent_version, cert_not_after_unix, journal_head, journal_shipped, wall_ms)| {
                    DeviceStatus {
                        agent_version,
                        cert_not_after_unix,
                        journal_head,
                        journal_shipped,
                        wall_ms,
                    }
                },
            ),
    )
}

fn items(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..max)
}

fn batch() -> impl Strategy<Value = UplinkBatch> {
    (items(8), items(32), items(4), status()).prop_map(|(certs, records, checkpoints, status)| {
        UplinkBatch {
            version: batch_version(),
            certs,
            records,
            checkpoints,
            status,
        }
    })
}

fn command() -> impl Strategy<Value = SignedCommand> {
    (
        "[a-z0-9-]{1,64}",
        any::<u64>(),
        any::<bool>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(id_text, id, lock, issued_wall_ms, half)| SignedCommand {
            device_id: DeviceId::new(id_text).unwrap(),
            id,
            kind: if lock {
                CommandKind::Lockdown
            } else {
                CommandKind::Unlock
            },
            issued_wall_ms,
            signature: [half, half].concat().try_into().unwrap(),
        })
}

proptest! {
    #[test]
    fn batch_round_trips(b in batch()) {
        let bytes = b.to_bytes().unwrap();
        prop_assert_eq!(UplinkBatch::from_bytes(&bytes).unwrap(), b);
    }

    #[test]
    fn ack_round_trips(
        highest_stored in any::<u64>(),
        next_expected in any::<u64>(),
        commands in proptest::collection::vec(command(), 0..4),
    ) {
        let ack = UplinkAck { highest_stored, next_expected, commands };
        let bytes = ack.to_bytes().unwrap();
        prop_assert_eq!(UplinkAck::from_bytes(&bytes).unwrap(), ack);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = UplinkBatch::from_bytes(&bytes);
        let _ = UplinkAck::from_bytes(&bytes);
    }

    #[test]
    fn damaged_batches_never_panic(b in batch(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = b.to_bytes().unwrap();
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = UplinkBatch::from_bytes(&bytes);
            bytes.truncate(i);
            let _ = UplinkBatch::from_bytes(&bytes);
        }
    }
}

#[test]
fn refuses_other_versions_and_bounds() {
    let mut b = UplinkBatch::new();
    b.version = 2;
    let bytes = postcard::to_stdvec(&b).unwrap();
    assert_eq!(
        UplinkBatch::from_bytes(&bytes),
        Err(UplinkError::UnsupportedVersion(2))
    );
    let mut b = UplinkBatch::new();
    b.records = vec![Vec::new(); MAX_BATCH_RECORDS + 1];
    let bytes = postcard::to_stdvec(&b).unwrap();
    assert_eq!(
        UplinkBatch::from_bytes(&bytes),
        Err(UplinkError::OutOfBounds("records"))
    );
    let too_long = vec![0u8; MAX_BATCH_LEN + 1];
    assert!(matches!(
        UplinkBatch::from_bytes(&too_long),
        Err(UplinkError::Decode(DecodeError::TooLarge { .. }))
    ));
    let mut b = UplinkBatch::new();
    b.status = Some(DeviceStatus {
        agent_version: "0.1 beta".into(),
        cert_not_after_unix: 0,
        journal_head: 0,
        journal_shipped: 0,
        wall_ms: 0,
    });
    assert!(
        b.to_bytes().is_err(),
        "spaces are not allowed in the version"
    );
}

#[test]
fn huge_claimed_counts_are_refused_without_allocating() {
    // version 1, certs: a count of u32::MAX items and nothing after it.
    let bytes = [0x01, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(UplinkBatch::from_bytes(&bytes).is_err());
}

#[test]
fn command_signature_binds_every_field() {
    let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
    let mut cmd = SignedCommand {
        device_id: DeviceId::new("term-0001").unwrap(),
        id: 3,
        kind: CommandKind::Lockdown,
        issued_wall_ms: 1_763_900_000_000,
        signature: [0; 64],
    };
    assert!(cmd.signing_bytes().starts_with(COMMAND_TAG));
    cmd.signature = key.sign(&cmd.signing_bytes()).as_ref().try_into().unwrap();
    assert!(cmd.verify(&public));
    let mut other = cmd.clone();
    other.kind = CommandKind::Unlock;
    assert!(!other.verify(&public));
    let mut other = cmd.clone();
    other.device_id = DeviceId::new("term-0002").unwrap();
    assert!(!other.verify(&public));
    let mut other = cmd.clone();
    other.id = 4;
    assert!(!other.verify(&public));
    let mut other = cmd;
    other.issued_wall_ms += 1;
    assert!(!other.verify(&public));
}

#[test]
fn command_kind_names() {
    for k in [CommandKind::Lockdown, CommandKind::Unlock] {
        assert_eq!(CommandKind::from_name(k.name()), Some(k));
    }
    assert_eq!(CommandKind::from_name("reboot"), None);
}
