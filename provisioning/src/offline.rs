//! The offline path, for a terminal that cannot reach the collector at provisioning time:
//! [`csr`] writes a CSR for the TPM-held identity key to a file that operations sign with
//! `posguard-collector ca sign-csr`; [`install_cert`] installs the signed chain.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use posguard_hal::{KeyMode, SecureElementConfig};

use crate::files;

/// `csr`: the lines to print on success.
pub fn csr(
    config: &SecureElementConfig,
    device_id: &str,
    out: &Path,
) -> anyhow::Result<Vec<String>> {
    let se = posguard_hal::open(config)?;
    let key = se.ensure_identity_key(KeyMode::OpenOrCreate)?;
    let pem = posguard_hal::csr::device_csr_pem(se, device_id)?;
    files::write_file(out, pem.as_bytes(), 0o644, None)?;
    Ok(vec![
        format!(
            "identity key {:?} at {}; CSR written to {}",
            key.origin,
            key.location,
            out.display()
        ),
        "take it to operations; install the signed chain with `posguard-provision install-cert`"
            .to_owned(),
    ])
}

/// Where the agent keeps its certificate: `[uplink] certificate` in `agent.toml`, else (not
/// provisioned yet: the offline path) `/var/lib/posguard/device.pem`, where `init` puts it.
pub fn certificate_path(config_dir: &Path) -> PathBuf {
    std::fs::read_to_string(config_dir.join("agent.toml"))
        .ok()
        .and_then(|text| toml::from_str::<toml::Value>(&text).ok())
        .and_then(|v| {
            v.get("uplink")?
                .get("certificate")?
                .as_str()
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/posguard/device.pem"))
}

/// `install-cert`: checks that the certificate is for this TPM's key before installing it;
/// the line to print on success.
pub fn install_cert(
    config: &SecureElementConfig,
    chain: &Path,
    config_dir: &Path,
) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(chain).with_context(|| format!("reading {}", chain.display()))?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", chain.display()))?;
    let cert = parsed
        .parse_x509()
        .map_err(|e| anyhow!("{}: {e}", chain.display()))?;
    let se = posguard_hal::open(config)?;
    let ours = se.identity_public_key()?;
    if cert.public_key().raw != ours.as_slice() {
        bail!("this certificate is not for this terminal's identity key; nothing was installed");
    }
    let path = certificate_path(config_dir);
    files::write_file(&path, pem.as_bytes(), 0o644, None)?;
    Ok(format!(
        "installed {} (valid until {})",
        path.display(),
        cert.validity().not_after
    ))
}
