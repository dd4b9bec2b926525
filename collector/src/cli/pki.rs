//! `ca init`, `ca server-cert`, `ca revoke`, `enroll-token create|list` and `enrollments`. The output formats
//! are documented in docs/collector.md and stable (scripts parse them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use posguard_proto::text::DeviceId;
use serde_json::json;

use super::{open_store, usage};
use crate::clock::{SystemClock, WallClock as _, format_ms};
use crate::config::Config;
use crate::enroll::token;
use crate::pki::init::{CaFiles, InitPlan, init};
use crate::pki::issue::DeviceCa;
use crate::pki::{crl, parse_serial};
use crate::store::{EnrollKind, EnrollmentRow, Store as _};

/// `ca init`.
pub(super) fn ca_init(dir: &Path, names: &[String], days: u32) -> anyhow::Result<()> {
    let server_names = if names.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        names.to_vec()
    };
    let plan = InitPlan {
        dir: dir.to_owned(),
        server_names: server_names.clone(),
        days,
    };
    let files: CaFiles = init(&plan)?;
    let dir = files
        .ca_cert
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    print!(
        "# posguard fleet CA created in {}\n\
         # fleet CA certificate (give it to terminals as their fleet_ca): {}\n\
         # fleet CA key (mode 0600; back it up offline): {}\n\
         # collector server certificate for {}: {}\n\
         # put these lines into collector.toml:\n{}",
        dir.display(),
        files.ca_cert.display(),
        files.ca_key.display(),
        server_names.join(", "),
        files.server_cert.display(),
        files.config_snippet()
    );
    Ok(())
}

/// The fleet CA named by `ca_cert`/`ca_key`, if configured (checked against `fleet_ca`).
pub(crate) fn load_ca(config: &Config) -> anyhow::Result<Option<Arc<DeviceCa>>> {
    let (Some(cert), Some(key)) = (&config.ca_cert, &config.ca_key) else {
        return Ok(None);
    };
    warn_if_readable(key);
    let ca = DeviceCa::load(cert, key, &config.fleet_ca, config.device_cert_days)
        .context("ca_cert/ca_key")?;
    Ok(Some(Arc::new(ca)))
}

fn warn_if_readable(key: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = std::fs::metadata(key)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %key.display(), "ca_key is readable by group or others; chmod 600 it");
    }
}

/// `ca server-cert`.
pub(super) fn ca_server_cert(
    config: &Config,
    out_dir: &Path,
    names: &[String],
    days: u32,
) -> anyhow::Result<()> {
    let ca = load_ca(config)?
        .ok_or_else(|| usage("ca server-cert: set `ca_cert` and `ca_key` in the config"))?;
    let now = time::OffsetDateTime::now_utc();
    let cert = crate::pki::init::server_cert(ca.issuer(), names, days, ca.ca_not_after(), now)?;
    let cert_path = out_dir.join(format!("collector-{}.pem", cert.serial));
    let key_path = out_dir.join(format!("collector-{}.key", cert.serial));
    crate::pki::write_new(&key_path, cert.key_pem.as_bytes(), 0o600)?;
    crate::pki::write_new(&cert_path, cert.cert_pem.as_bytes(), 0o644)?;
    println!(
        "{}",
        json!({
            "server_cert": cert_path.display().to_string(),
            "server_key": key_path.display().to_string(),
            "serial": cert.serial,
            "not_after": cert.not_after_unix,
        })
    );
    Ok(())
}

/// `ca revoke`.
pub(super) fn ca_revoke(
    config: &Config,
    serial: Option<&str>,
    device: Option<&str>,
) -> anyhow::Result<()> {
    let crl_path: PathBuf = config
        .crl
        .clone()
        .ok_or_else(|| usage("ca revoke: set `crl` in the config (ca init writes one)"))?;
    let ca = load_ca(config)?
        .ok_or_else(|| usage("ca revoke: set `ca_cert` and `ca_key` in the config"))?;
    let mut store = open_store(config)?;
    let serials: Vec<Vec<u8>> = match (serial, device) {
        (Some(s), _) => vec![
            parse_serial(s).ok_or_else(|| usage(format!("--serial: expected hex, not {s:?}")))?,
        ],
        (None, Some(d)) => {
            let mut found = Vec::new();
            store.transaction(&mut |tx| {
                found = tx.issued_serials(d)?;
                Ok(())
            })?;
            if found.is_empty() {
                return Err(usage(format!(
                    "--device: no certificate issued to {d:?} is recorded"
                )));
            }
            found.iter().filter_map(|s| parse_serial(s)).collect()
        }
        (None, None) => return Err(usage("ca revoke: give --serial or --device")),
    };
    let (crl_path, added, already) = revoke(&ca, &crl_path, &mut store, &serials, device)?;
    println!(
        "{}",
        json!({"crl": crl_path.display().to_string(), "revoked": added, "already_revoked": already})
    );
    Ok(())
}

