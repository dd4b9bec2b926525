//! Idempotent enrollment (issue 16, point 1): a terminal that lost its certificate after the
//! collector issued it (local failure, dropped answer) retries with the spent token and the
//! same TPM key and gets a certificate for that key; any other key, another device's CSR, or a
//! device revoked since, still gets `token_used`. Real collector, real sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::enroll::*;

/// The SEC1 point certified by the first certificate of `chain_pem`.
fn certified_key(chain_pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    cert.public_key().subject_public_key.data.to_vec()
}

fn history(f: &Fleet, id: &str) -> Vec<serde_json::Value> {
    stdout(&f.cli(&["enrollments", "--device", id]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_token_with_the_same_key_is_issued_again_and_nothing_else_is() {
    let f = fleet("");
    let srv = f.start().await;
    let id = "term-0801";
    let token = f.token(id);
    let key = p256();
    let point = key.public_key_raw().to_vec();
    let (status, first) = enroll(&srv, &f.pki, enroll_body(&token, &device_csr(&key, id))).await;
    assert_eq!(status, 200, "{first}");

    // Retries with the same key (each a fresh CSR, as a rerun makes one): a certificate for
    // that key every time, a new serial each time.
    let mut serials = vec![first["serial"].as_str().unwrap().to_owned()];
    for _ in 0..3 {
        let (status, v) = enroll(&srv, &f.pki, enroll_body(&token, &device_csr(&key, id))).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(certified_key(v["chain_pem"].as_str().unwrap()), point);
        let serial = v["serial"].as_str().unwrap().to_owned();
        assert!(!serials.contains(&serial), "{serial} issued twice");
        serials.push(serial);
    }

    // Everything else about the used token is still refused: another key, the same key asking
    // for another device, a CSR that does not parse.
    let other = enroll_body(&token, &device_csr(&p256(), id));
    assert_eq!(
        enroll(&srv, &f.pki, other).await,
        (403, "token_used".into())
    );
    let wrong_device = enroll_body(&token, &device_csr(&key, "term-0802"));
    assert_eq!(
        enroll(&srv, &f.pki, wrong_device).await,
        (403, "token_used".into())
    );
    let garbage = enroll_body(&token, "not a csr");
    assert_eq!(
        enroll(&srv, &f.pki, garbage).await,
        (403, "token_used".into())
    );

    // The history tells the first issue from the retries.
    let rows = history(&f, id);
    let issued: Vec<_> = rows.iter().filter(|r| r["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 4, "{rows:?}");
    assert!(issued[0]["reason"].is_null(), "{rows:?}");
    assert!(
        issued[1..].iter().all(|r| r["reason"] == "retry_same_key"),
        "{rows:?}"
    );
    let refused = rows.iter().filter(|r| r["reason"] == "token_used").count();
    assert_eq!(refused, 3, "{rows:?}");

    // Once the token has expired, a retry is refused too; within its time it works again.
    let set_expiry = |ms: i64| {
        let db = rusqlite::Connection::open(&srv.db).unwrap();
        db.execute("UPDATE enroll_tokens SET expires_ms = ?1", [ms])
            .unwrap();
    };
    for (expires_ms, answer) in [(1_i64, 403), (i64::MAX, 200)] {
        set_expiry(expires_ms);
        let retry = enroll_body(&token, &device_csr(&key, id));
        assert_eq!(enroll(&srv, &f.pki, retry).await.0, answer, "{expires_ms}");
    }

    // Once the device's certificates are revoked, the token is spent for good.
    let out = f.cli(&["ca", "revoke", "--device", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = enroll_body(&token, &device_csr(&key, id));
    assert_eq!(
        enroll(&srv, &f.pki, again).await,
        (403, "token_used".into())
    );
    srv.stop().await;
}
