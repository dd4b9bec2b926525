//! Prometheus text metrics, served on a separate plain-HTTP listener.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, by: u64) {
    // A poisoned map is still a valid map of counters.
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "# TYPE posguard_collector_requests_total counter");
        for (status, n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "posguard_collector_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# TYPE posguard_collector_events_stored_total counter");
        let stored = self.events_stored.load(Ordering::Relaxed);
        let _ = writeln!(o, "posguard_collector_events_stored_total {stored}");
        let _ = writeln!(
            o,
            "# TYPE posguard_collector_duplicate_records_total counter"
        );
        let dups = self.duplicates.load(Ordering::Relaxed);
        let _ = writeln!(o, "posguard_collector_duplicate_records_total {dups}");
        let _ = writeln!(
            o,
            "# TYPE posguard_collector_verification_failures_total counter"
        );
        for (code, n) in self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "posguard_collector_verification_failures_total{{reason=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# TYPE posguard_collector_alerts_total counter");
        for (kind, n) in self.alerts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(o, "posguard_collector_alerts_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# TYPE posguard_collector_revoked_refusals_total counter"
        );
        for (stage, n) in self
            .revoked_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "posguard_collector_revoked_refusals_total{{stage=\"{stage}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# TYPE posguard_collector_store_seconds histogram");
        for (bound, counter) in BUCKETS.iter().zip(&self.latency_buckets) {
            let n = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "posguard_collector_store_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "posguard_collector_store_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        #[allow(clippy::cast_precision_loss)] // a metric; microsecond sums stay far below 2^52
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "posguard_collector_store_seconds_sum {sum}");
        let _ = writeln!(o, "posguard_collector_store_seconds_count {count}");
        o
    }
}
