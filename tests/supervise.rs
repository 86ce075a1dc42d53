//! The shard supervisor (`telemetry-collector supervise`, the real binary) against a real
//! Kinesis and CloudWatch emulator. Each test writes its stream's `AWS/Kinesis` metrics itself
//! (PutMetricData, `StreamName` dimension, one point per minute for the last quarter hour and
//! the next minutes, so that any window the supervisor reads is covered), then watches what the
//! supervisor does: it grows a stream under sustained load above the band and shrinks one under
//! sustained low load, and does nothing on a window with missing points, on an on-demand
//! stream, while the stream is UPDATING, or when CloudWatch cannot be reached (counted, logged,
//! `/healthz` still 200). The daily call budget is the pure policy's unit tests' (a paused
//! clock); here it is seen to be spent by a call. `supervise --check` reads the stream and its
//! metrics and fails, naming the action, when CloudWatch cannot be reached or refuses.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use serde_json::Value;
use support::{
    CollectorHarness, TestEnv, create_stream_with, free_port, http_get, sample, sigterm, stream_summary, wait_until,
};

/// A stream of this test's own, with `shards` shards or on-demand, waited for until ACTIVE.
async fn create_stream(env: &TestEnv, label: &str, shards: Option<u32>) -> String {
    let name = format!("events-{label}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    create_stream_with(&env.kinesis, &name, shards).await;
    name
}

/// (status, open shards) of a stream.
async fn summary(env: &TestEnv, stream: &str) -> (String, i32) {
    stream_summary(&env.kinesis, stream).await
}

/// Traffic of one minute as CloudWatch has it for a stream.
#[derive(Clone, Copy)]
struct Load {
    records: f64,
    bytes: f64,
    throttled: f64,
}

/// `records` per minute of 100 bytes each, none throttled.
fn load(records: f64) -> Load {
    Load {
        records,
        bytes: records * 100.0,
        throttled: 0.0,
    }
}

/// Writes `load` for each minute from 15 minutes ago to 3 minutes ahead, but only for the
/// minutes `keep` holds (by minute number since the epoch).
async fn put_metrics(env: &TestEnv, stream: &str, load: Load, keep: impl Fn(i64) -> bool) {
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&env.sdk);
    let now_minute = chrono::Utc::now().timestamp() / 60;
    let mut data = Vec::new();
    for minute in (now_minute - 15..=now_minute + 3).filter(|m| keep(*m)) {
        // Inside the minute, as Kinesis's points are stamped at their period's start.
        let at = DateTime::from_secs(minute * 60 + 5);
        for (name, value, unit) in [
            ("IncomingRecords", load.records, StandardUnit::Count),
            ("IncomingBytes", load.bytes, StandardUnit::Bytes),
            (
                "WriteProvisionedThroughputExceeded",
                load.throttled,
                StandardUnit::Count,
            ),
        ] {
            data.push(
                MetricDatum::builder()
                    .metric_name(name)
                    .dimensions(Dimension::builder().name("StreamName").value(stream).build())
                    .timestamp(at)
                    .value(value)
                    .unit(unit)
                    .build(),
            );
        }
    }
    cloudwatch
        .put_metric_data()
        .namespace("AWS/Kinesis")
        .set_metric_data(Some(data))
        .send()
        .await
        .expect("PutMetricData");
}

/// The supervisor binary on `stream`: every second, a 3-minute window ending now, resizing on,
/// no cooldown, then `settings`; its log is `<log_name>.log`.
fn spawn_supervisor(
    env: &TestEnv,
    stream: &str,
    log_name: &str,
    settings: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut overrides = vec![
        ("EVENTS_DATA_STREAM_NAME", stream),
        ("HTTP_LISTEN_ADDRESS", addr.as_str()),
        ("AWS_CALL_TIMEOUT_SEC", "10"),
        ("SHARD_SUPERVISOR_INTERVAL_SEC", "1"),
        ("SHARD_SUPERVISOR_WINDOWS", "3"),
        ("SHARD_SUPERVISOR_METRICS_DELAY_SEC", "0"),
        ("SHARD_AUTOSCALE_ENABLED", "true"),
        ("SHARD_RESIZE_COOLDOWN_SEC", "0"),
    ];
    overrides.extend_from_slice(settings);
    let child = env.spawn_binary_with(&["supervise"], &overrides, log_name);
    (child, addr.parse().unwrap())
}

