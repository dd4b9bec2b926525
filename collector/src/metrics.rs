//! Prometheus metrics, served as text on a separate plain-HTTP listener
//! ([`crate::server::plain`]): the counters the server bumps ([`Metrics`]), the refused TLS
//! handshakes ([`handshake`]), the fleet gauges read from the store ([`fleet`]); [`text`]
//! writes the exposition. Every family has its help and type, and every label value that is
//! known in advance (alert kinds, refusal reasons) is present from the start at 0, so an alert
//! rule on a rate sees the first increase. docs/collector.md lists them with example alerting
//! rules.

pub mod fleet;
pub mod handshake;
pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use fleet::Fleet;
pub use text::CONTENT_TYPE;

use crate::alerts::AlertKind;
use crate::clock::SystemClock;
use crate::revocation::Attempts;
use text::Text;

/// Upper bounds (seconds) of the store-latency histogram.
const BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// The collector's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    failures: Mutex<BTreeMap<String, u64>>,
    alerts: Mutex<BTreeMap<String, u64>>,
    revoked_refusals: Mutex<BTreeMap<&'static str, u64>>,
    events_stored: AtomicU64,
    duplicates: AtomicU64,
    latency_buckets: [AtomicU64; 8],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    attempts: Option<Arc<Attempts>>,
    fleet: Option<Fleet>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, by: u64) {
    let mut m = lock(map);
    let v = m.entry(key).or_insert(0);
    *v = v.saturating_add(by);
}

impl Metrics {
    /// Counts an answered request by HTTP status.
    pub fn request(&self, status: u16) {
        bump(&self.requests, status, 1);
    }

    /// Counts a verification failure by its stable code.
    pub fn failure(&self, code: &str) {
        bump(&self.failures, code.to_owned(), 1);
    }

    /// Counts a raised alert.
    pub fn alert(&self, kind: &str) {
        bump(&self.alerts, kind.to_owned(), 1);
    }

    /// Counts a refused attempt of a revoked certificate, by where it was refused
    /// (`handshake`, `request`).
    pub fn revoked_refusal(&self, stage: &'static str) {
        bump(&self.revoked_refusals, stage, 1);
    }

    /// Counts stored and duplicate records.
    pub fn stored(&self, stored: u64, duplicates: u64) {
        self.events_stored.fetch_add(stored, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
    }

    /// Records how long a store transaction took.
    pub fn store_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, counter) in BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Adds the counters of refused TLS handshakes that `attempts` collects.
    #[must_use]
    pub fn with_attempts(mut self, attempts: Arc<Attempts>) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// Adds the fleet gauges of `fleet`.
    #[must_use]
    pub fn with_fleet(mut self, fleet: Fleet) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]). With fleet gauges it
    /// may read the store (at most once per [`fleet::CACHE_FOR`]): call it off the reactor.
    pub fn render(&self) -> String {
        let mut t = Text::default();
        t.family(
            "posguard_collector_build_info",
            "gauge",
            "The collector's version, as a label; always 1.",
        );
        t.sample(
            "posguard_collector_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        t.family(
            "posguard_collector_requests_total",
            "counter",
            "HTTPS requests answered, by status code.",
        );
        for (status, n) in lock(&self.requests).iter() {
            t.sample(
                "posguard_collector_requests_total",
                &[("status", &status.to_string())],
                n,
            );
        }
        t.single(
            "posguard_collector_events_stored_total",
            "counter",
            "Records verified and stored.",
            self.events_stored.load(Ordering::Relaxed),
        );
        t.single(
            "posguard_collector_duplicate_records_total",
            "counter",
            "Records received again that were already stored (a resend after a lost answer).",
            self.duplicates.load(Ordering::Relaxed),
        );
        t.family(
            "posguard_collector_verification_failures_total",
            "counter",
            "Batches refused by verification, by reason.",
        );
        let failures = lock(&self.failures);
        let extra = failures
            .keys()
            .filter(|k| !FAILURE_CODES.contains(&k.as_str()));
        for code in FAILURE_CODES
            .iter()
            .copied()
            .chain(extra.map(String::as_str))
        {
            let n = failures.get(code).copied().unwrap_or(0);
            t.sample(
                "posguard_collector_verification_failures_total",
                &[("reason", code)],
                n,
            );
        }
        drop(failures);
        t.family(
            "posguard_collector_alerts_total",
            "counter",
            "Alerts raised, by kind.",
        );
        let alerts = lock(&self.alerts);
        let known: Vec<&str> = AlertKind::ALL.iter().map(|k| k.name()).collect();
        let extra = alerts.keys().filter(|k| !known.contains(&k.as_str()));
        for kind in known.iter().copied().chain(extra.map(String::as_str)) {
            let n = alerts.get(kind).copied().unwrap_or(0);
            t.sample("posguard_collector_alerts_total", &[("kind", kind)], n);
        }
        drop(alerts);
        t.family(
            "posguard_collector_revoked_refusals_total",
            "counter",
            "Attempts of revoked certificates refused, by stage (handshake or request on an open connection).",
        );
        let revoked = lock(&self.revoked_refusals);
        for stage in ["handshake", "request"] {
            let n = revoked.get(stage).copied().unwrap_or(0);
            t.sample(
                "posguard_collector_revoked_refusals_total",
                &[("stage", stage)],
                n,
            );
        }
        drop(revoked);
        t.family(
            "posguard_collector_handshake_refusals_total",
            "counter",
            "TLS handshakes refused because of the client certificate, by reason.",
        );
        for (i, reason) in handshake::REASONS.iter().enumerate() {
            let n = self
                .attempts
                .as_ref()
                .and_then(|a| a.handshakes.counts().nth(i))
                .map_or(0, |(_, n)| n);
            t.sample(
                "posguard_collector_handshake_refusals_total",
                &[("reason", reason)],
                n,
            );
        }
        self.render_latency(&mut t);
        if let Some(fleet) = &self.fleet {
            let (snap, errors) = fleet.snapshot(&SystemClock);
            fleet::render(&mut t, snap, errors);
        }
        t.finish()
    }

    fn render_latency(&self, t: &mut Text) {
        let name = "posguard_collector_store_seconds";
        t.family(
            name,
            "histogram",
            "Time of one store transaction (an ingest group commit).",
        );
        let bucket = format!("{name}_bucket");
        for (bound, counter) in BUCKETS.iter().zip(&self.latency_buckets) {
            let n = counter.load(Ordering::Relaxed);
            t.sample(&bucket, &[("le", &bound.to_string())], n);
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        t.sample(&bucket, &[("le", "+Inf")], count);
        #[allow(clippy::cast_precision_loss)] // a metric; microsecond sums stay far below 2^52
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        t.sample(&format!("{name}_sum"), &[], sum);
        t.sample(&format!("{name}_count"), &[], count);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map is still a valid map of counters.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Verification failure codes (crate::ingest::reason, proto's batch decoding), each present
/// at 0 from the start; a code added later appears once counted.
const FAILURE_CODES: [&str; 23] = [
    "malformed_batch",
    "unsupported_version",
    "batch_too_large",
    "malformed_record",
    "chain_gap",
    "reordered",
    "broken_link",
    "unknown_journal_key",
    "bad_hash",
    "bad_signature",
    "boot_id_mismatch",
    "wrong_device",
    "bad_cert",
    "bad_cert_signature",
    "bad_journal_key",
    "bad_checkpoint_signature",
    "checkpoint_mismatch",
    "checkpoint_not_at_head",
    "counter_rollback",
    "too_many_certs",
    "seq_exhausted",
    "bad_state",
    "verify_failed",
];
