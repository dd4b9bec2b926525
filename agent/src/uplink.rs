//! Shipping the audit journal to the collector: HTTPS over TLS 1.3 with the TPM-held key,
//! bounded batches, resumption from the collector's expected seq, pruning only what it
//! acknowledged, exponential backoff with full jitter honouring `Retry-After`, heartbeats when
//! idle, and signed commands (lockdown, unlock) applied only after their ops signature checks.
//!
//! - `tls`: the client configuration (pinned fleet CA, or platform roots plus the fleet CA).
//! - `crl`: the fleet CRL applied to the collector's certificate, kept current from the
//!   collector (signed by the fleet CA, newest wins).
//! - `http`: one keep-alive connection and the classification of failures.
//! - `backoff`: retry delays.
//! - `batch`: the journal-key certificates a batch carries (those its records need).
//! - `renew`: automatic certificate renewal over the same channel.
//! - `shipper`: the loop.
//!
//! The uplink runs on a thread and runtime of its own: a TLS handshake makes the TPM sign,
//! which blocks, and must never stall the threads that serve the local API.

mod backoff;
mod batch;
mod crl;
mod http;
mod renew;
mod shipper;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use posguard_hal::SecureElement;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;

use crate::clerks::Clerks;
use crate::clock::Clock;
use crate::journal::Journal;

/// `[uplink]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The collector, `host:port`.
    pub collector: String,
    /// The name in the collector's certificate (default: the host part of `collector`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The fleet CA (PEM).
    pub fleet_ca: PathBuf,
    /// Trust only the fleet CA for the collector (default); `false` adds the platform's roots.
    #[serde(default = "yes")]
    pub pinned: bool,
    /// This terminal's certificate chain (PEM, leaf first), written by provisioning and renewal.
    pub certificate: PathBuf,
    /// The fleet CRL the collector's certificate is checked against (pinned only), kept
    /// current from the collector: a file the agent can write, e.g. in its state directory.
    /// Absent: no check until the first CRL is fetched. Unset: never checked.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// The operations key that signs commands (Ed25519 public key, 64 hex digits).
    #[serde(default)]
    pub ops_public_key: Option<String>,
    /// Most records in one batch.
    #[serde(default = "default_records")]
    pub batch_records: usize,
    /// Most bytes of records in one batch.
    #[serde(default = "default_bytes")]
    pub batch_bytes: usize,
    /// A heartbeat after this many seconds without a batch.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Renew the certificate once this share of its lifetime has passed, in percent (default
    /// 67: two thirds; 0 renews at the first opportunity).
    #[serde(default = "default_renew")]
    pub renew_after_percent: u8,
    /// First retry delay, seconds.
    #[serde(default = "default_min")]
    pub backoff_min_secs: u64,
    /// Longest retry delay, seconds.
    #[serde(default = "default_max")]
    pub backoff_max_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_records() -> usize {
    2000
}
fn default_bytes() -> usize {
    1024 * 1024
}
fn default_heartbeat() -> u64 {
    60
}
fn default_renew() -> u8 {
    67
}
fn default_min() -> u64 {
    1
}
fn default_max() -> u64 {
    300
}

impl UplinkConfig {
    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.collector.contains(':') {
            return Err(format!(
                "uplink.collector: {:?} must be host:port",
                self.collector
            ));
        }
        if self.batch_records == 0 || self.batch_records > posguard_proto::uplink::MAX_BATCH_RECORDS
        {
            return Err(format!(
                "uplink.batch_records: must be 1 to {}",
                posguard_proto::uplink::MAX_BATCH_RECORDS
            ));
        }
        if self.batch_bytes < 64 * 1024 || self.batch_bytes > 3 * 1024 * 1024 {
            return Err("uplink.batch_bytes: must be 65536 to 3145728".to_owned());
        }
        if self.backoff_min_secs == 0 || self.backoff_max_secs < self.backoff_min_secs {
            return Err(
                "uplink.backoff_min_secs/backoff_max_secs: need 1 <= min <= max".to_owned(),
            );
        }
        if self.renew_after_percent > 99 {
            return Err("uplink.renew_after_percent: must be 0 to 99".to_owned());
        }
        if self.crl.is_some() && !self.pinned {
            return Err(
                "uplink.crl: needs pinned = true (the fleet CRL covers fleet CA \
                        certificates only)"
                    .to_owned(),
            );
        }
        if let Some(k) = &self.ops_public_key {
            ops_key(k).map_err(|e| format!("uplink.ops_public_key: {e}"))?;
        }
        Ok(())
    }

    fn server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            self.collector
                .rsplit_once(':')
                .map_or(self.collector.clone(), |(h, _)| {
                    h.trim_matches(['[', ']']).to_owned()
                })
        })
    }
}

/// Parses a hex Ed25519 public key.
pub fn ops_key(hex: &str) -> Result<[u8; 32], String> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.trim().as_bytes())
        .map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "must be 32 bytes (64 hex digits)".to_owned())
}

/// What went wrong talking to the collector.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UplinkError {
    /// The configuration or a file it names is unusable.
    #[error("uplink configuration: {0}")]
    Config(String),
    /// TCP or HTTP failed.
    #[error("collector unreachable: {0}")]
    Network(String),
    /// TLS failed (for example the collector's certificate is not trusted).
    #[error("TLS with the collector failed: {0}")]
    Tls(String),
    /// The collector refused this terminal's client certificate.
    #[error("{0}")]
    ClientCertRefused(String),
    /// The collector answered with an error.
    #[error("the collector answered {status} {code}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error code.
        code: String,
    },
}

/// Counters the uplink keeps (for status and tests).
#[derive(Debug, Default)]
pub struct UplinkStats {
    /// TCP+TLS connection attempts.
    pub connection_attempts: AtomicU64,
    /// Batches acknowledged.
    pub batches_acked: AtomicU64,
    /// Highest seq the collector acknowledged.
    pub acked_seq: AtomicU64,
    /// Failures (network, refusals, backoffs).
    pub failures: AtomicU64,
}

impl UplinkStats {
    /// A JSON view for `status`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "connection_attempts": self.connection_attempts.load(Ordering::Relaxed),
            "batches_acked": self.batches_acked.load(Ordering::Relaxed),
            "acked_seq": self.acked_seq.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
        })
    }
}

/// Everything the shipper needs.
#[derive(Debug, Clone)]
pub struct UplinkDeps {
    /// The configuration.
    pub config: UplinkConfig,
    /// The journal to ship.
    pub journal: Journal,
    /// The device key (TLS client key).
    pub element: Arc<dyn SecureElement>,
    /// For applying lockdown/unlock.
    pub clerks: Arc<Clerks>,
    /// Event stamps.
    pub clock: Clock,
    /// Counters.
    pub stats: Arc<UplinkStats>,
}

/// How long the uplink may take, once stopped, to ship what the journal still holds (the
/// agent's stop record above all): well within systemd's `TimeoutStopSec=30s`, short enough
/// that a shutdown with the collector unreachable is not held up.
pub const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// Starts the uplink on a thread with its own runtime; when `stop` is cancelled it finishes
/// the batch in flight, then makes one attempt of at most [`FINAL_FLUSH`] to ship the rest.
/// Join the handle to wait for it.
pub fn spawn(
    deps: UplinkDeps,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("posguard-uplink".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "uplink runtime did not start");
                    return;
                }
            };
            runtime.block_on(shipper::run(deps, stop));
        })
}
