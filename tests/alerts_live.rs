//! The shipped alerting rules and dashboard in a real Prometheus, against running collectors.
//!
//! Prometheus (`PROMETHEUS_BIN`, else `prometheus` on the PATH; `script/prometheus-test`
//! installs Debian's package) scrapes every second the collector binaries this test starts
//! (each with a queue and stream of its own on the emulator, through a fault proxy), the shard
//! supervisor, and a tiny exposition served by the test for what only CloudWatch knows (the
//! queue's depth and age). It evaluates a copy of `deploy/prometheus/alerts.yaml` every second
//! in which durations are shortened and four thresholds changed (see [`test_copy_of_the_rules`]).
//!
//! 1. Healthy: every collector publishes valid traffic; no alert may be pending or firing.
//! 2. Faults, all at once, each on a collector of its own: the stream missing (breaker, not
//!    ready, receipts expired), Kinesis cut for a while then back (event latency, freshness),
//!    throttling, a record refused, invalid submissions with the dead-letter queue denied, deletes
//!    denied (failing, backlog), a publishing stage that hangs, a flood of idle connections,
//!    every call slowed down, a collector killed. Each alert must fire for its fault (those that
//!    name a replica, on that replica).
//! 3. Every dashboard panel's queries are evaluated; each panel must return series.
//! 4. All collectors gone while the queue grows and ages: the alerts for that fire.
//!
//! It prints, per alert, the fault and when it went pending and firing.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature; and the
// stage fault of the `fault-injection` feature (a hanging sink lane).
#![cfg(feature = "emulator-tests")]
#![cfg(feature = "fault-injection")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use serde_json::Value;
use support::fault_proxy::FaultProxy;
use support::submissions;
use support::{CollectorHarness, TestEnv, free_port, http_get, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How long the healthy run lasts; also the "day before" of the offset rules in the copy.
const HEALTHY: Duration = Duration::from_secs(50);
/// The copy's `offset 1d`: inside the healthy run when the faults begin.
const OFFSET: &str = "45s";
/// The copy's rate and quantile windows (`[5m]`, `[10m]`, `[15m]`, `[30m]`).
const WINDOW: &str = "20s";
/// The copy's `for:` of every alert.
const FOR: &str = "5s";

/// The rule file with durations shortened so that the whole run takes minutes, and four
/// thresholds changed to what a test can reach in seconds. Each replaced text must be found,
/// so that a change of the rules that the copy no longer follows fails here.
fn test_copy_of_the_rules(rules: &str) -> String {
    let mut text = rules.to_owned();
    for (from, to) in [
        // Receive-to-publish p99 above 30 s, freshness p99 above 300 s: a Kinesis outage of
        // 15 s here.
        (
            "rate(telemetry_collector_event_latency_seconds_bucket[10m]))) > 30",
            "rate(telemetry_collector_event_latency_seconds_bucket[10m]))) > 5",
        ),
        (
            "rate(telemetry_collector_submission_queue_to_stream_seconds_bucket[10m]))) > 300",
            "rate(telemetry_collector_submission_queue_to_stream_seconds_bucket[10m]))) > 5",
        ),
        // The 0.25 s floor of the slow-call alert: the emulator on a loaded machine reaches a
        // p99 of tenths of a second now and then, which AWS does not; the proxy adds 1.5 s.
        (
            "rate(telemetry_collector_aws_call_duration_seconds_bucket{call!=\"ReceiveMessage\"}[10m]))) > 0.25",
            "rate(telemetry_collector_aws_call_duration_seconds_bucket{call!=\"ReceiveMessage\"}[10m]))) > 1",
        ),
        // 1600 awaiting delete is 80% of the default cap; a test with deletes denied for a few
        // seconds holds tens.
        (
            "(telemetry_collector_messages_awaiting_delete) > 1600",
            "(telemetry_collector_messages_awaiting_delete) > 10",
        ),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "the rules no longer hold {from:?}: update this copy"
        );
        text = text.replace(from, to);
    }
    for window in ["[5m]", "[10m]", "[15m]", "[30m]"] {
        text = text.replace(window, &format!("[{WINDOW}]"));
    }
    assert_eq!(
        text.matches("offset 1d").count(),
        2,
        "the offset rules changed: update this copy"
    );
    text = text.replace("offset 1d", &format!("offset {OFFSET}"));
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.find("for: ") {
            Some(at) if line[..at].trim().is_empty() => format!("{}for: {FOR}", &line[..at]),
            _ => line.to_owned(),
        })
        .collect();
    lines.join("\n") + "\n"
}

