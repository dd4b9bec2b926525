//! Configuration of the secure element, as found under `[secure_element]` in the agent's TOML.

use std::path::PathBuf;

use serde::Deserialize;

/// The default TCTI: the kernel's TPM resource manager (never `/dev/tpm0`, which allows a
/// single user and no context management).
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Default persistent handle of the storage root key (TCG provisioning guidance's SRK handle).
pub const DEFAULT_SRK_HANDLE: u32 = 0x8100_0001;
/// Default persistent handle of the device identity key.
pub const DEFAULT_IDENTITY_HANDLE: u32 = 0x8101_0001;
/// Default NV index of the monotonic counter (owner range 0x01000000–0x013FFFFF).
pub const DEFAULT_COUNTER_INDEX: u32 = 0x0100_5047;

/// Which secure element backs the terminal's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Backend {
    /// A TPM 2.0 reached through a TCTI.
    Tpm,
    /// Key files on disk: development only, refused unless explicitly allowed.
    Software,
}

/// `[secure_element]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecureElementConfig {
    /// `tpm` (default) or `software`.
    pub backend: Backend,
    /// TCTI of the TPM: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, …
    pub tcti: String,
    /// Persistent handle of the storage root key.
    pub srk_handle: u32,
    /// Persistent handle of the device identity key.
    pub identity_handle: u32,
    /// NV index of the monotonic counter.
    pub counter_index: u32,
    /// Must be `true` for the software backend to start.
    pub allow_software_keys: bool,
    /// Directory of the software backend's key files (mode 0700, files 0600).
    pub software_key_dir: PathBuf,
}

impl Default for SecureElementConfig {
    fn default() -> Self {
        SecureElementConfig {
            backend: Backend::Tpm,
            tcti: DEFAULT_TCTI.to_owned(),
            srk_handle: DEFAULT_SRK_HANDLE,
            identity_handle: DEFAULT_IDENTITY_HANDLE,
            counter_index: DEFAULT_COUNTER_INDEX,
            allow_software_keys: false,
            software_key_dir: PathBuf::from("/var/lib/posguard/softkeys"),
        }
    }
}

impl SecureElementConfig {
    /// A TPM configuration at `tcti` with default handles.
    pub fn tpm(tcti: impl Into<String>) -> Self {
        SecureElementConfig {
            tcti: tcti.into(),
            ..SecureElementConfig::default()
        }
    }

    /// An allowed software configuration keeping its files in `dir`.
    pub fn software(dir: impl Into<PathBuf>) -> Self {
        SecureElementConfig {
            backend: Backend::Software,
            allow_software_keys: true,
            software_key_dir: dir.into(),
            ..SecureElementConfig::default()
        }
    }

    /// Checks the values that serde cannot: handle ranges. Errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let persistent = 0x8100_0000..=0x81FF_FFFF;
        if !persistent.contains(&self.srk_handle) {
            return Err(format!(
                "secure_element.srk_handle: {:#010x} is not a persistent handle (0x81000000–0x81FFFFFF)",
                self.srk_handle
            ));
        }
        if !persistent.contains(&self.identity_handle) {
            return Err(format!(
                "secure_element.identity_handle: {:#010x} is not a persistent handle (0x81000000–0x81FFFFFF)",
                self.identity_handle
            ));
        }
        if self.identity_handle == self.srk_handle {
            return Err("secure_element.identity_handle: must differ from srk_handle".to_owned());
        }
        if !(0x0100_0000..=0x01FF_FFFF).contains(&self.counter_index) {
            return Err(format!(
                "secure_element.counter_index: {:#010x} is not an NV index (0x01000000–0x01FFFFFF)",
                self.counter_index
            ));
        }
        if self.backend == Backend::Tpm && self.tcti.trim().is_empty() {
            return Err("secure_element.tcti: must not be empty".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_the_resource_manager() {
        let c = SecureElementConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.tcti, "device:/dev/tpmrm0");
        assert!(!c.allow_software_keys);
    }

    #[test]
    fn bad_handles_are_named() {
        let c = SecureElementConfig {
            identity_handle: 0x0100_0000,
            ..SecureElementConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.starts_with("secure_element.identity_handle"), "{err}");
        let c = SecureElementConfig {
            identity_handle: DEFAULT_SRK_HANDLE,
            ..SecureElementConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
