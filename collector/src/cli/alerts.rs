//! `posguard-collector alerts`: the shared queue of alerts. Without a subcommand it lists
//! alerts as JSON lines (open and acknowledged by default; filters by state, severity, kind,
//! device and time); `show ID` prints one with its triage history; `ack`, `resolve` and
//! `reopen` change its state, each recorded with who, when and why. Every wrong value is
//! refused with exit 64, naming the value, the valid ones and, for a typo, the nearest.

use anyhow::Context as _;
use serde_json::{Value, json};

use super::suggest::nearest;
use super::{parse_opt_time, usage};
use crate::alerts::triage::{
    ActionRow, AlertFilter, AlertState, Triage, TriageAction, TriageRefusal,
};
use crate::alerts::{AlertKind, severity_name};
use crate::clock::{SystemClock, WallClock as _};
use crate::config::Config;
use crate::store::{AlertRow, Store};
use posguard_proto::event::Severity;

/// `alerts` and its subcommands.
// Not `args_conflicts_with_subcommands`: clap would then refuse the global `--config` before
// a subcommand (`alerts --config c.toml show 1`); filters with a subcommand are refused in `run`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Act on one alert instead of listing.
    #[command(subcommand)]
    pub action: Option<AlertsAction>,
    /// Filters of the listing.
    #[command(flatten)]
    pub list: ListArgs,
}

/// Filters of the listing; each takes one value or a comma-separated list.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// `open`, `acknowledged`, `resolved` or `all` [default: open,acknowledged].
    #[arg(long)]
    pub state: Option<String>,
    /// `info`, `notice`, `warning`, `critical`.
    #[arg(long)]
    pub severity: Option<String>,
    /// Alert kind (`mfa_failures`, `tamper`, … as in docs/collector.md).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Alerts last raised at or after (RFC 3339 or Unix ms).
    #[arg(long)]
    pub since: Option<String>,
    /// Alerts first raised before (RFC 3339 or Unix ms).
    #[arg(long)]
    pub until: Option<String>,
}

/// Who acts and why.
#[derive(Debug, clap::Args)]
pub struct Actor {
    /// The alert's id (as listed).
    pub id: i64,
    /// Who acts [default: $SUDO_USER, else $USER].
    #[arg(long)]
    pub by: Option<String>,
    /// Why (one line, at most 1000 characters).
    #[arg(long)]
    pub note: String,
}

/// One alert's triage.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsAction {
    /// One alert with its history, as one JSON object.
    Show {
        /// The alert's id.
        id: i64,
    },
    /// Take an alert: acknowledged, with who and why; `--for` makes it open again after that
    /// long if it is not resolved by then.
    Ack {
        /// Who, which alert, why.
        #[command(flatten)]
        actor: Actor,
        /// How long the acknowledgement holds: `90m`, `4h`, `2d` (at most 30d) [default:
        /// until resolved].
        #[arg(long = "for")]
        for_: Option<String>,
    },
    /// Close an alert with a note; the same cause again opens a new alert.
    Resolve {
        /// Who, which alert, why.
        #[command(flatten)]
        actor: Actor,
    },
    /// Open an acknowledged or resolved alert again.
    Reopen {
        /// Who, which alert, why.
        #[command(flatten)]
        actor: Actor,
    },
}

