//! From a sustained load step to the resize call: the release binary in `supervise` mode against
//! the emulator (moto serves CloudWatch and Kinesis), with the stream's CloudWatch figures
//! written by this program as Kinesis would publish them.
//!
//! A 1-shard stream carries 30% of its capacity (300 records/s) until the step, at a whole
//! minute, then 150% (1,500 records/s, what three collectors would write together). Each
//! minute's points (`IncomingRecords`, `IncomingBytes`, `WriteProvisionedThroughputExceeded` for
//! the `StreamName` dimension, what every collector wrote) are written with PutMetricData
//! `STEP_LAG_SEC` (2 s) after the minute ends (`STEP_BEFORE`, `STEP_AFTER`: the shares of the
//! shard's capacity, 0.3 and 1.5); the quarter hour before the run is written at
//! the start. The supervisor runs with the defaults but a short interval and delay:
//! `SHARD_SUPERVISOR_INTERVAL_SEC=1`, `SHARD_SUPERVISOR_WINDOWS=5` (the default),
//! `SHARD_SUPERVISOR_METRICS_DELAY_SEC=10`, autoscale on; a setting in the environment replaces
//! these. `cargo bench --bench supervisor_step` (with `TEST_AWS_ENDPOINT_URL` naming a running
//! moto, e.g. from `script/emulator start moto`) prints the step, the UpdateShardCount call
//! (the time of its log line) and the time between, against the bound that follows from the
//! settings: a window of W whole minutes, all after the step, readable D seconds after its last
//! minute ends, seen at the next tick: W × 60 + D ≤ time < W × 60 + D + I (plus the call's own
//! time). It takes W minutes and a bit. No timing is asserted.

use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use serde_json::Value;
use telemetry_testkit::{REGION, free_port, http_get, sample, sdk_config, sigterm};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One shard's records per minute.
const SHARD_RECORDS_PER_MINUTE: f64 = 60_000.0;
const RECORD_BYTES: f64 = 300.0;

/// Writes one minute's points (the minute starting at `minute_start`, seconds since the epoch).
async fn put_minute(cloudwatch: &aws_sdk_cloudwatch::Client, stream: &str, minute_start: i64, records: f64) {
    // Inside the minute, as the integration tests write them.
    let at = DateTime::from_secs(minute_start + 5);
    let data: Vec<MetricDatum> = [
        ("IncomingRecords", records, StandardUnit::Count),
        ("IncomingBytes", records * RECORD_BYTES, StandardUnit::Bytes),
        ("WriteProvisionedThroughputExceeded", 0.0, StandardUnit::Count),
    ]
    .into_iter()
    .map(|(name, value, unit)| {
        MetricDatum::builder()
            .metric_name(name)
            .dimensions(Dimension::builder().name("StreamName").value(stream).build())
            .timestamp(at)
            .value(value)
            .unit(unit)
            .build()
    })
    .collect();
    cloudwatch
        .put_metric_data()
        .namespace("AWS/Kinesis")
        .set_metric_data(Some(data))
        .send()
        .await
        .expect("PutMetricData");
}

fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

