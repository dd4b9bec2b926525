//! Alert kinds and the rules that raise them from stored events. Alerts are rows in the store
//! (`posguard-collector alerts`), counted in the metrics and logged. A cause that repeats while
//! its alert is open or acknowledged adds to that alert's count ([`grouped_by_detail`] says
//! what a cause is); [`triage`] holds the states an operator moves an alert through.

pub mod triage;

use posguard_proto::event::{Event, EventKind, Severity, TamperFinding};
use serde::Serialize;

/// What an alert is about. The names are stable (JSON output, metrics labels, docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// Records missing from a device's chain and not (yet) declared dropped.
    ChainGap,
    /// A chain that does not link, a hash that does not match, a reordered batch.
    ChainBroken,
    /// Two different records for one (device, seq).
    Fork,
    /// A record, certificate or checkpoint whose signature does not verify.
    BadSignature,
    /// A checkpoint's NV counter went back (a restored old database).
    CounterRollback,
    /// A device's journal went back below what the collector stored: it reports a lower head,
    /// or its chain restarted at seq 1 (journal deleted, replaced, or its tail cut).
    ChainRegressed,
    /// A honeypot account was used.
    Honeypot,
    /// Many lockouts across the fleet within a short window.
    LockoutStorm,
    /// An Admin or SuperAdmin was locked out on a terminal.
    AdminLockedOut,
    /// Repeated wrong or replayed TOTP codes on one device.
    MfaFailures,
    /// A terminal's failure budget was exceeded (too many failed logins of any clerk, known
    /// or not, within its window): every login on it is blocked for a while.
    LoginBlocked,
    /// A terminal has not been heard from for longer than configured.
    Silent,
    /// A device certificate expires soon.
    CertExpiry,
    /// An enrollment or renewal was refused (bad token, wrong device id, bad CSR, …).
    EnrollmentRefused,
    /// A revoked certificate tried to connect or sent a request (crate::revocation).
    RevokedCertificate,
    /// The terminal's own start-up check found its stores tampered with or damaged (a
    /// `tamper_detected` or `tamper_recovered` record: rollback, broken chain, unreadable,
    /// missing, replaced or older store, a journal behind the collector).
    Tamper,
    /// The terminal dropped unshipped records to stay within its journal bound (a
    /// `journal_overflow` record declares the range).
    JournalOverflow,
    /// A certificate was issued for a device id with another identity key while the id was
    /// not decommissioned: its chain was archived and a new one started (crate::lifecycle).
    DeviceReplaced,
}

impl AlertKind {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChainGap => "chain_gap",
            Self::ChainBroken => "chain_broken",
            Self::Fork => "fork",
            Self::BadSignature => "bad_signature",
            Self::CounterRollback => "counter_rollback",
            Self::ChainRegressed => "chain_regressed",
            Self::Honeypot => "honeypot",
            Self::LockoutStorm => "lockout_storm",
            Self::AdminLockedOut => "admin_locked_out",
            Self::MfaFailures => "mfa_failures",
            Self::LoginBlocked => "login_blocked",
            Self::Silent => "silent",
            Self::CertExpiry => "cert_expiry",
            Self::EnrollmentRefused => "enrollment_refused",
            Self::RevokedCertificate => "revoked_certificate",
            Self::Tamper => "tamper",
            Self::JournalOverflow => "journal_overflow",
            Self::DeviceReplaced => "device_replaced",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == text)
    }

    /// Every kind, for metrics.
    pub const ALL: [Self; 18] = [
        Self::ChainGap,
        Self::ChainBroken,
        Self::Fork,
        Self::BadSignature,
        Self::CounterRollback,
        Self::ChainRegressed,
        Self::Honeypot,
        Self::LockoutStorm,
        Self::AdminLockedOut,
        Self::MfaFailures,
        Self::LoginBlocked,
        Self::Silent,
        Self::CertExpiry,
        Self::EnrollmentRefused,
        Self::RevokedCertificate,
        Self::Tamper,
        Self::JournalOverflow,
        Self::DeviceReplaced,
    ];
}

/// A new alert, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// The device, if the alert concerns one.
    pub device_id: Option<String>,
    /// What.
    pub kind: AlertKind,
    /// How serious.
    pub severity: Severity,
    /// A short human-readable detail (no secrets: built from ids, numbers and kind names).
    pub detail: String,
    /// When it was raised (collector wall time, Unix ms).
    pub at_ms: u64,
}

/// Whether an alert of `kind` names its cause in its detail, so that two details are two
/// causes (two open alerts). The other kinds have one cause per device (or, for
/// `lockout_storm`, per fleet): their detail carries figures that change from one raise to the
/// next (counts, a last contact, an expiry date), and a repeat adds to the open alert's count.
pub fn grouped_by_detail(kind: AlertKind) -> bool {
    !matches!(
        kind,
        AlertKind::Silent
            | AlertKind::MfaFailures
            | AlertKind::LockoutStorm
            | AlertKind::CertExpiry
            | AlertKind::LoginBlocked
    )
}

