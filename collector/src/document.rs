//! The flat JSON document of a stored event, as `query` and `export` print it (the schema is in
//! docs/collector.md, "Event documents").
//!
//! Every document has the same top-level fields whatever its kind (`@timestamp`, `received`,
//! `device`, `seq`, `kind`, `outcome`, `clerk`, `severity`, …), so a SIEM maps them once; the
//! kind's own details sit beside them under their own names, one level deep (nested structures
//! become `outer_inner`, enum variants snake_case values), instead of under 31 per-kind paths.
//! Times are RFC 3339 UTC with exactly three decimals.
//!
//! Also here: which clerk an event concerns ([`event_clerk`], stored in its own column at ingest
//! so `--clerk` is a column filter) and its [`outcome`].

use posguard_proto::event::{Actor, Event, EventKind, ThrottleScope};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::clock::hex;
use crate::store::StoredEvent;

/// Names every document has at top level; a detail of the same name is written `detail_<name>`.
pub const COMMON_FIELDS: [&str; 12] = [
    "@timestamp",
    "received",
    "device",
    "seq",
    "kind",
    "outcome",
    "clerk",
    "severity",
    "actor",
    "record_hash",
    "received_seq",
    "schema",
];

/// The value of the `schema` field (changes only with an incompatible change of the fields).
pub const SCHEMA: &str = "posguard.event.v2";

/// Detail fields (last name segment) whose values are enums: serde writes their unit variants
/// in CamelCase (`BadSecret`), the documents in snake_case (`bad_secret`).
const ENUM_FIELDS: [&str; 9] = [
    "role", "reason", "limit", "source", "backend", "action", "finding", "kind", "scope",
];

/// Nesting below a detail that is still flattened (deeper values are kept as JSON).
const MAX_DEPTH: usize = 3;

/// Unix milliseconds as RFC 3339 UTC with millisecond precision (`2026-12-07T18:12:23.004Z`),
/// clamped to years 0000..=9999 (a device clock far off stays a valid, sortable timestamp).
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) if t.year() <= 9999 => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        _ => "9999-12-31T23:59:59.999Z".to_owned(),
    }
}

/// The clerk an event concerns: the clerk its kind names (the subject of an admin action, the
/// clerk locked out, the one elevated), else the clerk who acted.
pub fn event_clerk(event: &Event) -> Option<String> {
    let named = match &event.kind {
        EventKind::LoginSucceeded { clerk, .. }
        | EventKind::MfaFailed { clerk }
        | EventKind::MfaReplayed { clerk, .. }
        | EventKind::LockedOut { clerk, .. }
        | EventKind::SessionExpired { clerk, .. }
        | EventKind::LoggedOut { clerk }
        | EventKind::PrivilegeElevated { subject: clerk, .. }
        | EventKind::ClerkEnrolled { clerk, .. }
        | EventKind::ClerkRemoved { clerk }
        | EventKind::ClerkDisabled { clerk }
        | EventKind::ClerkEnabled { clerk }
        | EventKind::TotpSeedRotated { clerk }
        | EventKind::HoneypotTriggered { clerk }
        | EventKind::Throttled {
            scope: ThrottleScope::Clerk(clerk),
            ..
        } => Some(clerk),
        EventKind::LoginFailed { clerk, .. } | EventKind::LockoutReset { clerk } => clerk.as_ref(),
        _ => None,
    };
    match (named, &event.actor) {
        (Some(c), _) | (None, Actor::Clerk(c)) => Some(c.to_string()),
        (None, _) => None,
    }
}

/// `success`, `failure` or `unknown` (the ECS `event.outcome` values) for a kind name.
pub fn outcome(kind: &str) -> &'static str {
    match kind {
        "login_succeeded" | "logged_out" | "lockout_reset" | "privilege_elevated"
        | "clerk_enrolled" | "clerk_removed" | "clerk_disabled" | "clerk_enabled"
        | "totp_seed_rotated" | "policy_changed" | "config_changed" | "lockdown_changed"
        | "command_applied" | "tamper_recovered" | "cache_purged" | "agent_started" => "success",
        "login_failed"
        | "mfa_failed"
        | "mfa_replayed"
        | "throttled"
        | "locked_out"
        | "failure_budget_exceeded"
        | "command_refused"
        | "cache_record_refused" => "failure",
        _ => "unknown",
    }
}

