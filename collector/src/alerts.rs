//! Alert kinds and the rules that raise them from stored events. Alerts are rows in the store
//! (`posguard-collector alerts`), counted in the metrics and logged.

use posguard_proto::event::{Event, EventKind, Severity};
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
    /// Repeated MFA failures on one device.
    MfaFailures,
    /// A terminal has not been heard from for longer than configured.
    Silent,
    /// A device certificate expires soon.
    CertExpiry,
    /// An enrollment or renewal was refused (bad token, wrong device id, bad CSR, …).
    EnrollmentRefused,
    /// A revoked certificate tried to connect or sent a request (crate::revocation).
    RevokedCertificate,
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
            Self::MfaFailures => "mfa_failures",
            Self::Silent => "silent",
            Self::CertExpiry => "cert_expiry",
            Self::EnrollmentRefused => "enrollment_refused",
            Self::RevokedCertificate => "revoked_certificate",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [Self; 13] = [
        Self::ChainGap,
        Self::ChainBroken,
        Self::Fork,
        Self::BadSignature,
        Self::CounterRollback,
        Self::ChainRegressed,
        Self::Honeypot,
        Self::LockoutStorm,
        Self::MfaFailures,
        Self::Silent,
        Self::CertExpiry,
        Self::EnrollmentRefused,
        Self::RevokedCertificate,
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
    /// Count `mfa_failed` events on the event's device.
    MfaFailures,
}

/// What a stored event means for alerting: an immediate alert, or a windowed rule to check.
pub fn classify(event: &Event) -> Option<Result<(AlertKind, String), WindowRule>> {
    match &event.kind {
        EventKind::HoneypotTriggered { clerk } => Some(Ok((
            AlertKind::Honeypot,
            format!("honeypot account {clerk} used"),
        ))),
        EventKind::LockedOut { .. } => Some(Err(WindowRule::LockoutStorm)),
        EventKind::MfaFailed { .. } => Some(Err(WindowRule::MfaFailures)),
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
