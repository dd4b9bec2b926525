//! The plain-HTTP metrics listener (`GET /metrics`).

use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Serves Prometheus text at `/metrics` until `shutdown` resolves.
pub async fn run_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => match a { Ok((tcp, _)) => tcp, Err(_) => continue },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let mut r = if req.uri().path() == "/metrics" {
                        Response::new(Full::new(Bytes::from(metrics.render())))
                    } else {
                        Response::new(Full::new(Bytes::from_static(b"not found")))
                    };
                    if req.uri().path() != "/metrics" {
                        *r.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
