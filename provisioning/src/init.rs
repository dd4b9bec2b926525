//! `posguard-provision init`: bring up a terminal. Each step prints its result and time. The
//! terminal's files are written only after the collector issued the certificate, so a failure
//! before that changes nothing but the TPM key (which the next run reuses: resumable), and a
//! provisioned terminal is left alone unless `--force`, which enrolls the same identity key
//! again or, with `--new-key`, keeps the old one until the new one is enrolled (`identity`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::agent_api::at;
use anyhow::{Context, anyhow, bail};
use posguard_hal::{SecureElement, SecureElementConfig};
use serde_json::json;

use crate::agent_api;
use crate::files::{group_id, write_file};
use crate::https::{post_json, read_pem_certs};
use crate::identity;
use crate::report::Report;

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// The collector, host:port.
    pub collector: String,
    /// The name in the collector's certificate.
    pub server_name: String,
    /// The one-time enrollment token.
    pub token: String,
    /// The fleet CA certificate (PEM).
    pub fleet_ca: PathBuf,
    /// This terminal's id.
    pub device_id: String,
    /// Where the agent's configuration goes (`/etc/posguard`).
    pub config_dir: PathBuf,
    /// The agent's state (`/var/lib/posguard`).
    pub state_dir: PathBuf,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The secure element.
    pub secure_element: SecureElementConfig,
    /// Replace an existing provisioning, enrolling posguard's identity key again.
    pub force: bool,
    /// With `force`: replace the identity key too, once the new one is enrolled.
    pub new_key: bool,
    /// Handles holding TPM objects posguard did not create that the technician named for
    /// eviction (`--evict-foreign`).
    pub evict_foreign: Vec<u32>,
    /// The ops public key (hex) commands are verified with.
    pub ops_public_key: Option<String>,
}

impl InitPlan {
    /// The agent configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.config_dir.join("agent.toml")
    }

    /// In the state directory, not in `/etc/posguard`: the agent renews it by itself, and its
    /// configuration directory is read-only to it (docs/operations.md).
    pub(crate) fn cert_path(&self) -> PathBuf {
        self.state_dir.join("device.pem")
    }

    fn ca_path(&self) -> PathBuf {
        self.config_dir.join("fleet-ca.pem")
    }

    /// The agent configuration this plan produces.
    pub fn agent_toml(&self) -> String {
        let se = &self.secure_element;
        let backend = match se.backend {
            posguard_hal::Backend::Tpm => format!(
                "backend = \"tpm\"\ntcti = \"{}\"\nsrk_handle = {:#010x}\nidentity_handle = {:#010x}\ncounter_index = {:#010x}\n",
                se.tcti, se.srk_handle, se.identity_handle, se.counter_index
            ),
            posguard_hal::Backend::Software => format!(
                "backend = \"software\"\nallow_software_keys = true\nsoftware_key_dir = \"{}\"\n",
                se.software_key_dir.display()
            ),
        };
        let ops = self
            .ops_public_key
            .as_ref()
            .map(|k| format!("ops_public_key = \"{k}\"\n"))
            .unwrap_or_default();
        format!(
            "# Written by posguard-provision init. See docs/configuration.md.\n\n[device]\nid = \"{}\"\n\n[secure_element]\n{backend}\n[storage]\ndir = \"{}\"\n\n[journal]\ndir = \"{}\"\n\n[api]\nsocket = \"{}\"\n\n[uplink]\ncollector = \"{}\"\nserver_name = \"{}\"\nfleet_ca = \"{}\"\ncertificate = \"{}\"\ncrl = \"{}\"\n{ops}",
            self.device_id,
            self.state_dir.display(),
            self.state_dir.join("journal").display(),
            self.socket.display(),
            self.collector,
            self.server_name,
            self.ca_path().display(),
            self.cert_path().display(),
            // The fleet CRL the collector's certificate is checked against: in the state
            // directory, because the agent keeps it current (fetched from the collector).
            self.state_dir.join("fleet.crl").display(),
        )
    }
}

/// The certificate issued at enrollment.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM chain, leaf first.
    pub chain_pem: String,
    /// Expiry, unix seconds.
    pub not_after: u64,
}

/// `not_after` of the first certificate in a PEM string.
pub fn not_after(pem: &str) -> Option<u64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

