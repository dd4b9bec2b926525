//! `device decommission` and `ca sign-csr`: the device lifecycle and the offline path from the
//! operations side (docs/collector.md, "Device lifecycle" and "Offline enrollment").

use std::path::Path;

use anyhow::Context as _;
use posguard_proto::text::DeviceId;
use serde_json::json;

use super::pki::{load_ca, revoke};
use super::{open_store, usage};
use crate::clock::{SystemClock, WallClock as _, format_ms};
use crate::config::Config;
use crate::enroll::{self, Request};
use crate::lifecycle::{self, NewGeneration};
use crate::pki::parse_serial;
use crate::store::{EnrollKind, EnrollmentRow, Store as _};

/// Refused offline signing: exit 1 with the refusal's code and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignRefused(String);

/// `device decommission`: revoke every certificate issued to the device, then mark it
/// decommissioned. Its chain stays as it is until the id is provisioned again.
pub(super) fn decommission(config: &Config, device: &str, reason: &str) -> anyhow::Result<()> {
    let id = DeviceId::new(device).map_err(|e| usage(format!("--device: {e}")))?;
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 200 || reason.chars().any(char::is_control) {
        return Err(usage(
            "--reason: say in one line (at most 200 characters) why the terminal leaves service",
        ));
    }
    let mut store = open_store(config)?;
    let mut serials = Vec::new();
    let mut known = false;
    store.transaction(&mut |tx| {
        serials = tx.issued_serials(id.as_str())?;
        known = tx.device(id.as_str())?.is_some() || tx.lifecycle(id.as_str())?.is_some();
        Ok(())
    })?;
    if serials.is_empty() && !known {
        return Err(usage(format!(
            "--device: {device:?} is not known here (no certificate issued, nothing received); \
             check the id with `posguard-collector devices` and `enrollments`"
        )));
    }
    // Revoked first: if the CRL cannot be written, nothing is marked and the command can be
    // run again as it is.
    let (crl, revoked, already) = if serials.is_empty() {
        (None, Vec::new(), Vec::new())
    } else {
        let crl_path = config.crl.clone().ok_or_else(|| {
            usage(
                "device decommission: set `crl` (and `ca_cert`, `ca_key`) in the config so that \
                 the device's certificates can be revoked (`ca init` writes them)",
            )
        })?;
        let ca = load_ca(config)?.ok_or_else(|| {
            usage("device decommission: set `ca_cert` and `ca_key` in the config")
        })?;
        let raw: Vec<Vec<u8>> = serials.iter().filter_map(|s| parse_serial(s)).collect();
        let (path, added, already) = revoke(&ca, &crl_path, &mut store, &raw, Some(id.as_str()))?;
        (Some(path), added, already)
    };
    let now_ms = SystemClock.now_ms();
    let mut row = None;
    store.transaction(&mut |tx| {
        let r = lifecycle::decommission(tx, id.as_str(), reason, now_ms)?;
        if r.changed_ms == now_ms {
            tx.put_enrollment(&EnrollmentRow {
                id: 0,
                at_ms: now_ms,
                kind: EnrollKind::Decommission.name().to_owned(),
                device_id: Some(id.as_str().to_owned()),
                outcome: "decommissioned".to_owned(),
                reason: Some(reason.to_owned()),
                serial: None,
                not_after_unix: None,
                peer: None,
            })?;
        }
        row = Some(r);
        Ok(())
    })?;
    let row = row.context("decommission recorded nothing")?;
    println!(
        "{}",
        json!({
            "device_id": id.as_str(),
            "state": row.state.name(),
            "generation": row.generation,
            "reason": row.reason,
            "since": format_ms(row.changed_ms),
            "crl": crl.map(|p| p.display().to_string()),
            "revoked": revoked,
            "already_revoked": already,
        })
    );
    if serials.is_empty() {
        eprintln!(
            "no certificate issued to {device} is recorded here: revoke any made elsewhere with `ca revoke --serial`"
        );
    }
    Ok(())
}

/// `ca sign-csr`: an offline CSR signed with the same checks as `POST /v1/enroll`, recorded
/// in the enrollment history; a device whose stored chain cannot continue starts a new
/// generation exactly as at enrollment.
pub(super) fn sign_csr(
    config: &Config,
    csr: &Path,
    device: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let id = DeviceId::new(device).map_err(|e| usage(format!("--device: {e}")))?;
    let ca = load_ca(config)?
        .ok_or_else(|| usage("ca sign-csr: set `ca_cert` and `ca_key` in the config"))?;
    if out.exists() {
        return Err(usage(format!(
            "--out {}: exists; name a new file (nothing is overwritten)",
            out.display()
        )));
    }
    let meta = std::fs::metadata(csr).with_context(|| format!("--csr {}", csr.display()))?;
    if meta.len() > 64 * 1024 {
        return Err(usage(format!(
            "--csr {}: {} bytes is not a CSR (at most 64 KiB); give the file `posguard-provision csr` wrote",
            csr.display(),
            meta.len()
        )));
    }
    let pem = std::fs::read_to_string(csr).with_context(|| format!("--csr {}", csr.display()))?;
    let now_ms = SystemClock.now_ms();
    let mut result = None;
    store_sign(config, &ca, id.as_str(), &pem, now_ms, &mut result)?;
    let (issued, generation) = result.context("signing recorded nothing")?;
    let issued = issued.map_err(|r| {
        SignRefused(format!(
            "--csr {}: refused ({}); nothing was issued: make a new CSR with `posguard-provision csr --device-id {}` on the terminal",
            csr.display(),
            r.text(),
            id.as_str()
        ))
    })?;
    crate::pki::write_new(out, issued.chain_pem().as_bytes(), 0o644)
        .with_context(|| format!("--out {}: the certificate (serial {}) was issued and recorded but not written; revoke it with `ca revoke --serial {}` and sign again", out.display(), issued.serial, issued.serial))?;
    println!(
        "{}",
        json!({
            "device_id": id.as_str(),
            "chain": out.display().to_string(),
            "serial": issued.serial,
            "not_after": issued.not_after_unix,
            "not_after_time": format_ms(issued.not_after_unix.saturating_mul(1000)),
            "archived_generation": match generation {
                Some(NewGeneration::Archived(a)) => Some(a),
                _ => None,
            },
        })
    );
    Ok(())
}

type Signed = (enroll::Outcome, Option<NewGeneration>);

fn store_sign(
    config: &Config,
    ca: &crate::pki::issue::DeviceCa,
    id: &str,
    pem: &str,
    now_ms: u64,
    result: &mut Option<Signed>,
) -> anyhow::Result<()> {
    let mut store = open_store(config)?;
    store.transaction(&mut |tx| {
        let outcome = enroll::sign(ca, id, pem, now_ms);
        let generation = match &outcome {
            Ok(issued) => Some(lifecycle::on_issued(tx, id, issued, now_ms)?),
            Err(_) => None,
        };
        let req = Request {
            body: &[],
            now_ms,
            peer: "ca sign-csr",
        };
        enroll::record(
            tx,
            EnrollKind::Offline,
            Some(id.to_owned()),
            &outcome,
            req,
            None,
        )?;
        *result = Some((outcome, generation));
        Ok(())
    })?;
    Ok(())
}