/// What storing an alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// A new alert with this id (no open or acknowledged one had this cause).
    New(i64),
    /// The open or acknowledged alert with this id had this cause: its count grew.
    Repeated(i64),
}

/// The stable name of a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Notice => "notice",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Parses [`severity_name`].
pub fn parse_severity(text: &str) -> Option<Severity> {
    Some(match text {
        "info" => Severity::Info,
        "notice" => Severity::Notice,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        _ => return None,
    })
}

/// A windowed counting rule an event may trigger (evaluated against the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRule {
    /// Count `locked_out` events across the fleet.
    LockoutStorm,
    /// Count `mfa_failed` and `mfa_replayed` events together on the event's device (the
    /// runbook's "wrong or replayed TOTP codes").
    MfaFailures,
}

/// An alert a stored event raises at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Immediate {
    /// What.
    pub kind: AlertKind,
    /// How serious.
    pub severity: Severity,
    /// Detail, built from ids, numbers and kind names only.
    pub detail: String,
}

fn finding_detail(finding: &TamperFinding) -> String {
    match finding {
        TamperFinding::Rollback {
            stored_counter,
            tpm_counter,
        } => format!(
            "rollback: journal checkpoint counter {stored_counter}, TPM counter {tpm_counter}"
        ),
        TamperFinding::BrokenChain { seq } => format!("broken chain at seq {seq}"),
        TamperFinding::UnreadableDatabase { store } => format!("{store} unreadable"),
        TamperFinding::Other(code) => code.to_string(),
        TamperFinding::StoreMissing { store } => format!("{store} missing"),
        TamperFinding::StoreReplaced { store } => format!("{store} replaced"),
        TamperFinding::StoreOlder {
            store,
            recorded_generation,
            found_generation,
        } => format!(
            "{store} older copy (generation {found_generation}, journal recorded {recorded_generation})"
        ),
        // A finding this collector does not know yet (a newer agent): still an alert.
        _ => "a finding this collector version does not name".to_owned(),
    }
}

/// What a stored event means for alerting: an immediate alert, or a windowed rule to check.
pub fn classify(event: &Event) -> Option<Result<Immediate, WindowRule>> {
    let immediate = |kind, severity, detail| {
        Some(Ok(Immediate {
            kind,
            severity,
            detail,
        }))
    };
    match &event.kind {
        EventKind::HoneypotTriggered { clerk } => immediate(
            AlertKind::Honeypot,
            Severity::Critical,
            format!("honeypot account {clerk} used"),
        ),
        EventKind::TamperDetected { finding } => immediate(
            AlertKind::Tamper,
            Severity::Critical,
            format!("tamper detected: {}", finding_detail(finding)),
        ),
        EventKind::TamperRecovered { finding, .. } => immediate(
            AlertKind::Tamper,
            Severity::Critical,
            format!(
                "tamper recovered onto a fresh journal: {}",
                finding_detail(finding)
            ),
        ),
        EventKind::JournalOverflow(o) => immediate(
            AlertKind::JournalOverflow,
            if o.dropped_critical > 0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            format!(
                "{} records dropped in seq {}..={} ({} security-critical)",
                o.dropped, o.first_seq, o.last_seq, o.dropped_critical
            ),
        ),
        EventKind::FailureBudgetExceeded {
            failures,
            window_s,
            until_wall_ms,
        } => immediate(
            AlertKind::LoginBlocked,
            Severity::Critical,
            format!(
                "every login on this terminal blocked after {failures} failed logins within \
                 {window_s} s, {}",
                match until_wall_ms {
                    Some(ms) => format!("until {}", crate::clock::format_ms(*ms)),
                    None => "until an admin resets it".to_owned(),
                }
            ),
        ),
        EventKind::LockedOut { .. } => Some(Err(WindowRule::LockoutStorm)),
        EventKind::MfaFailed { .. } | EventKind::MfaReplayed { .. } => {
            Some(Err(WindowRule::MfaFailures))
        }
        _ => None,
    }
}

/// Whether a certificate expiring at `not_after_unix` (seconds) is within `days` of `now_ms`.
pub fn expires_soon(not_after_unix: u64, now_ms: u64, days: u64) -> bool {
    let now_s = now_ms / 1000;
    not_after_unix <= now_s.saturating_add(days.saturating_mul(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_window() {
        let now = 1_000_000 * 1000;
        assert!(expires_soon(1_000_000 + 29 * 86_400, now, 30));
        assert!(!expires_soon(1_000_000 + 31 * 86_400, now, 30));
    }

    #[test]
    fn severity_names_round_trip() {
        for s in [
            Severity::Info,
            Severity::Notice,
            Severity::Warning,
            Severity::Critical,
        ] {
            assert_eq!(parse_severity(severity_name(s)), Some(s));
        }
    }
}
