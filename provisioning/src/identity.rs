//! The identity-key steps of `init`, and the `[secure_element]` handles of every command.
//!
//! `init --force` re-enrolls posguard's own key: the terminal's journal stays signed by the
//! same identity. `--force --new-key` never changes a working terminal's identity before a new
//! one is enrolled: a new key is staged beside the old one (it signs the CSR), and only once the
//! collector issued its certificate is the old key replaced and the certificate written
//! ([`commit_step`]). Until then a failure leaves the old key, certificate and configuration as
//! they were, and the messages here say so. TPM objects posguard did not create are never used
//! or evicted, except the one a technician names with `--evict-foreign HANDLE`.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use posguard_hal::{ForeignEviction, IdentityKey, KeyMode, KeyOrigin, SecureElement};

use crate::files::write_file;
use crate::init::{InitPlan, Issued};
use crate::report::Report;

fn parse_number(s: &str, example: &str) -> Result<u32, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    parsed.map_err(|_| format!("`{s}` is not a handle: write it as hex, e.g. {example}"))
}

/// Parses a persistent handle as given on the command line (`0x81010002` or decimal).
pub fn parse_handle(s: &str) -> Result<u32, String> {
    let h = parse_number(s, "0x81010002")?;
    if !(0x8100_0000..=0x81FF_FFFF).contains(&h) {
        return Err(format!(
            "{h:#010x} is not a persistent handle: choose one in 0x81000000–0x81FFFFFF, e.g. 0x81010002"
        ));
    }
    Ok(h)
}

/// Parses an NV index as given on the command line (`0x01005048` or decimal).
pub fn parse_nv_index(s: &str) -> Result<u32, String> {
    let h = parse_number(s, "0x01005048")?;
    if !(0x0100_0000..=0x01FF_FFFF).contains(&h) {
        return Err(format!(
            "{h:#010x} is not an NV index: choose one in 0x01000000–0x01FFFFFF, e.g. 0x01005048"
        ));
    }
    Ok(h)
}

/// Parses what `--evict-foreign` names: a persistent handle or an NV index.
pub fn parse_any_handle(s: &str) -> Result<u32, String> {
    parse_handle(s).or_else(|_| parse_nv_index(s)).map_err(|_| {
        format!("`{s}` is neither a persistent handle (0x81…) nor an NV index (0x01…)")
    })
}

/// `[secure_element]` places a provisioned terminal keeps in `agent.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Places {
    /// `identity_handle`.
    pub identity: Option<u32>,
    /// `srk_handle`.
    pub srk: Option<u32>,
    /// `counter_index`.
    pub counter: Option<u32>,
}

/// The places of the `[secure_element]` section of `CONFIG_DIR/agent.toml`; `None` where
/// absent.
pub fn places_from_agent_toml(config_dir: &Path) -> Places {
    let section = std::fs::read_to_string(config_dir.join("agent.toml"))
        .ok()
        .and_then(|text| toml::from_str::<toml::Value>(&text).ok())
        .and_then(|v| v.get("secure_element").cloned());
    let get = |key: &str| {
        section
            .as_ref()
            .and_then(|s| s.get(key)?.as_integer())
            .and_then(|v| u32::try_from(v).ok())
    };
    Places {
        identity: get("identity_handle"),
        srk: get("srk_handle"),
        counter: get("counter_index"),
    }
}

/// Short fingerprint of a public key (SHA-256 of the SPKI, 8 bytes), to say which key.
fn fingerprint(spki_der: &[u8]) -> String {
    // The same form as `posguard-provision status` prints.
    let bytes: Vec<String> = posguard_hal::sha256(spki_der)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    bytes.join(":")
}

/// The key step's result: the key that signs the CSR, and the stored key it would replace.
#[derive(Debug, Clone)]
pub struct KeyStep {
    /// The key that signs the CSR (staged under `--force`).
    pub key: IdentityKey,
    /// Fingerprint of posguard's stored key under `--force`, if there was one.
    pub previous: Option<String>,
    /// Whether the terminal was provisioned (its `agent.toml` existed) when the step ran.
    pub provisioned: bool,
}

impl KeyStep {
    /// What a failure before [`commit_step`] leaves behind, for the step's error message.
    pub fn kept(&self) -> String {
        let staged = self.key.origin == KeyOrigin::Staged;
        let never = if staged {
            "; the new key was never stored"
        } else {
            ""
        };
        let kept = self
            .previous
            .clone()
            .or_else(|| (!staged).then(|| fingerprint(&self.key.spki_der)));
        match kept {
            Some(fp) if self.provisioned => format!(
                "nothing on this terminal changed: the identity key at {} (fingerprint {fp}), \
                 its certificate and the configuration are as before and the agent keeps working \
                 with them{never}",
                self.key.location
            ),
            Some(fp) => format!(
                "posguard's identity key at {} (fingerprint {fp}) is kept for the next run \
                 (resumable){never}",
                self.key.location
            ),
            None => format!(
                "nothing was stored: {} is still free{never}",
                self.key.location
            ),
        }
    }
}

/// With `--force`: `Some(detail)` if the sealed data key at `path` still unseals on this TPM
/// (kept), `None` if there is none or it no longer unseals (a new one must be sealed).
pub fn kept_data_key(se: &Arc<dyn SecureElement>, path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    match se.unseal(&posguard_hal::SealedBlob::from_bytes(bytes)) {
        Ok(_) => Some(format!(
            "{} still unseals; kept (the TOTP seeds and the cache stay readable)",
            path.display()
        )),
        Err(e) => {
            tracing::warn!(error = %e, "the sealed data key does not unseal; sealing a new one");
            None
        }
    }
}

