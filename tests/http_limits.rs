//! What a client can hold of the HTTP server: idle, half-sent requests far above the connection
//! cap neither use up the process's file descriptors nor stop the pipeline, and `/healthz`
//! answers while they are held (the oldest makes room); the rest are closed after the
//! header-read timeout. Alone in its file, so that the descriptor count is this test's own.
//! `tests/http_flood.rs` tests the server alone under a flood that never stops.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::checks::{verify, wait_for_events, wait_for_queue_empty};
use support::submissions::{self, Expected};
use support::{CollectorHarness, TestEnv, metric, wait_until};
use telemetry_collector::http_server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Well above the cap, as a port scan or a broken scraper would open.
const IDLE_CONNECTIONS: usize = 2_000;

/// The descriptors this process holds for connections accepted on `port`: sockets whose local
/// port is the HTTP server's. The test's own client sockets have it as their remote port, and
/// the pipeline's AWS connections, whose number moves with its long polls, go elsewhere.
fn server_connections(port: u16) -> usize {
    let mut accepted = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... inode: the local port is hex after the
            // colon, state 0A is LISTEN, the inode the tenth field.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|address| address.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port)
                && fields.get(3) != Some(&"0A")
                && let Some(inode) = fields.get(9)
            {
                accepted.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| accepted.contains(&*target.to_string_lossy())))
        .count()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_sent_requests_far_above_the_cap_hold_no_descriptors_and_stop_nothing() {
    // The test's own sockets, the collector's at most MAX_CONNECTIONS, and the rest of the
    // process (clients, emulator connections) must fit in the open-files limit.
    let limit = open_files_limit();
    assert!(
        IDLE_CONNECTIONS + MAX_CONNECTIONS + 512 < limit,
        "`ulimit -n` {limit} is too low for this test"
    );
    let env = TestEnv::new("http-limits").await;
    let collector = env.start_collector(&env.endpoint, &[]).await;
    let addr = collector.http_addr;
    wait_until("/healthz answers", Duration::from_secs(30), || async {
        status_of(addr, "/healthz").await == Some(200)
    })
    .await;

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Headers begun, never finished. A write to a connection the server already closed
        // may fail; that is the server doing its job.
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: coll").await;
        idle.push(stream);
    }
    let metrics = collector.metrics.clone();
    wait_until(
        "every connection beyond the cap made room by closing the oldest",
        Duration::from_secs(30),
        || async {
            metric(&metrics, "telemetry_collector_http_connections_evicted_total")
                >= (IDLE_CONNECTIONS - MAX_CONNECTIONS) as u64
        },
    )
    .await;
    // The test holds IDLE_CONNECTIONS client sockets; the server side closes what it evicts,
    // and then holds at most the cap.
    wait_until(
        "the server side holds at most the cap of connections",
        Duration::from_secs(30),
        || async { server_connections(addr.port()) <= MAX_CONNECTIONS },
    )
    .await;
    assert!(
        server_connections(addr.port()) > MAX_CONNECTIONS / 2,
        "the count sees the server's connections"
    );
    assert!(metric(&metrics, "telemetry_collector_http_connections_open") <= MAX_CONNECTIONS as u64);
    // At the cap, the probe is answered: the oldest half-sent request makes room for it.
    assert_eq!(status_of(addr, "/healthz").await, Some(200));
    assert_eq!(
        metric(&metrics, "telemetry_collector_http_connections_refused_total"),
        0
    );

    // The pipeline keeps receiving, publishing and deleting meanwhile.
    let (bodies, expected): (Vec<String>, Vec<Expected>) = (0..60u64)
        .map(|n| submissions::valid(77_000 + n, 1 + (n % 3) as usize, (n % 2) as usize, n % 2 == 0))
        .unzip();
    env.send(&bodies).await;
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;

    // Every idle connection has been closed by the server, while the test still holds every
    // client socket open: those that made room at once, the rest after the header-read
    // timeout. Each read ends.
    for stream in &mut idle {
        let mut buf = [0u8; 1024];
        let ended = tokio::time::timeout(HEADER_READ_TIMEOUT + Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "an idle connection is still open past the header-read timeout"
        );
    }
    drop(idle);
    collector.stop().await;
    verify(&env.read_stream().await, &expected, true);
}