#[tokio::main]
async fn main() {
    let endpoint = std::env::var("TEST_AWS_ENDPOINT_URL")
        .expect("set TEST_AWS_ENDPOINT_URL to a running moto (script/emulator start moto prints it)");
    let interval: u64 = env_or("SHARD_SUPERVISOR_INTERVAL_SEC", 1);
    let windows: i64 = env_or("SHARD_SUPERVISOR_WINDOWS", 5);
    let delay: i64 = env_or("SHARD_SUPERVISOR_METRICS_DELAY_SEC", 10);
    let lag: i64 = env_or("STEP_LAG_SEC", 2);
    let before: f64 = env_or("STEP_BEFORE", 0.3);
    let after: f64 = env_or("STEP_AFTER", 1.5);

    let sdk = sdk_config(&endpoint).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let stream = format!("events-step-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .expect("CreateStream");
    loop {
        let status = kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .ok()
            .and_then(|o| o.stream_description_summary)
            .map(|s| s.stream_status.as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The step: the first whole minute at least 20 s ahead, so that the supervisor has decided
    // on the low load before it.
    let start = now_secs() as i64;
    let step = (start + 20).div_euclid(60) * 60 + 60;
    let records = |minute_start: i64| SHARD_RECORDS_PER_MINUTE * if minute_start >= step { after } else { before };
    for minute_start in (start.div_euclid(60) * 60 - 15 * 60..start.div_euclid(60) * 60).step_by(60) {
        put_minute(&cloudwatch, &stream, minute_start, records(minute_start)).await;
    }

    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = std::env::temp_dir().join(format!("{stream}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let binary =
        std::env::var("COLLECTOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_telemetry-collector").to_owned());
    let mut settings: Vec<(String, String)> = vec![
        ("SHARD_SUPERVISOR_INTERVAL_SEC".to_owned(), interval.to_string()),
        ("SHARD_SUPERVISOR_WINDOWS".to_owned(), windows.to_string()),
        ("SHARD_SUPERVISOR_METRICS_DELAY_SEC".to_owned(), delay.to_string()),
        ("SHARD_AUTOSCALE_ENABLED".to_owned(), "true".to_owned()),
    ];
    // Any other supervisor setting given in the environment is passed on.
    for (name, value) in std::env::vars() {
        if name.starts_with("SHARD_") && !settings.iter().any(|(n, _)| *n == name) {
            settings.push((name, value));
        }
    }
    let mut child = tokio::process::Command::new(binary)
        .arg("supervise")
        .env_clear()
        .envs([
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("RUST_LOG", "info"),
            ("EVENTS_DATA_STREAM_NAME", stream.as_str()),
            ("HTTP_LISTEN_ADDRESS", addr.as_str()),
        ])
        .envs(settings)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start telemetry-collector supervise");
    let addr = addr.parse().expect("address");

    println!(
        "Load step on a 1-shard stream: {:.0}% -> {:.0}% of its capacity at {} UTC; supervisor: \
         SHARD_SUPERVISOR_INTERVAL_SEC={interval} SHARD_SUPERVISOR_WINDOWS={windows} \
         SHARD_SUPERVISOR_METRICS_DELAY_SEC={delay}, points written {lag} s after their minute",
        before * 100.0,
        after * 100.0,
        chrono::DateTime::from_timestamp(step, 0)
            .expect("time")
            .format("%H:%M:%S"),
    );
    // Each minute's points once it has ended (and the lag passed), until the call is seen.
    let mut next_minute = start.div_euclid(60) * 60;
    let deadline = step + windows * 60 + delay + interval as i64 + 120;
    let called = loop {
        let now = now_secs();
        while (next_minute + 60 + lag) as f64 <= now {
            put_minute(&cloudwatch, &stream, next_minute, records(next_minute)).await;
            next_minute += 60;
        }
        let text = http_get(addr, "/metrics").await.1;
        if sample(&text, "telemetry_shard_supervisor_resize_calls_total{outcome=\"ok\"}").unwrap_or(0.0) >= 1.0 {
            break true;
        }
        if now as i64 > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sigterm(&child);
    let _ = child.wait().await;
    assert!(
        called,
        "no UpdateShardCount call by the deadline; the log: {}",
        log_path.display()
    );

    let lines: Vec<Value> = std::fs::read_to_string(&log_path)
        .expect("log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let call = lines
        .iter()
        .find(|l| l["message"] == "resizing the stream: UpdateShardCount accepted")
        .expect("the resize's log line");
    let at = chrono::DateTime::parse_from_rfc3339(call["timestamp"].as_str().expect("timestamp")).expect("RFC 3339");
    let elapsed = at.timestamp_micros() as f64 / 1e6 - step as f64;
    let low = windows * 60 + delay;
    println!(
        "UpdateShardCount {} -> {} at {} UTC (lowest mean utilisation of the window {}%)",
        call["current_shards"],
        call["target_shards"],
        at.format("%H:%M:%S%.3f"),
        call["lowest_mean_utilisation_pct"],
    );
    println!(
        "step -> resize call: {elapsed:.1} s; bound W*60 + D <= t < W*60 + D + I: {low} <= t < {} s",
        low + interval as i64
    );
    let _ = std::fs::remove_file(&log_path);
}
