//! Routing, the checks every endpoint shares (method, maintenance, client certificate, rate
//! limit, body limit), and `POST /v1/journal`: decode, ingest, answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use posguard_proto::uplink::UplinkBatch;

use super::AppState;
use crate::ingest::{self, IngestReport, Peer};
use crate::peer::Auth;

/// The upload endpoint.
pub const JOURNAL_PATH: &str = "/v1/journal";
/// Enrollment: one-time token + CSR, no client certificate needed.
pub const ENROLL_PATH: &str = "/v1/enroll";
/// Renewal: the device's current certificate (mTLS) + CSR.
pub const RENEW_PATH: &str = "/v1/renew";
/// The fleet CRL (`GET`, no client certificate needed): agents check the collector's own
/// certificate against it (docs/runbook.md, "Collector key compromise").
pub const CRL_PATH: &str = "/v1/crl";
/// Header carrying the stable error code on refusals (also the body).
pub const ERROR_HEADER: &str = "x-posguard-error";
/// Header carrying the highest stored seq on a 422 (the prefix before the bad record).
pub const HIGHEST_STORED_HEADER: &str = "x-posguard-highest-stored";

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) fn plain(status: StatusCode, code: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(code.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(code));
    r
}

pub(super) fn retry_after(mut r: Resp, secs: u64) -> Resp {
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// Handles one request; never fails (errors become status codes).
pub(super) async fn handle(
    state: Arc<AppState>,
    auth: Arc<Auth>,
    remote: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let timeout = state.request_timeout;
    let resp = match tokio::time::timeout(timeout, respond(&state, &auth, remote, req)).await {
        Ok(r) => r,
        Err(_) => plain(StatusCode::REQUEST_TIMEOUT, "request_timeout"),
    };
    state.metrics.request(resp.status().as_u16());
    Ok(resp)
}

async fn respond(
    state: &AppState,
    auth: &Auth,
    remote: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let path = req.uri().path();
    if path == CRL_PATH {
        return crl(state, remote, req.method()).await;
    }
    if ![JOURNAL_PATH, ENROLL_PATH, RENEW_PATH].contains(&path) {
        return plain(StatusCode::NOT_FOUND, "not_found");
    }
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let is_enroll = path == ENROLL_PATH;
    let is_renew = path == RENEW_PATH;
    let peer = match (auth, is_enroll) {
        (_, true) => None,
        (Auth::Device(p), false) => Some(p),
        (Auth::Anonymous, false) => {
            return plain(StatusCode::UNAUTHORIZED, "client_certificate_required");
        }
        (Auth::Unusable(e), false) => {
            tracing::warn!(peer = %remote, error = %e, "verified client certificate names no device");
            return plain(StatusCode::FORBIDDEN, "bad_client_certificate");
        }
    };
    if in_maintenance(state).await {
        let r = plain(StatusCode::SERVICE_UNAVAILABLE, "maintenance");
        return retry_after(r, state.maintenance_retry_after_s);
    }
    if (is_enroll || is_renew) && state.ca.is_none() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "enrollment_disabled");
    }
    // Devices are limited by id; anonymous enrollment by remote address.
    let key = match peer {
        Some(p) => p.device_id.as_str().to_owned(),
        None => format!("enroll:{}", remote.ip()),
    };
    if let Err(wait) = state.limiter.check(&key, tokio::time::Instant::now()) {
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        return retry_after(plain(StatusCode::TOO_MANY_REQUESTS, "rate_limited"), secs);
    }
    let limit = if is_enroll || is_renew {
        super::enroll::BODY_LIMIT.min(state.body_limit)
    } else {
        state.body_limit
    };
    let body = match read_body(req, limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match peer {
        None => super::enroll::enroll(state, remote, body).await,
        Some(p) if is_renew => super::enroll::renew(state, p, remote, body).await,
        Some(p) => journal(state, p, body).await,
    }
}

