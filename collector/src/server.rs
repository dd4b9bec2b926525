//! The HTTPS listener: TLS 1.3, client certificates verified when sent (required by every
//! endpoint but `POST /v1/enroll`), one hyper HTTP/1 connection per device connection, tracked
//! tasks and a bounded graceful drain. [`handler`] routes and answers `/v1/journal`;
//! [`enroll`] answers `/v1/enroll` and `/v1/renew`. The CRL is checked again for every request
//! and a connection whose certificate gets revoked is closed ([`crate::revocation`]).

mod enroll;
mod handler;
pub mod plain;
pub mod sweep;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::WallClock;
use crate::config::{AlertConfig, Config};
use crate::ingest::certs::CertCache;
use crate::metrics::Metrics;
use crate::peer::Auth;
use crate::pki::issue::DeviceCa;
use crate::ratelimit::RateLimiter;
use crate::revocation::{Attempts, RevokedSerials, Stage};
use crate::store::StoreHandle;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How long the store's maintenance flag is trusted before it is read again.
pub const MAINTENANCE_RECHECK: Duration = Duration::from_secs(1);

/// The store's maintenance flag as last read, trusted for [`MAINTENANCE_RECHECK`].
#[derive(Debug, Default)]
pub struct MaintenanceCache(std::sync::Mutex<Option<(std::time::Instant, bool)>>);

impl MaintenanceCache {
    /// The flag, if it was read less than [`MAINTENANCE_RECHECK`] before `now`.
    pub fn fresh(&self, now: std::time::Instant) -> Option<bool> {
        let seen = *self.0.lock().ok()?;
        seen.filter(|(at, _)| now.saturating_duration_since(*at) < MAINTENANCE_RECHECK)
            .map(|(_, on)| on)
    }

    /// Records the flag as read at `at`.
    pub fn record(&self, at: std::time::Instant, on: bool) {
        if let Ok(mut seen) = self.0.lock() {
            *seen = Some((at, on));
        }
    }
}

/// What request handling needs.
#[derive(Debug)]
pub struct AppState {
    /// The store thread.
    pub store: StoreHandle,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Per-device rate limit.
    pub limiter: RateLimiter,
    /// Wall clock for stored timestamps.
    pub clock: Arc<dyn WallClock>,
    /// Largest body.
    pub body_limit: usize,
    /// Header read timeout.
    pub header_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// A file whose existence means maintenance mode.
    pub maintenance_file: Option<PathBuf>,
    /// `Retry-After` in maintenance mode, seconds.
    pub maintenance_retry_after_s: u64,
    /// The store's maintenance flag as last read (each read is a trip to the store thread).
    pub maintenance_seen: MaintenanceCache,
    /// Alert thresholds.
    pub alerts: AlertConfig,
    /// The fleet CA for enrollment and renewal (`None`: those answer 503
    /// `enrollment_disabled`).
    pub ca: Option<Arc<DeviceCa>>,
    /// Journal-key certificates already verified.
    pub certs: Arc<CertCache>,
    /// Batches being prepared for the store at once, at most (one per core).
    pub prepare_slots: Arc<tokio::sync::Semaphore>,
    /// The serials the current CRL lists (checked for every request).
    pub revoked: watch::Receiver<RevokedSerials>,
    /// Where refused attempts of revoked certificates are reported.
    pub attempts: Arc<Attempts>,
    /// The CRL file, served at `GET /v1/crl`.
    pub crl: Option<PathBuf>,
}

impl AppState {
    /// State from a validated config.
    pub fn new(
        config: &Config,
        store: StoreHandle,
        metrics: Arc<Metrics>,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        Self {
            store,
            metrics,
            limiter: RateLimiter::new(config.rate_limit),
            clock,
            body_limit: config.body_limit,
            header_timeout: Duration::from_secs(config.header_timeout_s),
            request_timeout: Duration::from_secs(config.request_timeout_s),
            maintenance_file: config.maintenance_file.clone(),
            maintenance_retry_after_s: config.maintenance_retry_after_s,
            maintenance_seen: MaintenanceCache::default(),
            alerts: config.alerts,
            ca: None,
            certs: Arc::new(CertCache::default()),
            prepare_slots: Arc::new(tokio::sync::Semaphore::new(crate::ingest::cores())),
            // No CRL until with_revocation: nothing revoked, and it never changes.
            revoked: watch::channel(RevokedSerials::default()).1,
            attempts: Arc::new(Attempts::default()),
            crl: config.crl.clone(),
        }
    }

    /// Checks requests against the CRL the reloader publishes, and reports refusals where its
    /// verifier reports those of the handshake.
    #[must_use]
    pub fn with_revocation(mut self, tls: &crate::tls::TlsReloader) -> Self {
        self.revoked = tls.revoked();
        self.attempts = tls.attempts();
        self
    }

    /// Enables enrollment and renewal with `ca`.
    #[must_use]
    pub fn with_ca(mut self, ca: Option<Arc<DeviceCa>>) -> Self {
        self.ca = ca;
        self
    }
}

