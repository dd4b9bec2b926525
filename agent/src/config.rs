//! The agent's configuration file (`/etc/posguard/agent.toml`). Parsed into typed values once,
//! at start; every error names the key and the problem.

use std::path::Path;

use posguard_hal::SecureElementConfig;
use serde::Deserialize;

/// The whole agent configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `[secure_element]`: which TPM (or development key directory) holds the keys.
    pub secure_element: SecureElementConfig,
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
        let config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config
            .secure_element
            .validate()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let c = AgentConfig::parse("", "agent.toml").unwrap();
        assert_eq!(c.secure_element.tcti, "device:/dev/tpmrm0");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let err = AgentConfig::parse("[secure_element]\ntcit = \"x\"\n", "a.toml").unwrap_err();
        assert!(err.to_string().contains("tcit"), "{err}");
        let err = AgentConfig::parse("[secure_element]\nidentity_handle = \"x\"\n", "a.toml")
            .unwrap_err();
        assert!(err.to_string().contains("identity_handle"), "{err}");
        let err =
            AgentConfig::parse("[secure_element]\nidentity_handle = 5\n", "a.toml").unwrap_err();
        assert!(
            err.to_string().contains("secure_element.identity_handle"),
            "{err}"
        );
    }
}
