//! `query` and `export`: stored events as JSON lines, one flat document each
//! ([`crate::document`]).
//!
//! Both check their filters first: a device the store does not know or a kind that does not
//! exist is a usage error (exit 64) naming the nearest known one, never an empty answer that
//! looks like "nothing happened". `export --cursor FILE` resumes in the order records were
//! stored (not event time), so events a terminal ships late, after an outage, are exported by
//! the next run instead of falling before a window that has already passed; the cursor moves
//! only once everything before it was written out.

mod cursor;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use posguard_proto::event::EventKind;
use posguard_proto::text::{ClerkId, DeviceId};

use super::{parse_opt_time, usage};
use crate::alerts::parse_severity;
use crate::document::document;
use crate::store::{EventQuery, Store};

/// Filters of `query` and `export`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Only this device (an unknown one is an error naming the nearest known).
    #[arg(long)]
    pub device: Option<String>,
    /// Event time (the device's clock) at or after (RFC 3339 or Unix ms).
    #[arg(long)]
    pub since: Option<String>,
    /// Event time (the device's clock) before (RFC 3339 or Unix ms).
    #[arg(long)]
    pub until: Option<String>,
    /// Stored by the collector at or after (RFC 3339 or Unix ms): finds events shipped late.
    #[arg(long)]
    pub received_since: Option<String>,
    /// Stored by the collector before (RFC 3339 or Unix ms).
    #[arg(long)]
    pub received_until: Option<String>,
    /// Only events concerning this clerk (named by the event, or acting).
    #[arg(long)]
    pub clerk: Option<String>,
    /// Only this event kind (`login_failed`, `locked_out`, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this severity or higher (`info`, `notice`, `warning`, `critical`).
    #[arg(long)]
    pub min_severity: Option<String>,
}

/// `export`: the filters plus where to resume.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The filters.
    #[command(flatten)]
    pub filter: QueryArgs,
    /// A file holding where the last export ended: only records stored after it are exported
    /// (in the order they were stored), and the file is updated once they are written. Created
    /// by the first run, which exports everything.
    #[arg(long)]
    pub cursor: Option<PathBuf>,
}

/// `query`.
pub(super) fn query(store: &mut dyn Store, q: &QueryArgs) -> anyhow::Result<()> {
    let query = plan(store, q)?;
    let mut out = std::io::stdout().lock();
    store.query(&query, &mut |e| {
        // A closed pipe (`| head`) ends the output; it is not a store error.
        let _ = writeln!(out, "{}", document(&e));
        Ok(())
    })?;
    Ok(())
}

/// `export`.
pub(super) fn export(store: &mut dyn Store, args: &ExportArgs) -> anyhow::Result<()> {
    let mut query = plan(store, &args.filter)?;
    let start = match &args.cursor {
        Some(path) => Some(cursor::load(path, store)?),
        None => None,
    };
    query.after_received_seq = start;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last = cursor::Cursor::default();
    let mut failed: Option<std::io::Error> = None;
    store.query(&query, &mut |e| {
        if failed.is_none() {
            match writeln!(out, "{}", document(&e)) {
                Ok(()) => {
                    last = cursor::Cursor {
                        at: e.received_seq,
                        record: Some((e.device_id, e.seq)),
                    };
                }
                Err(err) => failed = Some(err),
            }
        }
        Ok(())
    })?;
    let written = match failed {
        Some(e) => Err(e),
        None => out.flush(),
    };
    let Some(path) = &args.cursor else {
        return written.context("cannot write the export to stdout");
    };
    written.with_context(|| {
        format!(
            "cannot write the export to stdout; {} was not advanced: run the export again",
            path.display()
        )
    })?;
    // In received order, the last record written is the furthest; nothing written: unchanged.
    if last.record.is_some() || !path.exists() {
        cursor::save(path, &last)?;
    }
    Ok(())
}

/// The store query for `q`, every filter checked.
fn plan(store: &mut dyn Store, q: &QueryArgs) -> anyhow::Result<EventQuery> {
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
    if let Some(kind) = &q.kind
        && !EventKind::NAMES.contains(&kind.as_str())
    {
        return Err(usage(format!(
            "--kind: no event kind {kind:?}{}; the kinds are listed in docs/collector.md",
            super::suggest::hint(kind, EventKind::NAMES.iter().copied())
        )));
    }
    if let Some(device) = &q.device {
        // An archived chain generation is `<id>@gen<N>` (docs/collector.md, "Device lifecycle").
        let base = device
            .split_once("@gen")
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(device.as_str(), |(base, _)| base);
        DeviceId::new(base).map_err(|e| usage(format!("--device: {e}")))?;
        let known = store.devices()?;
        if !known.iter().any(|d| &d.device_id == device) {
            return Err(usage(format!(
                "--device: the store has no device {device:?}{}; `posguard-collector devices` \
                 lists the known ones",
                super::suggest::hint(device, known.iter().map(|d| d.device_id.as_str()))
            )));
        }
    }
    if let Some(clerk) = &q.clerk {
        ClerkId::new(clerk.as_str()).map_err(|e| usage(format!("--clerk: {e}")))?;
    }
    let query = EventQuery {
        device_id: q.device.clone(),
        since_ms: parse_opt_time("--since", q.since.as_deref())?,
        until_ms: parse_opt_time("--until", q.until.as_deref())?,
        kind: q.kind.clone(),
        severities,
        clerk: q.clerk.clone(),
        received_since_ms: parse_opt_time("--received-since", q.received_since.as_deref())?,
        received_until_ms: parse_opt_time("--received-until", q.received_until.as_deref())?,
        after_received_seq: None,
    };
    for (from, to, names) in [
        (query.since_ms, query.until_ms, "--since/--until"),
        (
            query.received_since_ms,
            query.received_until_ms,
            "--received-since/--received-until",
        ),
    ] {
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err(usage(format!(
                "{names}: the window is empty (the start must be before the end)"
            )));
        }
    }
    Ok(query)
}
