//! Enrollment fixtures: a fleet made by the real `ca init`, tokens from the real
//! `enroll-token create`, CSRs made by rcgen with software keys, and the requests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{CertificateParams, DnType, Issuer, KeyPair, SanType};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};

use super::{Device, Pki, Running, post_to, start_config};
use posguard_proto::chain::ChainHead;
use posguard_proto::text::DeviceId;

pub fn bin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posguard-collector"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A fleet from `ca init`: the Pki (for client configs), the config file and its text.
pub struct Fleet {
    pub pki: Pki,
    pub config: PathBuf,
    pub text: String,
}

impl Fleet {
    pub fn dir(&self) -> &Path {
        self.pki.dir.path()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        bin(self.dir(), &full)
    }

    pub fn token(&self, device: &str) -> String {
        let out = self.cli(&[
            "enroll-token",
            "create",
            "--device-id",
            device,
            "--ttl",
            "1h",
            "--quiet",
        ]);
        stdout(&out).trim().to_owned()
    }

    pub async fn start(&self) -> Running {
        start_config(&self.text).await
    }
}

pub fn fleet(extra: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(
        dir.path(),
        &[
            "ca",
            "init",
            "--dir",
            dir.path().join("pki").to_str().unwrap(),
        ],
    );
    let snippet = stdout(&out);
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"{}\"\n{snippet}{extra}",
        dir.path().join("c.db").display()
    );
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, &text).unwrap();
    // Tokens are issued before the collector first starts: create its store, as operations
    // would with --create-store (without it the CLI refuses a store path that does not exist).
    let created = bin(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--create-store",
            "enroll-token",
            "list",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let pki_dir = dir.path().join("pki");
    let ca_pem = std::fs::read_to_string(pki_dir.join("fleet-ca.pem")).unwrap();
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(pki_dir.join("fleet-ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).unwrap();
    Fleet {
        pki: Pki {
            dir,
            issuer,
            ca_pem,
        },
        config,
        text,
    }
}

/// A CSR over `key` with an optional CN and URI SANs.
pub fn csr(key: &KeyPair, cn: Option<&str>, uris: &[String]) -> String {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.clone().try_into().unwrap()))
        .collect();
    p.serialize_request(key).unwrap().pem().unwrap()
}

/// The CSR a terminal makes (as `posguard_hal::csr::device_csr_pem`): CN and URI SAN.
pub fn device_csr(key: &KeyPair, id: &str) -> String {
    csr(key, Some(id), &[format!("urn:posguard:device:{id}")])
}

pub fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

pub fn enroll_body(token: &str, csr_pem: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"token": token, "csr_pem": csr_pem})).unwrap()
}

/// POST /v1/enroll without a client certificate: (status, body as JSON or the error code).
pub async fn enroll(srv: &Running, pki: &Pki, body: Vec<u8>) -> (u16, serde_json::Value) {
    let (status, headers, bytes) = post_to(
        srv.addr,
        super::client_config(pki, None),
        "/v1/enroll",
        body,
    )
    .await
    .unwrap();
    answer(status, &headers, &bytes)
}

/// POST /v1/renew as `dev`.
pub async fn renew(
    srv: &Running,
    pki: &Pki,
    dev: Option<&Device>,
    csr_pem: &str,
) -> Result<(u16, serde_json::Value), String> {
    let body = serde_json::to_vec(&serde_json::json!({"csr_pem": csr_pem})).unwrap();
    let (status, headers, bytes) =
        post_to(srv.addr, super::client_config(pki, dev), "/v1/renew", body).await?;
    Ok(answer(status, &headers, &bytes))
}

fn answer(status: u16, headers: &hyper::HeaderMap, bytes: &[u8]) -> (u16, serde_json::Value) {
    if status == 200 {
        assert_eq!(headers["content-type"], "application/json");
        (status, serde_json::from_slice(bytes).unwrap())
    } else {
        // The body is the code, or `code: what is wrong`.
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let code = text.split_once(": ").map_or(text.as_str(), |(c, _)| c);
        assert_eq!(headers["x-posguard-error"], code);
        (status, serde_json::Value::String(code.to_owned()))
    }
}

/// A device whose certificate came from enrollment (its key is also its DIK).
pub fn enrolled(id: &str, key: KeyPair, chain_pem: &str) -> Device {
    let dik = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    let id = DeviceId::new(id).unwrap();
    Device {
        head: ChainHead::genesis(&id),
        id,
        cert_pem: chain_pem.to_owned(),
        key,
        dik,
        journal: Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap(),
    }
}