/// The CRL path, the serials newly revoked and those that were already.
pub(super) type Revoked = (PathBuf, Vec<String>, Vec<String>);

/// Reissues the CRL with `serials` added and records each new revocation in the enrollment
/// history (for `device`, if given).
pub(super) fn revoke(
    ca: &DeviceCa,
    crl_path: &Path,
    store: &mut crate::store::sqlite::SqliteStore,
    serials: &[Vec<u8>],
    device: Option<&str>,
) -> anyhow::Result<Revoked> {
    let now_ms = SystemClock.now_ms();
    let now = time::OffsetDateTime::now_utc();
    let added = crl::revoke(crl_path, ca, serials, now)
        .with_context(|| format!("crl = {}", crl_path.display()))?;
    let all: Vec<String> = serials.iter().map(|s| crate::pki::serial_hex(s)).collect();
    store.transaction(&mut |tx| {
        for s in &added {
            tx.put_enrollment(&EnrollmentRow {
                id: 0,
                at_ms: now_ms,
                kind: EnrollKind::Revoke.name().to_owned(),
                device_id: device.map(str::to_owned),
                outcome: "revoked".to_owned(),
                reason: None,
                serial: Some(s.clone()),
                not_after_unix: None,
                peer: None,
            })?;
        }
        Ok(())
    })?;
    let already: Vec<String> = all.into_iter().filter(|s| !added.contains(s)).collect();
    Ok((crl_path.to_owned(), added, already))
}

/// `enroll-token create`.
pub(super) fn token_create(
    config: &Config,
    device_id: &str,
    ttl: &str,
    quiet: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let device = DeviceId::new(device_id).map_err(|e| usage(format!("--device-id: {e}")))?;
    let ttl = token::parse_ttl(ttl).ok_or_else(|| {
        usage(format!(
            "--ttl: expected a number and s, m, h or d (at most 30d), not {ttl:?}"
        ))
    })?;
    let mut store = open_store(config)?;
    let new = token::create(&mut store, device.as_str(), ttl, SystemClock.now_ms())?;
    let expires = format_ms(new.row.expires_ms);
    if quiet {
        println!("{}", new.token);
    } else if as_json {
        println!(
            "{}",
            json!({"token": new.token, "device_id": device.as_str(), "expires": expires, "expires_ms": new.row.expires_ms})
        );
    } else {
        println!(
            "token: {}\ndevice_id: {}\nexpires: {expires}",
            new.token,
            device.as_str()
        );
        eprintln!("the token is shown only now (the collector keeps only its hash); it works once");
    }
    Ok(())
}

/// `enroll-token list`.
pub(super) fn token_list(config: &Config) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    for t in open_store(config)?.enroll_tokens()? {
        println!(
            "{}",
            json!({
                "device_id": t.device_id,
                "created": format_ms(t.created_ms),
                "expires": format_ms(t.expires_ms),
                "expires_ms": t.expires_ms,
                "expired": now >= t.expires_ms,
                "used": t.used_ms.is_some(),
                "used_time": t.used_ms.map(format_ms),
            })
        );
    }
    Ok(())
}

/// `enrollments`.
pub(super) fn enrollments(
    config: &Config,
    since: Option<u64>,
    device: Option<&str>,
) -> anyhow::Result<()> {
    for e in open_store(config)?.enrollments(since, device)? {
        println!(
            "{}",
            json!({
                "id": e.id,
                "time": format_ms(e.at_ms),
                "at_ms": e.at_ms,
                "kind": e.kind,
                "device_id": e.device_id,
                "outcome": e.outcome,
                "reason": e.reason,
                "serial": e.serial,
                "not_after": e.not_after_unix.map(|s| format_ms(s.saturating_mul(1000))),
                "peer": e.peer,
            })
        );
    }
    Ok(())
}
