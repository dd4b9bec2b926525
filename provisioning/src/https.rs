//! A minimal HTTPS client for enrollment: TLS 1.3 only, the collector verified against the
//! fleet CA, no client certificate (the terminal has none yet).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// A response.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `x-posguard-error`, if any.
    pub error_code: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// Certificates in a PEM file.
pub fn read_pem_certs(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// POSTs `body` (JSON) to `https://addr/path`, trusting only `fleet_ca`, without a client
/// certificate.
pub async fn post_json(
    addr: &str,
    server_name: &str,
    fleet_ca: &[CertificateDer<'static>],
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    post_json_as(addr, server_name, fleet_ca, None, path, body).await
}

/// Like [`post_json`], presenting a client certificate (mTLS) when `client` is given.
pub async fn post_json_as(
    addr: &str,
    server_name: &str,
    fleet_ca: &[CertificateDer<'static>],
    client: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    let mut roots = RootCertStore::empty();
    for ca in fleet_ca {
        roots.add(ca.clone()).context("fleet CA certificate")?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots);
    let config = match client {
        Some(resolver) => config.with_client_cert_resolver(resolver),
        None => config.with_no_client_auth(),
    };
    let name = ServerName::try_from(server_name.to_owned()).context("collector name")?;
    let timeout = Duration::from_secs(30);
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {addr}: timed out"))?
    .with_context(|| format!("TLS handshake with {addr} (is the fleet CA right?)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, server_name)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| anyhow!("no answer from {addr}"))??;
    let status = response.status().as_u16();
    let error_code = response
        .headers()
        .get("x-posguard-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        error_code,
        body,
    })
}
