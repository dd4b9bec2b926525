//! `posguard-provision init`: bring up a terminal. Each step prints its result and time.
//! Resumable: every local step that can fail (directories writable, fleet CA, TPM, identity
//! key, counter, data key) runs *before* the one-time token is sent ([`crate::preflight`]); the
//! issued chain is kept as `device.pem.pending` before the configuration is written
//! ([`crate::pending`]), so a rerun after a late failure finishes without the network; and the
//! collector issues again for a retry with the same key. A provisioned terminal is compared
//! with what is asked ([`crate::rerun`]) and left alone unless `--force`,
//! which enrolls the same identity key again or, with `--new-key`, keeps the old one until the
//! new one is enrolled ([`crate::identity`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::agent_api::at;
use anyhow::{Context, anyhow, bail};
use posguard_hal::{SecureElement, SecureElementConfig};
use serde_json::json;

use crate::https::{post_json, read_pem_certs};
use crate::identity;
use crate::report::Report;
use crate::{datakey, pending, preflight};

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// The collector, host:port.
    pub collector: String,
    /// The name in the collector's certificate.
    pub server_name: String,
    /// The one-time enrollment token (not needed to compare, or to finish from a pending chain).
    pub token: Option<crate::inputs::Token>,
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

    /// The certificate chain. In the state directory, not in `/etc/posguard`: the agent renews it by itself, and its
    /// configuration directory is read-only to it (docs/operations.md).
    pub fn cert_path(&self) -> PathBuf {
        self.state_dir.join("device.pem")
    }

    /// The fleet CA as installed for the agent.
    pub fn ca_path(&self) -> PathBuf {
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
    let token = plan.token.as_ref().ok_or_else(|| {
        anyhow!("no token given: pass --token-file PATH or --token - (standard input)")
    })?;
    let ca = read_pem_certs(&plan.fleet_ca)?;
    let body = zeroize::Zeroizing::new(serde_json::to_vec(
        &json!({ "token": token.expose(), "csr_pem": csr_pem }),
    )?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(post_json(
        &plan.collector,
        &plan.server_name,
        &ca,
        "/v1/enroll",
        body.to_vec(),
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

/// Wall time, Unix seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the checks, the TPM-side steps and enrollment, then writes the files. Returns whether
/// anything was changed (false: already provisioned as asked).
pub fn run(plan: &InitPlan, report: &mut Report) -> anyhow::Result<bool> {
    if plan.config_path().exists() && !plan.force {
        crate::rerun::compare(plan, report)?;
        return Ok(false);
    }
    let group = local_checks(plan, report)?;
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
    // The counter and the data key come before enrollment: a foreign NV index or a TPM that
    // cannot seal must fail while the token is unspent.
    report
        .step("monotonic counter", || {
            let v = se.counter_create().map_err(|e| counter_error(plan, e))?;
            Ok::<_, anyhow::Error>(((), format!("value {v}")))
        })
        .ok_or_else(|| {
            anyhow!("counter: the token was not used; fix the cause and run init again (resumable)")
        })?;
    report
        .step("data key sealed to the TPM", || {
            datakey::seal(plan, se.as_ref())
        })
        .ok_or_else(|| {
            anyhow!(
                "data key: the token was not used; fix the cause and run init again (resumable)"
            )
        })?;
    let issued = pending::obtain(plan, &se, &key.kept(), report)?;
    identity::commit_step(&se, &key, &issued, &plan.cert_path(), report)?;
    report
        .step("configuration written", || {
            pending::install(plan, &issued, group).map(|d| ((), d))
        })
        .ok_or_else(|| {
            anyhow!(
                "writing the configuration failed; the issued certificate is kept in {}: fix the \
                 cause and run init again (it finishes without the network)",
                pending::path(plan).display()
            )
        })?;
    Ok(true)
}

/// A foreign NV index where the counter goes: say how to free it (the only way on; the agent
/// always uses this index).
fn counter_error(plan: &InitPlan, e: posguard_hal::HalError) -> anyhow::Error {
    match e {
        posguard_hal::HalError::Occupied {
            location, found, ..
        } => anyhow!(
            "the monotonic counter's {location} is taken by another NV index ({found}); nothing \
             was changed. If nothing on this terminal needs it, free it with `tpm2_nvundefine \
             {:#010x} -C o`, then run init again",
            plan.secure_element.counter_index
        ),
        e => e.into(),
    }
}

/// The checks that need neither the TPM nor the network; returns the service group.
fn local_checks(plan: &InitPlan, report: &mut Report) -> anyhow::Result<Option<u32>> {
    let nothing =
        || anyhow!("nothing was changed and the token was not used; fix it and run init again");
    report
        .step("fleet CA readable and valid", || {
            let now = i64::try_from(now_unix()).unwrap_or(i64::MAX);
            Ok::<_, anyhow::Error>(((), preflight::fleet_ca(&plan.fleet_ca, now)?))
        })
        .ok_or_else(nothing)?;
    report
        .step("configuration directory writable", || {
            Ok::<_, anyhow::Error>(((), preflight::writable(&plan.config_dir, "config dir")?))
        })
        .ok_or_else(nothing)?;
    report
        .step("state directory writable", || {
            Ok::<_, anyhow::Error>(((), preflight::writable(&plan.state_dir, "state dir")?))
        })
        .ok_or_else(nothing)?;
    let (group, mut detail) = preflight::group(&plan.config_path());
    if group.is_none() && !report.is_quiet() {
        // On stderr: a warning in a progress line is easy to miss (with --json it is the
        // step's detail, and stderr stays empty for programs).
        eprintln_safe(&detail);
        detail = format!(
            "group `{}` missing: see the WARNING above",
            preflight::GROUP
        );
    }
    report.step("service group", || Ok::<_, anyhow::Error>(((), detail)));
    Ok(group)
}

fn eprintln_safe(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