/// `GET /v1/crl`: the configured CRL file as it is now (agents check the fleet CA's signature
/// and take it only if newer than theirs, so serving it needs no authentication).
async fn crl(state: &AppState, remote: std::net::SocketAddr, method: &Method) -> Resp {
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let Some(path) = state.crl.as_deref() else {
        return plain(StatusCode::NOT_FOUND, "no_crl");
    };
    if let Err(wait) = state
        .limiter
        .check(&format!("crl:{}", remote.ip()), tokio::time::Instant::now())
    {
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        return retry_after(plain(StatusCode::TOO_MANY_REQUESTS, "rate_limited"), secs);
    }
    let owned = path.to_owned();
    // A few KiB, read rarely (each agent every 10 minutes): off the reactor all the same.
    let read = tokio::task::spawn_blocking(move || std::fs::read(owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match read {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/pkix-crl"),
            );
            r
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the CRL to serve it");
            plain(StatusCode::SERVICE_UNAVAILABLE, "crl_unavailable")
        }
    }
}

/// The body, at most `limit` bytes.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Resp> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"))
        }
        Err(_) => Err(plain(StatusCode::BAD_REQUEST, "bad_body")),
    }
}

async fn journal(state: &AppState, peer: &Peer, body: Bytes) -> Resp {
    let batch = match UplinkBatch::from_bytes(&body) {
        Ok(b) => b,
        Err(e) => {
            state.metrics.failure(e.code());
            return plain(StatusCode::BAD_REQUEST, e.code());
        }
    };
    store_batch(state, peer, batch).await
}

async fn in_maintenance(state: &AppState) -> bool {
    if state
        .maintenance_file
        .as_deref()
        .is_some_and(|p| p.exists())
    {
        return true;
    }
    let now = Instant::now();
    if let Some(on) = state.maintenance_seen.fresh(now) {
        return on;
    }
    // If the store cannot answer, ingest would fail too; let that path report it.
    let on = state.store.call(|s| s.maintenance()).await.unwrap_or(false);
    state.maintenance_seen.record(now, on);
    on
}

async fn store_batch(state: &AppState, peer: &Peer, batch: UplinkBatch) -> Resp {
    let peer_owned = peer.clone();
    let certs = state.certs.clone();
    // Decoding, hashing and signature checks need no store: they run on the blocking pool, in
    // parallel with other batches, and the store thread only walks the chain and writes. One
    // batch per core at a time: with one thread per waiting batch, the store thread got a small
    // share of the CPU and every batch waited for it.
    let Ok(_slot) = state.prepare_slots.acquire().await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    };
    let prepared = match tokio::task::spawn_blocking(move || {
        ingest::prepare(&peer_owned, batch, &certs)
    })
    .await
    {
        Ok(p) => p,
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    drop(_slot);
    let peer_owned = peer.clone();
    let certs = state.certs.clone();
    let now_ms = state.clock.now_ms();
    let rules = state.alerts;
    let started = Instant::now();
    let result = state
        .store
        .transact(move |tx| {
            ingest::ingest(tx, &peer_owned, &certs, &prepared, now_ms, rules).map(Some)
        })
        .await
        // The closure comes back with the batch it owns: dropped here, not on the store thread.
        .map(|(report, _batch)| report);
    state.metrics.store_latency(started.elapsed());
    match result {
        Ok(Some(report)) => answer(state, peer, report),
        Ok(None) | Err(_) => {
            if let Err(e) = &result {
                tracing::error!(device = %peer.device_id, error = %e, "store failed");
            }
            retry_after(
                plain(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                30,
            )
        }
    }
}

fn answer(state: &AppState, peer: &Peer, report: IngestReport) -> Resp {
    state.metrics.stored(report.stored, report.duplicates);
    for kind in &report.alerts {
        state.metrics.alert(kind.name());
    }
    if let Some(code) = report.rejected {
        state.metrics.failure(code);
        tracing::warn!(device = %peer.device_id, code, stored = report.stored, "batch refused");
        let mut r = plain(StatusCode::UNPROCESSABLE_ENTITY, code);
        r.headers_mut().insert(
            HIGHEST_STORED_HEADER,
            HeaderValue::from(report.ack.highest_stored),
        );
        return r;
    }
    match report.ack.to_bytes() {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-postcard"),
            );
            r
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}