/// Sends the CSR with the token; the collector answers with the certificate chain.
pub fn enroll(plan: &InitPlan, csr_pem: &str) -> anyhow::Result<Issued> {
    let ca = read_pem_certs(&plan.fleet_ca)?;
    let body = serde_json::to_vec(&json!({ "token": plan.token, "csr_pem": csr_pem }))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(post_json(
        &plan.collector,
        &plan.server_name,
        &ca,
        "/v1/enroll",
        body,
    ))?;
    if answer.status != 200 {
        let text = String::from_utf8_lossy(&answer.body);
        bail!(
            "the collector refused the enrollment ({} {}): {}",
            answer.status,
            answer.error_code.unwrap_or_default(),
            text.trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&answer.body).context("the collector's answer")?;
    let chain_pem = at(&v, "/chain_pem")
        .as_str()
        .or_else(|| at(&v, "/certificate_chain_pem").as_str())
        .ok_or_else(|| anyhow!("the answer holds no certificate chain"))?
        .to_owned();
    let not_after =
        not_after(&chain_pem).ok_or_else(|| anyhow!("the issued certificate does not parse"))?;
    Ok(Issued {
        chain_pem,
        not_after,
    })
}

fn open_element(config: &SecureElementConfig) -> anyhow::Result<Arc<dyn SecureElement>> {
    Ok(posguard_hal::open(config)?)
}

/// Runs the TPM-side and enrollment steps, then writes the files. Returns whether anything
/// was changed (false: already provisioned).
pub fn run(plan: &InitPlan, report: &mut Report) -> anyhow::Result<bool> {
    if plan.config_path().exists() && !plan.force {
        report.step("already provisioned", || {
            Ok::<_, anyhow::Error>((
                (),
                format!(
                    "{} exists; nothing changed (use --force to redo)",
                    plan.config_path().display()
                ),
            ))
        });
        return Ok(false);
    }
    let se = report
        .step("secure element present", || {
            let se = open_element(&plan.secure_element)?;
            let info = se.info();
            Ok::<_, anyhow::Error>((se, format!("{} ({})", info.location, info.description)))
        })
        .ok_or_else(|| anyhow!("no secure element: nothing was changed"))?;
    report
        .step("resource manager, not the raw device", || {
            let t = &plan.secure_element.tcti;
            if plan.secure_element.backend == posguard_hal::Backend::Tpm && t.contains("/dev/tpm0") {
                bail!("{t} is the raw TPM device; use device:/dev/tpmrm0 (the kernel resource manager)");
            }
            Ok(((), "ok".to_owned()))
        })
        .ok_or_else(|| anyhow!("wrong TPM device: nothing was changed"))?;
    report
        .step("TPM not in dictionary-attack lockout", || {
            if se.in_lockout()? {
                bail!("the TPM is in lockout; wait for it to recover or clear it with the lockout authorisation");
            }
            Ok(((), "ok".to_owned()))
        })
        .ok_or_else(|| anyhow!("TPM in lockout: nothing was changed"))?;
    identity::evict_named(&se, plan, report)?;
    let key = identity::key_step(&se, plan, report)?;
    let csr = report
        .step("certificate signing request", || {
            let pem = posguard_hal::csr::device_csr_pem(se.clone(), &plan.device_id)?;
            Ok::<_, anyhow::Error>((pem, format!("for urn:posguard:device:{}", plan.device_id)))
        })
        .ok_or_else(|| anyhow!("no CSR: {}; run init again", key.kept()))?;
    let issued = report
        .step_slow("enrollment at the collector", || {
            let issued = enroll(plan, &csr)?;
            Ok::<_, anyhow::Error>((
                issued.clone(),
                format!("certificate valid until unix {}", issued.not_after),
            ))
        })
        .ok_or_else(|| {
            anyhow!(
                "enrollment failed: {}; fix the cause and run init again",
                key.kept()
            )
        })?;
    identity::commit_step(&se, &key, &issued, &plan.cert_path(), report)?;
    report
        .step("monotonic counter", || {
            let v = se.counter_create()?;
            Ok::<_, anyhow::Error>(((), format!("value {v}")))
        })
        .ok_or_else(|| anyhow!("counter: the identity key is kept; run init again (resumable)"))?;
    report
        .step("data key sealed to the TPM", || {
            let path = plan.state_dir.join("datakey.sealed");
            if path.exists() && !plan.force {
                return Ok::<_, anyhow::Error>(((), "already sealed; kept".to_owned()));
            }
            // --force keeps a data key that still unseals: it encrypts the clerks' TOTP seeds
            // and the cache, which a new one would make unreadable.
            if let Some(kept) = identity::kept_data_key(&se, &path) {
                return Ok(((), kept));
            }
            let key = se.random(32)?;
            let blob = se.seal(&key)?;
            write_file(&path, blob.as_bytes(), 0o600, None)?;
            Ok((
                (),
                format!(
                    "{} ({} bytes, sealed blob only)",
                    path.display(),
                    blob.as_bytes().len()
                ),
            ))
        })
        .ok_or_else(|| anyhow!("data key: run init again (resumable)"))?;
    report
        .step("configuration written", || {
            let group = group_id("posguard");
            write_file(
                &plan.ca_path(),
                &std::fs::read(&plan.fleet_ca)?,
                0o644,
                None,
            )?;
            write_file(&plan.cert_path(), issued.chain_pem.as_bytes(), 0o644, None)?;
            write_file(
                &plan.config_path(),
                plan.agent_toml().as_bytes(),
                0o640,
                group,
            )?;
            Ok::<_, anyhow::Error>(((), format!("{} (0640)", plan.config_path().display())))
        })
        .ok_or_else(|| anyhow!("writing the configuration failed; run init again (resumable)"))?;
    Ok(true)
}

/// Enrolls the first admin through the agent's local API (root, no clerk yet), shows the TOTP
/// seed as a QR code and URI, and confirms it with a code typed by the technician.
pub fn first_admin(
    socket: &Path,
    admin: &str,
    password: &str,
    code_source: &mut dyn FnMut() -> anyhow::Result<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    report
        .step_slow("agent answering", || {
            agent_api::wait_ready(socket, Duration::from_secs(60))?;
            Ok::<_, anyhow::Error>(((), socket.display().to_string()))
        })
        .ok_or_else(|| anyhow!("the agent is not running"))?;
    let enrolled = report
        .step("first admin enrolled", || {
            let v = agent_api::call(
                socket,
                "clerk.enroll",
                json!({"clerk": admin, "role": "SuperAdmin", "secret": password}),
            )?;
            Ok::<_, anyhow::Error>((v, format!("{admin} (SuperAdmin, TOTP required)")))
        })
        .ok_or_else(|| anyhow!("first admin not enrolled"))?;
    let uri = at(&enrolled, "/otpauth_uri")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    report.show(&crate::qr::render(&uri));
    report.show(&format!("  {uri}"));
    report
        .step("admin TOTP confirmed with a current code", || {
            let code = code_source()?;
            let v = agent_api::call(
                socket,
                "login",
                json!({"clerk": admin, "secret": password, "totp": code}),
            )?;
            if at(&v, "/status") != "granted" {
                bail!("the code was not accepted");
            }
            if let Some(token) = at(&v, "/token").as_str() {
                let _ = agent_api::call(socket, "logout", json!({"token": token}));
            }
            Ok(((), "accepted".to_owned()))
        })
        .ok_or_else(|| {
            anyhow!("the TOTP code was not confirmed: remove the clerk database and run again")
        })?;
    Ok(())
}

/// Self-test: the agent's uplink delivered a batch (mTLS with the TPM key, heartbeat accepted).
pub fn self_test(socket: &Path, report: &mut Report) -> anyhow::Result<()> {
    report
        .step_slow(
            "self-test: mTLS heartbeat accepted by the collector",
            || {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let s = agent_api::call(socket, "status", json!({}))?;
                    if at(&s, "/uplink/batches_acked").as_u64().unwrap_or(0) > 0 {
                        return Ok::<_, anyhow::Error>((
                            (),
                            format!(
                                "collector acknowledged up to seq {}",
                                at(&s, "/uplink/acked_seq")
                            ),
                        ));
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("no batch acknowledged within 60 s: {}", at(&s, "/uplink"));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            },
        )
        .ok_or_else(|| anyhow!("self-test failed"))?;
    Ok(())
}
