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
//! healthy replica killed. So a connection that arrives at the cap is not turned away: an open
//! connection that has not begun a request yet is closed to make room for it. First the oldest
//! that has sent part of a request and stopped (a probe sends its whole request at once, so it
//! begins the moment its bytes are read); failing that, the oldest silent one that has had
//! [`SILENT_GRACE`] to send anything (a probe just accepted, not yet read, is silent too, and
//! must not be closed before its first read). Connections that have begun a request (being
//! answered, or kept alive after an answer) are not closed for room: the header-read timeout
//! bounds how long those hold a slot while idle. While every candidate is silent and within its
//! grace, the new connection waits for one (at most the grace); only when every open connection
//! has begun a request is the new one closed at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::liveness::Liveness;
use crate::metrics::kit::{add, encode};
use crate::pipeline::breaker::Breaker;

/// Most HTTP connections open at once. Probes and scrapers need a handful; 256 leaves room for
/// many scrapers and costs at most 256 descriptors. A connection beyond it is accepted rather
/// than left in the listen backlog, and a connection that has not begun a request (half-sent
/// first, then silent past [`SILENT_GRACE`], oldest first) is closed to make room for it (see
/// the module's documentation); when there is none, the new
/// one is closed at once, which frees its descriptor immediately and shows the client a closed
/// connection instead of a hang.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest a connection may take to send a request's headers, counted from when the server
/// starts reading (the connection's start, or the end of the previous response). Probes and
/// scrapers send theirs in one packet; a kept-alive scraper connection idle for longer is closed
/// and the scraper opens a new one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a silent connection (nothing read from it yet) is safe from being closed for room:
/// long enough for a just-accepted probe's request to be read, short against the header-read
/// timeout.
pub(crate) const SILENT_GRACE: Duration = Duration::from_millis(200);

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
    pub(crate) fn not_ready_because(&self) -> Option<String> {
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

/// One open connection that has not begun a request yet.
struct Waiting {
    close: CancellationToken,
    /// Set once any byte of it was read.
    sent: Arc<AtomicBool>,
    accepted: Instant,
}

/// The open connections that have not begun a request yet, by arrival: the candidates to make
/// room at the cap.
#[derive(Default)]
struct NotBegun {
    connections: Mutex<BTreeMap<u64, Waiting>>,
}

impl NotBegun {
    /// Returns the token that closes it and the flag its reads set.
    fn add(&self, arrival: u64) -> (CancellationToken, Arc<AtomicBool>) {
        let waiting = Waiting {
            close: CancellationToken::new(),
            sent: Arc::new(AtomicBool::new(false)),
            accepted: Instant::now(),
        };
        let handles = (waiting.close.clone(), waiting.sent.clone());
        self.lock().insert(arrival, waiting);
        handles
    }

    /// The connection began a request, or ended: no longer one to close for room.
    fn remove(&self, arrival: u64) {
        self.lock().remove(&arrival);
    }

    /// Closes the oldest half-sent connection, else the oldest silent one past its grace;
    /// false when there is none.
    fn close_one(&self) -> bool {
        let mut connections = self.lock();
        let half_sent = connections
            .iter()
            .find(|(_, w)| w.sent.load(Ordering::Acquire))
            .map(|(arrival, _)| *arrival);
        let chosen = half_sent.or_else(|| {
            connections
                .iter()
                .find(|(_, w)| w.accepted.elapsed() >= SILENT_GRACE)
                .map(|(arrival, _)| *arrival)
        });
        chosen
            .and_then(|arrival| connections.remove(&arrival))
            .map(|waiting| waiting.close.cancel())
            .is_some()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Waiting>> {
        // Nothing panics while holding it, and the map is valid after any single operation.
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection that notes when its first byte is read, so that a half-sent request can be
/// told from a connection not read yet.
struct NotingFirstByte {
    stream: TcpStream,
    sent: Arc<AtomicBool>,
}

impl AsyncRead for NotingFirstByte {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.sent.store(true, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for NotingFirstByte {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
        let Some(slot) = make_room(&slots, &not_begun, &metrics).await else {
            metrics.http_connections_refused.inc();
            drop(stream);
            continue;
        };
        let (close, sent) = not_begun.add(arrival);
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
                _ = builder.serve_connection(TokioIo::new(NotingFirstByte { stream, sent }), service) => {}
                () = close.cancelled() => {}
            }
            not_begun.remove(arrival);
            metrics.http_connections_open.dec();
            drop(slot);
        });
    }
}

/// A slot for a new connection: a free one, or one made by closing a connection that has not
/// begun a request. While every such connection is silent and within its grace (just accepted,
/// its task not yet run), waits for one to be read or to pass its grace rather than turning the
/// new connection away. `None` only when every open connection has begun a request.
async fn make_room(
    slots: &Arc<Semaphore>,
    not_begun: &NotBegun,
    metrics: &HttpMetrics,
) -> Option<OwnedSemaphorePermit> {
    /// How often the candidates are looked at again while all are silent and within grace.
    const LOOK_AGAIN: Duration = Duration::from_millis(5);
    loop {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        if not_begun.close_one() {
            metrics.http_connections_evicted.inc();
            // The closed connection's task ends as soon as it runs and gives its slot back:
            // waiting for it keeps the cap exact. The semaphore is never closed.
            return slots.clone().acquire_owned().await.ok();
        }
        if not_begun.is_empty() {
            return None;
        }
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            () = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
}

/// Longest the `healthcheck` command waits for `/healthz`: under the 3 s timeout of the image's
/// and the ECS task's health checks.
pub(crate) const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `telemetry-collector healthcheck`: asks this host's collector, listening on `listen`
/// (`HTTP_LISTEN_ADDRESS`; an unspecified address is asked on loopback), for `/healthz`. `Ok`
/// on 200, else what it answered or why it could not be asked. Plain blocking I/O: it runs
/// alone, as a container's health command, with no shell and no curl in the image.
pub fn healthcheck(listen: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = std::net::TcpStream::connect_timeout(&target, HEALTHCHECK_TIMEOUT)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let io = |e: std::io::Error| format!("{target}: {e}");
    stream.set_read_timeout(Some(HEALTHCHECK_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(HEALTHCHECK_TIMEOUT)).map_err(io)?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(io)?;
    // The answer is a few dozen bytes; a larger one is cut, which is enough to read its status.
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    if status == "200" {
        Ok(())
    } else {
        Err(format!("/healthz on {target} answered {status:?}: {body}"))
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
        "/healthz" => match readiness.liveness.stalled(tokio::time::Instant::now()) {
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
                "HTTP connections that had not begun a request, closed at the cap of open connections to make room for a new one (half-sent first, then silent for 200 ms, oldest first)",
                Counter::default(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn room_is_made_by_a_half_sent_connection_first_and_never_by_one_not_read_yet() {
        let not_begun = NotBegun::default();
        let (silent_old, _) = not_begun.add(0);
        let (half_sent, sent) = not_begun.add(1);
        let (just_accepted, _) = not_begun.add(2);
        sent.store(true, Ordering::Release);
        // The half-sent one goes first, though younger than the silent one.
        assert!(not_begun.close_one());
        assert!(half_sent.is_cancelled() && !silent_old.is_cancelled());
        // Silent connections within their grace are safe: nothing can make room.
        assert!(!not_begun.close_one());
        tokio::time::advance(SILENT_GRACE).await;
        // Past it, the oldest silent one goes, then the next.
        assert!(not_begun.close_one());
        assert!(silent_old.is_cancelled() && !just_accepted.is_cancelled());
        assert!(not_begun.close_one());
        assert!(just_accepted.is_cancelled());
        assert!(!not_begun.close_one());
    }
}