/// The alert names of the rule file.
fn alert_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

fn prometheus_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        return bin.into();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .expect(
            "this test needs Prometheus: run script/prometheus-test (installs Debian's package), or set PROMETHEUS_BIN",
        )
}

/// `text` as a URL query value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus HTTP API answer's `data`.
async fn api(prometheus: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(prometheus, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    assert_eq!(answer["status"], "success", "{path}: {body}");
    answer["data"].clone()
}

async fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    api(prometheus, &format!("/api/v1/query?query={}", url_encode(promql))).await["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What the collectors cannot export: the queue's depth and age, as the CloudWatch exporter
/// names them. Served on every request, as it is when asked.
struct CloudWatchExposition {
    visible: AtomicU64,
    age: AtomicU64,
}

async fn serve_exposition(listener: tokio::net::TcpListener, values: Arc<CloudWatchExposition>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let values = values.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!(
                "# TYPE aws_sqs_approximate_number_of_messages_visible_average gauge\n\
                 aws_sqs_approximate_number_of_messages_visible_average{{queue_name=\"submissions\"}} {}\n\
                 # TYPE aws_sqs_approximate_age_of_oldest_message_maximum gauge\n\
                 aws_sqs_approximate_age_of_oldest_message_maximum{{queue_name=\"submissions\"}} {}\n",
                values.visible.load(Ordering::SeqCst),
                values.age.load(Ordering::SeqCst)
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The faults, one collector each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    StreamMissing,
    KinesisOutage,
    Throttling,
    RecordRefused,
    InvalidAndDeadLetterDenied,
    DeletesDenied,
    SinkHangs,
    ConnectionFlood,
    SlowCalls,
    Killed,
}

impl Fault {
    const ALL: [Fault; 10] = [
        Fault::StreamMissing,
        Fault::KinesisOutage,
        Fault::Throttling,
        Fault::RecordRefused,
        Fault::InvalidAndDeadLetterDenied,
        Fault::DeletesDenied,
        Fault::SinkHangs,
        Fault::ConnectionFlood,
        Fault::SlowCalls,
        Fault::Killed,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::StreamMissing => "stream-missing",
            Fault::KinesisOutage => "kinesis-outage",
            Fault::Throttling => "throttling",
            Fault::RecordRefused => "record-refused",
            Fault::InvalidAndDeadLetterDenied => "invalid-dlq-denied",
            Fault::DeletesDenied => "deletes-denied",
            Fault::SinkHangs => "sink-hangs",
            Fault::ConnectionFlood => "connection-flood",
            Fault::SlowCalls => "slow-calls",
            Fault::Killed => "killed",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Fault::StreamMissing => {
                "every PutRecords answered ResourceNotFoundException (stream missing), receipts 5 s"
            }
            Fault::KinesisOutage => "every Kinesis call cut for 15 s, then back",
            Fault::Throttling => "60% of records throttled (ProvisionedThroughputExceededException)",
            Fault::RecordRefused => "every PutRecords refuses its first record (ValidationException)",
            Fault::InvalidAndDeadLetterDenied => "5 invalid submissions per 0.5 s, dead-letter SendMessage denied",
            Fault::DeletesDenied => "DeleteMessageBatch denied, receipts 5 s",
            Fault::SinkHangs => "its only sink lane hangs with work 1 s after start",
            Fault::ConnectionFlood => "300 idle connections to its HTTP port",
            Fault::SlowCalls => "every AWS call held back 1.5 s by the proxy",
            Fault::Killed => "SIGKILL",
        }
    }

    /// The collector's settings beyond the common ones.
    fn settings(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Fault::StreamMissing | Fault::DeletesDenied => vec![
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
                ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "5"),
            ],
            Fault::SinkHangs => vec![
                ("COLLECTOR_FAULT_STAGE", "sink lane 0:hang"),
                ("DATA_STREAM_CONCURRENCY", "1"),
            ],
            _ => Vec::new(),
        }
    }

    /// The alerts it must fire, and whether each names this collector (`instance`).
    fn alerts(self) -> &'static [(&'static str, bool)] {
        match self {
            Fault::StreamMissing => &[
                ("CollectorBreakerOpen", true),
                ("CollectorNotReady", true),
                ("CollectorReceiptsExpired", false),
            ],
            Fault::KinesisOutage => &[
                ("CollectorEventLatencyHigh", false),
                ("CollectorSubmissionsStale", false),
            ],
            Fault::Throttling => &[("CollectorKinesisThrottled", false)],
            Fault::RecordRefused => &[("CollectorSubmissionsRefused", false)],
            Fault::InvalidAndDeadLetterDenied => &[
                ("CollectorInvalidSubmissionsRising", false),
                ("CollectorDeadLetterForwardingFails", false),
            ],
            Fault::DeletesDenied => &[("CollectorDeletesFailing", false), ("CollectorDeleterBacklog", true)],
            Fault::SinkHangs => &[("CollectorSinkStalled", true)],
            Fault::ConnectionFlood => &[("CollectorHttpConnectionsRefused", true)],
            Fault::SlowCalls => &[("CollectorCallSlowerThanUsual", false)],
            Fault::Killed => &[("CollectorDown", true)],
        }
    }
}

