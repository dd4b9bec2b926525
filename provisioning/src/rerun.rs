//! `init` on a terminal that is already provisioned (`agent.toml` exists, no `--force`):
//! compare what is asked with what is there (device id, collector, server name, fleet CA, ops
//! key) and check that the TPM still holds the identity key the certificate is for. Each
//! difference is a failed step saying what to do; nothing is changed. Only when everything
//! matches is the answer "already provisioned, nothing changed" (exit 0).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

use crate::init::InitPlan;
use crate::pending::leaf_key;
use crate::report::Report;

/// One comparison: `Ok(detail)` when it matches, `Err(what differs and what to do)`.
type Check = Result<String, String>;

/// A named comparison, run inside its report step.
type Named<'a> = (&'static str, Box<dyn FnOnce() -> Check + 'a>);

fn text<'a>(table: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    table.get(section)?.get(key)?.as_str()
}

fn same(what: &str, asked: &str, there: Option<&str>, fix: &str) -> Check {
    match there {
        Some(t) if t == asked => Ok(format!("{asked} (same)")),
        Some(t) => Err(format!("asked {asked:?}, {what} is {t:?}: {fix}")),
        None => Err(format!("asked {asked:?}, {what} is not set: {fix}")),
    }
}

fn restart(config: &Path) -> String {
    format!(
        "edit it in {} and restart posguard-agent (the certificate stays valid), or correct the \
         argument",
        config.display()
    )
}

fn new_identity(plan: &InitPlan) -> String {
    format!(
        "get a new token for {} from operations and run `posguard-provision init --force` \
         with it",
        plan.device_id
    )
}

fn fleet_ca(plan: &InitPlan, configured: Option<&str>) -> Check {
    let asked = std::fs::read(&plan.fleet_ca)
        .map_err(|e| format!("reading {}: {e}", plan.fleet_ca.display()))?;
    let there_path = configured.map_or_else(|| plan.ca_path(), PathBuf::from);
    let there = std::fs::read(&there_path).map_err(|e| {
        format!(
            "reading {}: {e}: copy {} there",
            there_path.display(),
            plan.fleet_ca.display()
        )
    })?;
    if asked == there {
        Ok(format!("{} (same)", there_path.display()))
    } else {
        Err(format!(
            "{} differs from {}: if operations rotated the fleet CA, copy the new one over {} \
             and restart posguard-agent; otherwise give --fleet-ca the CA of this fleet",
            plan.fleet_ca.display(),
            there_path.display(),
            there_path.display()
        ))
    }
}

fn identity(plan: &InitPlan, certificate: Option<&str>) -> Check {
    let se = posguard_hal::open(&plan.secure_element).map_err(|e| format!("{e}"))?;
    let location = se.info().location;
    let spki = match se.identity_public_key() {
        Ok(k) => k,
        Err(posguard_hal::HalError::NoIdentityKey { location }) => {
            return Err(format!(
                "the TPM ({location}) no longer holds the identity key: this terminal's \
                 certificate cannot be used; {}",
                new_identity(plan)
            ));
        }
        Err(e) => return Err(format!("{e}")),
    };
    let cert = certificate.map_or_else(|| plan.cert_path(), PathBuf::from);
    let pem = std::fs::read_to_string(&cert)
        .map_err(|e| format!("reading {}: {e}; {}", cert.display(), new_identity(plan)))?;
    match leaf_key(&pem) {
        Some(k) if k == spki => Ok(format!(
            "present at {location}; {} is for it",
            cert.display()
        )),
        Some(_) => Err(format!(
            "{} is for another key than the TPM's identity key: {}",
            cert.display(),
            new_identity(plan)
        )),
        None => Err(format!(
            "{} does not parse: {}",
            cert.display(),
            new_identity(plan)
        )),
    }
}

/// Compares `plan` with the terminal's configuration; `Ok` when everything matches.
pub fn compare(plan: &InitPlan, report: &mut Report) -> anyhow::Result<()> {
    let config = plan.config_path();
    let toml_text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table = toml_text.parse().map_err(|e| {
        anyhow!(
            "{} exists but is not valid TOML ({e}); move it away and run init again",
            config.display()
        )
    })?;
    let id_fix = format!(
        "the certificate names the configured id; to make this terminal {}, {}",
        plan.device_id,
        new_identity(plan)
    );
    // Each check runs inside its step, so the step's time is the check's.
    let mut checks: Vec<Named<'_>> = vec![
        (
            "rerun: device id",
            Box::new(|| {
                same(
                    "[device] id",
                    &plan.device_id,
                    text(&table, "device", "id"),
                    &id_fix,
                )
            }),
        ),
        (
            "rerun: collector",
            Box::new(|| {
                same(
                    "[uplink] collector",
                    &plan.collector,
                    text(&table, "uplink", "collector"),
                    &restart(&config),
                )
            }),
        ),
        (
            "rerun: server name",
            Box::new(|| {
                same(
                    "[uplink] server_name",
                    &plan.server_name,
                    text(&table, "uplink", "server_name"),
                    &restart(&config),
                )
            }),
        ),
        (
            "rerun: fleet CA",
            Box::new(|| fleet_ca(plan, text(&table, "uplink", "fleet_ca"))),
        ),
    ];
    if let Some(key) = &plan.ops_public_key {
        checks.push((
            "rerun: ops public key",
            Box::new(|| {
                same(
                    "[uplink] ops_public_key",
                    key,
                    text(&table, "uplink", "ops_public_key"),
                    &restart(&config),
                )
            }),
        ));
    }
    checks.push((
        "rerun: identity key in the TPM",
        Box::new(|| identity(plan, text(&table, "uplink", "certificate"))),
    ));
    let mut differ = 0usize;
    for (name, check) in checks {
        let matched = report.step(name, || check().map(|d| ((), d)));
        differ += usize::from(matched.is_none());
    }
    if differ > 0 {
        return Err(anyhow!(
            "{} is provisioned differently from what was asked ({differ} difference{} above); \
             nothing was changed",
            config.display(),
            if differ == 1 { "" } else { "s" }
        ));
    }
    report.step("already provisioned", || {
        Ok::<_, String>((
            (),
            format!(
                "{} matches what was asked; nothing changed (use --force to redo)",
                config.display()
            ),
        ))
    });
    Ok(())
}