/// The document of `e`.
pub fn document(e: &StoredEvent) -> Value {
    let mut m = Map::new();
    m.insert("@timestamp".into(), rfc3339_ms(e.wall_ms).into());
    m.insert("received".into(), rfc3339_ms(e.received_ms).into());
    m.insert("device".into(), e.device_id.clone().into());
    m.insert("seq".into(), e.seq.into());
    m.insert("kind".into(), e.kind.clone().into());
    m.insert("outcome".into(), outcome(&e.kind).into());
    m.insert(
        "clerk".into(),
        e.clerk.clone().map_or(Value::Null, Value::from),
    );
    m.insert("severity".into(), e.severity.clone().into());
    m.insert("actor".into(), e.actor.clone().into());
    m.insert("record_hash".into(), e.hash.clone().into());
    m.insert("received_seq".into(), e.received_seq.into());
    m.insert("schema".into(), SCHEMA.into());
    let mut details = Map::new();
    if let Some(Value::Object(peer)) = e.event.get("peer") {
        for (k, v) in peer {
            details.insert(format!("peer_{k}"), v.clone());
        }
    }
    // The kind is one variant: `{"LoginFailed": {…}}`, `{"Pos": {…}}`, or a bare name.
    if let Some(Value::Object(kind)) = e.event.get("kind")
        && let Some((_, inner)) = kind.iter().next()
    {
        flatten_into(&mut details, "", inner, 0);
    }
    for (k, v) in details {
        // The kind's own `clerk` is the top-level one.
        if k == "clerk" && m.get("clerk") == Some(&v) {
            continue;
        }
        let k = if COMMON_FIELDS.contains(&k.as_str()) {
            format!("detail_{k}")
        } else {
            k
        };
        m.insert(k, v);
    }
    Value::Object(m)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}_{name}")
    }
}

fn flatten_into(out: &mut Map<String, Value>, prefix: &str, v: &Value, depth: usize) {
    let name = if prefix.is_empty() { "detail" } else { prefix };
    match v {
        Value::Object(o) if depth < MAX_DEPTH => {
            let mut fields = o.iter();
            match (fields.next(), fields.next()) {
                // An enum variant with data: its name is the value, its data beside it.
                (Some((variant, data)), None) if is_variant(variant) => {
                    let variant = snake(variant);
                    if !prefix.is_empty() {
                        out.insert(prefix.to_owned(), variant.clone().into());
                    }
                    // Struct data under the field's own prefix (`finding_store`), a
                    // single value under the variant's (`action_other`).
                    let at = if data.is_object() {
                        prefix.to_owned()
                    } else {
                        join(prefix, &variant)
                    };
                    flatten_into(out, &at, data, depth.saturating_add(1));
                }
                _ => {
                    for (k, inner) in o {
                        flatten_into(out, &join(prefix, k), inner, depth.saturating_add(1));
                    }
                }
            }
        }
        // A unit enum variant (only where the field is an enum: free text such as a clerk id
        // is never rewritten).
        Value::String(s) if ENUM_FIELDS.contains(&last(name)) && is_variant(s) => {
            out.insert(name.to_owned(), snake(s).into());
        }
        Value::Array(a)
            if a.len() >= 16 && a.iter().all(|b| b.as_u64().is_some_and(|b| b < 256)) =>
        {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            out.insert(name.to_owned(), hex(&bytes).into());
        }
        other => {
            out.insert(name.to_owned(), other.clone());
        }
    }
}

fn is_variant(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

fn last(name: &str) -> &str {
    name.rsplit('_').next().unwrap_or(name)
}

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len().saturating_add(4));
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
