//! Local checks that run before the one-time token is sent: everything on this terminal that
//! could fail after enrollment (a read-only directory, an unreadable or wrong fleet CA) fails
//! here instead, while the token is still unspent. Each error names the file and what to do.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

use crate::files::group_id;
use crate::https::read_pem_certs;
use crate::inputs::date;

/// The service group that reads `agent.toml`.
pub const GROUP: &str = "posguard";

/// Checks the fleet CA file: readable, PEM certificates, the first a CA certificate valid now.
/// Returns what to show.
pub fn fleet_ca(path: &Path, now_unix: i64) -> anyhow::Result<String> {
    let certs = read_pem_certs(path).map_err(|e| {
        anyhow!("{e:#}; give --fleet-ca the fleet-ca.pem that operations handed out")
    })?;
    let first = certs
        .first()
        .ok_or_else(|| anyhow!("{} holds no certificate", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref())
        .map_err(|e| anyhow!("{}: the certificate does not parse: {e}", path.display()))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    if !is_ca {
        bail!(
            "{} holds {}, which is not a CA certificate; give --fleet-ca the fleet CA \
             (fleet-ca.pem from `posguard-collector ca init`), not a server or device certificate",
            path.display(),
            cert.subject()
        );
    }
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now_unix > until {
        bail!(
            "the fleet CA in {} expired on {}; ask operations for the current fleet-ca.pem",
            path.display(),
            date(u64::try_from(until).unwrap_or(0))
        );
    }
    if now_unix < from {
        bail!(
            "the fleet CA in {} is valid only from {}: is this terminal's clock right? (`date -u`)",
            path.display(),
            date(u64::try_from(from).unwrap_or(0))
        );
    }
    Ok(format!(
        "{} ({}, valid until {})",
        path.display(),
        cert.subject(),
        date(u64::try_from(until).unwrap_or(0))
    ))
}

/// Checks that files can be created in `dir` (creating it if needed), by writing and removing
/// a probe file: root ignores permission bits, so only trying tells a read-only or immutable
/// directory apart.
pub fn writable(dir: &Path, what: &str) -> anyhow::Result<String> {
    let fix = |e: &std::io::Error| {
        anyhow!(
            "{what} {} is not writable ({e}); make it writable (a read-only filesystem: \
             `mount -o remount,rw`; immutable: `chattr -i`; or give another --{}), then run init again",
            dir.display(),
            what.replace(' ', "-")
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fix(&e))?;
    let probe = dir.join(".posguard-provision.probe");
    let _ = std::fs::remove_file(&probe);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
    let removed = std::fs::remove_file(&probe);
    written.map_err(|e| fix(&e))?;
    removed
        .map_err(|e| fix(&e))
        .with_context(|| format!("removing {}", probe.display()))?;
    Ok(format!("{} (writable)", dir.display()))
}

/// The service group, or a warning with what to do: without it `agent.toml` stays root-only.
pub fn group(config: &Path) -> (Option<u32>, String) {
    match group_id(GROUP) {
        Some(gid) => (Some(gid), format!("{GROUP} (gid {gid})")),
        None => (
            None,
            format!(
                "WARNING: no group `{GROUP}`: {} will be readable by root only. Install the \
                 package's sysusers file (`systemd-sysusers posguard.conf`) or run \
                 `groupadd --system {GROUP}`, then `chgrp {GROUP} {}`",
                config.display(),
                config.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_fleet_ca_names_the_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("fleet-ca.pem");
        let e = format!("{:#}", fleet_ca(&missing, 0).unwrap_err());
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("No such file"), "{e}");
        assert!(e.contains("operations handed out"), "{e}");
        std::fs::write(&missing, "not pem").unwrap();
        let e = format!("{:#}", fleet_ca(&missing, 0).unwrap_err());
        assert!(e.contains("holds no certificate"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_created_and_a_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b");
        assert!(writable(&fresh, "config dir").is_ok());
        assert!(fresh.is_dir() && std::fs::read_dir(&fresh).unwrap().next().is_none());
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = format!(
            "{:#}",
            writable(&file.join("sub"), "state dir").unwrap_err()
        );
        assert!(e.contains("state dir") && e.contains("--state-dir"), "{e}");
    }
}
