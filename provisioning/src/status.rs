//! `posguard-provision status`: each line checks what its name says.
//!
//! - the identity key is in the TPM, and the TPM is not in dictionary-attack lockout;
//! - the installed certificate is valid and is for that key (not another terminal's);
//! - the collector answers an mTLS request made with that certificate and the TPM key (an
//!   empty batch on `POST /v1/journal`, which stores nothing): a bare TCP connect proves
//!   nothing, so unreachable, wrong service, revoked and refused are told apart;
//! - the agent answers on its socket and reports no trouble.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use posguard_hal::{SecureElement, SecureElementConfig};
use serde_json::json;

use crate::agent_api::{self, at};
use crate::https::{post_json_as, read_pem_certs};
use crate::report::Report;

/// What `agent.toml` says about where things are.
#[derive(Debug, Clone)]
pub struct Terminal {
    /// `[device] id`.
    pub device_id: String,
    /// `[uplink] collector`, host:port.
    pub collector: String,
    /// `[uplink] server_name`.
    pub server_name: String,
    /// `[uplink] fleet_ca`.
    pub fleet_ca: PathBuf,
    /// `[uplink] certificate`.
    pub certificate: PathBuf,
    /// `[api] socket`.
    pub socket: PathBuf,
}

impl Terminal {
    /// Reads `config_dir/agent.toml`.
    pub fn read(config_dir: &Path) -> anyhow::Result<Self> {
        let path = config_dir.join("agent.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is this terminal provisioned? run `posguard-provision init`)",
                path.display()
            )
        })?;
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let get = |section: &str, key: &str| -> anyhow::Result<String> {
            v.get(section)
                .and_then(|s| s.get(key))
                .and_then(|k| k.as_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{} has no {section}.{key}", path.display()))
        };
        let collector = get("uplink", "collector")?;
        let server_name = get("uplink", "server_name").unwrap_or_else(|_| {
            collector
                .rsplit_once(':')
                .map_or(collector.clone(), |(h, _)| h.to_owned())
        });
        Ok(Terminal {
            device_id: get("device", "id")?,
            collector,
            server_name,
            fleet_ca: PathBuf::from(get("uplink", "fleet_ca")?),
            certificate: PathBuf::from(get("uplink", "certificate")?),
            socket: PathBuf::from(
                get("api", "socket").unwrap_or_else(|_| "/run/posguard/agent.sock".to_owned()),
            ),
        })
    }
}

/// How the collector check ended, each with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The collector stored the (empty) batch: it holds records up to this seq.
    Accepted(u64),
    /// No TCP connection.
    Unreachable(String),
    /// Something answers, but not a collector of this fleet (TLS or HTTP does not fit).
    WrongService(String),
    /// The collector refused this certificate as revoked.
    Revoked(String),
    /// The collector refused this certificate for another reason, or answered an error.
    Refused(String),
}

impl Probe {
    /// The line for the report: `Ok` only when accepted.
    pub fn verdict(&self, addr: &str) -> Result<String, String> {
        match self {
            Probe::Accepted(seq) => Ok(format!(
                "{addr} accepted this certificate and TPM key; it holds records up to seq {seq}"
            )),
            Probe::Unreachable(e) => Err(format!(
                "unreachable: {e}; check the network and that the collector runs at {addr}"
            )),
            Probe::WrongService(e) => Err(format!(
                "wrong service at {addr}: {e}; check [uplink] collector and server_name in agent.toml"
            )),
            Probe::Revoked(e) => Err(format!(
                "revoked: {e}; this terminal must be enrolled again (`posguard-provision init --force` with a new token from operations)"
            )),
            Probe::Refused(e) => Err(format!("refused: {e}")),
        }
    }
}

/// Sorts an error of [`post_json_as`] by its cause.
fn classify(e: &anyhow::Error) -> Probe {
    use rustls::AlertDescription as A;
    let text = format!("{e:#}");
    for cause in e.chain() {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match tls {
            Some(rustls::Error::AlertReceived(A::CertificateRevoked)) => {
                return Probe::Revoked(format!(
                    "the collector refused this certificate as revoked ({text})"
                ));
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                return Probe::Refused(format!(
                    "the collector refused this certificate (TLS alert {alert:?}): {text}"
                ));
            }
            Some(rustls::Error::InvalidCertificate(_)) => {
                return Probe::WrongService(format!(
                    "its certificate is not the fleet's collector certificate ({text})"
                ));
            }
            Some(_) => {
                return Probe::WrongService(format!(
                    "it does not speak TLS 1.3 as a collector ({text})"
                ));
            }
            None => {}
        }
    }
    if text.starts_with("connecting to") {
        Probe::Unreachable(text)
    } else if text.starts_with("TLS handshake") {
        Probe::WrongService(text)
    } else {
        Probe::Refused(text)
    }
}

