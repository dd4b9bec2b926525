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
                    if req.uri().path() != "/metrics" {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    // The fleet gauges may read the store: off the reactor.
                    let text = tokio::task::spawn_blocking(move || metrics.render()).await;
                    let mut r = match text {
                        Ok(text) => Response::new(Full::new(Bytes::from(text))),
                        Err(_) => {
                            let mut r = Response::new(Full::new(Bytes::from_static(
                                b"metrics unavailable",
                            )));
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }
                    };
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                    );
                    Ok(r)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
