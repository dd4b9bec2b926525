use std::collections::HashMap;
use std::mem::discriminant;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::*;
use crate::testkit::{self, arb};
use crate::text::SafeText;

proptest! {
    #[test]
    fn body_round_trip(event in arb::event()) {
        let bytes = event.to_body_bytes().unwrap();
        prop_assert_eq!(Event::from_body_bytes(&bytes).unwrap(), event);
    }

    #[test]
    fn every_kind_name_is_listed(event in arb::event()) {
        prop_assert!(EventKind::NAMES.contains(&event.kind.name()), "{}", event.kind.name());
    }

    #[test]
    fn body_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::from_body_bytes(&bytes);
    }

    #[test]
    fn trailing_byte_refused(event in arb::event(), extra: u8) {
        let mut bytes = event.to_body_bytes().unwrap();
        bytes.push(extra);
        prop_assert_eq!(Event::from_body_bytes(&bytes), Err(DecodeError::TrailingBytes(1)));
    }
}

#[test]
fn severities_are_ordered() {
    assert!(Severity::Info < Severity::Notice);
    assert!(Severity::Notice < Severity::Warning);
    assert!(Severity::Warning < Severity::Critical);
}

#[test]
fn names_are_unique_per_kind() {
    let mut runner = TestRunner::deterministic();
    let strategy = arb::kind();
    let mut by_name = HashMap::new();
    for _ in 0..3000 {
        let kind = strategy.new_tree(&mut runner).unwrap().current();
        let d = discriminant(&kind);
        assert_eq!(
            *by_name.entry(kind.name()).or_insert(d),
            d,
            "{}",
            kind.name()
        );
    }
    assert_eq!(by_name.len(), 31, "every kind sampled and named apart");
}

#[test]
fn routine_and_critical_kinds() {
    let e = testkit::routine_event(testkit::boot(1), 0);
    assert_eq!(e.kind.retention(), Retention::Routine);
    assert!(!e.is_security_critical());
    assert!(e.clone().at_least(Severity::Warning).is_security_critical());
    let honeypot = EventKind::HoneypotTriggered {
        clerk: ClerkId::new("trap").unwrap(),
    };
    assert_eq!(honeypot.retention(), Retention::SecurityCritical);
    assert_eq!(honeypot.default_severity(), Severity::Critical);
}

#[test]
fn severity_is_never_lowered() {
    let e = testkit::event(
        testkit::boot(1),
        0,
        EventKind::TamperDetected {
            finding: TamperFinding::BrokenChain { seq: 4 },
        },
    );
    assert_eq!(e.at_least(Severity::Info).severity, Severity::Critical);
}

#[test]
fn card_number_smuggled_into_bytes_is_refused() {
    let mut e = testkit::routine_event(testkit::boot(1), 0);
    e.kind = EventKind::Pos(PosEvent {
        action: PosAction::Refund,
        amount: None,
        reference: Some(SafeText::new("ref AAAAAAAAAAAAAAAA").unwrap()),
    });
    let bytes = e.to_body_bytes().unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == b"AAAAAAAAAAAAAAAA")
        .unwrap();
    let mut forged = bytes.clone();
    forged[at..at + 16].copy_from_slice(b"4111111111111111");
    assert!(matches!(
        Event::from_body_bytes(&forged),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn overlong_varint_in_body_is_refused() {
    let e = testkit::routine_event(testkit::boot(1), 5);
    let bytes = e.to_body_bytes().unwrap();
    // The body starts with wall_ms as a varint; respell its last byte with one more, redundant,
    // continuation byte (value unchanged).
    let end = bytes.iter().position(|b| b & 0x80 == 0).unwrap();
    let mut forged = bytes[..end].to_vec();
    forged.push(bytes[end] | 0x80);
    forged.push(0x00);
    forged.extend_from_slice(&bytes[end + 1..]);
    assert_eq!(
        Event::from_body_bytes(&forged),
        Err(DecodeError::NonCanonical)
    );
}

#[test]
fn oversized_body_refused() {
    let bytes = vec![0u8; MAX_BODY_LEN + 1];
    assert_eq!(
        Event::from_body_bytes(&bytes),
        Err(DecodeError::TooLarge {
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        })
    );
}