/// Sends an empty batch to `POST /v1/journal` with the certificate and the TPM key.
pub fn probe(se: Arc<dyn SecureElement>, t: &Terminal) -> anyhow::Result<Probe> {
    let ca = read_pem_certs(&t.fleet_ca)?;
    let chain = read_pem_certs(&t.certificate)?;
    let resolver = posguard_hal::tls::client_cert_resolver(se, chain)?;
    let batch = posguard_proto::uplink::UplinkBatch {
        version: posguard_proto::uplink::batch_version(),
        certs: Vec::new(),
        records: Vec::new(),
        checkpoints: Vec::new(),
        status: None,
    };
    let body = batch
        .to_bytes()
        .map_err(|e| anyhow!("encoding the probe: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(post_json_as(
        &t.collector,
        &t.server_name,
        &ca,
        Some(resolver),
        "/v1/journal",
        body,
    ));
    Ok(match answer {
        Err(e) => classify(&e),
        Ok(a) if a.status == 200 => match posguard_proto::uplink::UplinkAck::from_bytes(&a.body) {
            Ok(ack) => Probe::Accepted(ack.highest_stored),
            Err(_) => {
                Probe::WrongService("HTTP 200 without a collector's acknowledgement".to_owned())
            }
        },
        Ok(a) => match a.error_code.as_deref() {
            Some("certificate_revoked") => {
                Probe::Revoked("the collector answered 403 certificate_revoked".to_owned())
            }
            Some(code) => Probe::Refused(format!("the collector answered {} {code}", a.status)),
            None => Probe::WrongService(format!(
                "HTTP {} without the collector's x-posguard-error header",
                a.status
            )),
        },
    })
}

/// Whether the certificate in `pem` is for `spki` (the TPM identity key), and its expiry.
fn check_certificate(pem: &str, spki: &[u8]) -> anyhow::Result<String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow!("does not parse: {e}"))?;
    let cert = parsed
        .parse_x509()
        .map_err(|e| anyhow!("does not parse: {e}"))?;
    if cert.public_key().raw != spki {
        bail!(
            "key mismatch: the certificate is not for this TPM's identity key (another terminal's, \
             or the key was replaced); enroll again: `posguard-provision init --force` with a new token"
        );
    }
    let after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    if after <= now {
        bail!("expired: renew before expiry is no longer possible; enroll again with a new token");
    }
    Ok(format!(
        "for this TPM key, valid for {} more days",
        after.saturating_sub(now) / 86_400
    ))
}

/// The agent's own view: it answers, and its condition is `ok`.
fn agent_line(socket: &Path) -> anyhow::Result<String> {
    let s = agent_api::call(socket, "status", json!({}))
        .map_err(|e| anyhow!("not answering ({e:#}): start it (systemctl start posguard-agent)"))?;
    let condition = at(&s, "/condition")
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    let head = at(&s, "/journal/head_seq").as_u64().unwrap_or(0);
    let acked = at(&s, "/uplink/acked_seq").as_u64().unwrap_or(0);
    let summary = format!(
        "pid {}, journal head {head}, acknowledged {acked}, uplink failures {}",
        at(&s, "/pid"),
        at(&s, "/uplink/failures")
    );
    if condition != "ok" {
        bail!("{condition} ({summary}); see docs/runbook.md");
    }
    Ok(format!("ok ({summary})"))
}

/// Runs every check into `report`.
pub fn run(element: &SecureElementConfig, config_dir: &Path, report: &mut Report) {
    let terminal = report.step("agent configuration", || {
        let t = Terminal::read(config_dir)?;
        let detail = format!("device {}, collector {}", t.device_id, t.collector);
        Ok::<_, anyhow::Error>((t, detail))
    });
    let opened = report.step("device identity key", || {
        let se = posguard_hal::open(element)?;
        let spki = se.identity_public_key()?;
        let fp: Vec<String> = posguard_hal::sha256(&spki)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let detail = format!(
            "{} ({}), fingerprint {}",
            se.info().location,
            se.info().description,
            fp.join(":")
        );
        Ok::<_, anyhow::Error>(((se, spki), detail))
    });
    if let Some((se, _)) = &opened {
        report.step("TPM not in dictionary-attack lockout", || {
            if se.in_lockout()? {
                bail!("the TPM is in lockout: wait for its recovery time or clear it with the lockout authorisation (tpm2_dictionarylockout --clear-lockout)");
            }
            Ok::<_, anyhow::Error>(((), "not locked out".to_owned()))
        });
    }
    let Some(t) = terminal else { return };
    let cert_ok = report.step("certificate", || {
        let (_, spki) = opened
            .as_ref()
            .ok_or_else(|| anyhow!("not checked: no identity key to compare with"))?;
        let pem = std::fs::read_to_string(&t.certificate)
            .with_context(|| format!("reading {}", t.certificate.display()))?;
        Ok::<_, anyhow::Error>(((), check_certificate(&pem, spki)?))
    });
    report.step("collector accepts this terminal (mTLS)", || {
        let (se, _) = opened
            .as_ref()
            .ok_or_else(|| anyhow!("not tried: no identity key"))?;
        if cert_ok.is_none() {
            bail!("not tried: the certificate is not usable (see above)");
        }
        let verdict = probe(se.clone(), &t)?.verdict(&t.collector);
        verdict.map(|v| ((), v)).map_err(|e| anyhow!(e))
    });
    // The TPM connection is closed before the agent is asked: on a TPM without a resource
    // manager only one client at a time is served.
    drop(opened);
    report.step("agent running", || agent_line(&t.socket).map(|d| ((), d)));
}
