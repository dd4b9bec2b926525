//! A verified record as a store row.

use posguard_proto::event::{Actor, Event};
use posguard_proto::record::Record;

use crate::alerts::severity_name;
use crate::store::RecordRow;

/// `clerk:<id>`, `system` or `collector`.
pub fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::Clerk(c) => format!("clerk:{c}"),
        Actor::System => "system".to_owned(),
        Actor::Collector => "collector".to_owned(),
    }
}

/// The row to store for a verified `record` with its decoded `event`.
pub fn record_row(device_id: &str, record: &Record, event: &Event) -> RecordRow {
    RecordRow {
        device_id: device_id.to_owned(),
        seq: record.seq(),
        hash: *record.hash(),
        kind: event.kind.name().to_owned(),
        severity: severity_name(event.severity).to_owned(),
        wall_ms: event.stamp.wall_ms,
        actor: actor_name(&event.actor),
        raw: record.as_bytes().to_vec(),
    }
}
