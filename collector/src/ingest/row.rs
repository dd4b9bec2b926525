//! A verified record as a store row.

use std::borrow::Cow;

use posguard_proto::event::{Actor, Event};
use posguard_proto::record::Record;

use crate::alerts::severity_name;
use crate::store::RecordRow;

/// `clerk:<id>`, `system` or `collector`.
pub fn actor_name(actor: &Actor) -> Cow<'static, str> {
    match actor {
        Actor::Clerk(c) => Cow::Owned(format!("clerk:{c}")),
        Actor::System => Cow::Borrowed("system"),
        Actor::Collector => Cow::Borrowed("collector"),
    }
}

/// The columns of a record's row that come from its decoded event (worked out off the store
/// thread; the rest of the row borrows from the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventColumns {
    kind: &'static str,
    severity: &'static str,
    wall_ms: u64,
    actor: Cow<'static, str>,
    clerk: Option<String>,
}

/// The event columns of `event`.
pub fn event_columns(event: &Event) -> EventColumns {
    EventColumns {
        kind: event.kind.name(),
        severity: severity_name(event.severity),
        wall_ms: event.stamp.wall_ms,
        actor: actor_name(&event.actor),
        clerk: crate::document::event_clerk(event),
    }
}

/// The row to store for a verified `record` whose event has the columns `event`.
pub fn record_row<'a>(
    device_id: &'a str,
    record: &'a Record,
    event: &'a EventColumns,
) -> RecordRow<'a> {
    RecordRow {
        device_id,
        seq: record.seq(),
        hash: record.hash(),
        kind: event.kind,
        severity: event.severity,
        wall_ms: event.wall_ms,
        actor: &event.actor,
        clerk: event.clerk.as_deref(),
        raw: record.as_bytes(),
    }
}
