//! The agent's configuration file (`/etc/posguard/agent.toml`). Parsed into typed values once,
//! at start; every error names the key and the problem (see docs/configuration.md).

use std::path::{Path, PathBuf};

use posguard_hal::SecureElementConfig;
use posguard_proto::text::DeviceId;
use serde::Deserialize;

use crate::journal::JournalConfig;

/// `[device]`: who this terminal is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device id (also in its certificate as `urn:posguard:device:<id>`).
    pub id: String,
}

/// `[api]`: the local API socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Socket path (under the runtime directory).
    pub socket: PathBuf,
    /// Permission bits of the socket (group access for the POS application's group).
    pub socket_mode: u32,
    /// Peer uids allowed to use the API (checked with SO_PEERCRED).
    pub allowed_uids: Vec<u32>,
    /// Connections served at once; more are answered `busy` and closed.
    pub max_connections: usize,
    /// Connections one client process (uid and pid) may hold at once, so that one process
    /// cannot take every slot from the others (the till's own login). Above `max_connections`
    /// it changes nothing.
    pub max_connections_per_process: usize,
    /// A connection idle (or stalled mid-line) this long is closed.
    pub idle_timeout_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from("/run/posguard/agent.sock"),
            socket_mode: 0o660,
            allowed_uids: vec![0],
            max_connections: 64,
            max_connections_per_process: 32,
            idle_timeout_secs: 30,
        }
    }
}

/// `[storage]`: where the agent keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// State directory: the sealed data key, the clerk database (the journal's own directory is
    /// `[journal] dir`).
    pub dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("/var/lib/posguard"),
        }
    }
}

/// The whole agent configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `[device]`.
    pub device: DeviceConfig,
    /// `[secure_element]`: which TPM (or development key directory) holds the keys.
    pub secure_element: SecureElementConfig,
    /// `[journal]`: the audit journal.
    pub journal: JournalConfig,
    /// `[api]`: the local API.
    pub api: ApiConfig,
    /// `[storage]`: the state directory.
    pub storage: StorageConfig,
    /// `[auth]`: clerk authentication (Argon2id, throttling, sessions).
    pub auth: crate::auth::AuthConfig,
    /// `[cache]`: the transaction cache.
    pub cache: crate::cache::CacheConfig,
    /// `[uplink]`: the collector (absent: the journal stays on the terminal).
    pub uplink: Option<crate::uplink::UplinkConfig>,
}

/// A configuration that cannot be used, with the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// What toml said, naming the key and position.
        message: String,
    },
    /// A value that parses but is not allowed.
    #[error("{path}: {message}")]
    Invalid {
        /// The path.
        path: String,
        /// The key and the problem.
        message: String,
    },
}

impl AgentConfig {
    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let mut config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        // The journal and the cache live under the state directory unless placed elsewhere.
        if config.journal.dir == JournalConfig::default().dir {
            config.journal.dir = config.storage.dir.join("journal");
        }
        if config.cache.dir == crate::cache::CacheConfig::default().dir {
            config.cache.dir = config.storage.dir.join("cache");
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.device.id.is_empty() {
            return Err("device.id: missing (the provisioning tool writes it)".to_owned());
        }
        DeviceId::new(self.device.id.clone()).map_err(|e| format!("device.id: {e}"))?;
        self.secure_element.validate()?;
        self.journal.validate()?;
        self.auth.validate().map_err(|e| e.to_string())?;
        self.cache.validate()?;
        if let Some(uplink) = &self.uplink {
            uplink.validate()?;
        }
        // Each connection may buffer a 64 KiB line: the cap bounds that memory.
        if !(1..=1024).contains(&self.api.max_connections) {
            return Err("api.max_connections: must be 1 to 1024".to_owned());
        }
        if self.api.max_connections_per_process == 0 {
            return Err("api.max_connections_per_process: must be at least 1".to_owned());
        }
        if self.api.idle_timeout_secs == 0 {
            return Err("api.idle_timeout_secs: must be at least 1".to_owned());
        }
        if self.api.socket_mode & 0o007 != 0 {
            return Err(format!(
                "api.socket_mode: {:o} lets any local user connect; use 0660 or stricter",
                self.api.socket_mode
            ));
        }
        Ok(())
    }

