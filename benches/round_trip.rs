//! Throughput against network round-trip time: the release binary drains the same preloaded
//! backlog on the emulators (LocalStack for SQS, kinesalite for Kinesis) through the fault
//! proxy, with 0, 10, 30 and 80 ms added to every SQS and Kinesis call, and default settings.
//!
//! `cargo bench --bench round_trip` prints, per added latency, the events/s from the moment
//! the collector is ready until every event is published and every message deleted, its ratio
//! to the 0 ms run, the steady rate from the tenth to the ninth tenth of the events published
//! (without the start-up and the last calls' round trips, a fixed cost that a short run makes
//! a large share of) and its ratio, and the largest deleter backlog (`telemetry_collector_messages_awaiting_delete`) and
//! messages in flight seen on `/metrics` (sampled every 50 ms). Each run gets freshly started
//! emulators. Nothing is asserted about time; the run fails only if the stream or the queue is
//! wrong afterwards (events missing, messages left).
//!
//! Environment: `RTT_SUBMISSIONS` (default 6000), `RTT_MAX_EVENTS` per submission (default 12,
//! about 6 on average, as the fleet of the chaos soak), `RTT_LATENCIES_MS` (default
//! `0 10 30 80`), `RTT_REPEATS` (default 1: with more, the latencies are run in turn that many
//! times, and the table shows each latency's median run, its ratio to the 0 ms median, and
//! every run's events/s, since runs of a few seconds on two shared cores vary by ±10%),
//! `RTT_SEED` (default 1), `RTT_TIMEOUT_SEC` per run (default 600); collector
//! settings in the environment (`QUEUE_RECEIVERS=2`, ...) are passed on; `COLLECTOR_BIN` runs another build.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use telemetry_fleet::generate::{Fleet, FleetSettings, Outcome};
use telemetry_testkit::fault_proxy::FaultProxy;
use telemetry_testkit::{TestEnv, free_port, http_get, sample, send_to};

const POLL: Duration = Duration::from_millis(50);
const INSTANCE: &str = "rtt";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Starts an emulator with `script/emulator`; its endpoint.
fn start_emulator(kind: &str, instance: &str) -> String {
    let output = Command::new("script/emulator")
        .args(["start", kind])
        .env("EMULATOR_INSTANCE", instance)
        .stderr(Stdio::inherit())
        .output()
        .expect("run script/emulator");
    assert!(output.status.success(), "script/emulator start {kind} failed");
    String::from_utf8(output.stdout).expect("endpoint").trim().to_owned()
}

fn stop_emulators() {
    for instance in [format!("{INSTANCE}-sqs"), format!("{INSTANCE}-kinesis")] {
        let _ = Command::new("script/emulator")
            .arg("stop")
            .env("EMULATOR_INSTANCE", instance)
            .status();
    }
}

struct RunResult {
    latency_ms: u64,
    events_per_s: f64,
    /// Events/s from the tenth to the ninth tenth of the events published: the rate without
    /// the start-up and the last call's round trips, which a short run makes a large share.
    steady_events_per_s: f64,
    seconds: f64,
    peak_awaiting_delete: f64,
    peak_in_flight: f64,
    calls_delayed: u64,
}

