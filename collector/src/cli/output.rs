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

/// `devices`.
pub(super) fn devices(store: &mut dyn Store) -> anyhow::Result<()> {
    let lifecycles: std::collections::HashMap<String, crate::store::LifecycleRow> = store
        .lifecycles()?
        .into_iter()
        .map(|l| (l.device_id.clone(), l))
        .collect();
    for d in store.devices()? {
        let life = lifecycles.get(&d.device_id);
        line(&json!({
            "device_id": d.device_id,
            "first_seen": format_ms(d.first_seen_ms),
            "last_seen": format_ms(d.last_seen_ms),
            "cert_not_after": format_ms(d.cert_not_after_unix.saturating_mul(1000)),
            "highest_stored": d.highest_stored,
            "agent_version": d.agent_version,
            "journal_head": d.journal_head,
            "journal_shipped": d.journal_shipped,
            "device_time": format_ms(d.device_wall_ms),
            "silent": d.silent_alerted,
            "pending_gaps": d.chain_state.map(|s| s.pending_gaps.len()).unwrap_or(0),
            // Lifecycle (docs/collector.md, "Device lifecycle"): no row is active, generation 1.
            "state": life.map_or("active", |l| l.state.name()),
            "generation": life.map_or(1, |l| l.generation),
        }))?;
    }
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