/// The alerts of the last phase, when every collector is gone.
const ALL_GONE: &[&str] = &[
    "CollectorAbsent",
    "CollectorNotReceivingWhileQueueGrows",
    "SubmissionsQueueOldMessages",
];

struct Collector {
    fault: Fault,
    env: Arc<TestEnv>,
    proxy: FaultProxy,
    addr: SocketAddr,
    child: Option<tokio::process::Child>,
    dead_letter_url: Option<String>,
}

impl Collector {
    fn start(&mut self) {
        let addr = self.addr.to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("AWS_ENDPOINT_URL", self.proxy.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_SQS", self.proxy.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_KINESIS", self.proxy.kinesis_endpoint.as_str()),
            ("HTTP_LISTEN_ADDRESS", addr.as_str()),
            ("QUEUE_RECEIVERS", "2"),
            ("AWS_CALL_TIMEOUT_SEC", "5"),
        ];
        vars.extend(self.fault.settings());
        if let Some(url) = &self.dead_letter_url {
            vars.push(("DEAD_LETTER_QUEUE_URL", url.as_str()));
        }
        self.child = Some(
            self.env
                .spawn_binary(&vars, &format!("alerts-live-{}", self.fault.name())),
        );
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.start_kill().expect("kill the collector");
        }
    }
}

/// Every alert state seen: (alert, instance label or "") -> (first pending, first firing),
/// as seconds since the test's clock started.
#[derive(Default)]
struct Seen {
    states: BTreeMap<(String, String), (Option<f64>, Option<f64>)>,
    /// Alerts active during the healthy run.
    during_healthy: BTreeSet<String>,
}

