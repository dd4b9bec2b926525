//! `collector.toml`: read once, validated before anything is bound. Unknown keys are errors,
//! and every error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use posguard_proto::uplink::MAX_BATCH_LEN;
use serde::Deserialize;

/// The collector's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS listen address for agents.
    pub listen: SocketAddr,
    /// Plain-HTTP listen address for Prometheus metrics (absent: no metrics listener).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain of the server.
    pub server_cert: PathBuf,
    /// PEM private key of the server.
    pub server_key: PathBuf,
    /// PEM fleet CA certificate(s) that issue device certificates.
    pub fleet_ca: PathBuf,
    /// Certificate revocation list of the fleet CA (PEM or DER); re-read when its mtime changes.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// SQLite database file.
    pub store: PathBuf,
    /// Largest request body in bytes (at most 4 MiB).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// Seconds to wait for a request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_s: u64,
    /// Seconds a whole request (body included) may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// A file whose existence switches maintenance mode on (besides `maintenance on`).
    #[serde(default)]
    pub maintenance_file: Option<PathBuf>,
    /// `Retry-After` seconds sent in maintenance mode.
    #[serde(default = "default_maintenance_retry")]
    pub maintenance_retry_after_s: u64,
    /// Seconds without contact after which a terminal is reported silent.
    #[serde(default = "default_silent_after")]
    pub silent_after_s: u64,
    /// Hex Ed25519 public key of the operations key (`ops-key generate` prints it).
    #[serde(default)]
    pub ops_public_key: Option<String>,
    /// Fleet CA certificate (PEM) that signs device certificates at enrollment and renewal;
    /// must be one of the `fleet_ca` certificates. Absent: `/v1/enroll` and `/v1/renew` answer
    /// 503 `enrollment_disabled`.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// The fleet CA's private key (PKCS#8 PEM, keep it mode 0600); with `ca_cert`.
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// Validity of issued device certificates, days (never beyond the CA's own expiry).
    #[serde(default = "default_device_cert_days")]
    pub device_cert_days: u32,
    /// Per-device rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Alert thresholds.
    #[serde(default)]
    pub alerts: AlertConfig,
}

/// Token bucket per device.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second refilled.
    pub per_second: f64,
    /// Bucket size (requests allowed in a burst).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 1.0,
            burst: 30,
        }
    }
}

/// Alert thresholds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Lockouts across the fleet within `lockout_storm_window_s` that make a storm.
    pub lockout_storm_count: u64,
    /// Window of the lockout-storm rule, seconds.
    pub lockout_storm_window_s: u64,
    /// MFA failures on one device within `mfa_failure_window_s` that raise an alert.
    pub mfa_failure_count: u64,
    /// Window of the MFA rule, seconds.
    pub mfa_failure_window_s: u64,
    /// Days before a device certificate's expiry that raise an alert.
    pub cert_expiry_days: u64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            lockout_storm_count: 10,
            lockout_storm_window_s: 300,
            mfa_failure_count: 5,
            mfa_failure_window_s: 600,
            cert_expiry_days: 30,
        }
    }
}

fn default_body_limit() -> usize {
    MAX_BATCH_LEN
}
fn default_header_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
// Short, so that leaving maintenance brings the fleet back within a minute (it was 300 s:
// terminals then waited five minutes after `maintenance off`).
fn default_maintenance_retry() -> u64 {
    30
}
fn default_silent_after() -> u64 {
    3600
}
fn default_device_cert_days() -> u32 {
    90
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a missing key or a wrong type (the message names the key).
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value out of range.
    #[error("key `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Config {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason| Err(ConfigError::Invalid { key, reason });
        if self.body_limit == 0 || self.body_limit > MAX_BATCH_LEN {
            return bad("body_limit", "must be 1 to 4194304 bytes");
        }
        if self.header_timeout_s == 0 {
            return bad("header_timeout_s", "must be at least 1");
        }
        if self.request_timeout_s == 0 {
            return bad("request_timeout_s", "must be at least 1");
        }
        if self.silent_after_s == 0 {
            return bad("silent_after_s", "must be at least 1");
        }
        // A terminal told to come back later must not look silent before it may.
        if self.maintenance_retry_after_s >= self.silent_after_s {
            return bad(
                "maintenance_retry_after_s",
                "must be less than silent_after_s (terminals wait this long after maintenance)",
            );
        }
        let rl = self.rate_limit;
        if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
            return bad("rate_limit.per_second", "must be a positive number");
        }
        if rl.burst == 0 {
            return bad("rate_limit.burst", "must be at least 1");
        }
        if self.alerts.lockout_storm_count == 0 || self.alerts.mfa_failure_count == 0 {
            return bad("alerts", "counts must be at least 1");
        }
        if self.ca_cert.is_some() != self.ca_key.is_some() {
            return bad("ca_key", "ca_cert and ca_key must be set together");
        }
        if self.device_cert_days == 0 || self.device_cert_days > 3650 {
            return bad("device_cert_days", "must be 1 to 3650");
        }
        if self.ops_public_key.is_some() && self.ops_public_key()?.is_none() {
            return bad("ops_public_key", "must be 64 hex digits");
        }
        Ok(())
    }

    /// The operations public key, if configured.
    pub fn ops_public_key(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(text) = &self.ops_public_key else {
            return Ok(None);
        };
        crate::clock::unhex(text)
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(Some)
            .ok_or(ConfigError::Invalid {
                key: "ops_public_key",
                reason: "must be 64 hex digits",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
listen = "127.0.0.1:0"
server_cert = "s.pem"
server_key = "k.pem"
fleet_ca = "ca.pem"
store = "c.db"
"#;

    #[test]
    fn minimal_config_has_defaults() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.body_limit, MAX_BATCH_LEN);
        assert_eq!(c.alerts.cert_expiry_days, 30);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(&format!("{MIN}\nbogus = 1")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse(&format!("{MIN}\nbody_limit = 0")).unwrap_err();
        assert!(e.to_string().contains("body_limit"), "{e}");
        let e = Config::parse(&format!("{MIN}\nops_public_key = \"abcd\"")).unwrap_err();
        assert!(e.to_string().contains("ops_public_key"), "{e}");
        let e = Config::parse(&format!("{MIN}\nca_cert = \"ca.pem\"")).unwrap_err();
        assert!(e.to_string().contains("ca_key"), "{e}");
        let e = Config::parse(&format!("{MIN}\ndevice_cert_days = 0")).unwrap_err();
        assert!(e.to_string().contains("device_cert_days"), "{e}");
        let e = Config::parse("listen = \"127.0.0.1:0\"").unwrap_err();
        assert!(e.to_string().contains("server_cert"), "{e}");
    }
}