/// The binary's log lines (JSON objects) whose message is `message`.
fn log_lines(log_name: &str, message: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{log_name}.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

async fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or(0.0)
}

fn decisions(text: &str, decision: &str) -> f64 {
    value(
        text,
        &format!("telemetry_shard_supervisor_decisions_total{{decision=\"{decision}\"}}"),
    )
}

fn resize_calls(text: &str, outcome: &str) -> f64 {
    value(
        text,
        &format!("telemetry_shard_supervisor_resize_calls_total{{outcome=\"{outcome}\"}}"),
    )
}

/// Waits until the supervisor has made `n` decisions labelled `decision`; the scrape then.
async fn wait_for_decisions(addr: SocketAddr, decision: &str, n: f64) -> String {
    wait_until(
        &format!("{n} `{decision}` decisions"),
        Duration::from_secs(60),
        || async { decisions(&scrape(addr).await, decision) >= n },
    )
    .await;
    scrape(addr).await
}

/// SIGTERM: the supervisor stops at once, with status 0.
async fn stop(mut supervisor: tokio::process::Child) {
    let asked = Instant::now();
    sigterm(&supervisor);
    let status = tokio::time::timeout(Duration::from_secs(5), supervisor.wait())
        .await
        .expect("the supervisor stops at once on SIGTERM")
        .expect("wait for the supervisor");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());
}