    /// The validated device id.
    pub fn device_id(&self) -> DeviceId {
        // Invariant: validate() accepted this id, so it parses.
        DeviceId::new(self.device.id.clone()).unwrap_or_else(|_| unreachable_device())
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let read = |source| ConfigError::Read {
            path: shown.clone(),
            source,
        };
        // Read at most one byte past the bound, so that a huge file (or a device that never
        // ends) is refused without being held in memory.
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_CONFIG_BYTES.saturating_add(1))
            .read_to_string(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: shown,
                message: format!(
                    "the file is larger than {MAX_CONFIG_BYTES} bytes; an agent configuration is a few hundred"
                ),
            });
        }
        Self::parse(&text, &shown)
    }
}

/// The largest configuration file read (1 MiB).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[allow(clippy::expect_used)]
fn unreachable_device() -> DeviceId {
    DeviceId::new("invalid").expect("literal device id")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn journal_and_cache_follow_the_state_directory() {
        let c = AgentConfig::parse(
            "[device]\nid = \"t\"\n[storage]\ndir = \"/srv/pg\"\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(c.journal.dir, PathBuf::from("/srv/pg/journal"));
        assert_eq!(c.cache.dir, PathBuf::from("/srv/pg/cache"));
        let c =
            AgentConfig::parse("[device]\nid = \"t\"\n[cache]\ndir = \"/x\"\n", "a.toml").unwrap();
        assert_eq!(c.cache.dir, PathBuf::from("/x"));
    }

    #[test]
    fn minimal_file_means_defaults() {
        let c = AgentConfig::parse("[device]\nid = \"term-1\"\n", "agent.toml").unwrap();
        assert_eq!(c.secure_element.tcti, "device:/dev/tpmrm0");
        assert_eq!(c.api.max_connections, 64);
        assert_eq!(c.api.max_connections_per_process, 32);
        assert_eq!(c.journal.max_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn connection_limits_are_bounded() {
        let dev = "[device]\nid = \"t\"\n[api]\n";
        for (api, key) in [
            ("max_connections = 0\n", "api.max_connections"),
            ("max_connections = 100000\n", "api.max_connections"),
            (
                "max_connections_per_process = 0\n",
                "api.max_connections_per_process",
            ),
        ] {
            let err = AgentConfig::parse(&format!("{dev}{api}"), "a.toml").unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_missing_and_mistyped_keys_are_named() {
        let dev = "[device]\nid = \"t\"\n";
        let err = AgentConfig::parse("", "a.toml").unwrap_err();
        assert!(err.to_string().contains("device.id"), "{err}");
        let err = AgentConfig::parse(&format!("{dev}[secure_element]\ntcit = \"x\"\n"), "a.toml")
            .unwrap_err();
        assert!(err.to_string().contains("tcit"), "{err}");
        let err = AgentConfig::parse(
            &format!("{dev}[secure_element]\nidentity_handle = \"x\"\n"),
            "a.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("identity_handle"), "{err}");
        let err = AgentConfig::parse(
            &format!("{dev}[secure_element]\nidentity_handle = 5\n"),
            "a.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("secure_element.identity_handle"),
            "{err}"
        );
        let err = AgentConfig::parse(&format!("{dev}[api]\nsocket_mode = 0o666\n"), "a.toml")
            .unwrap_err();
        assert!(err.to_string().contains("api.socket_mode"), "{err}");
        let err =
            AgentConfig::parse(&format!("{dev}[journal]\nmax_bytes = 10\n"), "a.toml").unwrap_err();
        assert!(err.to_string().contains("journal.max_bytes"), "{err}");
    }
}
