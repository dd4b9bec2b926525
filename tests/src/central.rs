//! A collector with its own fleet CA (`ca init`) as operations run it, for the tests of the
//! technician's path (enrollment, the offline path, re-provisioning): the CLI helpers those
//! tests share, and device certificates from that CA with a chosen validity (for the refusals
//! of `install-cert`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use crate::{CollectorProcess, command, free_port};

/// Runs a command; (success, stdout + stderr).
///
/// # Panics
/// If it cannot be started.
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A running collector made by `ca init` in a temp dir.
#[derive(Debug)]
pub struct Central {
    /// The temp dir (CA files under `ca/`, the store `c.db`).
    pub dir: tempfile::TempDir,
    /// collector.toml.
    pub config: PathBuf,
    /// The HTTPS port on 127.0.0.1.
    pub port: u16,
    /// The running collector (killed on drop).
    pub process: Option<CollectorProcess>,
}

impl Central {
    /// `ca init` for `localhost`, a config with the CA, CRL and a store, and `serve`.
    ///
    /// # Panics
    /// On failure (test support).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ok, ca) = run(command("posguard-collector")
            .args(["ca", "init", "--dir"])
            .arg(dir.path().join("ca"))
            .args(["--server-name", "localhost"]));
        assert!(ok, "{ca}");
        let port = free_port();
        let config = dir.path().join("collector.toml");
        let lines: String = ca
            .lines()
            .filter(|l| l.contains(" = \""))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nstore = \"{}\"\n{lines}",
                dir.path().join("c.db").display()
            ),
        )
        .unwrap();
        let process = Some(CollectorProcess::start(&config, port));
        Central {
            dir,
            config,
            port,
            process,
        }
    }

    /// `host:port` for terminals.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The fleet CA certificate.
    pub fn fleet_ca(&self) -> PathBuf {
        self.dir.path().join("ca/fleet-ca.pem")
    }

    /// `posguard-collector ARGS --config …`: (success, output).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        run(command("posguard-collector")
            .args(args)
            .arg("--config")
            .arg(&self.config))
    }

    /// A one-time enrollment token for `device` (1 h).
    ///
    /// # Panics
    /// If it is refused.
    pub fn token(&self, device: &str) -> String {
        let (ok, out) = self.cli(&[
            "enroll-token",
            "create",
            "--device-id",
            device,
            "--ttl",
            "1h",
            "--quiet",
        ]);
        assert!(ok, "{out}");
        out.trim().to_owned()
    }

    /// `devices` as JSON, by device id.
    ///
    /// # Panics
    /// If the command fails.
    pub fn devices(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let (ok, out) = self.cli(&["devices"]);
        assert!(ok, "{out}");
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["device_id"].as_str().unwrap().to_owned(), v)
            })
            .collect()
    }

    /// The fleet CA as an rcgen issuer, rebuilt from `ca/fleet-ca.pem` and `ca/fleet-ca.key`
    /// (the same subject and key, so its signatures chain to the CA file).
    pub fn issuer(&self) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let key_pem = std::fs::read_to_string(self.dir.path().join("ca/fleet-ca.key")).unwrap();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let ca_pem = std::fs::read(self.fleet_ca()).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&ca_pem).unwrap();
        let ca = pem.parse_x509().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for attr in ca.subject().iter_attributes() {
            let value = attr.as_str().unwrap().to_owned();
            let oid = attr.attr_type();
            if *oid == x509_parser::oid_registry::OID_X509_COMMON_NAME {
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, value);
            } else if *oid == x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
                params
                    .distinguished_name
                    .push(rcgen::DnType::OrganizationName, value);
            } else {
                panic!("fleet CA subject attribute {oid} not handled here");
            }
        }
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        rcgen::Issuer::new(params, key)
    }
}

/// A device certificate for the identity key in `tcti`'s TPM, naming `id`, valid from
/// `not_before` to `not_after`, signed by `issuer`, written to `out` with the CA appended.
///
/// # Panics
/// On failure (test support).
pub fn device_chain(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: &Path,
    tcti: &str,
    id: &str,
    validity: (time::OffsetDateTime, time::OffsetDateTime),
    out: &Path,
) {
    let element = posguard_hal::open(&posguard_hal::SecureElementConfig::tpm(tcti)).unwrap();
    let key = posguard_hal::csr::IdentityCsrKey::new(element).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("urn:posguard:device:{id}").try_into().unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = validity.0;
    params.not_after = validity.1;
    let cert = params.signed_by(&key, issuer).unwrap();
    let ca = std::fs::read_to_string(ca_pem).unwrap();
    std::fs::write(out, format!("{}{ca}", cert.pem())).unwrap();
}