fn main() {
    let submissions: usize = env_or("RTT_SUBMISSIONS", 6000);
    let seed: u64 = env_or("RTT_SEED", 1);
    let timeout = Duration::from_secs(env_or("RTT_TIMEOUT_SEC", 600));
    let repeats: usize = env_or("RTT_REPEATS", 1usize).max(1);
    let latencies: Vec<u64> = std::env::var("RTT_LATENCIES_MS")
        .unwrap_or_else(|_| "0 10 30 80".to_owned())
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let binary =
        std::env::var("COLLECTOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_telemetry-collector").to_owned());

    // The same backlog for every run.
    let settings = FleetSettings {
        max_events: env_or("RTT_MAX_EVENTS", 12),
        ..FleetSettings::default()
    };
    let mut fleet = Fleet::new(seed, settings);
    let now = Utc::now().naive_utc();
    let mut bodies = Vec::with_capacity(submissions);
    let mut events = 0u64;
    for _ in 0..submissions {
        let generated = fleet.next(now);
        if let Outcome::Valid(expected) = &generated.outcome {
            events += expected.events.len() as u64;
        }
        bodies.push(generated.body);
    }
    println!("round_trip: {submissions} submissions with {events} events (seed {seed}), collector {binary}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = Vec::new();
    for latency_ms in (0..repeats).flat_map(|_| latencies.iter().copied()) {
        stop_emulators();
        let sqs = start_emulator("localstack", &format!("{INSTANCE}-sqs"));
        let kinesis = start_emulator("kinesalite", &format!("{INSTANCE}-kinesis"));
        // SAFETY: set before any thread of this process reads the environment concurrently
        // (the runtime's workers do not read it).
        unsafe {
            std::env::set_var("TEST_AWS_ENDPOINT_URL", &sqs);
            std::env::set_var("TEST_AWS_KINESIS_ENDPOINT_URL", &kinesis);
        }
        let result = runtime.block_on(run(&binary, &bodies, events, latency_ms, timeout));
        results.push(result);
    }
    stop_emulators();

    // Each latency's median run (by events/s), its median steady rate, and every run's events/s.
    let medians: Vec<(&RunResult, f64, Vec<f64>)> = latencies
        .iter()
        .map(|&latency_ms| {
            let mut runs: Vec<&RunResult> = results.iter().filter(|r| r.latency_ms == latency_ms).collect();
            let all = runs.iter().map(|r| r.events_per_s).collect();
            let mut steady: Vec<f64> = runs.iter().map(|r| r.steady_events_per_s).collect();
            steady.sort_by(f64::total_cmp);
            runs.sort_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
            (runs[runs.len() / 2], steady[steady.len() / 2], all)
        })
        .collect();
    let base = medians.first().map(|(r, _, _)| r.events_per_s).unwrap_or(f64::NAN);
    let steady_base = medians.first().map(|(_, s, _)| *s).unwrap_or(f64::NAN);
    println!();
    println!(
        "| added latency per call | events/s (median of {repeats}) | vs 0 ms | steady events/s, 10%..90% (median) | vs 0 ms | drain time | peak deleter backlog | peak messages in flight | calls delayed | every run's events/s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (r, steady, all) in &medians {
        let all: Vec<String> = all.iter().map(|v| format!("{v:.0}")).collect();
        println!(
            "| {} ms | {:.0} | {:.0}% | {steady:.0} | {:.0}% | {:.1} s | {:.0} | {:.0} | {} | {} |",
            r.latency_ms,
            r.events_per_s,
            100.0 * r.events_per_s / base,
            100.0 * steady / steady_base,
            r.seconds,
            r.peak_awaiting_delete,
            r.peak_in_flight,
            r.calls_delayed,
            all.join(", ")
        );
    }
}

