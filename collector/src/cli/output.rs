//! JSON-lines output of the read-only commands. The field names are documented in
//! `docs/collector.md` and stable.

use std::io::Write as _;

use serde_json::{Value, json};

use crate::clock::format_ms;
use crate::store::{Store, StoreError};

fn line(v: &Value) -> Result<(), StoreError> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output; it is not a store error.
    let _ = writeln!(out, "{v}");
    Ok(())
}

/// `alerts`.
pub(super) fn alerts(
    store: &mut dyn Store,
    since: Option<u64>,
    device: Option<&str>,
) -> anyhow::Result<()> {
    for a in store.alerts(since, device)? {
        line(&json!({
            "id": a.id,
            "device_id": a.device_id,
            "kind": a.kind,
            "severity": a.severity,
            "detail": a.detail,
            "time": format_ms(a.at_ms),
            "at_ms": a.at_ms,
        }))?;
    }
    Ok(())
}

/// `devices`.
pub(super) fn devices(store: &mut dyn Store) -> anyhow::Result<()> {
    for d in store.devices()? {
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
