//! Enrollment and renewal on real sockets: `ca init` and `enroll-token` through the real
//! binary, CSRs made by rcgen with software keys, the issued certificate then used for the
//! journal over mTLS, and `ca revoke` taking it away again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::enroll::*;
use common::*;
use posguard_collector::clock::{SystemClock, WallClock as _};
use posguard_collector::store::Store as _;
use posguard_collector::store::sqlite::SqliteStore;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn ca_init_writes_private_keys_0600_and_never_overwrites() {
    let f = fleet("");
    let pki = f.dir().join("pki");
    assert_eq!(mode(&pki.join("fleet-ca.key")), 0o600);
    assert_eq!(mode(&pki.join("collector.key")), 0o600);
    assert_eq!(mode(&pki.join("fleet-ca.pem")), 0o644);
    assert_eq!(mode(&pki), 0o700);
    // The printed lines are TOML naming every file.
    let table: toml::Table = toml::from_str(&f.text).unwrap();
    for key in [
        "server_cert",
        "server_key",
        "fleet_ca",
        "crl",
        "ca_cert",
        "ca_key",
    ] {
        let path = table[key].as_str().unwrap();
        assert!(std::path::Path::new(path).is_file(), "{key} = {path}");
    }
    let key_before = std::fs::read(pki.join("fleet-ca.key")).unwrap();
    let out = bin(f.dir(), &["ca", "init", "--dir", pki.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(pki.join("fleet-ca.key")).unwrap(), key_before);
}

#[test]
fn tokens_are_printed_once_and_listed_without_the_secret() {
    let f = fleet("");
    let token = f.token("term-0700");
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    let out = f.cli(&[
        "enroll-token",
        "create",
        "--device-id",
        "term-0701",
        "--ttl",
        "7d",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["device_id"], "term-0701");
    assert_eq!(v["token"].as_str().unwrap().len(), 64);
    let list = stdout(&f.cli(&["enroll-token", "list"]));
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["device_id"], "term-0700");
    assert_eq!(rows[0]["used"], false);
    assert_eq!(rows[0]["expired"], false);
    assert!(!list.contains(&token) && !list.contains(v["token"].as_str().unwrap()));
    for bad in ["0m", "1y", "soon", "31d"] {
        let out = f.cli(&["enroll-token", "create", "--device-id", "t", "--ttl", bad]);
        assert_eq!(out.status.code(), Some(64), "{bad}");
    }
    let out = f.cli(&[
        "enroll-token",
        "create",
        "--device-id",
        "bad id!",
        "--ttl",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_once_then_ship_the_journal_with_the_new_certificate() {
    let f = fleet("");
    let srv = f.start().await;
    let token = f.token("term-0702");
    let key = p256();
    let (status, v) = enroll(
        &srv,
        &f.pki,
        enroll_body(&token, &device_csr(&key, "term-0702")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["device_id"], "term-0702");
    let chain = v["chain_pem"].as_str().unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let days = (v["not_after"].as_u64().unwrap() * 1000 - SystemClock.now_ms()) / 86_400_000;
    assert!((89..=90).contains(&days), "default 90 days, got {days}");

    let mut dev = enrolled("term-0702", key, chain);
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    let (status, _, _) = post(srv.addr, client_config(&f.pki, Some(&dev)), body)
        .await
        .unwrap();
    assert_eq!(status, 200, "the issued certificate works for mTLS");
    assert_eq!(count_records(&srv.db), 1);

    // The token is spent, even for the same device and a fresh key.
    let again = enroll_body(&token, &device_csr(&p256(), "term-0702"));
    assert_eq!(
        enroll(&srv, &f.pki, again).await,
        (403, "token_used".into())
    );

    let history = stdout(&f.cli(&["enrollments", "--device", "term-0702"]));
    let rows: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["outcome"], "issued");
    assert_eq!(rows[0]["serial"], v["serial"]);
    assert_eq!(rows[1]["outcome"], "refused");
    assert_eq!(rows[1]["reason"], "token_used");
    assert!(alert_kinds(&srv.db).contains(&"enrollment_refused".to_owned()));
    let list = stdout(&f.cli(&["enroll-token", "list"]));
    assert!(list.contains("\"used\":true"), "{list}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_unknown_and_malformed_requests_are_refused() {
    let f = fleet("");
    let srv = f.start().await;
    let mut store = SqliteStore::open(&srv.db).unwrap();
    let ten_minutes_ago = SystemClock.now_ms() - 600_000;
    let old = posguard_collector::enroll::token::create(
        &mut store,
        "term-0703",
        std::time::Duration::from_secs(60),
        ten_minutes_ago,
    )
    .unwrap();
    let csr_pem = device_csr(&p256(), "term-0703");
    let expired = enroll_body(&old.token, &csr_pem);
    assert_eq!(
        enroll(&srv, &f.pki, expired).await,
        (403, "token_expired".into())
    );
    let unknown = enroll_body(&"ab".repeat(32), &csr_pem);
    assert_eq!(
        enroll(&srv, &f.pki, unknown).await,
        (403, "invalid_token".into())
    );
    let short = enroll_body("abcd", &csr_pem);
    assert_eq!(
        enroll(&srv, &f.pki, short).await,
        (403, "invalid_token".into())
    );
    let junk = b"{\"token\": 5}".to_vec();
    assert_eq!(
        enroll(&srv, &f.pki, junk).await,
        (400, "bad_request".into())
    );
    let reasons: Vec<_> = store
        .enrollments(None, None)
        .unwrap()
        .into_iter()
        .map(|e| e.reason.unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "token_expired",
            "invalid_token",
            "invalid_token",
            "bad_request"
        ]
    );
    srv.stop().await;
}

fn tampered(pem: &str, from: &[u8], to: &[u8]) -> String {
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec();
    let at = der.windows(from.len()).position(|w| w == from).unwrap();
    let mut der = der;
    der[at..at + to.len()].copy_from_slice(to);
    let b64 = data_encoding::BASE64.encode(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

use rustls_pki_types::pem::PemObject as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csrs_are_refused_and_leave_the_token_usable() {
    let f = fleet("");
    let srv = f.start().await;
    let id = "term-0704";
    let token = f.token(id);
    let key = p256();
    let uri = format!("urn:posguard:device:{id}");
    let other = "urn:posguard:device:term-9999".to_owned();
    let cases = [
        (device_csr(&key, "term-9999"), 422, "wrong_device_id"),
        (
            csr(&key, Some(id), std::slice::from_ref(&other)),
            422,
            "wrong_device_id",
        ),
        (
            csr(&key, Some(id), &[uri.clone(), other]),
            422,
            "wrong_device_id",
        ),
        (csr(&key, None, &[]), 422, "bad_csr"),
        (
            device_csr(
                &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
                id,
            ),
            422,
            "unsupported_key",
        ),
        (
            device_csr(
                &rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
                id,
            ),
            422,
            "unsupported_key",
        ),
        // The requested id edited after signing (CN term-0704 → term-0705).
        (
            tampered(&device_csr(&key, id), b"term-0704", b"term-0705"),
            422,
            "bad_csr_signature",
        ),
        ("not a CSR".to_owned(), 422, "bad_csr"),
    ];
    for (csr_pem, status, code) in cases {
        let got = enroll(&srv, &f.pki, enroll_body(&token, &csr_pem)).await;
        assert_eq!(got, (status, code.into()), "{code}");
    }
    let ok = enroll(&srv, &f.pki, enroll_body(&token, &device_csr(&key, id))).await;
    assert_eq!(ok.0, 200, "a refused CSR does not spend the token");
    let refused = stdout(&f.cli(&["enrollments"]))
        .matches("\"refused\"")
        .count();
    assert_eq!(refused, 8);
    srv.stop().await;
}

/// A CSR for `id` (CN and device URI SAN) with one more subject attribute or SAN.
fn csr_with_extra(key: &rcgen::KeyPair, id: &str, extra_ou: bool, extra_dns: bool) -> String {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, id);
    if extra_ou {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "store-12");
    }
    let uri = format!("urn:posguard:device:{id}");
    p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    if extra_dns {
        p.subject_alt_names.push(rcgen::SanType::DnsName(
            "till3.store12.example".try_into().unwrap(),
        ));
    }
    p.serialize_request(key).unwrap().pem().unwrap()
}

/// The refusal as the technician sees it: status, `x-posguard-error`, body.
async fn raw(
    f: &Fleet,
    srv: &Running,
    dev: Option<&Device>,
    path: &str,
    body: Vec<u8>,
) -> (u16, String, String) {
    let (status, headers, bytes) = post_to(srv.addr, client_config(&f.pki, dev), path, body)
        .await
        .unwrap();
    let code = headers["x-posguard-error"].to_str().unwrap().to_owned();
    (status, code, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_subject_attribute_or_san_is_bad_csr_saying_what_to_remove() {
    let f = fleet("");
    let srv = f.start().await;
    let id = "term-0705";
    let token = f.token(id);
    let key = p256();
    for (ou, dns, named) in [
        (true, false, "extra subject attribute OU=store-12"),
        (
            false,
            true,
            "extra subject alternative name DNS:till3.store12.example",
        ),
    ] {
        let body = enroll_body(&token, &csr_with_extra(&key, id, ou, dns));
        let (status, code, text) = raw(&f, &srv, None, "/v1/enroll", body).await;
        assert_eq!((status, code.as_str()), (422, "bad_csr"), "{text}");
        assert!(text.starts_with("bad_csr: "), "{text}");
        assert!(text.contains(named), "{text}");
        assert!(text.contains("names only CN=<device id>"), "{text}");
    }
    // The alert says it too, for operations.
    let alerts = stdout(&f.cli(&["alerts"]));
    assert!(alerts.contains("OU=store-12"), "{alerts}");

    // Renewal applies the same rules.
    let (status, v) = enroll(&srv, &f.pki, enroll_body(&token, &device_csr(&key, id))).await;
    assert_eq!(status, 200, "{v}");
    let dev = enrolled(id, key, v["chain_pem"].as_str().unwrap());
    let csr_pem = csr_with_extra(&dev.key, id, false, true);
    let body = serde_json::to_vec(&serde_json::json!({ "csr_pem": csr_pem })).unwrap();
    let (status, code, text) = raw(&f, &srv, Some(&dev), "/v1/renew", body).await;
    assert_eq!((status, code.as_str()), (422, "bad_csr"), "{text}");
    assert!(text.contains("DNS:till3.store12.example"), "{text}");
    let history = stdout(&f.cli(&["enrollments", "--device", id]));
    assert_eq!(history.matches("\"bad_csr\"").count(), 3, "{history}");
    srv.stop().await;
}