/// Evicts the foreign objects the technician named with `--evict-foreign`, one step each.
pub fn evict_named(
    se: &Arc<dyn SecureElement>,
    plan: &InitPlan,
    report: &mut Report,
) -> anyhow::Result<()> {
    for &handle in &plan.evict_foreign {
        report
            .step(&format!("foreign object at {handle:#010x}"), || {
                let detail = match se.evict_foreign(handle)? {
                    ForeignEviction::Evicted(what) => {
                        format!("evicted, as named by --evict-foreign: {what}")
                    }
                    ForeignEviction::Absent => {
                        "nothing there (already free); nothing evicted".to_owned()
                    }
                    ForeignEviction::Ours => {
                        "posguard's own object is there; kept, nothing evicted".to_owned()
                    }
                };
                Ok::<_, anyhow::Error>(((), detail))
            })
            .ok_or_else(|| {
                anyhow!("--evict-foreign {handle:#010x} was refused: nothing else was changed")
            })?;
    }
    Ok(())
}

/// Opens or creates the identity key, or with `--force` stages a new one beside it.
pub fn key_step(
    se: &Arc<dyn SecureElement>,
    plan: &InitPlan,
    report: &mut Report,
) -> anyhow::Result<KeyStep> {
    report
        .step("device identity key in the TPM", || {
            let step = if plan.force && plan.new_key {
                let previous = match se.ensure_identity_key(KeyMode::OpenExisting) {
                    Ok(old) => Some(fingerprint(&old.spki_der)),
                    Err(posguard_hal::HalError::NoIdentityKey { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                KeyStep {
                    key: se.ensure_identity_key(KeyMode::Replace)?,
                    previous,
                    provisioned: plan.config_path().exists(),
                }
            } else {
                KeyStep {
                    key: se.ensure_identity_key(KeyMode::OpenOrCreate)?,
                    previous: None,
                    provisioned: plan.config_path().exists(),
                }
            };
            let detail = match (&step.key.origin, &step.previous) {
                (KeyOrigin::Staged, Some(old)) => format!(
                    "new key {} made beside posguard's key at {} ({old}), which stays in use \
                     until the new key is enrolled (ECC P-256, non-exportable)",
                    fingerprint(&step.key.spki_der),
                    step.key.location
                ),
                (KeyOrigin::Opened, _) if plan.force => format!(
                    "posguard's key {} at {} kept and enrolled again (--new-key replaces it)",
                    fingerprint(&step.key.spki_der),
                    step.key.location
                ),
                (origin, _) => format!(
                    "{origin:?} {} at {} (ECC P-256, non-exportable)",
                    fingerprint(&step.key.spki_der),
                    step.key.location
                ),
            };
            Ok::<_, anyhow::Error>((step, detail))
        })
        .ok_or_else(|| anyhow!("no identity key: nothing else was changed"))
}

/// After enrollment: stores a staged key at the identity handle (replacing posguard's previous
/// key) and writes the certificate issued for it at once, so the agent's key and certificate
/// match again. Does nothing for a key that was opened or created before enrollment.
pub fn commit_step(
    se: &Arc<dyn SecureElement>,
    step: &KeyStep,
    issued: &Issued,
    cert_path: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    if step.key.origin != KeyOrigin::Staged {
        return Ok(());
    }
    report
        .step("new identity key stored", || {
            // One retry: a commit that failed keeps the key staged (e.g. a busy TPM).
            let key = se
                .commit_identity_key()
                .or_else(|_| se.commit_identity_key())?;
            write_file(cert_path, issued.chain_pem.as_bytes(), 0o644, None)?;
            let (what, note) = match &step.previous {
                Some(old) => (
                    format!("replaced posguard's previous key {old} with"),
                    "; the agent starts a new chain with it and the collector archives the old \
                     one (docs/provisioning.md, \"A new identity key\")",
                ),
                None => ("stored".to_owned(), ""),
            };
            Ok::<_, anyhow::Error>((
                (),
                format!(
                    "{what} {} at {}; its certificate written to {}{note}",
                    fingerprint(&key.spki_der),
                    key.location,
                    cert_path.display()
                ),
            ))
        })
        .ok_or_else(|| {
            anyhow!(
                "the certificate was issued, but storing the new key at {} failed (see the \
                 step above); `posguard-provision status` shows which key is there now",
                step.key.location
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn handles_parse_as_hex_or_decimal_and_must_be_persistent() {
        assert_eq!(parse_handle("0x81010002"), Ok(0x8101_0002));
        assert_eq!(parse_handle("0X81000001"), Ok(0x8100_0001));
        assert_eq!(parse_handle("2164326402"), Ok(0x8101_0002));
        for bad in ["0x01000000", "0x82000000", "handle", "0x", ""] {
            let err = parse_handle(bad).unwrap_err();
            assert!(err.contains("0x81010002"), "{bad}: {err}");
        }
        assert_eq!(parse_nv_index("0x01005048"), Ok(0x0100_5048));
        assert!(parse_nv_index("0x81010002").is_err());
        assert_eq!(parse_any_handle("0x01005047"), Ok(0x0100_5047));
        assert_eq!(parse_any_handle("0x81010001"), Ok(0x8101_0001));
        assert!(parse_any_handle("0x02000000").is_err());
    }
}
