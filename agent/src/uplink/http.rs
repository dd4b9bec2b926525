//! One HTTPS connection to the collector (HTTP/1.1 keep-alive over tokio-rustls), and the
//! classification of what comes back. In TLS 1.3 a server that refuses the client certificate
//! says so only after the handshake, as an alert on the first read: that alert is turned into
//! [`UplinkError::ClientCertRefused`] naming it.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::UplinkError;

/// Most bytes read from a response body.
const MAX_RESPONSE: usize = 1024 * 1024;
// (At least the largest fleet CRL taken: super::crl::MAX_BYTES.)

/// A response, reduced to what the uplink acts on.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) retry_after: Option<Duration>,
    pub(super) error_code: Option<String>,
    /// The collector's highest stored seq for this device, sent with refusals of a batch.
    pub(super) highest_stored: Option<u64>,
    pub(super) body: Bytes,
}

/// An open connection.
pub(super) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .finish()
    }
}

/// Finds a rustls error inside an I/O or hyper error chain.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(t) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(t.clone());
        }
        cur = err.source();
    }
    None
}

pub(super) fn classify(e: &(dyn std::error::Error + 'static), context: &str) -> UplinkError {
    match tls_cause(e) {
        Some(rustls::Error::AlertReceived(alert)) => UplinkError::ClientCertRefused(format!(
            "the collector refused this terminal's certificate ({alert:?}); check that it is \
             signed by the fleet CA, not expired and not revoked"
        )),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
            UplinkError::Tls(format!(
                "{context}: the collector's certificate is revoked (on the fleet CRL, \
                 uplink.crl): this server may be using a stolen key; nothing is sent to it"
            ))
        }
        Some(other) => UplinkError::Tls(format!("{context}: {other}")),
        None => UplinkError::Network(format!("{context}: {e}")),
    }
}

impl Connection {
    /// Connects and completes the TLS handshake (the device key signs it).
    pub(super) async fn open(
        addr: &str,
        server_name: &str,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, UplinkError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| UplinkError::Config(format!("uplink.server_name {server_name:?}: {e}")))?;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UplinkError::Network(format!("connect to {addr}: timed out")))?
            .map_err(|e| UplinkError::Network(format!("connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp))
            .await
            .map_err(|_| UplinkError::Network(format!("TLS handshake with {addr}: timed out")))?
            .map_err(|e| classify(&e, "TLS handshake"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| classify(&e, "HTTP handshake"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host: server_name.to_owned(),
        })
    }

    /// POSTs `body` to `path`.
    pub(super) async fn post(
        &mut self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, UplinkError> {
        self.post_as(path, "application/x-postcard", body, timeout)
            .await
    }

    /// POSTs `body` with `content_type`.
    pub(super) async fn post_as(
        &mut self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, UplinkError> {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| UplinkError::Network(format!("request: {e}")))?;
        self.send(request, timeout).await
    }

    /// GETs `path`.
    pub(super) async fn get(
        &mut self,
        path: &str,
        timeout: Duration,
    ) -> Result<Answer, UplinkError> {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, self.host.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| UplinkError::Network(format!("request: {e}")))?;
        self.send(request, timeout).await
    }

    async fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, UplinkError> {
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| classify(&e, "connection"))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| classify(&e, "request"))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let retry_after = header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let error_code = header("x-posguard-error");
            let highest_stored =
                header("x-posguard-highest-stored").and_then(|v| v.trim().parse::<u64>().ok());
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| UplinkError::Network(format!("response body: {e}")))?
                .to_bytes();
            Ok(Answer {
                status,
                retry_after,
                error_code,
                highest_stored,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UplinkError::Network("no answer from the collector in time".to_owned()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_collector_certificate_is_named_as_such() {
        let revoked = rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
        let e = classify(&revoked, "TLS handshake");
        assert!(matches!(e, UplinkError::Tls(_)), "{e:?}");
        assert!(
            e.to_string().contains("collector's certificate is revoked"),
            "{e}"
        );
        let io = std::io::Error::other(revoked);
        assert!(
            classify(&io, "TLS handshake")
                .to_string()
                .contains("stolen key")
        );
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(
            !classify(&expired, "TLS handshake")
                .to_string()
                .contains("revoked")
        );
    }
}