/// Serves agents on `listener` until `shutdown` resolves, then stops accepting, lets open
/// connections finish their current request (bounded by a grace period) and returns.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: watch::Receiver<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let state = state.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            if let Err(e) = connection(tcp, addr, acceptor, state, stop).await {
                tracing::debug!(peer = %addr, error = %e, "connection ended");
            }
        });
    }
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; dropping them");
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    stop: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    // The verifier already checked any certificate sent (chain to the fleet CA, CRL, expiry);
    // whether its absence is acceptable depends on the endpoint.
    let der = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    let auth = Arc::new(Auth::from_cert(der.map(|d| d.as_ref())));
    // The verifier checked the CRL as it was when this connection's configuration was taken;
    // a revocation after that must still reach this connection.
    let cert: Option<Arc<(Vec<u8>, Vec<u8>)>> = der.and_then(|d| {
        let serial = crate::revocation::cert_serial(d.as_ref())?;
        Some(Arc::new((d.as_ref().to_vec(), serial)))
    });
    let header_timeout = state.header_timeout;
    let revoked = state.revoked.clone();
    let service = {
        let cert = cert.clone();
        service_fn(move |req| {
            let state = state.clone();
            let auth = auth.clone();
            let cert = cert.clone();
            async move {
                if let Some(refused) = refuse_if_revoked(&state, cert.as_deref()) {
                    return Ok(refused);
                }
                handler::handle(state, auth, remote, req).await
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r?,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
        () = revoked_while_open(revoked, cert.map(|c| c.1.clone())) => {
            tracing::info!(peer = %remote, "closing a connection whose certificate was revoked");
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
    }
    Ok(())
}

/// 403 `certificate_revoked` (and the connection closed after it) if the CRL now lists the
/// connection's certificate `(der, serial)`; the attempt is reported.
fn refuse_if_revoked(state: &AppState, cert: Option<&(Vec<u8>, Vec<u8>)>) -> Option<handler::Resp> {
    let (der, serial) = cert?;
    if !state.revoked.borrow().contains(serial) {
        return None;
    }
    state.attempts.refused(der, Stage::Request);
    state.metrics.request(StatusCode::FORBIDDEN.as_u16());
    let mut r = handler::plain(StatusCode::FORBIDDEN, "certificate_revoked");
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Some(r)
}

/// Resolves once the CRL lists `serial` (never for a connection without a certificate, or
/// when no CRL is watched).
async fn revoked_while_open(mut revoked: watch::Receiver<RevokedSerials>, serial: Option<Vec<u8>>) {
    let Some(serial) = serial else {
        return std::future::pending().await;
    };
    // Revoked between this connection's handshake and now (its configuration was older).
    if revoked.borrow_and_update().contains(&serial) {
        return;
    }
    loop {
        if revoked.changed().await.is_err() {
            return std::future::pending().await;
        }
        if revoked.borrow_and_update().contains(&serial) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_on_a_connection_whose_certificate_got_revoked_is_refused_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = Config::parse(&format!(
            "listen = \"127.0.0.1:0\"\nserver_cert = \"{d}/s.pem\"\nserver_key = \"{d}/s.key\"\n\
             fleet_ca = \"{d}/ca.pem\"\nstore = \"{d}/c.db\"\n"
        ))
        .unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&config.store).unwrap();
        let store = StoreHandle::spawn(Box::new(store)).unwrap();
        let clock: Arc<dyn WallClock> = Arc::new(crate::clock::SystemClock);
        let mut state = AppState::new(&config, store, Arc::new(Metrics::default()), clock);
        let (crl, revoked) = watch::channel(RevokedSerials::default());
        state.revoked = revoked;

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "urn:posguard:device:term-7".try_into().unwrap(),
        )];
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x51, 0x02]));
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let serial = crate::revocation::cert_serial(&der).unwrap();
        assert_eq!(serial, vec![0x51, 0x02]);
        let cert = (der, serial.clone());

        assert!(refuse_if_revoked(&state, Some(&cert)).is_none());
        assert!(refuse_if_revoked(&state, None).is_none(), "no certificate");
        crl.send_replace(Arc::new([vec![0x99], serial].into_iter().collect()));
        let r = refuse_if_revoked(&state, Some(&cert)).unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[handler::ERROR_HEADER], "certificate_revoked");
        assert_eq!(r.headers()[CONNECTION], "close");
        assert!(
            refuse_if_revoked(&state, None).is_none(),
            "anonymous: the handler decides"
        );
        let reported = state.attempts.take();
        assert_eq!(
            reported,
            vec![crate::revocation::Attempt {
                device_id: Some("term-7".into()),
                serial: "5102".into(),
                stage: Stage::Request,
            }]
        );
        assert!(
            state
                .metrics
                .render()
                .contains("posguard_collector_requests_total{status=\"403\"} 1")
        );
    }

    #[test]
    fn the_maintenance_flag_is_trusted_for_the_recheck_interval_only() {
        let cache = MaintenanceCache::default();
        let t0 = std::time::Instant::now();
        assert_eq!(cache.fresh(t0), None, "nothing read yet");
        cache.record(t0, true);
        assert_eq!(cache.fresh(t0), Some(true));
        let almost = t0 + MAINTENANCE_RECHECK - Duration::from_millis(1);
        assert_eq!(cache.fresh(almost), Some(true));
        assert_eq!(
            cache.fresh(t0 + MAINTENANCE_RECHECK),
            None,
            "read again after"
        );
        cache.record(t0 + MAINTENANCE_RECHECK, false);
        assert_eq!(cache.fresh(t0 + MAINTENANCE_RECHECK), Some(false));
    }
}
