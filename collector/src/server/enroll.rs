//! `POST /v1/enroll` and `POST /v1/renew`: run the decision (crate::enroll) on the store
//! thread, in one transaction, and answer with the chain as JSON.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::AppState;
use super::handler::{Resp, plain, retry_after};
use crate::enroll::{self, Outcome, Request};
use crate::ingest::Peer;
use crate::pki::issue::{DeviceCa, Issued};

use crate::store::StoreTx;

/// Largest enrollment or renewal body (a CSR is well under 2 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

type Decide = dyn Fn(&mut dyn StoreTx, &DeviceCa, Request<'_>) -> Result<Outcome, crate::store::StoreError>
    + Send
    + Sync;

pub(super) async fn enroll(state: &AppState, remote: std::net::SocketAddr, body: Bytes) -> Resp {
    decide(state, remote, body, Arc::new(enroll::enroll)).await
}

pub(super) async fn renew(
    state: &AppState,
    peer: &Peer,
    remote: std::net::SocketAddr,
    body: Bytes,
) -> Resp {
    let device = peer.device_id.as_str().to_owned();
    let f = move |tx: &mut dyn StoreTx, ca: &DeviceCa, req: Request<'_>| {
        enroll::renew(tx, ca, &device, req)
    };
    decide(state, remote, body, Arc::new(f)).await
}

async fn decide(
    state: &AppState,
    remote: std::net::SocketAddr,
    body: Bytes,
    f: Arc<Decide>,
) -> Resp {
    let Some(ca) = state.ca.clone() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "enrollment_disabled");
    };
    let now_ms = state.clock.now_ms();
    let peer = remote.to_string();
    let result = state
        .store
        .call(move |s| {
            let mut outcome = None;
            s.transaction(&mut |tx| {
                let req = Request {
                    body: &body,
                    now_ms,
                    peer: &peer,
                };
                outcome = Some(f(tx, &ca, req)?);
                Ok(())
            })?;
            Ok(outcome)
        })
        .await;
    match result {
        Ok(Some(Ok(issued))) => answer(&issued),
        Ok(Some(Err(refused))) => {
            state
                .metrics
                .alert(crate::alerts::AlertKind::EnrollmentRefused.name());
            let refusal = refused.refusal;
            let status =
                StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // The code in the header (programs branch on it), `code: what is wrong` in the body
            // (posguard-provision shows it to the technician).
            let mut r = plain(status, refusal.code());
            *r.body_mut() = Full::new(Bytes::from(refused.text()));
            r
        }
        Ok(None) | Err(_) => {
            if let Err(e) = &result {
                tracing::error!(error = %e, "store failed during enrollment");
            }
            retry_after(
                plain(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                30,
            )
        }
    }
}

fn answer(issued: &Issued) -> Resp {
    let body = json!({
        "device_id": issued.device_id,
        "serial": issued.serial,
        "not_after": issued.not_after_unix,
        "not_after_time": crate::clock::format_ms(issued.not_after_unix.saturating_mul(1000)),
        "certificate_pem": issued.certificate_pem,
        "ca_pem": issued.ca_pem,
        "chain_pem": issued.chain_pem(),
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
