//! Revocation on connections opened before it: the CRL reload closes a terminal's open
//! keep-alive connection, busy or idle (a request that slips in first is answered 403
//! `certificate_revoked`: see the unit test in `server.rs`); every refused attempt, at a request or at a new handshake, is counted in the
//! metrics and raises one `revoked_certificate` alert naming the device.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

/// One keep-alive connection: the request sender and the task driving the connection.
struct KeepAlive {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

async fn open(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> KeepAlive {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    KeepAlive {
        send,
        conn: tokio::spawn(conn),
    }
}

impl KeepAlive {
    async fn post(&mut self, body: Vec<u8>) -> (u16, hyper::HeaderMap, Bytes) {
        self.send.ready().await.unwrap();
        let req = hyper::Request::post("/v1/journal")
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    /// Waits until the server has closed the connection.
    async fn closed_within(self, limit: Duration) -> Duration {
        let started = Instant::now();
        tokio::time::timeout(limit, self.conn)
            .await
            .expect("the server keeps the connection of a revoked certificate open")
            .unwrap()
            .ok();
        started.elapsed()
    }
}

/// Revokes `serial` in the CRL the collector watches and makes it reload.
fn revoke(pki: &Pki, srv: &mut Running, serial: &rcgen::SerialNumber) {
    let crl = write_crl(pki, std::slice::from_ref(serial), 2);
    // A different mtime even on coarse-grained file systems.
    let f = std::fs::File::options().append(true).open(&crl).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(2))
        .unwrap();
    assert!(srv.reloader.poll(), "the changed CRL is picked up");
}

/// Polls the metrics until `line` appears (the reports are written by their own task).
async fn metric_appears(srv: &Running, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = srv.metrics.render();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_at_the_reload_and_every_refusal_is_visible() {
    let pki = pki();
    let crl = write_crl(&pki, &[], 1);
    let mut srv = start(&pki, &format!("crl = \"{}\"\n", crl.display())).await;
    let serial = rcgen::SerialNumber::from(4243u64);
    let mut dev = device_with(&pki, "term-0120", |p| {
        p.serial_number = Some(serial.clone())
    });
    let mut other = device(&pki, "term-0121");
    let mut conn = open(srv.addr, client_config(&pki, Some(&dev))).await;
    let mut other_conn = open(srv.addr, client_config(&pki, Some(&other))).await;
    let cert = dev.journal_cert(1);
    let first = dev.logout();
    let (status, _, _) = conn.post(batch(vec![cert.clone()], &[first])).await;
    assert_eq!(status, 200);
    let other_cert = other.journal_cert(1);
    let other_first = other.logout();
    let (status, _, _) = other_conn
        .post(batch(vec![other_cert.clone()], &[other_first]))
        .await;
    assert_eq!(status, 200);

    revoke(&pki, &mut srv, &serial);
    // The reload closes the connection at once; a request that gets in first is refused. Either
    // way nothing more is stored from it.
    let second = dev.logout();
    let req = hyper::Request::post("/v1/journal")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(batch(vec![cert], &[second]))))
        .unwrap();
    let refused_at_request = match conn.send.ready().await {
        Err(_) => false,
        Ok(()) => match conn.send.send_request(req).await {
            Err(_) => false,
            Ok(resp) => {
                assert_eq!(resp.status(), 403);
                assert_eq!(resp.headers()["x-posguard-error"], "certificate_revoked");
                assert_eq!(resp.headers()["connection"], "close");
                true
            }
        },
    };
    conn.closed_within(Duration::from_secs(5)).await;
    assert_eq!(
        count_records(&srv.db),
        2,
        "nothing stored after the revocation"
    );

    // Another terminal on its own open connection is not affected.
    let other_second = other.logout();
    let (status, _, _) = other_conn
        .post(batch(vec![other_cert], &[other_second]))
        .await;
    assert_eq!(status, 200);

    // A new connection is refused at the handshake, and that is visible too.
    let body = batch(vec![dev.journal_cert(1)], &[dev.logout()]);
    // (Which error the client sees depends on when the TLS 1.3 alert arrives: the metric below
    // says it was the revocation.)
    post(srv.addr, client_config(&pki, Some(&dev)), body)
        .await
        .unwrap_err();
    if refused_at_request {
        metric_appears(
            &srv,
            "posguard_collector_revoked_refusals_total{stage=\"request\"} 1",
        )
        .await;
    }
    metric_appears(
        &srv,
        "posguard_collector_revoked_refusals_total{stage=\"handshake\"} 1",
    )
    .await;
    // One alert for the certificate, however often it tries.
    metric_appears(
        &srv,
        "posguard_collector_alerts_total{kind=\"revoked_certificate\"} 1",
    )
    .await;
    let alerts = alert_kinds(&srv.db);
    assert_eq!(
        alerts
            .iter()
            .filter(|k| *k == "revoked_certificate")
            .count(),
        1,
        "{alerts:?}"
    );
    let mut store = posguard_collector::store::sqlite::SqliteStore::open(&srv.db).unwrap();
    let rows = posguard_collector::store::Store::alerts(&mut store, None, None).unwrap();
    let row = rows
        .iter()
        .find(|a| a.kind == "revoked_certificate")
        .unwrap();
    assert_eq!(row.device_id.as_deref(), Some("term-0120"), "{row:?}");
    assert!(row.detail.contains("1093"), "the serial (0x1093): {row:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_when_its_certificate_is_revoked() {
    let pki = pki();
    let crl = write_crl(&pki, &[], 1);
    let mut srv = start(&pki, &format!("crl = \"{}\"\n", crl.display())).await;
    let serial = rcgen::SerialNumber::from(4244u64);
    let mut dev = device_with(&pki, "term-0122", |p| {
        p.serial_number = Some(serial.clone())
    });
    let mut conn = open(srv.addr, client_config(&pki, Some(&dev))).await;
    let (status, _, _) = conn
        .post(batch(vec![dev.journal_cert(1)], &[dev.logout()]))
        .await;
    assert_eq!(status, 200);
    revoke(&pki, &mut srv, &serial);
    let took = conn.closed_within(Duration::from_secs(5)).await;
    eprintln!("idle connection closed {took:?} after the reload");
    srv.stop().await;
}
