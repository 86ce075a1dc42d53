//! `/healthz` answers through a flood of idle, half-sent requests far above the connection cap:
//! at the cap the server closes a connection that has not begun a request (half-sent first) to
//! make room for the new one, so a probe is never turned away, and its descriptors stay bounded.
//!
//! The HTTP server alone, started as the collector starts it: no emulator needed. Alone in its
//! file, so that the descriptor count is this test's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use telemetry_collector::http_server::{MAX_CONNECTIONS, Readiness, serve};
use telemetry_collector::liveness::Liveness;
use telemetry_collector::metrics::Metrics;
use telemetry_collector::pipeline::breaker::Breaker;
use telemetry_testkit::{sample, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Idle half-sent requests held open, as a slowloris or a broken client fleet would: many
/// times the cap, and more than the listen backlog holds.
const FLOOD: usize = 6_000;

/// `/healthz` requests made, one after another, while the flood goes on.
const PROBES: usize = 20;

/// Longest a probe may take before the test gives up on it as hung: no claim about speed (a
/// connection can wait in the kernel's listen backlog while the flood fills it), only a bound
/// so that a broken server fails the test instead of hanging it.
const PROBE_HANG_GUARD: Duration = Duration::from_secs(120);

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

/// One client of the flood: connects, sends the beginning of a request's headers and never
/// the rest, and connects again whenever the server closes the connection, until `stop`.
async fn hold_half_sent(addr: SocketAddr, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            connected = TcpStream::connect(addr) => connected,
            () = stop.cancelled() => return,
        };
        let Ok(mut stream) = connected else {
            // Out of ports or descriptors for a moment: let the other clients run first.
            tokio::task::yield_now().await;
            continue;
        };
        // A write to a connection the server already closed may fail; the read below ends
        // then too.
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: coll").await;
        let mut buf = [0u8; 256];
        let closed = async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            () = closed => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The status of a GET, or `None` when the server closed the connection without an answer.
async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: collector\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A counter's or gauge's value in the exposition; 0 when absent.
fn metric(metrics: &Metrics, name: &str) -> u64 {
    sample(&metrics.encode(), name).map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_every_probe_through_a_flood_of_half_sent_requests_with_bounded_descriptors() {
    // The flood's sockets, the server's at most MAX_CONNECTIONS (and the one it is accepting),
    // and the rest of the process must fit in the open-files limit: a lower limit gets a
    // smaller flood, still well above the cap.
    let limit = open_files_limit();
    let flood = FLOOD.min(limit.saturating_sub(MAX_CONNECTIONS + 128));
    assert!(
        flood >= 2 * MAX_CONNECTIONS,
        "`ulimit -n` {limit} is too low for a flood above the cap"
    );

    let metrics = Arc::new(Metrics::new());
    let breaker = Arc::new(Breaker::new(metrics.breaker.clone()));
    let liveness = Arc::new(Liveness::new(Duration::from_secs(60)));
    let readiness = Arc::new(Readiness::new(breaker, liveness));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(serve(
        listener,
        readiness,
        metrics.http.clone(),
        metrics.registry.clone(),
    ));
    assert_eq!(status_of(addr, "/healthz").await, Some(200), "before the flood");

    let before = open_descriptors();
    let stop = CancellationToken::new();
    // The flood comes from elsewhere, as it would: its own thread and runtime, so that its
    // thousands of clients compete with the server for the cores, not for its runtime's queue.
    let flood_thread = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the flood's runtime");
            runtime.block_on(async move {
                let clients: Vec<_> = (0..flood)
                    .map(|_| tokio::spawn(hold_half_sent(addr, stop.clone())))
                    .collect();
                for client in clients {
                    client.await.expect("flood client");
                }
            });
        }
    });
    wait_until(
        "the flood holds every slot and keeps knocking",
        Duration::from_secs(120),
        || async {
            metric(&metrics, "telemetry_collector_http_connections_open") == MAX_CONNECTIONS as u64
                && metric(&metrics, "telemetry_collector_http_connections_evicted_total") > MAX_CONNECTIONS as u64
        },
    )
    .await;

    let evicted_before_probes = metric(&metrics, "telemetry_collector_http_connections_evicted_total");
    let mut statuses = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let status = tokio::time::timeout(PROBE_HANG_GUARD, status_of(addr, "/healthz"))
            .await
            .unwrap_or_else(|_| panic!("a /healthz probe hung for {PROBE_HANG_GUARD:?}"));
        statuses.push(status);
        // At most the flood's sockets (one per client), the server's cap and the one it is
        // accepting, and a margin for the runtime's own.
        let held = open_descriptors().saturating_sub(before);
        assert!(
            held <= flood + MAX_CONNECTIONS + 32,
            "{held} descriptors opened during a flood of {flood}"
        );
        assert!(metric(&metrics, "telemetry_collector_http_connections_open") <= MAX_CONNECTIONS as u64);
    }
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "every probe answered 200 (None: closed without an answer): {statuses:?}; {} connections refused, {} evicted",
        metric(&metrics, "telemetry_collector_http_connections_refused_total"),
        metric(&metrics, "telemetry_collector_http_connections_evicted_total")
    );
    // The flood went on throughout: each probe, arriving at the cap, made room by closing an
    // idle connection, and none was turned away.
    assert!(
        metric(&metrics, "telemetry_collector_http_connections_evicted_total") >= evicted_before_probes + PROBES as u64,
        "the probes arrived at the cap"
    );
    assert_eq!(
        metric(&metrics, "telemetry_collector_http_connections_refused_total"),
        0
    );

    stop.cancel();
    flood_thread.join().expect("the flood's thread");
    server.abort();
}