/// Runs `alerts`.
pub(super) fn run(config: &Config, args: AlertsArgs) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    let Some(action) = args.action else {
        let filter = filter(&args.list)?;
        let mut store = super::open_store(config)?;
        let mut listed = 0u64;
        store.alert_list(&filter, now, &mut |row| {
            listed = listed.saturating_add(1);
            print_line(&alert_json(&row));
            Ok(())
        })?;
        if listed == 0
            && let Some(device) = &filter.device_id
        {
            check_device(&mut store, device)?;
        }
        return Ok(());
    };
    let l = &args.list;
    if [
        &l.state,
        &l.severity,
        &l.kind,
        &l.device,
        &l.since,
        &l.until,
    ]
    .iter()
    .any(|f| f.is_some())
    {
        return Err(usage(
            "alerts: --state, --severity, --kind, --device, --since and --until filter the \
             listing; give them without a subcommand (`alerts --kind tamper`), and `alerts \
             show|ack|resolve|reopen ID` without them",
        ));
    }
    let (actor, action) = match action {
        AlertsAction::Show { id } => {
            let mut store = super::open_store(config)?;
            let (alert, history) = store
                .alert_show(id, now)?
                .ok_or_else(|| usage(TriageRefusal::NoSuchAlert(id).to_string()))?;
            let mut v = alert_json(&alert);
            if let Some(m) = v.as_object_mut() {
                m.insert("history".into(), history_json(&alert, &history));
            }
            print_line(&v);
            return Ok(());
        }
        AlertsAction::Ack { actor, for_ } => {
            let until_ms = match for_ {
                None => None,
                Some(text) => {
                    let d = crate::enroll::token::parse_ttl(&text).ok_or_else(|| {
                        usage(format!(
                            "--for: expected a duration such as 90m, 4h or 2d (units s, m, h, \
                             d; at most 30d), not {text:?}"
                        ))
                    })?;
                    Some(now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
                }
            };
            (actor, TriageAction::Acknowledge { until_ms })
        }
        AlertsAction::Resolve { actor } => (actor, TriageAction::Resolve),
        AlertsAction::Reopen { actor } => (actor, TriageAction::Reopen),
    };
    let triage = Triage {
        by: who(actor.by.as_deref())?,
        note: note(&actor.note)?,
        action,
    };
    let mut store = super::open_store(config)?;
    match store.alert_triage(actor.id, &triage, now)? {
        Ok(row) => {
            print_line(&alert_json(&row));
            Ok(())
        }
        Err(e @ TriageRefusal::NoSuchAlert(_)) => Err(usage(e.to_string())),
        Err(e) => Err(anyhow::Error::new(e)).context(format!("alerts {}", triage.action.name())),
    }
}

/// One JSON line on stdout; a closed pipe (`| head`) ends the output quietly.
fn print_line(v: &Value) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{v}");
}

/// Who acts: `--by`, else the operator behind sudo, else the login user.
fn who(by: Option<&str>) -> anyhow::Result<String> {
    let name = match by {
        Some(b) => b.to_owned(),
        None => ["SUDO_USER", "USER"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .ok_or_else(|| {
                usage("--by: neither SUDO_USER nor USER is set: name who acts with --by NAME")
            })?,
    };
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(usage(format!(
            "--by: expected a name of 1 to 64 characters without control characters, not {name:?}"
        )));
    }
    Ok(name)
}

/// Why: a required, single-line note.
fn note(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(usage(
            "--note: say why (what was checked, what was done), e.g. --note \"shop confirms \
             the admin mistyped; seed rotated\"",
        ));
    }
    if text.chars().count() > 1000 || text.chars().any(char::is_control) {
        return Err(usage(
            "--note: at most 1000 characters on one line (no newlines or control characters); \
             put long findings in the ticket and its reference here",
        ));
    }
    Ok(text.to_owned())
}

/// Splits a comma-separated flag value and checks each item against `valid` (exit 64 with the
/// nearest valid value for a typo).
fn items(flag: &str, text: &str, valid: &[&'static str]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim) {
        if valid.contains(&item) {
            out.push(item.to_owned());
            continue;
        }
        let hint = nearest(item, valid.iter().copied())
            .map(|n| format!("did you mean {n:?}? "))
            .unwrap_or_default();
        return Err(usage(format!(
            "{flag}: unknown value {item:?}; {hint}expected one of: {}",
            valid.join(", ")
        )));
    }
    Ok(out)
}

