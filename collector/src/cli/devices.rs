//! `devices`: fleet health at a glance. Each device with its state in words (see
//! [`crate::health`]), its lag, last contact and certificate expiry: a table on a terminal (or
//! `--format table`), JSON lines when piped (or `--json`). `--state` keeps the devices in that
//! state; an unknown state is a usage error naming the valid ones.

use std::io::{IsTerminal as _, Write as _};

use serde_json::{Value, json};

use super::{open_store, suggest, usage};
use crate::clock::{SystemClock, WallClock as _, format_ms};
use crate::config::Config;
use crate::health::{self, Health, State, rfc3339_ms, words};
use crate::store::{DeviceRow, MAINTENANCE_SEEN_MS, Store as _};
use crate::tls::TlsFiles;

/// Arguments of `devices`.
#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    /// Only devices in this state: ok, lagging, silent, stopped, revoked, lockdown,
    /// decommissioned (a device can be in several).
    #[arg(long)]
    pub state: Option<String>,
    /// JSON lines (the default when stdout is not a terminal).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// `table` or `json`.
    #[arg(long)]
    pub format: Option<String>,
}

pub(super) fn run(config: &Config, args: &DevicesArgs) -> anyhow::Result<()> {
    let names = State::ALL.map(State::name);
    let wanted = match &args.state {
        None => None,
        Some(s) => Some(State::from_name(s).ok_or_else(|| {
            usage(format!(
                "--state: unknown state {s:?}{}; the states are {}",
                suggest::hint(s, names),
                names.join(", ")
            ))
        })?),
    };
    let table = match (args.json, args.format.as_deref()) {
        (true, _) | (false, Some("json")) => false,
        (false, Some("table")) => true,
        (false, Some(other)) => {
            return Err(usage(format!(
                "--format: expected table or json, not {other:?}"
            )));
        }
        (false, None) => std::io::stdout().is_terminal(),
    };
    let mut store = open_store(config)?;
    let crl = crate::tls::crl_serials(&TlsFiles::from_config(config))?;
    let facts = store.fleet_facts()?;
    let maintenance_seen_ms = store
        .setting(MAINTENANCE_SEEN_MS)?
        .and_then(|v| v.parse().ok());
    let cx = health::Context {
        now_ms: SystemClock.now_ms(),
        silent_after_ms: config.silent_after_s.saturating_mul(1000),
        maintenance_seen_ms,
        crl_serials: &crl,
        facts: &facts,
    };
    let generations: std::collections::HashMap<String, u64> = store
        .lifecycles()?
        .into_iter()
        .map(|l| (l.device_id, l.generation))
        .collect();
    let rows: Vec<(DeviceRow, Health)> = store
        .devices()?
        .into_iter()
        .map(|d| {
            let h = health::judge(&d, &cx);
            (d, h)
        })
        .filter(|(_, h)| wanted.is_none_or(|w| h.states.contains(&w)))
        .collect();
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output; it is not an error.
    if table {
        let _ = write!(out, "{}", render_table(&rows, cx.now_ms));
    } else {
        for (d, h) in &rows {
            let generation = generations.get(&d.device_id).copied().unwrap_or(1);
            let _ = writeln!(out, "{}", device_json(d, h, generation, cx.now_ms));
        }
    }
    Ok(())
}

fn device_json(d: &DeviceRow, h: &Health, generation: u64, now_ms: u64) -> Value {
    let opt_time = |ms: Option<u64>| ms.map(rfc3339_ms);
    json!({
        // The fields before `state` are those `devices` printed before the health view.
        "device_id": d.device_id,
        "first_seen": format_ms(d.first_seen_ms),
        "last_seen": format_ms(d.last_seen_ms),
        "cert_not_after": format_ms(d.cert_not_after_unix.saturating_mul(1000)),
        "highest_stored": d.highest_stored,
        "agent_version": d.agent_version,
        "journal_head": d.journal_head,
        "journal_shipped": d.journal_shipped,
        "device_time": format_ms(d.device_wall_ms),
        "silent": h.states.contains(&State::Silent),
        "pending_gaps": d.chain_state.as_ref().map(|s| s.pending_gaps.len()).unwrap_or(0),
        "state": h.state.name(),
        "states": h.states.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "last_contact": rfc3339_ms(d.last_seen_ms),
        "last_contact_ago_s": now_ms.saturating_sub(d.last_seen_ms) / 1000,
        "lag_records": h.lag_records,
        "lag_since": opt_time(h.lag_since_ms),
        "silent_since": opt_time(h.silent_since_ms),
        "cert_expires": (d.cert_not_after_unix > 0)
            .then(|| rfc3339_ms(d.cert_not_after_unix.saturating_mul(1000))),
        "cert_days_left": h.cert_days_left,
        "revoked": h.revoked,
        "lockdown": h.lockdown,
        "last_stop": h.last_stop.map(|s| s.name()),
        // "Device lifecycle" in docs/collector.md: no entry means active, generation 1.
        "lifecycle": h.lifecycle.as_deref().unwrap_or("active"),
        "generation": generation,
    })
}

/// The table: one line per device, the state first, then what it means in words.
fn render_table(rows: &[(DeviceRow, Health)], now_ms: u64) -> String {
    let mut lines = vec![[
        "DEVICE".to_owned(),
        "STATE".to_owned(),
        "LAST CONTACT".to_owned(),
        "CERTIFICATE".to_owned(),
        "DETAIL".to_owned(),
    ]];
    for (d, h) in rows {
        let ago = words(now_ms.saturating_sub(d.last_seen_ms));
        let cert = match h.cert_days_left {
            None => "unknown".to_owned(),
            Some(n) if n < 0 => format!("expired {} days ago", n.unsigned_abs()),
            Some(n) => format!("expires in {n} days"),
        };
        let mut detail: Vec<String> = Vec::new();
        if let Some(l) = &h.lifecycle {
            detail.push(l.clone());
        }
        if h.revoked {
            detail.push("certificate revoked".to_owned());
        }
        if let Some(since) = h.silent_since_ms {
            detail.push(format!(
                "silent since {} (no clean stop)",
                rfc3339_ms(since)
            ));
        }
        if h.states.contains(&State::Stopped) {
            detail.push("agent stopped cleanly".to_owned());
        }
        if h.lockdown {
            detail.push("lockdown".to_owned());
        }
        if let Some(since) = h.lag_since_ms {
            detail.push(format!(
                "{} records not shipped, stored up to {}",
                h.lag_records,
                rfc3339_ms(since)
            ));
        }
        lines.push([
            d.device_id.clone(),
            h.states
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(","),
            format!("{} ({ago} ago)", rfc3339_ms(d.last_seen_ms)),
            cert,
            detail.join("; "),
        ]);
    }
    let mut widths = [0usize; 5];
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for l in &lines {
        let mut cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        if let Some(last) = cells.last_mut() {
            *last = last.trim_end().to_owned();
        }
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    if rows.is_empty() {
        text.push_str("(no devices)\n");
    }
    text
}
