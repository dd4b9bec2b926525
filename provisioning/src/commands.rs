//! The subcommands' bodies (argument parsing is in `main.rs`, the work in the library).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use posguard_hal::SecureElementConfig;
use posguard_provision::agent_api::at;
use posguard_provision::init::{self, InitPlan};
use posguard_provision::prompt::read_line;
use posguard_provision::report::Report;
use posguard_provision::{agent_api, files, offline};
use serde_json::json;

fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn finish(report: &Report, json: bool, title: &str, outcome: anyhow::Result<()>) -> ExitCode {
    let ok = outcome.is_ok() && report.all_ok();
    if json {
        let doc = json!({ "ok": ok, "error": outcome.as_ref().err().map(|e| format!("{e:#}")), "steps": report.steps() });
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

fn admin_steps(socket: &Path, admin: &str, report: &mut Report) -> anyhow::Result<()> {
    let password = read_line(
        &format!("Password for {admin} (at least 12 characters, letters and digits): "),
        true,
    )?;
    let mut code = || -> anyhow::Result<String> {
        Ok(read_line(
            "Scan the QR code, then type the current 6-digit code: ",
            false,
        )?
        .to_string())
    };
    init::first_admin(socket, admin, &password, &mut code, report)?;
    init::self_test(socket, report)
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
            admin_steps(&plan.socket, admin, &mut report)?;
        }
        Ok(())
    })();
    finish(&report, json, "provisioning", outcome)
}

/// `admin`: the first admin and the self-test, once the agent runs.
pub fn admin(socket: &Path, admin: &str, json: bool) -> ExitCode {
    let mut report = Report::new(json);
    let outcome = admin_steps(socket, admin, &mut report);
    finish(&report, json, "first admin", outcome)
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

/// `status`.
pub fn status(config: &SecureElementConfig, config_dir: &Path) -> ExitCode {
    let mut report = Report::new(false);
    report.step("device identity key", || {
        let se = posguard_hal::open(config)?;
        let spki = se.identity_public_key()?;
        let fp: Vec<String> = posguard_hal::sha256(&spki)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "{} ({}), fingerprint {}",
                se.info().location,
                se.info().description,
                fp.join(":")
            ),
        ))
    });
    report.step("certificate", || {
        let path = offline::certificate_path(config_dir);
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let after = init::not_after(&pem).ok_or_else(|| anyhow!("does not parse"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let days = after.saturating_sub(now) / 86_400;
        if after <= now {
            bail!("expired");
        }
        Ok::<_, anyhow::Error>(((), format!("valid for {days} more days")))
    });
    report.step("collector reachable", || {
        let text = std::fs::read_to_string(config_dir.join("agent.toml"))?;
        let v: toml::Value = toml::from_str(&text)?;
        let addr = v
            .get("uplink")
            .and_then(|u| u.get("collector"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| anyhow!("no [uplink] collector in agent.toml"))?
            .to_owned();
        let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr.as_str())?
            .next()
            .ok_or_else(|| anyhow!("{addr} does not resolve"))?;
        std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
        Ok::<_, anyhow::Error>(((), format!("{addr} accepts connections")))
    });
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `decommission`.
pub fn decommission(
    config: &SecureElementConfig,
    config_dir: &Path,
    state_dir: &Path,
    socket: &Path,
    yes: bool,
) -> ExitCode {
    if !yes {
        let answer = read_line(
            "This removes the terminal's identity, keys, journal and configuration. Type 'decommission' to go on: ",
            false,
        );
        if answer.map(|a| a.trim() != "decommission").unwrap_or(true) {
            say("nothing changed");
            return ExitCode::FAILURE;
        }
    }
    let mut report = Report::new(false);
    let outcome = (|| -> anyhow::Result<()> {
        report
            .step("decommissioning recorded in the signed journal", || {
                let v = agent_api::call(
                    socket,
                    "audit.record",
                    json!({"action": "decommission", "reference": "posguard-provision decommission"}),
                )?;
                Ok::<_, anyhow::Error>(((), format!("seq {}", at(&v, "/seq"))))
            })
            .ok_or_else(|| anyhow!("the agent does not answer; nothing was removed"))?;
        report
            .step_slow("remaining journal shipped to the collector", || {
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                loop {
                    let s = agent_api::call(socket, "status", json!({}))?;
                    let head = at(&s, "/journal/head_seq").as_u64().unwrap_or(0);
                    let acked = at(&s, "/uplink/acked_seq").as_u64().unwrap_or(0);
                    if acked >= head {
                        return Ok::<_, anyhow::Error>((
                            at(&s, "/pid").as_u64(),
                            format!("acknowledged up to seq {acked}"),
                        ));
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("the collector acknowledged {acked} of {head}; nothing was removed");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .ok_or_else(|| anyhow!("the journal is not shipped; nothing was removed"))
            .and_then(|pid| {
                report
                    .step_slow("agent stopped", || {
                        if Path::new("/run/systemd/system").exists() {
                            std::process::Command::new("systemctl")
                                .args(["disable", "--now", "posguard-agent"])
                                .status()?;
                        } else if let Some(pid) = pid {
                            std::process::Command::new("kill")
                                .args(["-TERM", &pid.to_string()])
                                .status()?;
                        }
                        let deadline = std::time::Instant::now() + Duration::from_secs(30);
                        while std::os::unix::net::UnixStream::connect(socket).is_ok() {
                            if std::time::Instant::now() > deadline {
                                bail!("the agent is still running");
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Ok::<_, anyhow::Error>(((), "stopped".to_owned()))
                    })
                    .ok_or_else(|| anyhow!("the agent did not stop; nothing was removed"))
            })?;
        report
            .step("TPM identity key and counter removed", || {
                let se = posguard_hal::open(config)?;
                se.destroy()?;
                Ok::<_, anyhow::Error>(((), "evicted".to_owned()))
            })
            .ok_or_else(|| anyhow!("TPM keys not removed"))?;
        report
            .step(
                "sealed data key, journal, clerks and cache destroyed",
                || {
                    if state_dir.exists() {
                        std::fs::remove_dir_all(state_dir)?;
                    }
                    Ok::<_, anyhow::Error>(((), format!("{} removed", state_dir.display())))
                },
            )
            .ok_or_else(|| anyhow!("state not removed"))?;
        report
            .step("configuration removed", || {
                for f in ["agent.toml", "device.pem", "fleet-ca.pem"] {
                    let p = config_dir.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p)?;
                    }
                }
                Ok::<_, anyhow::Error>(((), config_dir.display().to_string()))
            })
            .ok_or_else(|| anyhow!("configuration not removed"))?;
        Ok(())
    })();
    finish(&report, false, "decommission", outcome)
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
                Ok::<_, anyhow::Error>((pem, format!("valid until unix {new}")))
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
