//! JSON-lines output of the read-only commands. The field names are documented in
//! `docs/collector.md` and stable.

use std::io::Write as _;

use serde_json::{Value, json};

use super::{QueryArgs, parse_opt_time, usage};
use crate::alerts::parse_severity;
use crate::clock::format_ms;
use crate::store::{EventQuery, Store, StoreError, StoredEvent};

fn line(v: &Value) -> Result<(), StoreError> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output; it is not a store error.
    let _ = writeln!(out, "{v}");
    Ok(())
}

fn event_json(e: StoredEvent, export: bool) -> Value {
    let event: Value = serde_json::from_str(&e.event_json).unwrap_or(Value::Null);
    let mut v = json!({
        "device_id": e.device_id,
        "seq": e.seq,
        "time": format_ms(e.wall_ms),
        "wall_ms": e.wall_ms,
        "kind": e.kind,
        "severity": e.severity,
        "actor": e.actor,
        "record_hash": e.hash,
        "received_time": format_ms(e.received_ms),
        "event": event,
    });
    if export && let Some(m) = v.as_object_mut() {
        m.insert("schema".into(), json!("posguard.event.v1"));
        m.insert("vendor".into(), json!("posguard"));
    }
    v
}

/// `query` / `export`.
pub(super) fn events(store: &mut dyn Store, q: &QueryArgs, export: bool) -> anyhow::Result<()> {
    let severities = match &q.min_severity {
        None => None,
        Some(s) => {
            let min = parse_severity(s).ok_or_else(|| {
                usage(format!(
                    "--min-severity: expected info, notice, warning or critical, not {s:?}"
                ))
            })?;
            Some(
                ["info", "notice", "warning", "critical"]
                    .into_iter()
                    .filter(|n| parse_severity(n).is_some_and(|x| x >= min))
                    .map(str::to_owned)
                    .collect(),
            )
        }
    };
    let query = EventQuery {
        device_id: q.device.clone(),
        since_ms: parse_opt_time("--since", q.since.as_deref())?,
        until_ms: parse_opt_time("--until", q.until.as_deref())?,
        kind: q.kind.clone(),
        severities,
    };
    store.query(&query, &mut |e| line(&event_json(e, export)))?;
    Ok(())
}

/// `forks`.
pub(super) fn forks(store: &mut dyn Store) -> anyhow::Result<()> {
    for (device, seq, hash, at) in store.forks()? {
        line(
            &json!({"device_id": device, "seq": seq, "record_hash": hash, "received_time": format_ms(at)}),
        )?;
    }
    Ok(())
}