/// No resize call of any outcome.
fn assert_no_resize(text: &str) {
    for outcome in ["ok", "in_use", "failed", "stream_changed"] {
        assert_eq!(resize_calls(text, outcome), 0.0, "resize calls {outcome}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grows_a_one_shard_stream_under_sustained_load_above_the_band() {
    let env = TestEnv::new("sup-grow").await;
    let stream = create_stream(&env, "grow", Some(1)).await;
    // 900 records/s: 90% of one shard, above the default band (30-80%); 45% of two.
    put_metrics(&env, &stream, load(54_000.0), |_| true).await;
    let (supervisor, addr) = spawn_supervisor(&env, &stream, "supervise-grow", &[]);
    assert_eq!(
        value(
            &scrape_when_up(addr).await,
            "telemetry_shard_supervisor_resize_budget_remaining"
        ),
        10.0
    );

    wait_until("the stream grown to 2 open shards", Duration::from_secs(60), || async {
        summary(&env, &stream).await == ("ACTIVE".to_owned(), 2)
    })
    .await;
    // Within the band at 2 shards: decided so, and nothing more is called.
    let text = wait_for_decisions(addr, "within_band", 2.0).await;
    assert_eq!(resize_calls(&text, "ok"), 1.0, "{text}");
    assert_eq!(decisions(&text, "resize_up"), 1.0);
    assert_eq!(value(&text, "telemetry_shard_supervisor_resize_budget_remaining"), 9.0);
    assert_eq!(value(&text, "telemetry_shard_supervisor_stream_open_shards"), 2.0);
    assert!(
        value(
            &text,
            "telemetry_shard_supervisor_cloudwatch_calls_total{outcome=\"ok\"}"
        ) >= 2.0
    );
    let mean = value(
        &text,
        "telemetry_shard_supervisor_stream_utilisation_ratio{stat=\"highest_mean\"}",
    );
    assert!((mean - 0.45).abs() < 1e-9, "{text}");
    stop(supervisor).await;

    // The decision, with its figures, and the call.
    let resizes = log_lines("supervise-grow", "resizing the stream: UpdateShardCount accepted");
    assert_eq!(resizes.len(), 1);
    assert_eq!(
        (
            resizes[0]["current_shards"].as_u64(),
            resizes[0]["target_shards"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let decided: Vec<Value> = log_lines("supervise-grow", "shard supervisor decision")
        .into_iter()
        .filter(|l| l["decision"] == "resize_up")
        .collect();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["lowest_mean_utilisation_pct"], 90.0);
    assert_eq!(decided[0]["window_minutes"], 3);
    assert_eq!(decided[0]["open_shards"], 1);
    assert_eq!(summary(&env, &stream).await, ("ACTIVE".to_owned(), 2));
}

/// The first scrape once the HTTP endpoints answer.
async fn scrape_when_up(addr: SocketAddr) -> String {
    wait_until("the supervisor's /metrics answers", Duration::from_secs(30), || async {
        http_get(addr, "/healthz").await.0 == 200
    })
    .await;
    scrape(addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinks_a_stream_under_sustained_low_load() {
    let env = TestEnv::new("sup-shrink").await;
    let stream = create_stream(&env, "shrink", Some(4)).await;
    // 100 records/s: 2.5% of four shards. At most halved per call, and not below
    // SHARD_COUNT_MIN: 4 -> 2, then held at the bound.
    put_metrics(&env, &stream, load(6_000.0), |_| true).await;
    let (supervisor, addr) = spawn_supervisor(&env, &stream, "supervise-shrink", &[("SHARD_COUNT_MIN", "2")]);

    wait_until(
        "the stream shrunk to 2 open shards",
        Duration::from_secs(60),
        || async { summary(&env, &stream).await == ("ACTIVE".to_owned(), 2) },
    )
    .await;
    let text = wait_for_decisions(addr, "recommend_down", 2.0).await;
    assert_eq!(resize_calls(&text, "ok"), 1.0, "{text}");
    assert_eq!(decisions(&text, "resize_down"), 1.0);
    stop(supervisor).await;

    let held = log_lines("supervise-shrink", "shard count recommendation");
    assert_eq!(held.len(), 1, "a held recommendation is logged once per episode");
    assert_eq!(held[0]["not_applied_because"], "at SHARD_COUNT_MIN or SHARD_COUNT_MAX");
    assert_eq!(summary(&env, &stream).await, ("ACTIVE".to_owned(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_points_decide_nothing() {
    let env = TestEnv::new("sup-gaps").await;
    let stream = create_stream(&env, "gaps", Some(2)).await;
    // No traffic at all in every other minute's points, as when CloudWatch is late: unknown,
    // not idle, so the quiet minutes there are must not shrink the stream.
    put_metrics(&env, &stream, load(0.0), |minute| minute % 2 == 0).await;
    let (supervisor, addr) = spawn_supervisor(&env, &stream, "supervise-gaps", &[]);

    let text = wait_for_decisions(addr, "metrics_incomplete", 3.0).await;
    assert_no_resize(&text);
    for decision in ["resize_down", "recommend_down", "within_band"] {
        assert_eq!(decisions(&text, decision), 0.0, "{decision}:\n{text}");
    }
    stop(supervisor).await;
    let lines: Vec<Value> = log_lines("supervise-gaps", "shard supervisor decision");
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "metrics_incomplete" && l["missing_minutes"].as_u64() >= Some(1)),
        "{lines:?}"
    );
    assert_eq!(summary(&env, &stream).await, ("ACTIVE".to_owned(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_stream_is_never_resized() {
    let env = TestEnv::new("sup-ondemand").await;
    let stream = create_stream(&env, "ondemand", None).await;
    let shards_before = summary(&env, &stream).await.1;
    put_metrics(&env, &stream, load(600_000.0), |_| true).await;
    let (supervisor, addr) = spawn_supervisor(&env, &stream, "supervise-ondemand", &[("SHARD_COUNT_MAX", "100")]);

    let text = wait_for_decisions(addr, "on_demand", 3.0).await;
    assert_no_resize(&text);
    assert_eq!(decisions(&text, "resize_up"), 0.0);
    stop(supervisor).await;
    assert_eq!(summary(&env, &stream).await.1, shards_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_done_while_the_stream_is_updating() {
    let env = TestEnv::new("sup-updating").await;
    let stream = create_stream(&env, "updating", Some(1)).await;
    put_metrics(&env, &stream, load(54_000.0), |_| true).await;
    // Someone else resizes it (1 -> 2): the emulator keeps it UPDATING for a few seconds, as
    // AWS does.
    env.kinesis
        .update_shard_count()
        .stream_name(&stream)
        .target_shard_count(2)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .expect("UpdateShardCount");
    let (supervisor, addr) = spawn_supervisor(&env, &stream, "supervise-updating", &[("SHARD_COUNT_MAX", "8")]);

    // While it is UPDATING (checked after the scrape), the supervisor has called nothing.
    let mut seen_updating = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = scrape(addr).await;
        if summary(&env, &stream).await.0 != "UPDATING" {
            break;
        }
        assert_no_resize(&text);
        seen_updating |= decisions(&text, "updating") >= 1.0;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen_updating,
        "no `updating` decision seen while the stream was UPDATING"
    );
    // Once ACTIVE again the load (90% of one shard, 45% of two) is within the band.
    let text = wait_for_decisions(addr, "within_band", 1.0).await;
    assert_no_resize(&text);
    stop(supervisor).await;
    assert_eq!(summary(&env, &stream).await, ("ACTIVE".to_owned(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cloudwatch_unreachable_nothing_is_done_and_it_stays_healthy() {
    let env = TestEnv::new("sup-nocw").await;
    let stream = create_stream(&env, "nocw", Some(1)).await;
    put_metrics(&env, &stream, load(54_000.0), |_| true).await;
    // A port nothing listens on.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (supervisor, addr) = spawn_supervisor(
        &env,
        &stream,
        "supervise-nocw",
        &[("AWS_ENDPOINT_URL_CLOUDWATCH", closed.as_str())],
    );

    let text = wait_for_decisions(addr, "metrics_unavailable", 3.0).await;
    assert!(
        value(
            &text,
            "telemetry_shard_supervisor_cloudwatch_calls_total{outcome=\"failed\"}"
        ) >= 3.0
    );
    assert_eq!(
        value(
            &text,
            "telemetry_shard_supervisor_cloudwatch_calls_total{outcome=\"ok\"}"
        ),
        0.0
    );
    assert_no_resize(&text);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    stop(supervisor).await;

    let warnings = log_lines(
        "supervise-nocw",
        "CloudWatch GetMetricData failed; nothing decided until it answers (tried every interval; check cloudwatch:GetMetricData and AWS_ENDPOINT_URL_CLOUDWATCH)",
    );
    assert_eq!(warnings.len(), 1, "logged once, not every interval");
    assert_eq!(warnings[0]["level"], "WARN");
    assert_eq!(summary(&env, &stream).await, ("ACTIVE".to_owned(), 1));
}

/// Runs `telemetry-collector supervise --check` on `stream`, with `overrides`.
async fn supervise_check(env: &TestEnv, stream: &str, overrides: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-empty-home");
    std::fs::create_dir_all(&home).expect("empty HOME");
    let mut vars = vec![
        ("EVENTS_DATA_STREAM_NAME", stream),
        ("AWS_CALL_TIMEOUT_SEC", "10"),
        ("SHARD_SUPERVISOR_WINDOWS", "3"),
        ("SHARD_SUPERVISOR_METRICS_DELAY_SEC", "0"),
    ];
    vars.extend_from_slice(overrides);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(["supervise", "--check"])
        .env_clear()
        .env("HOME", &home)
        .envs(env.binary_env(&vars))
        .output()
        .await
        .expect("run telemetry-collector supervise --check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A CBOR text string (major type 3), as the rpc-v2-cbor protocol of CloudWatch's SDK reads.
fn cbor_text(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut out = match len {
        0..24 => vec![0x60 | len as u8],
        24..256 => vec![0x78, len as u8],
        _ => vec![0x79, (len >> 8) as u8, len as u8],
    };
    out.extend_from_slice(text.as_bytes());
    out
}

/// A stand-in CloudWatch endpoint that refuses every call as IAM does (HTTP 400, AccessDenied,
/// in the SDK's protocol); its address.
async fn refusing_cloudwatch() -> String {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    let mut body = vec![0xa2];
                    body.extend(cbor_text("__type"));
                    body.extend(cbor_text("AccessDenied"));
                    body.extend(cbor_text("message"));
                    body.extend(cbor_text(
                        "User: arn:aws:sts::123456789012:assumed-role/supervisor/test is not authorized to perform: cloudwatch:GetMetricData because no identity-based policy allows the cloudwatch:GetMetricData action",
                    ));
                    hyper::Response::builder()
                        .status(400)
                        .header("content-type", "application/cbor")
                        .header("smithy-protocol", "rpc-v2-cbor")
                        .header("x-amzn-query-error", "AccessDenied;Sender")
                        .body(Full::new(Bytes::from(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_check_reads_the_stream_and_its_metrics_and_fails_naming_what_cannot_be_read() {
    let env = TestEnv::new("sup-check").await;
    let stream = create_stream(&env, "check", Some(2)).await;
    put_metrics(&env, &stream, load(54_000.0), |_| true).await;

    // Everything there: both reads allowed, the window complete.
    let (code, stdout, stderr) = supervise_check(&env, &stream, &[]).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in [
        "ok   configuration: every setting is valid; every 60 s the last 3 minutes ending 0 s ago, band 30-80%"
            .to_owned(),
        format!("ok   permission: kinesis:DescribeStreamSummary allowed on {stream}"),
        format!("ok   stream: {stream} is ACTIVE, PROVISIONED, 2 open shards"),
        "ok   stream: shard-level metrics are off".to_owned(),
        format!("ok   permission: cloudwatch:GetMetricData allowed on the AWS/Kinesis metrics of {stream}"),
        "ok   metrics: the 3 minutes from ".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&expected)),
            "{expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("every minute has its figures"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("check: ok"));
    assert!(stderr.is_empty(), "{stderr}");

    // CloudWatch cannot be reached: the probe fails, named.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, stdout, _) = supervise_check(&env, &stream, &[("AWS_ENDPOINT_URL_CLOUDWATCH", closed.as_str())]).await;
    assert_eq!(code, Some(1), "{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(
        fails[0].starts_with(&format!(
            "FAIL permission: cloudwatch:GetMetricData on the AWS/Kinesis metrics of {stream} failed (endpoint, region, network?)"
        )),
        "{}",
        fails[0]
    );
    assert_eq!(stdout.lines().last(), Some("check: 1 problem(s)"));

    // CloudWatch refuses the role: the action to grant is named.
    let refusing = refusing_cloudwatch().await;
    let (code, stdout, _) = supervise_check(&env, &stream, &[("AWS_ENDPOINT_URL_CLOUDWATCH", refusing.as_str())]).await;
    assert_eq!(code, Some(1), "{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(
        fails[0].starts_with(&format!(
            "FAIL permission: cloudwatch:GetMetricData refused on the AWS/Kinesis metrics of {stream} (AccessDenied: User: "
        )),
        "{}",
        fails[0]
    );
    assert!(
        fails[0]
            .contains("grant cloudwatch:GetMetricData to the supervisor's role (deploy/iam/supervisor-policy.json)"),
        "{}",
        fails[0]
    );

    // A stream that does not exist: DescribeStreamSummary's answer is named; its metrics are
    // merely empty.
    let missing = format!("no-such-stream-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (code, stdout, _) = supervise_check(&env, &missing, &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(
        fails[0].starts_with(&format!(
            "FAIL permission: kinesis:DescribeStreamSummary on {missing} was answered ResourceNotFoundException"
        )),
        "{}",
        fails[0]
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warn metrics: ") && l.contains("3 of 3 minutes lack a figure")),
        "{stdout}"
    );
    // Nothing changed.
    assert_eq!(summary(&env, &stream).await, ("ACTIVE".to_owned(), 2));
}
