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
//!
//! The cap must not lock out the orchestrator's probes, or a flood of slow clients would get a
//! healthy replica killed. So a connection that arrives at the cap is not turned away: the
//! oldest open connection that has not begun a request yet is closed to make room for it. A
//! probe sends its whole request at once, and begins it long before the connections that
//! arrive after it could make it the oldest; a half-sent request never begins. Connections that
//! have begun a request (being answered, or kept alive after an answer) are not closed for
//! room: the header-read timeout bounds how long those hold a slot while idle. Only when every
//! open connection has begun a request is the new one closed at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
use tokio_util::sync::CancellationToken;

use crate::liveness::Liveness;
use crate::metrics::kit::{add, encode};
use crate::pipeline::breaker::Breaker;

/// Most HTTP connections open at once. Probes and scrapers need a handful; 256 leaves room for
/// many scrapers and costs at most 256 descriptors. A connection beyond it is accepted rather
/// than left in the listen backlog, and the oldest connection that has not begun a request is
/// closed to make room for it (see the module's documentation); when there is none, the new
/// one is closed at once, which frees its descriptor immediately and shows the client a closed
/// connection instead of a hang.
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

/// The open connections that have not begun a request yet, by arrival, each with the token
/// that closes it: the candidates to make room at the cap, oldest first.
#[derive(Default)]
struct NotBegun {
    connections: Mutex<BTreeMap<u64, CancellationToken>>,
}

impl NotBegun {
    fn add(&self, arrival: u64) -> CancellationToken {
        let close = CancellationToken::new();
        self.lock().insert(arrival, close.clone());
        close
    }

    /// The connection began a request, or ended: no longer one to close for room.
    fn remove(&self, arrival: u64) {
        self.lock().remove(&arrival);
    }

    /// Closes the oldest; false when there is none.
    fn close_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        oldest.map(|(_, close)| close.cancel()).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        // Nothing panics while holding it, and the map is valid after any single operation.
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves the endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>, metrics: HttpMetrics, exposition: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let not_begun = Arc::new(NotBegun::default());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    for arrival in 0u64.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) if not_begun.close_oldest() => {
                metrics.http_connections_evicted.inc();
                // The closed connection's task ends as soon as it runs and gives its slot
                // back: waiting for it keeps the cap exact.
                match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    // The semaphore is never closed.
                    Err(_) => return,
                }
            }
            Err(_) => {
                metrics.http_connections_refused.inc();
                drop(stream);
                continue;
            }
        };
        let close = not_begun.add(arrival);
        let (readiness, metrics, exposition, builder, not_begun) = (
            readiness.clone(),
            metrics.clone(),
            exposition.clone(),
            builder.clone(),
            not_begun.clone(),
        );
        tokio::spawn(async move {
            metrics.http_connections_open.inc();
            let service = service_fn({
                let (metrics, exposition, not_begun) = (metrics.clone(), exposition.clone(), not_begun.clone());
                move |request| {
                    // Its headers are in: a client that is being answered, not one to close
                    // for room.
                    not_begun.remove(arrival);
                    let response = respond(&request, &readiness, &metrics, &exposition);
                    async move { Ok::<_, Infallible>(response) }
                }
            });
            tokio::select! {
                _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                () = close.cancelled() => {}
            }
            not_begun.remove(arrival);
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
    pub http_connections_evicted: Counter,
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
                "HTTP connections closed at once because the cap of open connections was reached and every open one had begun a request",
                Counter::default(),
            ),
            http_connections_evicted: add(
                registry,
                "http_connections_evicted",
                "HTTP connections that had not begun a request, closed at the cap of open connections to make room for a new one (the oldest first)",
                Counter::default(),
            ),
        }
    }
}