async fn watch_alerts(prometheus: SocketAddr, seen: Arc<Mutex<Seen>>, healthy: Arc<AtomicBool>, start: Instant) {
    loop {
        let data = api(prometheus, "/api/v1/alerts").await;
        let now = start.elapsed().as_secs_f64();
        record(&seen, &data, now, healthy.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Notes the states of one `/api/v1/alerts` answer.
fn record(seen: &Mutex<Seen>, data: &Value, now: f64, healthy: bool) {
    let mut seen = seen.lock().unwrap();
    for alert in data["alerts"].as_array().cloned().unwrap_or_default() {
        let name = alert["labels"]["alertname"].as_str().unwrap_or_default().to_owned();
        let instance = alert["labels"]["instance"].as_str().unwrap_or_default().to_owned();
        if healthy {
            seen.during_healthy.insert(format!("{name} {}", alert["labels"]));
        }
        let entry = seen.states.entry((name, instance)).or_default();
        match alert["state"].as_str() {
            Some("pending") => {
                entry.0.get_or_insert(now);
            }
            Some("firing") => {
                entry.0.get_or_insert(now);
                entry.1.get_or_insert(now);
            }
            _ => {}
        }
    }
}

/// First (pending, firing) of `alert`, on `instance` when given.
fn seen_state(seen: &Mutex<Seen>, alert: &str, instance: Option<&str>) -> (Option<f64>, Option<f64>) {
    let seen = seen.lock().unwrap();
    let mut out: (Option<f64>, Option<f64>) = (None, None);
    for ((name, inst), (pending, firing)) in &seen.states {
        if name == alert && instance.is_none_or(|i| i == inst) {
            out.0 = match (out.0, *pending) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.1 = match (out.1, *firing) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    out
}

/// Writes the stream's `AWS/Kinesis` metrics for the minutes around now, so that the shard
/// supervisor has a window to read.
async fn put_stream_metrics(env: &TestEnv, stream: &str) {
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&env.sdk);
    let now_minute = chrono::Utc::now().timestamp() / 60;
    let mut data = Vec::new();
    for minute in now_minute - 15..=now_minute + 10 {
        let at = DateTime::from_secs(minute * 60 + 5);
        for (name, value, unit) in [
            ("IncomingRecords", 30_000.0, StandardUnit::Count),
            ("IncomingBytes", 3_000_000.0, StandardUnit::Bytes),
            ("WriteProvisionedThroughputExceeded", 0.0, StandardUnit::Count),
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
    for chunk in data.chunks(500) {
        cloudwatch
            .put_metric_data()
            .namespace("AWS/Kinesis")
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .expect("PutMetricData");
    }
}

/// Sends each collector's traffic every half second until `stop`: valid submissions to all,
/// heavier to the throttled and delete-denied ones, and invalid ones to the dead-letter one
/// while `invalid` is set.
async fn feed(envs: Vec<(Fault, Arc<TestEnv>)>, invalid: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let mut salt = 7_000_000u64;
    while !stop.load(Ordering::SeqCst) {
        for (fault, env) in &envs {
            let (count, events) = match fault {
                Fault::Throttling => (4, 10),
                Fault::DeletesDenied => (5, 1),
                _ => (2, 2),
            };
            let mut bodies: Vec<String> = (0..count)
                .map(|_| {
                    salt += 1;
                    submissions::valid(salt, events, 1, salt.is_multiple_of(2)).0
                })
                .collect();
            if *fault == Fault::InvalidAndDeadLetterDenied && invalid.load(Ordering::SeqCst) {
                bodies.extend((0..5).map(|i| format!("{{not json {salt}-{i}")));
            }
            env.send(&bodies).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_alert_fires_for_its_fault_in_a_real_prometheus_and_none_in_a_healthy_run() {
    let clock = Instant::now();
    let rules = std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yaml")).expect("rules");
    let every_alert = alert_names(&rules);
    // Every alert is driven here.
    let driven: BTreeSet<String> = Fault::ALL
        .iter()
        .flat_map(|f| f.alerts().iter().map(|(a, _)| (*a).to_owned()))
        .chain(ALL_GONE.iter().map(|a| (*a).to_owned()))
        .collect();
    assert_eq!(
        driven, every_alert,
        "alerts without a fault here, or faults of no alert"
    );

    // --- The collectors, each on a queue and stream of its own, through a proxy of its own.
    let mut collectors = Vec::new();
    for (n, fault) in Fault::ALL.into_iter().enumerate() {
        let env = Arc::new(TestEnv::new(&format!("alerts-{}", fault.name())).await);
        let proxy = FaultProxy::start(&env.endpoint, 900 + n as u64).await;
        let dead_letter_url = if fault == Fault::InvalidAndDeadLetterDenied {
            let url = env
                .sqs
                .create_queue()
                .queue_name(format!("{}-dlq", env.stream_name))
                .send()
                .await
                .expect("CreateQueue (dead-letter)")
                .queue_url
                .expect("queue URL");
            Some(url)
        } else {
            None
        };
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        collectors.push(Collector {
            fault,
            env,
            proxy,
            addr,
            child: None,
            dead_letter_url,
        });
    }
    // The hanging one starts with the faults: before, its target is down and was never a
    // collector (no alert for it).
    for c in collectors.iter_mut().filter(|c| c.fault != Fault::SinkHangs) {
        c.start();
    }
    for c in collectors.iter().filter(|c| c.fault != Fault::SinkHangs) {
        wait_until(
            &format!("{} ready", c.fault.name()),
            Duration::from_secs(60),
            || async { http_get(c.addr, "/readyz").await.0 == 200 },
        )
        .await;
    }

    // --- The shard supervisor, on the first stream, with CloudWatch points to read.
    let first = collectors[0].env.clone();
    put_stream_metrics(&first, &first.stream_name).await;
    let supervisor_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let supervisor_addr_text = supervisor_addr.to_string();
    let mut supervisor = first.spawn_binary_with(
        &["supervise"],
        &[
            ("HTTP_LISTEN_ADDRESS", supervisor_addr_text.as_str()),
            ("SHARD_SUPERVISOR_INTERVAL_SEC", "1"),
            ("SHARD_SUPERVISOR_WINDOWS", "3"),
            ("SHARD_SUPERVISOR_METRICS_DELAY_SEC", "0"),
        ],
        "alerts-live-supervisor",
    );

    // --- What only CloudWatch knows, served by the test.
    let cloudwatch = Arc::new(CloudWatchExposition {
        visible: AtomicU64::new(0),
        age: AtomicU64::new(5),
    });
    let exposition = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exposition_addr = exposition.local_addr().unwrap();
    let exposition_task = tokio::spawn(serve_exposition(exposition, cloudwatch.clone()));

    // --- Prometheus, with the test's copy of the rules.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("alerts-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("alerts.yaml"), test_copy_of_the_rules(&rules)).unwrap();
    // Any job name: no rule or panel selects on it. A namespace label, as a Kubernetes scrape
    // adds, for the dashboard's variable.
    let mut scrape = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yaml\nscrape_configs:\n  - job_name: kubernetes-pods\n    static_configs:\n",
    );
    for c in &collectors {
        scrape.push_str(&format!(
            "      - targets: ['{}']\n        labels: {{namespace: telemetry, pod: {}}}\n",
            c.addr,
            c.fault.name()
        ));
    }
    scrape.push_str(&format!(
        "  - job_name: shard-supervisor\n    static_configs:\n      - targets: ['{supervisor_addr}']\n        labels: {{namespace: telemetry}}\n  - job_name: cloudwatch\n    static_configs:\n      - targets: ['{exposition_addr}']\n"
    ));
    std::fs::write(dir.join("prometheus.yml"), scrape).unwrap();
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prometheus_log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let mut prometheus = tokio::process::Command::new(prometheus_binary())
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .arg("--log.level=warn")
        .stdin(std::process::Stdio::null())
        .stdout(prometheus_log.try_clone().unwrap())
        .stderr(prometheus_log)
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    wait_until("Prometheus ready", Duration::from_secs(60), || async {
        http_get(prometheus_addr, "/-/ready").await.0 == 200
    })
    .await;
    let rule_count = api(prometheus_addr, "/api/v1/rules").await["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        rule_count,
        every_alert.len(),
        "Prometheus loaded every rule of the copy"
    );

    // Traffic for all, then every running collector scraped up before the healthy run begins.
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let invalid = Arc::new(AtomicBool::new(false));
    let feeder = tokio::spawn(feed(
        collectors.iter().map(|c| (c.fault, c.env.clone())).collect(),
        invalid.clone(),
        stop_feeding.clone(),
    ));
    let running = (collectors.len() - 1) as f64;
    wait_until("every collector scraped", Duration::from_secs(60), || async {
        query(prometheus_addr, "count(telemetry_collector_ready == 1)")
            .await
            .first()
            .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
            == Some(running)
    })
    .await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let healthy = Arc::new(AtomicBool::new(false));
    // Two evaluations, so that what was pending before the first scrape (no collector yet) is
    // gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watcher = tokio::spawn(watch_alerts(prometheus_addr, seen.clone(), healthy.clone(), clock));

    // --- 1. Healthy.
    healthy.store(true, Ordering::SeqCst);
    eprintln!("alerts-live: healthy run, {} s", HEALTHY.as_secs());
    tokio::time::sleep(HEALTHY).await;
    healthy.store(false, Ordering::SeqCst);
    let during_healthy = seen.lock().unwrap().during_healthy.clone();
    assert!(
        during_healthy.is_empty(),
        "alerts pending or firing in the healthy run: {during_healthy:#?}"
    );

    // --- 2. Faults, all at once.
    let faults_began = clock.elapsed().as_secs_f64();
    eprintln!("alerts-live: faults");
    let mut flood = Vec::new();
    for c in &mut collectors {
        let faults = &c.proxy.faults;
        match c.fault {
            Fault::StreamMissing => faults.set_put_records_error(Some("ResourceNotFoundException")),
            Fault::KinesisOutage => faults.set_kinesis_down(true),
            Fault::Throttling => faults.set_put_records_failure_rate(0.6),
            Fault::RecordRefused => faults.set_put_records_refusal_of_first_record(Some("ValidationException")),
            Fault::InvalidAndDeadLetterDenied => {
                faults.set_access_denied(Some("AmazonSQS.SendMessage"));
                invalid.store(true, Ordering::SeqCst);
            }
            Fault::DeletesDenied => faults.set_access_denied(Some("AmazonSQS.DeleteMessageBatch")),
            Fault::SinkHangs => c.start(),
            Fault::ConnectionFlood => {
                for _ in 0..300 {
                    if let Ok(stream) = tokio::net::TcpStream::connect(c.addr).await {
                        flood.push(stream);
                    }
                }
            }
            Fault::SlowCalls => faults.set_latency(Duration::from_millis(1500)),
            Fault::Killed => c.kill(),
        }
    }
    let outage = collectors
        .iter()
        .find(|c| c.fault == Fault::KinesisOutage)
        .map(|c| c.proxy.faults.clone())
        .unwrap();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        outage.set_kinesis_down(false);
    });

    let expected: Vec<(Fault, &str, Option<String>)> = collectors
        .iter()
        .flat_map(|c| {
            c.fault
                .alerts()
                .iter()
                .map(|(alert, on_instance)| (c.fault, *alert, on_instance.then(|| c.addr.to_string())))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(150);
    while Instant::now() < deadline
        && expected
            .iter()
            .any(|(_, alert, instance)| seen_state(&seen, alert, instance.as_deref()).1.is_none())
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    heal.await.unwrap();
    drop(flood);

    // --- 3. The dashboard's queries, while the collectors still run.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join("deploy/grafana/collector.json")).unwrap())
            .unwrap();
    let mut empty_panels = Vec::new();
    eprintln!("alerts-live: dashboard panels (series per query)");
    for panel in dashboard["panels"].as_array().unwrap() {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        let mut counts = Vec::new();
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            assert!(
                !promql.contains('$'),
                "a template variable the test does not know: {expr}"
            );
            counts.push(query(prometheus_addr, &promql).await.len());
        }
        let title = panel["title"].as_str().unwrap_or_default();
        eprintln!("  {title:<60} {counts:?}");
        if counts.iter().sum::<usize>() == 0 {
            empty_panels.push(title.to_owned());
        }
    }

    // --- 4. Every collector gone while the queue grows and ages.
    eprintln!("alerts-live: every collector gone");
    stop_feeding.store(true, Ordering::SeqCst);
    feeder.await.unwrap();
    for c in &mut collectors {
        c.kill();
    }
    supervisor.start_kill().unwrap();
    cloudwatch.age.store(1_000, Ordering::SeqCst);
    let all_gone_began = clock.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && ALL_GONE.iter().any(|alert| seen_state(&seen, alert, None).1.is_none()) {
        cloudwatch.visible.fetch_add(10, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    watcher.abort();
    exposition_task.abort();
    let _ = prometheus.start_kill();

    // --- The table, then the verdict.
    let mut missing = Vec::new();
    println!(
        "\n{:<38} {:<20} {:>9} {:>9}  fault",
        "alert", "collector", "pending", "firing"
    );
    let mut rows: Vec<(String, String, Option<String>, String, f64)> = expected
        .iter()
        .map(|(fault, alert, instance)| {
            (
                (*alert).to_owned(),
                fault.name().to_owned(),
                instance.clone(),
                fault.describe().to_owned(),
                faults_began,
            )
        })
        .collect();
    rows.extend(ALL_GONE.iter().map(|alert| {
        (
            (*alert).to_owned(),
            "(all)".to_owned(),
            None,
            "every collector killed; queue depth rising 10/s, oldest message 1000 s (test's exposition)".to_owned(),
            all_gone_began,
        )
    }));
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for (alert, collector, instance, fault, began) in &rows {
        let (pending, firing) = seen_state(&seen, alert, instance.as_deref());
        let at = |t: Option<f64>| t.map_or("never".to_owned(), |t| format!("+{:.0}s", t - began));
        println!(
            "{alert:<38} {collector:<20} {:>9} {:>9}  {fault}",
            at(pending),
            at(firing)
        );
        if firing.is_none() {
            missing.push(format!("{alert} ({collector}: {fault})"));
        }
    }
    println!("(times from the start of the fault; `for:` {FOR}, windows {WINDOW}, offset 1d as {OFFSET})\n");
    assert!(
        missing.is_empty(),
        "alerts that did not fire for their fault: {missing:#?}"
    );
    assert!(
        empty_panels.is_empty(),
        "dashboard panels with no series: {empty_panels:?}"
    );
}
