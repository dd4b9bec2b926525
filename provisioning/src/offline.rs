//! The offline path, for a terminal that cannot reach the collector at provisioning time:
//! [`csr`] writes a CSR for the TPM-held identity key to a file that operations sign with
//! `posguard-collector ca sign-csr`; [`install_cert`] installs the signed chain.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
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

/// Why `install-cert` refused a chain. Nothing was installed in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The chain file holds no certificate, or one that does not parse.
    #[error("{path}: {why}; give the chain file `posguard-collector ca sign-csr --out` wrote")]
    Unreadable {
        /// The chain file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Not issued by the fleet CA given.
    #[error(
        "the certificate was not issued by the fleet CA in {fleet_ca} ({why}): a chain signed by another fleet's CA? Ask operations of this fleet to sign the CSR with `posguard-collector ca sign-csr`, or give the right --fleet-ca"
    )]
    OtherCa {
        /// The fleet CA file.
        fleet_ca: PathBuf,
        /// The verifier's reason.
        why: String,
    },
    /// The certificate names another device (or none).
    #[error(
        "the certificate is for device {found:?}, not {expected:?}: ask operations to sign this terminal's CSR for {expected} (`ca sign-csr --device {expected}`)"
    )]
    OtherDevice {
        /// The device the certificate names.
        found: String,
        /// `--device-id`.
        expected: String,
    },
    /// Expired.
    #[error(
        "the certificate expired at {not_after} (this terminal's clock: {now}): make a new CSR with `posguard-provision csr` and have it signed again"
    )]
    Expired {
        /// notAfter (RFC 3339).
        not_after: String,
        /// Now (RFC 3339).
        now: String,
    },
    /// Not valid yet.
    #[error(
        "the certificate is valid only from {not_before} and this terminal's clock says {now}: set the clock right (`timedatectl`), then run install-cert again"
    )]
    NotYetValid {
        /// notBefore (RFC 3339).
        not_before: String,
        /// Now (RFC 3339).
        now: String,
    },
    /// For another key than this terminal's identity key.
    #[error(
        "the certificate is not for this terminal's identity key (a CSR of another terminal, or of a key replaced since): make a new CSR here with `posguard-provision csr` and have it signed"
    )]
    OtherKey,
    /// The terminal is configured for another device id.
    #[error(
        "{config} is for device {configured:?}, not {expected:?}: decommission the terminal first, or give --device-id {configured}"
    )]
    ConfiguredOtherDevice {
        /// agent.toml.
        config: PathBuf,
        /// The id in it.
        configured: String,
        /// `--device-id`.
        expected: String,
    },
    /// No configuration yet and no collector to write one with.
    #[error(
        "no {config} yet: give --collector HOST:PORT (and --server-name if the collector's certificate names another host) so that the agent's configuration can be written"
    )]
    NoCollector {
        /// agent.toml.
        config: PathBuf,
    },
}

/// What `install-cert` needs: the chain and what to check it against, and what the agent's
/// configuration is made of when the terminal has none yet (the same as `init`'s).
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// The chain operations signed (PEM, leaf first).
    pub chain: PathBuf,
    /// The fleet CA the leaf must chain to (written to the configuration as the agent's).
    pub fleet_ca: PathBuf,
    /// The id the certificate must name.
    pub device_id: String,
    /// The collector, host:port (needed when no agent.toml exists yet).
    pub collector: Option<String>,
    /// The name in the collector's certificate (default: the host of `collector`).
    pub server_name: Option<String>,
    /// The operations public key (hex).
    pub ops_public_key: Option<String>,
    /// `/etc/posguard`.
    pub config_dir: PathBuf,
    /// `/var/lib/posguard`.
    pub state_dir: PathBuf,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The secure element.
    pub secure_element: SecureElementConfig,
}

fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    t.to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The checks of a chain against the fleet CA, the device id and the clock: the leaf's key
/// (SubjectPublicKeyInfo, DER) on success.
pub fn check_chain(pem: &str, plan: &InstallPlan, now_unix: i64) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, UnixTime};
    let unreadable = |why: String| Refused::Unreadable {
        path: plan.chain.clone(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(format!("not PEM certificates ({e})")))?;
    let Some(leaf_der) = certs.first() else {
        return Err(unreadable("holds no certificate".into()).into());
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der.as_ref())
        .map_err(|e| unreadable(format!("the first certificate does not parse ({e})")))?;
    // Time first: an expired chain from the right CA should say "expired", not "other CA".
    let validity = leaf.validity();
    let now = x509_parser::time::ASN1Time::from_timestamp(now_unix)
        .map_err(|e| anyhow!("the clock: {e}"))?;
    if validity.not_after < now {
        return Err(Refused::Expired {
            not_after: rfc3339(validity.not_after),
            now: rfc3339(now),
        }
        .into());
    }
    if validity.not_before > now {
        return Err(Refused::NotYetValid {
            not_before: rfc3339(validity.not_before),
            now: rfc3339(now),
        }
        .into());
    }
    let roots = crate::https::read_pem_certs(&plan.fleet_ca)?;
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r).with_context(|| {
            format!(
                "--fleet-ca {}: not a CA certificate",
                plan.fleet_ca.display()
            )
        })?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(store.into(), provider)
            .build()
            .with_context(|| format!("--fleet-ca {}", plan.fleet_ca.display()))?;
    let seconds = u64::try_from(now_unix).unwrap_or(0);
    let intermediates = certs.get(1..).unwrap_or_default();
    verifier
        .verify_client_cert(
            leaf_der,
            intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
        )
        .map_err(|e| Refused::OtherCa {
            fleet_ca: plan.fleet_ca.clone(),
            why: e.to_string(),
        })?;
    let uri = format!("{DEVICE_URI_PREFIX}{}", plan.device_id);
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| n == &uri) {
        let found = names
            .iter()
            .find_map(|n| n.strip_prefix(DEVICE_URI_PREFIX))
            .unwrap_or("(none)")
            .to_owned();
        return Err(Refused::OtherDevice {
            found,
            expected: plan.device_id.clone(),
        }
        .into());
    }
    Ok(leaf.public_key().raw.to_vec())
}

/// The URI SAN prefix that names a device in its certificate.
const DEVICE_URI_PREFIX: &str = "urn:posguard:device:";

/// `install-cert`: checks the chain (fleet CA, device id, validity, this TPM's key), installs
/// it and, on a terminal without a configuration yet, writes the agent's configuration as
/// `init` does, so that the agent starts and ships as soon as the collector is reachable.
/// The lines to print on success.
pub fn install_cert(plan: &InstallPlan) -> anyhow::Result<Vec<String>> {
    let pem = std::fs::read_to_string(&plan.chain)
        .with_context(|| format!("reading {}", plan.chain.display()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let leaf_key = check_chain(&pem, plan, now)?;
    let se = posguard_hal::open(&plan.secure_element)?;
    let ours = se.identity_public_key()?;
    if leaf_key != ours.as_slice() {
        return Err(Refused::OtherKey.into());
    }
    let config = plan.config_dir.join("agent.toml");
    let mut lines = Vec::new();
    if config.exists() {
        // Provisioned already (a certificate renewed offline): only the certificate changes.
        let configured = configured_device(&config);
        if configured.as_deref() != Some(plan.device_id.as_str()) {
            return Err(Refused::ConfiguredOtherDevice {
                config,
                configured: configured.unwrap_or_default(),
                expected: plan.device_id.clone(),
            }
            .into());
        }
        let path = certificate_path(&plan.config_dir);
        files::write_file(&path, pem.as_bytes(), 0o644, None)?;
        lines.push(format!("installed {}", path.display()));
        return Ok(lines);
    }
    let collector = plan.collector.clone().ok_or_else(|| Refused::NoCollector {
        config: config.clone(),
    })?;
    let init = crate::init::InitPlan {
        server_name: plan.server_name.clone().unwrap_or_else(|| {
            collector
                .rsplit_once(':')
                .map_or(collector.clone(), |(h, _)| h.to_owned())
        }),
        collector,
        token: None,
        fleet_ca: plan.fleet_ca.clone(),
        device_id: plan.device_id.clone(),
        config_dir: plan.config_dir.clone(),
        state_dir: plan.state_dir.clone(),
        socket: plan.socket.clone(),
        secure_element: plan.secure_element.clone(),
        force: false,
        new_key: false,
        evict_foreign: Vec::new(),
        ops_public_key: plan.ops_public_key.clone(),
    };
    // Certificate and CA first, the configuration last: without agent.toml the agent does not
    // start, so a failure half way leaves a terminal that install-cert completes on a re-run.
    files::write_file(
        &init.ca_path(),
        &std::fs::read(&plan.fleet_ca)?,
        0o644,
        None,
    )?;
    files::write_file(&init.cert_path(), pem.as_bytes(), 0o644, None)?;
    files::write_file(
        &init.config_path(),
        init.agent_toml().as_bytes(),
        0o640,
        files::group_id("posguard"),
    )?;
    lines.push(format!("installed {}", init.cert_path().display()));
    lines.push(format!(
        "configuration written: {} (0640); start the agent (systemctl enable --now posguard-agent): it ships once {} is reachable",
        init.config_path().display(),
        init.collector
    ));
    Ok(lines)
}

/// `[device] id` of an agent.toml.
fn configured_device(config: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    v.get("device")?.get("id")?.as_str().map(str::to_owned)
}
