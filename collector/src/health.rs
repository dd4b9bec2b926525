//! Fleet health: what one device's stored facts mean for operations, in words a new member of
//! the team reads without a manual. Pure: a function of (device row, facts, clock, settings);
//! `posguard-collector devices` does the reading and the printing.
//!
//! A device is in every state whose condition holds (`states`); its `state` is the first of
//! them in [`State::ALL`] order, most urgent first.

use std::collections::HashSet;

use crate::store::DeviceRow;
use crate::store::sqlite::FleetFacts;

/// One condition a device can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Taken out of service (or replaced) by the device lifecycle.
    Decommissioned,
    /// Its newest certificate is revoked.
    Revoked,
    /// Not heard from for longer than `silent_after_s` and its last record is not a clean stop:
    /// power, network, a crash, or someone cut it off.
    Silent,
    /// Its last record is `agent_stopped`: the agent was stopped cleanly.
    Stopped,
    /// In lockdown.
    Lockdown,
    /// The terminal's journal holds records the collector has not stored.
    Lagging,
    /// None of the above.
    Ok,
}

impl State {
    /// Every state, most urgent first.
    pub const ALL: [State; 7] = [
        State::Decommissioned,
        State::Revoked,
        State::Silent,
        State::Stopped,
        State::Lockdown,
        State::Lagging,
        State::Ok,
    ];

    /// Its name in output and in `--state`.
    pub fn name(self) -> &'static str {
        match self {
            State::Decommissioned => "decommissioned",
            State::Revoked => "revoked",
            State::Silent => "silent",
            State::Stopped => "stopped",
            State::Lockdown => "lockdown",
            State::Lagging => "lagging",
            State::Ok => "ok",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How the agent last stopped, as far as the collector can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastStop {
    /// Its last stored record is `agent_stopped`.
    Clean,
    /// It went silent without one.
    Unclean,
}

impl LastStop {
    /// Its name in output.
    pub fn name(self) -> &'static str {
        match self {
            LastStop::Clean => "clean",
            LastStop::Unclean => "unclean",
        }
    }
}

/// What is known around the devices: the clock and the settings that judge them.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Now (collector wall time, Unix ms).
    pub now_ms: u64,
    /// `silent_after_s`, in ms.
    pub silent_after_ms: u64,
    /// When maintenance mode was last seen on: terminals were told to stay away until then.
    pub maintenance_seen_ms: Option<u64>,
    /// Serials (hex) the configured CRL revokes.
    pub crl_serials: &'a HashSet<String>,
    /// The other stored facts.
    pub facts: &'a FleetFacts,
}

/// One device's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The most urgent of `states`.
    pub state: State,
    /// Every state that holds, most urgent first (at least `ok`).
    pub states: Vec<State>,
    /// Records in the terminal's journal (at its last status) not stored here.
    pub lag_records: u64,
    /// While lagging: the device time of the newest stored record (stored up to then).
    pub lag_since_ms: Option<u64>,
    /// While silent: the last contact.
    pub silent_since_ms: Option<u64>,
    /// Whole days until the certificate's notAfter (negative once expired); None if unknown.
    pub cert_days_left: Option<i64>,
    /// The newest certificate issued to it is revoked.
    pub revoked: bool,
    /// In lockdown, as the agent last journaled it (`lockdown_changed`).
    pub lockdown: bool,
    /// How it last stopped, when it is not running.
    pub last_stop: Option<LastStop>,
    /// The lifecycle state the store keeps for it, if any.
    pub lifecycle: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// Judges one device.
pub fn judge(d: &DeviceRow, cx: &Context<'_>) -> Health {
    let facts = cx.facts;
    let id = d.device_id.as_str();
    let clean_stop = facts
        .last_record
        .get(id)
        .is_some_and(|(kind, _)| kind == "agent_stopped");
    // Silence counts from the later of the last contact and the end of maintenance mode.
    let quiet_from = d.last_seen_ms.max(cx.maintenance_seen_ms.unwrap_or(0));
    let silent = !clean_stop
        && (d.silent_alerted || cx.now_ms.saturating_sub(quiet_from) > cx.silent_after_ms);
    let lag_records = d.journal_head.saturating_sub(d.highest_stored);
    let lag_since_ms = (lag_records > 0).then(|| {
        facts
            .last_record
            .get(id)
            .map_or(d.first_seen_ms, |(_, wall)| *wall)
    });
    let revoked = facts
        .newest_serial
        .get(id)
        .is_some_and(|s| cx.crl_serials.contains(s) || facts.revoked_serials.contains(s));
    // Only the agent's own record: a delivered command may have been refused (forged, stale).
    let lockdown = facts.lockdown_reported.get(id).is_some_and(|(on, _)| *on);
    let lifecycle = facts.lifecycle.get(id).cloned();
    let retired = lifecycle
        .as_deref()
        .is_some_and(|l| matches!(l, "decommissioned" | "replaced"));
    let cert_days_left = (d.cert_not_after_unix > 0).then(|| {
        let left = i64::try_from(d.cert_not_after_unix.saturating_mul(1000))
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(cx.now_ms).unwrap_or(i64::MAX));
        left.div_euclid(DAY_MS)
    });
    let mut states: Vec<State> = [
        (retired, State::Decommissioned),
        (revoked, State::Revoked),
        (silent, State::Silent),
        (clean_stop, State::Stopped),
        (lockdown, State::Lockdown),
        (lag_records > 0, State::Lagging),
    ]
    .into_iter()
    .filter_map(|(holds, s)| holds.then_some(s))
    .collect();
    if states.is_empty() {
        states.push(State::Ok);
    }
    Health {
        state: states.first().copied().unwrap_or(State::Ok),
        states,
        lag_records,
        lag_since_ms,
        silent_since_ms: silent.then_some(d.last_seen_ms),
        cert_days_left,
        revoked,
        lockdown,
        last_stop: if clean_stop {
            Some(LastStop::Clean)
        } else if silent {
            Some(LastStop::Unclean)
        } else {
            None
        },
        lifecycle,
    }
}

/// RFC 3339 UTC with exactly three decimals (`2026-12-07T18:40:00.000Z`): one width for
/// every time this view prints, so columns line up and text sorts as time.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm):
/// no fallible conversion on the way, so every u64 prints.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A duration in words: `42 s`, `17 min`, `5 h`, `3 days`.
pub fn words(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
#[path = "health/tests.rs"]
mod tests;
