//! The certificate between enrollment and the finished configuration. The collector's answer
//! is first kept as `device.pem.pending` in the state directory, then the fleet CA, the
//! certificate and `agent.toml` are written (each atomically) and the pending file removed. If
//! any write fails, the next run finds the pending chain, checks it is for this TPM's key and
//! this device and still valid, and finishes without the network or the token.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use posguard_hal::SecureElement;

use crate::files::write_file;
use crate::init::{InitPlan, Issued, enroll, not_after, now_unix};
use crate::inputs::date;
use crate::report::Report;

/// Where the issued chain waits.
pub fn path(plan: &InitPlan) -> PathBuf {
    plan.state_dir.join("device.pem.pending")
}

/// The leaf's SPKI (DER) and its subject CN.
fn leaf_key_and_cn(pem: &str) -> Option<(Vec<u8>, String)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((cert.public_key().raw.to_vec(), cn))
}

/// The SPKI (DER) of the first certificate in `pem`.
pub fn leaf_key(pem: &str) -> Option<Vec<u8>> {
    leaf_key_and_cn(pem).map(|(k, _)| k)
}

/// A pending chain from an earlier run that fits: same identity key (`spki`), same device,
/// not expired. `Err` says why one that exists does not fit (it is then replaced).
pub fn usable(plan: &InitPlan, spki: &[u8], now_unix: u64) -> anyhow::Result<Option<Issued>> {
    let path = path(plan);
    let chain_pem = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    };
    let (key, cn) = leaf_key_and_cn(&chain_pem)
        .ok_or_else(|| anyhow!("{} does not parse; enrolling again", path.display()))?;
    let until = not_after(&chain_pem).unwrap_or(0);
    if key != spki {
        return Err(anyhow!(
            "{} is for another identity key; enrolling again",
            path.display()
        ));
    }
    if cn != plan.device_id {
        return Err(anyhow!(
            "{} is for device {cn:?}, not {:?}; enrolling again",
            path.display(),
            plan.device_id
        ));
    }
    if until <= now_unix {
        return Err(anyhow!(
            "{} expired on {}; enrolling again",
            path.display(),
            date(until)
        ));
    }
    Ok(Some(Issued {
        chain_pem,
        not_after: until,
    }))
}

/// Keeps the issued chain in the state directory before anything else is written.
pub fn keep(plan: &InitPlan, issued: &Issued) -> anyhow::Result<()> {
    write_file(&path(plan), issued.chain_pem.as_bytes(), 0o644, None)
}

/// Writes the fleet CA, the certificate and `agent.toml` (in that order: the configuration,
/// whose presence means "provisioned", last), then drops the pending chain.
pub fn install(plan: &InitPlan, issued: &Issued, group: Option<u32>) -> anyhow::Result<String> {
    let ca = std::fs::read(&plan.fleet_ca)
        .with_context(|| format!("reading {}", plan.fleet_ca.display()))?;
    write_file(&plan.ca_path(), &ca, 0o644, None)?;
    write_file(&plan.cert_path(), issued.chain_pem.as_bytes(), 0o644, None)?;
    write_file(
        &plan.config_path(),
        plan.agent_toml().as_bytes(),
        0o640,
        group,
    )?;
    let pending = path(plan);
    match std::fs::remove_file(&pending) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("removing {}: {e}", pending.display())),
    }
    Ok(format!("{} (0640)", plan.config_path().display()))
}

/// The certificate: from an earlier run's pending chain when it fits this key, else enrolled
/// now (the token is spent here, after every local step) and kept as pending at once.
pub fn obtain(
    plan: &InitPlan,
    se: &Arc<dyn SecureElement>,
    kept: &str,
    report: &mut Report,
) -> anyhow::Result<Issued> {
    let spki = se.identity_public_key()?;
    let earlier = match usable(plan, &spki, now_unix()) {
        Ok(found) => found,
        Err(why) => {
            // Not a failure of this run: the chain is replaced by enrolling again.
            report.step("certificate from an earlier run", || {
                Ok::<_, anyhow::Error>(((), format!("not used: {why:#}")))
            });
            None
        }
    };
    if let Some(issued) = earlier {
        report.step("certificate from an earlier run", || {
            Ok::<_, anyhow::Error>((
                (),
                format!(
                    "{} (valid until {}; no enrollment needed)",
                    path(plan).display(),
                    date(issued.not_after)
                ),
            ))
        });
        return Ok(issued);
    }
    let csr = report
        .step("certificate signing request", || {
            let pem = posguard_hal::csr::device_csr_pem(se.clone(), &plan.device_id)?;
            Ok::<_, anyhow::Error>((pem, format!("for urn:posguard:device:{}", plan.device_id)))
        })
        .ok_or_else(|| anyhow!("no CSR: {kept}; run init again (resumable)"))?;
    let issued = report
        .step_slow("enrollment at the collector", || {
            let issued = enroll(plan, &csr)?;
            let detail = format!("certificate valid until {}", date(issued.not_after));
            Ok::<_, anyhow::Error>((issued, detail))
        })
        .ok_or_else(|| {
            anyhow!("enrollment failed: {kept}; fix the cause and run init again (resumable)")
        })?;
    report
        .step("certificate kept until installed", || {
            keep(plan, &issued)?;
            Ok::<_, anyhow::Error>(((), path(plan).display().to_string()))
        })
        .ok_or_else(|| {
            anyhow!(
                "the certificate was issued but cannot be kept on disk; fix the cause and run init \
                 again with the same token (the collector issues again for this TPM key)"
            )
        })?;
    Ok(issued)
}
