use posguard_proto::event::{
    LoginFailure, PosAction, PosEvent, Role, Stamp, TamperFinding, ThrottleScope,
};
use posguard_proto::text::ClerkId;
use serde_json::json;

use super::*;

fn stored(actor: Actor, kind: EventKind) -> StoredEvent {
    let event = Event::new(
        Stamp {
            wall_ms: 1_763_900_000_007,
            mono_ns: 1,
            boot_id: [1; 16],
        },
        actor,
        None,
        kind,
    );
    StoredEvent {
        device_id: "term-1".into(),
        seq: 4,
        hash: "ab".into(),
        kind: event.kind.name().into(),
        severity: "warning".into(),
        wall_ms: event.stamp.wall_ms,
        actor: crate::ingest::row::actor_name(&event.actor).into_owned(),
        clerk: event_clerk(&event),
        event: serde_json::to_value(&event).unwrap(),
        received_ms: 1_763_900_100_000,
        received_seq: 9,
    }
}

fn clerk(id: &str) -> ClerkId {
    ClerkId::new(id).unwrap()
}

#[test]
fn times_have_exactly_three_decimals_and_a_z() {
    for (ms, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_000, "1970-01-01T00:00:01.000Z"),
        (1_763_900_000_007, "2025-11-23T12:13:20.007Z"),
        (1_763_900_000_120, "2025-11-23T12:13:20.120Z"),
        (u64::MAX, "9999-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(rfc3339_ms(ms), text);
    }
}

#[test]
fn every_document_has_the_common_fields() {
    let d = stored(
        Actor::System,
        EventKind::LoginFailed {
            clerk: None,
            reason: LoginFailure::BadSecret,
        },
    );
    let d = document(&d);
    for f in COMMON_FIELDS {
        assert!(d.get(f).is_some(), "{f} missing from {d}");
    }
    assert_eq!(d["@timestamp"], "2025-11-23T12:13:20.007Z");
    assert_eq!(d["received"], "2025-11-23T12:15:00.000Z");
    assert_eq!(d["outcome"], "failure");
    assert_eq!(d["clerk"], Value::Null);
    assert_eq!(d["reason"], "bad_secret");
}

#[test]
fn details_are_flat_and_the_clerk_is_the_one_the_event_concerns() {
    // An admin (the actor) disables a clerk: the clerk is the subject.
    let d = document(&stored(
        Actor::Clerk(clerk("boss")),
        EventKind::ClerkDisabled {
            clerk: clerk("anna"),
        },
    ));
    assert_eq!(d["clerk"], "anna");
    assert_eq!(d["actor"], "clerk:boss");
    let d = document(&stored(
        Actor::Clerk(clerk("boss")),
        EventKind::PrivilegeElevated {
            approver: clerk("boss"),
            subject: clerk("Anna"),
            role: Role::Supervisor,
            purpose: None,
        },
    ));
    assert_eq!(d["clerk"], "Anna");
    assert_eq!(d["subject"], "Anna", "free text is never rewritten");
    assert_eq!(d["role"], "supervisor");
    let d = document(&stored(
        Actor::System,
        EventKind::Throttled {
            scope: ThrottleScope::Clerk(clerk("anna")),
            failures: 3,
            delay_ms: 500,
        },
    ));
    assert_eq!(
        (&d["clerk"], &d["scope"], &d["failures"]),
        (&json!("anna"), &json!("clerk"), &json!(3))
    );
    let d = document(&stored(
        Actor::Clerk(clerk("anna")),
        EventKind::Pos(PosEvent {
            action: PosAction::Other(posguard_proto::text::ShortCode::new("Gift").unwrap()),
            amount: None,
            reference: None,
        }),
    ));
    assert_eq!(
        (&d["action"], &d["action_other"]),
        (&json!("other"), &json!("Gift"))
    );
    assert_eq!(d["clerk"], "anna");
    let d = document(&stored(
        Actor::System,
        EventKind::TamperDetected {
            finding: TamperFinding::Other(posguard_proto::text::ShortCode::new("x").unwrap()),
        },
    ));
    assert_eq!(d["finding"], "other");
    assert!(
        d.as_object().unwrap().values().all(|v| !v.is_object()),
        "{d}"
    );
}
