//! Renewal over mTLS, `/v1/journal` and `/v1/renew` without a client certificate, enrollment
//! without a configured CA, and `ca revoke` taking a device off the network.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, SystemTime};

use common::enroll::*;
use common::*;

async fn enrolled_device(f: &Fleet, srv: &Running, id: &str) -> (Device, serde_json::Value) {
    let token = f.token(id);
    let key = p256();
    let (status, v) = enroll(srv, &f.pki, enroll_body(&token, &device_csr(&key, id))).await;
    assert_eq!(status, 200, "{v}");
    (enrolled(id, key, v["chain_pem"].as_str().unwrap()), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_over_mtls_gives_a_new_certificate_for_the_same_key() {
    let f = fleet("device_cert_days = 30\n");
    let srv = f.start().await;
    let (dev, first) = enrolled_device(&f, &srv, "term-0710").await;
    let csr_pem = device_csr(&dev.key, "term-0710");
    let (status, v) = renew(&srv, &f.pki, Some(&dev), &csr_pem).await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_ne!(v["serial"], first["serial"]);
    assert_eq!(v["device_id"], "term-0710");
    let days = (v["not_after"].as_u64().unwrap() - first["not_after"].as_u64().unwrap()) / 86_400;
    assert_eq!(days, 0, "device_cert_days applies to renewals too");

    let renewed = enrolled("term-0710", dev.key, v["chain_pem"].as_str().unwrap());
    let mut renewed = renewed;
    let body = batch(vec![renewed.journal_cert(1)], &[renewed.logout()]);
    let (status, _, _) = post(srv.addr, client_config(&f.pki, Some(&renewed)), body)
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Renewal for another device id, or without a certificate, is refused.
    let other = device_csr(&renewed.key, "term-0711");
    let got = renew(&srv, &f.pki, Some(&renewed), &other).await.unwrap();
    assert_eq!(got, (422, "wrong_device_id".into()));
    let got = renew(&srv, &f.pki, None, &csr_pem).await.unwrap();
    assert_eq!(got, (401, "client_certificate_required".into()));
    let history = stdout(&f.cli(&["enrollments", "--device", "term-0710"]));
    let rows: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["kind"].to_string(), r["outcome"].to_string()))
        .collect();
    let expect = [
        ("enroll", "issued"),
        ("renew", "issued"),
        ("renew", "refused"),
    ]
    .map(|(k, o)| (format!("\"{k}\""), format!("\"{o}\"")));
    assert_eq!(summary, expect);
    assert_eq!(rows[1]["serial"], v["serial"]);
    assert_eq!(rows[2]["reason"], "wrong_device_id");
    srv.stop().await;
}

#[tokio::test]
async fn journal_without_a_client_certificate_is_refused_with_401() {
    let f = fleet("");
    let srv = f.start().await;
    let (mut dev, _) = enrolled_device(&f, &srv, "term-0712").await;
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    let (status, headers, answer) = post(srv.addr, client_config(&f.pki, None), body)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(&answer[..], b"client_certificate_required");
    assert_eq!(headers["x-posguard-error"], "client_certificate_required");
    assert_eq!(count_records(&srv.db), 0);
    srv.stop().await;
}

#[tokio::test]
async fn without_a_ca_enrollment_answers_503() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let body = enroll_body(&"ab".repeat(32), &device_csr(&p256(), "term-0713"));
    assert_eq!(
        enroll(&srv, &pki, body).await,
        (503, "enrollment_disabled".into())
    );
    srv.stop().await;
}

// Current-thread runtime on purpose: the revoked client's TLS 1.3 alert arrives after its
// handshake "succeeded"; with one thread the request is written before the alert is read, so the
// error names the alert (as in tls.rs) instead of a bare "connection was not ready".
#[tokio::test]
async fn ca_revoke_takes_the_device_off_after_the_crl_reload() {
    let f = fleet("");
    let mut srv = f.start().await;
    let (mut dev, issued) = enrolled_device(&f, &srv, "term-0714").await;
    let (mut bystander, _) = enrolled_device(&f, &srv, "term-0715").await;
    let cfg = client_config(&f.pki, Some(&dev));
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    assert_eq!(
        post(srv.addr, cfg.clone(), body.clone()).await.unwrap().0,
        200
    );

    let out = stdout(&f.cli(&["ca", "revoke", "--device", "term-0714"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], serde_json::json!([issued["serial"]]));
    let crl = f.dir().join("pki/fleet.crl");
    // Make sure the change is visible even on coarse-grained file systems.
    let file = std::fs::File::options().append(true).open(&crl).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(2))
        .unwrap();
    assert!(srv.reloader.poll(), "the reissued CRL is picked up");
    let err = post(srv.addr, cfg, body).await.unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");

    // Others keep working; revoking again changes nothing.
    let b = batch(vec![bystander.journal_cert(1)], &[bystander.logout()]);
    let cfg = client_config(&f.pki, Some(&bystander));
    assert_eq!(post(srv.addr, cfg, b).await.unwrap().0, 200);
    let serial = issued["serial"].as_str().unwrap();
    let out = stdout(&f.cli(&["ca", "revoke", "--serial", serial]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], serde_json::json!([]));
    assert_eq!(v["already_revoked"], serde_json::json!([serial]));
    let out = f.cli(&["ca", "revoke", "--device", "term-never"]);
    assert_eq!(out.status.code(), Some(64));
    srv.stop().await;
}

/// The serial (hex, as the CLI prints it) of the first certificate in a PEM file.
fn serial_of(path: &std::path::Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    posguard_collector::pki::serial_hex(cert.raw_serial())
}

#[test]
fn ca_server_cert_replaces_a_stolen_server_key_and_the_old_certificate_is_revoked() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = fleet("");
    let pki = f.dir().join("pki");
    let old_serial = serial_of(&pki.join("collector.pem"));
    let out = stdout(&f.cli(&[
        "ca",
        "server-cert",
        "--out-dir",
        pki.to_str().unwrap(),
        "--server-name",
        "collector.example",
        "--days",
        "30",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (cert, key) = (
        std::path::PathBuf::from(v["server_cert"].as_str().unwrap()),
        std::path::PathBuf::from(v["server_key"].as_str().unwrap()),
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(serial_of(&cert), v["serial"].as_str().unwrap());
    assert_ne!(v["serial"], old_serial.as_str());
    let pem = std::fs::read(&cert).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let parsed = pem.parse_x509().unwrap();
    let ca_pem = std::fs::read(pki.join("fleet-ca.pem")).unwrap();
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca_pem).unwrap();
    let ca = ca_pem.parse_x509().unwrap();
    parsed
        .verify_signature(Some(ca.public_key()))
        .expect("signed by the fleet CA");
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let life = parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
    assert!(life <= 30 * 86_400 + 300, "{life}");
    let old_key = std::fs::read(pki.join("collector.key")).unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), old_key, "a new key");

    // The stolen certificate goes on the CRL agents apply to the collector.
    let out = stdout(&f.cli(&["ca", "revoke", "--serial", &old_serial]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], serde_json::json!([old_serial]));

    let out = f.cli(&["ca", "server-cert", "--out-dir", pki.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "--server-name is required");
}
