//! The subcommands' bodies (argument parsing is in `main.rs`, the work in the library).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use posguard_hal::SecureElementConfig;
use posguard_provision::agent_api::at;
use posguard_provision::init::{self, InitPlan};
use posguard_provision::prompt::read_line;
use posguard_provision::report::Report;
use posguard_provision::{admin, decommission, files, offline};
use serde_json::json;

fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn finish(report: &Report, json: bool, title: &str, outcome: anyhow::Result<()>) -> ExitCode {
    finish_with(report, json, title, outcome, None)
}

/// [`finish`], the JSON report also carrying the first admin's seed (the technician needs it).
fn finish_with(
    report: &Report,
    json: bool,
    title: &str,
    outcome: anyhow::Result<()>,
    seed: Option<&admin::ShownSeed>,
) -> ExitCode {
    let ok = outcome.is_ok() && report.all_ok();
    if json {
        let mut doc = json!({ "ok": ok, "error": outcome.as_ref().err().map(|e| format!("{e:#}")), "steps": report.steps() });
        if let (Some(seed), Some(map)) = (seed, doc.as_object_mut()) {
            map.insert("admin".to_owned(), json!(seed));
        }
        say(&format!("{doc:#}"));
    } else {
        let took: f64 = report.steps().iter().map(|s| s.millis).sum();
        match &outcome {
            Ok(()) => say(&format!(
                "{title}: done, {} steps in {:.1} s",
                report.steps().len(),
                took / 1000.0
            )),
            Err(e) => say(&format!("{title}: FAILED: {e:#}")),
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn admin_steps(
    opts: &admin::AdminOptions,
    json: bool,
    report: &mut Report,
) -> anyhow::Result<Option<admin::ShownSeed>> {
    admin::run(
        opts,
        &mut posguard_provision::prompt::Console { json },
        report,
    )
}

/// `init`.
pub fn init(plan: &InitPlan, admin: Option<&str>, json: bool) -> ExitCode {
    if !json {
        say(&format!(
            "posguard provisioning of {} (collector {})",
            plan.device_id, plan.collector
        ));
    }
    let mut report = Report::new(json);
    let mut seed = None;
    let outcome = (|| -> anyhow::Result<()> {
        let changed = init::run(plan, &mut report)?;
        if let (Some(admin), true) = (admin, changed) {
            if std::path::Path::new("/run/systemd/system").exists() {
                report
                    .step_slow("agent started (systemd)", || {
                        let status = std::process::Command::new("systemctl")
                            .args(["enable", "--now", "posguard-agent"])
                            .status()?;
                        if !status.success() {
                            bail!("systemctl enable --now posguard-agent: {status}");
                        }
                        Ok(((), "posguard-agent.service enabled and started".to_owned()))
                    })
                    .ok_or_else(|| anyhow!("the agent did not start"))?;
            }
            seed = admin_steps(
                &admin::AdminOptions::new(&plan.socket, admin),
                json,
                &mut report,
            )?;
        }
        Ok(())
    })();
    finish_with(&report, json, "provisioning", outcome, seed.as_ref())
}

/// `admin`: the first admin and the self-test, once the agent runs.
pub fn admin(opts: &admin::AdminOptions, json: bool) -> ExitCode {
    let mut report = Report::new(json);
    let mut seed = None;
    let outcome = admin_steps(opts, json, &mut report).map(|s| seed = s);
    finish_with(&report, json, "first admin", outcome, seed.as_ref())
}

/// `csr`.
pub fn csr(config: &SecureElementConfig, device_id: &str, out: &Path) -> ExitCode {
    report_simple(offline::csr(config, device_id, out).map(|lines| {
        for l in lines {
            say(&l);
        }
    }))
}

fn report_simple(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("posguard-provision: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `install-cert`: checks the chain, installs it and writes the configuration if none yet.
pub fn install_cert(plan: &offline::InstallPlan) -> ExitCode {
    match offline::install_cert(plan) {
        Ok(lines) => {
            for l in lines {
                say(&l);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("posguard-provision: {e:#}");
            // A missing argument is bad usage (sysexits EX_USAGE), like clap's own errors.
            if matches!(
                e.downcast_ref::<offline::Refused>(),
                Some(offline::Refused::NoCollector { .. })
            ) {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `status`: see [`posguard_provision::status`].
pub fn status(config: &SecureElementConfig, config_dir: &Path, json: bool) -> ExitCode {
    let mut report = Report::new(json);
    posguard_provision::status::run(config, config_dir, &mut report);
    let outcome = if report.all_ok() {
        Ok(())
    } else {
        Err(anyhow!(
            "{} of {} checks failed",
            report.steps().iter().filter(|s| !s.ok).count(),
            report.steps().len()
        ))
    };
    finish(&report, json, "status", outcome)
}

/// `decommission`: asks for confirmation, then [`posguard_provision::decommission::run`].
pub fn decommission(plan: &decommission::Plan, yes: bool, json: bool) -> ExitCode {
    if !yes {
        let (prompt, expected) = match (&plan.device_id, plan.force) {
            (Some(id), true) => (
                format!(
                    "This wipes the terminal's identity, keys, journal and configuration EVEN IF \
                     its journal cannot be shipped. Type the device id ({id}) to go on: "
                ),
                id.clone(),
            ),
            _ => (
                "This removes the terminal's identity, keys, journal and configuration. Type \
                 'decommission' to go on: "
                    .to_owned(),
                "decommission".to_owned(),
            ),
        };
        let answer = read_line(&prompt, false);
        if answer.map(|a| a.trim() != expected).unwrap_or(true) {
            say(&format!(
                "nothing changed: the answer was not '{expected}' (or add --yes)"
            ));
            return ExitCode::FAILURE;
        }
    }
    let mut report = Report::new(json);
    let mut record = None;
    let outcome = decommission::run(plan, json, &mut report).map(|u| record = u);
    // Under --force a failed step before the wipe (the agent not answering) is what the record
    // reports: the wipe itself succeeded.
    let ok = outcome.is_ok() && (report.all_ok() || plan.force);
    if json {
        let doc = json!({ "ok": ok, "error": outcome.as_ref().err().map(|e| format!("{e:#}")),
            "steps": report.steps(), "unshipped": record });
        say(&format!("{doc:#}"));
    } else {
        match &outcome {
            Ok(()) if record.is_some() => {
                say("decommission: done, FORCED: records were not shipped (see the record above)")
            }
            Ok(()) => say("decommission: done"),
            Err(e) => say(&format!("decommission: FAILED: {e:#}")),
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `renew`: a new certificate now, over mTLS with the current one (the agent also renews by
/// itself at two thirds of the lifetime). Installed only if it is for this TPM's key and newer.
pub fn renew(element: &SecureElementConfig, config_dir: &Path) -> ExitCode {
    let mut report = Report::new(false);
    let outcome = (|| -> anyhow::Result<()> {
        let text = std::fs::read_to_string(config_dir.join("agent.toml"))
            .with_context(|| format!("reading {}", config_dir.join("agent.toml").display()))?;
        let v: toml::Value = toml::from_str(&text)?;
        let get = |section: &str, key: &str| -> anyhow::Result<String> {
            v.get(section)
                .and_then(|s| s.get(key))
                .and_then(|k| k.as_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("agent.toml has no {section}.{key}"))
        };
        let device = get("device", "id")?;
        let collector = get("uplink", "collector")?;
        let server_name = get("uplink", "server_name").unwrap_or_else(|_| {
            collector
                .rsplit_once(':')
                .map_or(collector.clone(), |(h, _)| h.to_owned())
        });
        let cert_path = std::path::PathBuf::from(get("uplink", "certificate")?);
        let ca = posguard_provision::https::read_pem_certs(Path::new(&get("uplink", "fleet_ca")?))?;
        let issued = report
            .step_slow("renewal over mTLS with the TPM key", || {
                let se = posguard_hal::open(element)?;
                let chain = posguard_provision::https::read_pem_certs(&cert_path)?;
                let old = init::not_after(&std::fs::read_to_string(&cert_path)?).unwrap_or(0);
                let csr = posguard_hal::csr::device_csr_pem(se.clone(), &device)?;
                let resolver = posguard_hal::tls::client_cert_resolver(se.clone(), chain)?;
                let body = serde_json::to_vec(&json!({ "csr_pem": csr }))?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let answer = runtime.block_on(posguard_provision::https::post_json_as(
                    &collector,
                    &server_name,
                    &ca,
                    Some(resolver),
                    "/v1/renew",
                    body,
                ))?;
                if answer.status != 200 {
                    bail!(
                        "the collector refused ({} {})",
                        answer.status,
                        answer.error_code.unwrap_or_default()
                    );
                }
                let v: serde_json::Value = serde_json::from_slice(&answer.body)?;
                let pem = at(&v, "/chain_pem")
                    .as_str()
                    .ok_or_else(|| anyhow!("no chain in the answer"))?
                    .to_owned();
                let (_, parsed) =
                    x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| anyhow!("{e}"))?;
                let cert = parsed.parse_x509().map_err(|e| anyhow!("{e}"))?;
                if cert.public_key().raw != se.identity_public_key()?.as_slice() {
                    bail!("the new certificate is not for this terminal's key; nothing installed");
                }
                let new = init::not_after(&pem).unwrap_or(0);
                if new < old {
                    bail!("the new certificate expires before the current one; nothing installed");
                }
                Ok::<_, anyhow::Error>((
                    pem,
                    format!("valid until {}", posguard_provision::inputs::date(new)),
                ))
            })
            .ok_or_else(|| anyhow!("renewal failed; the current certificate stays in use"))?;
        report
            .step("new certificate installed", || {
                files::write_file(&cert_path, issued.as_bytes(), 0o644, None)?;
                Ok::<_, anyhow::Error>(((), cert_path.display().to_string()))
            })
            .ok_or_else(|| anyhow!("not installed"))?;
        Ok(())
    })();
    finish(&report, false, "renewal", outcome)
}