fn filter(a: &ListArgs) -> anyhow::Result<AlertFilter> {
    let state_names: Vec<&'static str> = AlertState::ALL
        .iter()
        .map(|s| s.name())
        .chain(["all"])
        .collect();
    let states = match &a.state {
        None => vec![AlertState::Open, AlertState::Acknowledged],
        Some(text) => {
            let named = items("--state", text, &state_names)?;
            if named.iter().any(|s| s == "all") {
                Vec::new()
            } else {
                named
                    .iter()
                    .filter_map(|s| AlertState::from_name(s))
                    .collect()
            }
        }
    };
    let severities = [
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Critical,
    ]
    .map(severity_name);
    let kinds = AlertKind::ALL.map(AlertKind::name);
    let since_ms = parse_opt_time("--since", a.since.as_deref())?;
    let until_ms = parse_opt_time("--until", a.until.as_deref())?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && u <= s
    {
        return Err(usage("--until: must be later than --since"));
    }
    Ok(AlertFilter {
        states,
        severities: match &a.severity {
            Some(t) => items("--severity", t, &severities)?,
            None => Vec::new(),
        },
        kinds: match &a.kind {
            Some(t) => items("--kind", t, &kinds)?,
            None => Vec::new(),
        },
        device_id: a.device.clone(),
        since_ms,
        until_ms,
    })
}

/// An empty listing for a device this collector never heard of is a typo until shown
/// otherwise: exit 64 naming the nearest known device.
fn check_device(store: &mut dyn Store, device: &str) -> anyhow::Result<()> {
    let devices = store.devices()?;
    if devices.iter().any(|d| d.device_id == device) {
        return Ok(());
    }
    let hint = nearest(device, devices.iter().map(|d| d.device_id.as_str()))
        .map(|n| format!("did you mean {n:?}? "))
        .unwrap_or_default();
    Err(usage(format!(
        "--device: no device {device:?} is known to this collector; {hint}`posguard-collector \
         devices` lists them"
    )))
}

/// RFC 3339 UTC with milliseconds, always the same width (`2026-12-07T18:12:24.000Z`).
pub fn format_ms_fixed(ms: u64) -> String {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

fn alert_json(a: &AlertRow) -> Value {
    let acknowledged = a.state == AlertState::Acknowledged.name();
    json!({
        "id": a.id,
        "device_id": a.device_id,
        "kind": a.kind,
        "severity": a.severity,
        "detail": a.detail,
        "time": crate::clock::format_ms(a.at_ms),
        "at_ms": a.at_ms,
        "state": a.state,
        "count": a.count,
        "first_at": format_ms_fixed(a.at_ms),
        "last_at": format_ms_fixed(a.last_ms),
        "owner": if acknowledged { a.state_by.clone() } else { None },
        "ack_until": a.ack_until_ms.map(format_ms_fixed),
        "state_by": a.state_by,
        "state_at": a.state_at_ms.map(format_ms_fixed),
        "state_note": a.state_note,
    })
}

fn history_json(a: &AlertRow, history: &[ActionRow]) -> Value {
    let raised = json!({
        "at": format_ms_fixed(a.at_ms),
        "action": "raised",
        "by": "collector",
        "note": a.detail,
        "until": Value::Null,
    });
    let actions = history.iter().map(|h| {
        json!({
            "at": format_ms_fixed(h.at_ms),
            "action": h.action,
            "by": h.by,
            "note": h.note,
            "until": h.until_ms.map(format_ms_fixed),
        })
    });
    Value::Array(std::iter::once(raised).chain(actions).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fixed_precision_times() {
        assert_eq!(format_ms_fixed(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_ms_fixed(1_796_654_341_719),
            "2026-12-07T14:39:01.719Z"
        );
        assert_eq!(format_ms_fixed(1_000), "1970-01-01T00:00:01.000Z");
        assert_eq!(format_ms_fixed(u64::MAX), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn typos_name_the_nearest_value() {
        let kinds = AlertKind::ALL.map(AlertKind::name);
        let e = items("--kind", "mfa_failure", &kinds)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean \"mfa_failures\""), "{e}");
        assert_eq!(
            items("--kind", "honeypot,tamper", &kinds).unwrap(),
            ["honeypot", "tamper"]
        );
    }
}