async fn run(binary: &str, bodies: &[String], events: u64, latency_ms: u64, timeout: Duration) -> RunResult {
    let env = TestEnv::new("rtt").await;
    // Preload, eight senders at a time, before the collector starts.
    let chunk = bodies.len().div_ceil(8).max(1);
    let mut senders = tokio::task::JoinSet::new();
    for part in bodies.chunks(chunk) {
        let (sqs, queue_url, part) = (env.sqs.clone(), env.queue_url.clone(), part.to_vec());
        senders.spawn(async move { send_to(&sqs, &queue_url, &part).await });
    }
    while let Some(sent) = senders.join_next().await {
        sent.expect("preload");
    }
    let proxy = FaultProxy::start_split(&env.endpoint, &env.kinesis_endpoint, 1).await;
    proxy.faults.set_latency(Duration::from_millis(latency_ms));

    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("round-trip-{latency_ms}ms.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = tokio::process::Command::new(binary)
        .env("AWS_REGION", telemetry_testkit::REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .env("AWS_ENDPOINT_URL_SQS", &proxy.endpoint)
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy.kinesis_endpoint)
        .env("SUBMISSIONS_QUEUE_URL", &env.queue_url)
        .env("EVENTS_DATA_STREAM_NAME", &env.stream_name)
        .env("HTTP_LISTEN_ADDRESS", addr.to_string())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the collector");

    let deadline = Instant::now() + timeout;
    while http_get(addr, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the collector never became ready; see {log_path:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let messages = bodies.len() as f64;
    let (mut peak_awaiting_delete, mut peak_in_flight) = (0f64, 0f64);
    // When the first message was received, and when each tenth of the events was published:
    // where the time goes (start, steady rate, tail).
    let (mut first_received, mut tenths) = (None, Vec::new());
    loop {
        let (_, text) = http_get(addr, "/metrics").await;
        let value = |name: &str| sample(&text, name).unwrap_or(0.0);
        if first_received.is_none() && value("telemetry_collector_messages_received_total") > 0.0 {
            first_received = Some(started.elapsed().as_secs_f64());
        }
        let published = value("telemetry_collector_events_published_total") / events as f64;
        while tenths.len() < 10 && published >= (tenths.len() + 1) as f64 / 10.0 {
            tenths.push(started.elapsed().as_secs_f64());
        }
        peak_awaiting_delete = peak_awaiting_delete.max(value("telemetry_collector_messages_awaiting_delete"));
        peak_in_flight = peak_in_flight.max(value("telemetry_collector_messages_in_flight"));
        if value("telemetry_collector_events_published_total") >= events as f64
            && value("telemetry_collector_deletes_total{outcome=\"ok\"}") >= messages
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained within {timeout:?}: {} of {events} events, {} of {messages} deletes; see {log_path:?}",
            value("telemetry_collector_events_published_total"),
            value("telemetry_collector_deletes_total{outcome=\"ok\"}")
        );
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the collector exited; see {log_path:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // The mean time of each call, as the collector measured it: where the round trips go.
    let (_, text) = http_get(addr, "/metrics").await;
    let means: Vec<String> = ["ReceiveMessage", "PutRecords", "DeleteMessageBatch"]
        .iter()
        .map(|call| {
            let series = |part: &str| {
                sample(
                    &text,
                    &format!("telemetry_collector_aws_call_duration_seconds_{part}{{call=\"{call}\"}}"),
                )
                .unwrap_or(f64::NAN)
            };
            let count = series("count");
            format!("{call} {count:.0} calls of {:.1} ms", 1000.0 * series("sum") / count)
        })
        .collect();
    println!("  {}", means.join(", "));
    telemetry_testkit::sigterm(&child);
    let _ = child.wait().await;
    assert_eq!(env.queue_total().await, 0, "messages left in the queue");
    let result = RunResult {
        latency_ms,
        events_per_s: events as f64 / seconds,
        steady_events_per_s: match (tenths.first(), tenths.get(8)) {
            (Some(first), Some(ninth)) if ninth > first => 0.8 * events as f64 / (ninth - first),
            _ => f64::NAN,
        },
        seconds,
        peak_awaiting_delete,
        peak_in_flight,
        calls_delayed: proxy.faults.calls_delayed.load(std::sync::atomic::Ordering::SeqCst),
    };
    println!(
        "+{latency_ms} ms: {events} events in {seconds:.1} s = {:.0} events/s; peak deleter backlog {peak_awaiting_delete:.0}, peak in flight {peak_in_flight:.0}",
        result.events_per_s
    );
    let tenths: Vec<String> = tenths.iter().map(|t| format!("{t:.1}")).collect();
    println!(
        "  steady rate (10%..90% of the events) {:.0} events/s; first message received at {:.2} s; each tenth of the events published by [{}] s; every delete answered at {seconds:.1} s",
        result.steady_events_per_s,
        first_received.unwrap_or(0.0),
        tenths.join(", ")
    );
    result
}
