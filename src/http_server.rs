//! The operator's HTTP endpoints (`HTTP_LISTEN_ADDRESS`):
//!
//! - `GET /healthz`: liveness, 200 while every pipeline stage that has work makes progress;
//!   503 with the stage that does not after `STALL_TIMEOUT_SEC` (see `liveness`);
//! - `GET /readyz`: 200 once the queue and the stream are resolved and while the Kinesis
//!   circuit breaker is closed and the collector is not stopping; 503 with the reason otherwise;
//! - `GET /metrics`: every metric in the Prometheus (OpenMetrics) text format.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::pipeline::breaker::Breaker;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/readyz` answers from.
pub struct Readiness {
    pub queue_resolved: AtomicBool,
    pub stream_resolved: AtomicBool,
    pub stopping: AtomicBool,
    pub breaker: Arc<Breaker>,
    pub liveness: Arc<Liveness>,
}

impl Readiness {
    pub fn new(breaker: Arc<Breaker>, liveness: Arc<Liveness>) -> Readiness {
        Readiness {
            queue_resolved: AtomicBool::new(false),
            stream_resolved: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            breaker,
            liveness,
        }
    }

    /// `None` when ready, else why not.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.stopping.load(Ordering::Acquire) {
            Some("stopping".to_owned())
        } else if !self.queue_resolved.load(Ordering::Acquire) {
            Some("queue not resolved yet".to_owned())
        } else if !self.stream_resolved.load(Ordering::Acquire) {
            Some("stream not resolved yet".to_owned())
        } else {
            self.breaker
                .reason()
                .map(|reason| format!("Kinesis circuit breaker open: {reason}"))
        }
    }
}

/// Serves the endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (readiness, metrics) = (readiness.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &readiness, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, readiness: &Readiness, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    let not_ready = readiness.not_ready_because();
    metrics.ready.set(i64::from(not_ready.is_none()));
    match request.uri().path() {
        "/healthz" => match readiness.liveness.stalled(std::time::Instant::now()) {
            None => text(StatusCode::OK, "ok\n".to_owned()),
            Some(stall) => text(StatusCode::SERVICE_UNAVAILABLE, format!("stalled: {stall}\n")),
        },
        "/readyz" => match not_ready {
            None => text(StatusCode::OK, "ready\n".to_owned()),
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.encode());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz or /metrics\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
