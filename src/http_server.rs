//! The operator's HTTP endpoints (`HTTP_LISTEN_ADDRESS`):
//!
//! - `GET /healthz`: liveness, 200 while every pipeline stage that has work makes progress;
//!   503 with the stage that does not after `STALL_TIMEOUT_SEC` (see `liveness`);
//! - `GET /readyz`: 200 once the queue and the stream are resolved and while the Kinesis
//!   circuit breaker is closed and the collector is not stopping; 503 with the reason otherwise;
//! - `GET /metrics`: every metric in the Prometheus (OpenMetrics) text format.
//!
//! What one client can hold is bounded, so that idle or half-sent connections (a broken
//! scraper, a port scan, a slowloris) cannot use up the process's file descriptors, which the
//! AWS clients need too: a connection must send its request headers within
//! [`HEADER_READ_TIMEOUT`] (also between requests on a kept-alive connection), and at most
//! [`MAX_CONNECTIONS`] are open at once.

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
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::liveness::Liveness;
use crate::metrics::kit::{add, encode};
use crate::pipeline::breaker::Breaker;

/// Most HTTP connections open at once. Probes and scrapers need a handful; 256 leaves room for
/// many scrapers and costs at most 256 descriptors. A connection beyond it is accepted and
/// closed at once rather than left in the listen backlog: that frees its descriptor and
/// kernel memory immediately, and the client sees a closed connection instead of a hang.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest a connection may take to send a request's headers, counted from when the server
/// starts reading (the connection's start, or the end of the previous response). Probes and
/// scrapers send theirs in one packet; a kept-alive scraper connection idle for longer is closed
/// and the scraper opens a new one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>, metrics: HttpMetrics, exposition: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            drop(stream);
            continue;
        };
        let (readiness, metrics, exposition, builder) =
            (readiness.clone(), metrics.clone(), exposition.clone(), builder.clone());
        tokio::spawn(async move {
            metrics.http_connections_open.inc();
            let service = service_fn({
                let (metrics, exposition) = (metrics.clone(), exposition.clone());
                move |request| {
                    let response = respond(&request, &readiness, &metrics, &exposition);
                    async move { Ok::<_, Infallible>(response) }
                }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            metrics.http_connections_open.dec();
            drop(slot);
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    readiness: &Readiness,
    metrics: &HttpMetrics,
    exposition: &Registry,
) -> Response<Full<Bytes>> {
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
            let mut response = text(StatusCode::OK, encode(exposition));
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

/// The HTTP endpoints' metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    pub ready: Gauge,
    pub http_connections_open: Gauge,
    pub http_connections_refused: Counter,
}

impl HttpMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry) -> Self {
        HttpMetrics {
            ready: add(
                registry,
                "ready",
                "1 when the queue and stream are resolved and the breaker is closed (what /readyz answers)",
                Gauge::default(),
            ),
            http_connections_open: add(
                registry,
                "http_connections_open",
                "HTTP connections open (cap 256, see docs/observability.md)",
                Gauge::default(),
            ),
            http_connections_refused: add(
                registry,
                "http_connections_refused",
                "HTTP connections closed at once because the cap of open connections was reached",
                Counter::default(),
            ),
        }
    }
}
