//! `[cache]` in the agent's configuration.

use std::path::PathBuf;
use std::time::Duration;

/// Transaction cache settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Directory of the cache's own sled database.
    pub dir: PathBuf,
    /// Bound on the stored bytes (ids plus encrypted values; default 32 MiB). A put that would
    /// exceed it is refused with `full`.
    pub max_bytes: u64,
    /// Retention of a record put without one (default 7 days).
    pub default_retention_secs: u64,
    /// Longest retention a put may ask for (default 30 days).
    pub max_retention_secs: u64,
    /// How often expired records are purged (default 60 s).
    pub purge_interval_secs: u64,
    /// sled's page cache, in bytes (default 1 MiB: a small terminal).
    pub page_cache_bytes: u64,
    /// Refuse values holding a Luhn-valid 13–19 digit number (default true). Turning it off is
    /// logged as a warning at every start.
    pub card_data_guard: bool,
}

/// Largest single value, so that one put cannot starve the cache (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("/var/lib/posguard/cache"),
            max_bytes: 32 * 1024 * 1024,
            default_retention_secs: 7 * 24 * 3600,
            max_retention_secs: 30 * 24 * 3600,
            purge_interval_secs: 60,
            page_cache_bytes: 1024 * 1024,
            card_data_guard: true,
        }
    }
}

impl CacheConfig {
    /// The defaults, at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        CacheConfig {
            dir: dir.into(),
            ..CacheConfig::default()
        }
    }

    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 64 * 1024 {
            return Err("cache.max_bytes: must be at least 65536 (64 KiB)".to_owned());
        }
        if self.max_retention_secs == 0 {
            return Err("cache.max_retention_secs: must be at least 1".to_owned());
        }
        if self.default_retention_secs == 0 || self.default_retention_secs > self.max_retention_secs
        {
            return Err(format!(
                "cache.default_retention_secs: must be within 1..={} (cache.max_retention_secs)",
                self.max_retention_secs
            ));
        }
        // Expiry is kept as unix milliseconds in a u64: a century is plenty.
        if self.max_retention_secs > 100 * 365 * 24 * 3600 {
            return Err("cache.max_retention_secs: at most 100 years".to_owned());
        }
        if self.purge_interval_secs == 0 {
            return Err("cache.purge_interval_secs: must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The retention for a put: the default when none is asked for.
    pub(crate) fn retention(&self, asked: Option<u64>) -> Result<Duration, super::CacheError> {
        let secs = asked.unwrap_or(self.default_retention_secs);
        if secs == 0 || secs > self.max_retention_secs {
            return Err(super::CacheError::BadRetention {
                asked: secs,
                max: self.max_retention_secs,
            });
        }
        Ok(Duration::from_secs(secs))
    }

    pub(crate) fn purge_interval(&self) -> Duration {
        Duration::from_secs(self.purge_interval_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        assert!(CacheConfig::default().validate().is_ok());
        let mut c = CacheConfig::default();
        c.default_retention_secs = c.max_retention_secs + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("cache.default_retention_secs")
        );
        let c: CacheConfig = toml::from_str("card_data_guard = false").unwrap();
        assert!(!c.card_data_guard);
        assert!(toml::from_str::<CacheConfig>("card_data_gaurd = false").is_err());
        assert!(CacheConfig::default().retention(Some(0)).is_err());
        assert!(CacheConfig::default().retention(Some(31 * 86400)).is_err());
        assert_eq!(
            CacheConfig::default().retention(None).unwrap(),
            Duration::from_secs(7 * 86400)
        );
    }
}
