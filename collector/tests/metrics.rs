//! The metrics endpoint of the real `posguard-collector serve`, judged by Prometheus' own
//! `promtool check metrics`: help and type for every family, the content type, label series at
//! 0 before anything happened, and the fleet gauges and refusal counters moving when terminals
//! ship, lag, hold a certificate near expiry, are revoked or come with a foreign CA. The example
//! alerting rules in docs/ pass `promtool check rules` and name only metrics the endpoint has.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use posguard_proto::uplink::{DeviceStatus, UplinkBatch};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/prometheus/posguard-collector.rules.yml"
);

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (content type, body) of `GET /metrics`, or None while nothing answers.
fn scrape(port: u16) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))?
        .to_owned();
    Some((ctype, body.to_owned()))
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by scripts/lib/common.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `promtool check metrics` passes: no lint problem at all.
fn check_exposition(body: &str) {
    let out = promtool(&["check", "metrics"], Some(body));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{body}"
    );
}

fn config(pki: &Pki, port: u16, metrics: u16, crl: &Path) -> PathBuf {
    let d = pki.dir.path();
    let path = d.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
             server_cert = \"{0}/server.pem\"\nserver_key = \"{0}/server.key\"\n\
             fleet_ca = \"{0}/ca.pem\"\nstore = \"{0}/c.db\"\ncrl = \"{1}\"\n\
             silent_after_s = 3600\n",
            d.display(),
            crl.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_and_shows_the_fleet() {
    let pki = pki();
    // A terminal whose certificate expires in 20 days, one revoked, one from a foreign CA.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::days(20);
    let mut till = device_with(&pki, "till-1", |p| p.not_after = soon);
    let revoked = device_with(&pki, "till-2", |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(0x4242u64));
    });
    let foreign = foreign_device("till-3");
    let crl = write_crl(&pki, &[rcgen::SerialNumber::from(0x4242u64)], 1);
    let (port, mport) = (free_port(), free_port());
    let cfg = config(&pki, port, mport, &crl);
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_posguard-collector"))
            .args(["--config", cfg.to_str().unwrap(), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (ctype, body) = poll("the metrics listener", || scrape(mport));
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    check_exposition(&body);
    // Before anything happened: every known label series at 0, the gauges at 0.
    for series in [
        "posguard_collector_alerts_total{kind=\"honeypot\"}",
        "posguard_collector_alerts_total{kind=\"fork\"}",
        "posguard_collector_handshake_refusals_total{reason=\"revoked\"}",
        "posguard_collector_handshake_refusals_total{reason=\"unknown_ca\"}",
        "posguard_collector_revoked_refusals_total{stage=\"request\"}",
        "posguard_collector_verification_failures_total{reason=\"bad_signature\"}",
        "posguard_collector_devices{state=\"reporting\"}",
        "posguard_collector_silent_devices",
        "posguard_collector_pending_commands",
        "posguard_collector_shipping_lag_records_max",
        "posguard_collector_device_certs_expiring{within=\"30d\"}",
    ] {
        assert_eq!(value(&body, series), Some(0.0), "{series}\n{body}");
    }
    let version = format!(
        "posguard_collector_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&body, &version), Some(1.0), "{body}");

    // till-1 ships 4 records and says its journal holds 11: 7 not shipped yet.
    let records: Vec<_> = (0..4).map(|_| till.logout()).collect();
    let mut b = UplinkBatch::new();
    b.certs = vec![till.journal_cert(1)];
    b.records = records.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.status = Some(DeviceStatus {
        agent_version: "0.1.0".into(),
        cert_not_after_unix: u64::try_from(soon.unix_timestamp()).unwrap(),
        journal_head: 11,
        journal_shipped: 4,
        wall_ms: 1_765_000_000_000,
    });
    let addr = ([127, 0, 0, 1], port).into();
    let (status, _, bytes) = post(
        addr,
        client_config(&pki, Some(&till)),
        b.to_bytes().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{bytes:?}");
    // Refused at the handshake: the revoked certificate and the foreign one.
    for cfg in [
        client_config(&pki, Some(&revoked)),
        foreign_client(&pki, &foreign.0, &foreign.1),
    ] {
        assert!(post(addr, cfg, batch(vec![], &[])).await.is_err());
    }
    // A command for till-1, queued until it acknowledges.
    let ops = pki.dir.path().join("ops.key");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_posguard-collector"))
            .args(["--config", cfg.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        cli(&["ops-key", "generate", "--out", ops.to_str().unwrap()])
            .status
            .success()
    );
    let out = cli(&[
        "command",
        "--device",
        "till-1",
        "lockdown",
        "--ops-key",
        ops.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");

    // The gauges are recomputed at most every few seconds: poll until they show the fleet.
    let body = poll("the fleet gauges", || {
        let (_, body) = scrape(mport)?;
        (value(&body, "posguard_collector_pending_commands") == Some(1.0)
            && value(
                &body,
                "posguard_collector_handshake_refusals_total{reason=\"revoked\"}",
            ) >= Some(1.0)
            && value(
                &body,
                "posguard_collector_revoked_refusals_total{stage=\"handshake\"}",
            ) >= Some(1.0))
        .then_some(body)
    });
    for (series, want) in [
        ("posguard_collector_devices{state=\"reporting\"}", 1.0),
        ("posguard_collector_devices{state=\"silent\"}", 0.0),
        ("posguard_collector_shipping_lag_records_max", 7.0),
        ("posguard_collector_unshipped_records", 7.0),
        (
            "posguard_collector_device_certs_expiring{within=\"30d\"}",
            1.0,
        ),
        (
            "posguard_collector_device_certs_expiring{within=\"7d\"}",
            0.0,
        ),
        ("posguard_collector_device_certs_expired", 0.0),
        (
            "posguard_collector_handshake_refusals_total{reason=\"unknown_ca\"}",
            1.0,
        ),
        ("posguard_collector_events_stored_total", 4.0),
    ] {
        assert_eq!(value(&body, series), Some(want), "{series}\n{body}");
    }
    check_exposition(&body);
    check_rules(&body);
}

/// (certificate PEM, key PEM) of a terminal enrolled by another fleet's CA (another name, as
/// a foreign CA has: one named like ours fails as a bad signature instead).
fn foreign_device(id: &str) -> (String, String) {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(vec![]).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "another fleet's CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.subject_alt_names = vec![SanType::URI(
        format!("urn:posguard:device:{id}").try_into().unwrap(),
    )];
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A client of the foreign CA's terminal that still trusts our server's CA.
fn foreign_client(ours: &Pki, cert: &str, key: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ours.ca_pem.as_bytes()).unwrap())
        .unwrap();
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    )
}

/// The example rules pass `promtool check rules`, and every metric they name is exposed.
fn check_rules(body: &str) {
    let out = promtool(&["check", "rules", RULES], None);
    assert!(out.status.success(), "promtool check rules: {out:?}");
    let rules = std::fs::read_to_string(RULES).unwrap();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("posguard_collector_") {
            named += 1;
            let family = word.strip_suffix("_bucket").unwrap_or(word);
            assert!(
                body.contains(&format!("# TYPE {family} ")),
                "rule names {word}, which the endpoint does not expose"
            );
        }
    }
    assert!(named >= 12, "{named}");
}
