//! The collector's test harness, over the test kit's emulator environment: the collector
//! started in-process or as the real binary against a test's own queue and stream, and its
//! metrics read as an operator would scrape them.

#![allow(dead_code)]

pub mod checks;
pub mod submissions;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use telemetry_collector::config::Config;
use telemetry_collector::metrics::Metrics;
pub use telemetry_testkit::*;
use tokio_util::sync::CancellationToken;

/// Short waits and intervals so that tests finish quickly.
const QUICK_SETTINGS: &[(&str, &str)] = &[
    ("QUEUE_WAIT_TIME_SEC", "1"),
    // Far above what the emulator takes even on a loaded machine: a call given up and sent again
    // may legitimately land twice, and the tests that count events exactly once must not see
    // that. Tests of timeouts set their own.
    ("AWS_CALL_TIMEOUT_SEC", "60"),
    ("QUEUE_VISIBILITY_TIMEOUT_SEC", "30"),
    ("DATA_STREAM_FLUSH_INTERVAL_SEC", "0.2"),
    ("QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC", "0.2"),
    ("RETRY_INITIAL_BACKOFF_MS", "20"),
    ("RETRY_MAX_BACKOFF_MS", "500"),
    ("SHUTDOWN_DRAIN_TIMEOUT_SEC", "5"),
    ("STATS_LOG_INTERVAL_SEC", "5"),
    // Any free port, so that tests can run side by side.
    ("HTTP_LISTEN_ADDRESS", "127.0.0.1:0"),
];

/// The collector started against a [`TestEnv`]'s queue and stream.
pub trait CollectorHarness {
    /// This test's queue and stream, settings tuned for quick tests, then `overrides`: the
    /// same variables whether the collector runs in-process or as the binary.
    fn collector_vars(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)>;
    /// The collector configuration of [`CollectorHarness::collector_vars`].
    fn config(&self, overrides: &[(&str, &str)]) -> Config;
    /// Starts the collector in-process against `endpoint` (the emulator, or a proxy in front
    /// of it).
    fn start_collector(&self, endpoint: &str, overrides: &[(&str, &str)]) -> impl Future<Output = RunningCollector>;
    /// Environment for the real binary: the SDK's standard variables plus the collector's.
    /// With a Kinesis endpoint of its own, the per-service endpoint variables too; they win over
    /// `AWS_ENDPOINT_URL`, so a test that puts a proxy in front must override them as well.
    fn binary_env(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)>;
    /// Starts the real `telemetry-collector` binary (or `COLLECTOR_BIN`); its logs go to a file
    /// under the target dir.
    fn spawn_binary(&self, overrides: &[(&str, &str)], log_name: &str) -> tokio::process::Child {
        self.spawn_binary_with(&[], overrides, log_name)
    }
    /// The same, with command-line arguments (`supervise`: the shard supervisor).
    fn spawn_binary_with(&self, args: &[&str], overrides: &[(&str, &str)], log_name: &str) -> tokio::process::Child;
}

impl CollectorHarness for TestEnv {
    fn collector_vars(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        [
            ("SUBMISSIONS_QUEUE_URL", self.queue_url.as_str()),
            ("EVENTS_DATA_STREAM_NAME", self.stream_name.as_str()),
        ]
        .iter()
        .chain(QUICK_SETTINGS)
        .chain(overrides)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn config(&self, overrides: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = self
            .collector_vars(overrides)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Config::from_vars(&vars).expect("test configuration is valid")
    }

    async fn start_collector(&self, endpoint: &str, overrides: &[(&str, &str)]) -> RunningCollector {
        start_collector_with(self.config(overrides), endpoint).await
    }

    fn binary_env(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = vec![
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("RUST_LOG", "info"),
        ];
        if self.kinesis_endpoint != self.endpoint {
            vars.push(("AWS_ENDPOINT_URL_SQS", self.endpoint.as_str()));
            vars.push(("AWS_ENDPOINT_URL_KINESIS", self.kinesis_endpoint.as_str()));
        }
        let mut env: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        env.extend(self.collector_vars(overrides));
        env
    }

    fn spawn_binary_with(&self, args: &[&str], overrides: &[(&str, &str)], log_name: &str) -> tokio::process::Child {
        let log_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let log = std::fs::File::create(log_dir.join(format!("{log_name}.log"))).expect("log file");
        // `COLLECTOR_BIN` runs another build against the same test (e.g. an older commit's, to
        // show that a test fails without the change it covers).
        let binary =
            std::env::var_os("COLLECTOR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_telemetry-collector").into());
        tokio::process::Command::new(binary)
            .args(args)
            .env_clear()
            .envs(self.binary_env(overrides))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start telemetry-collector")
    }
}

/// Starts the collector in-process with `config` against `endpoint`, its HTTP endpoints on a
/// free loopback port.
pub async fn start_collector_with(config: Config, endpoint: &str) -> RunningCollector {
    let sdk = sdk_config(endpoint).await;
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
    let http_addr = http.local_addr().expect("HTTP address");
    let task = tokio::spawn({
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        async move { telemetry_collector::run(config, &sdk, metrics, shutdown, http).await }
    });
    RunningCollector {
        metrics,
        shutdown,
        http_addr,
        task,
    }
}

pub struct RunningCollector {
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub http_addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<Result<(), telemetry_collector::RunError>>,
}

impl RunningCollector {
    /// Asks the collector to stop and waits for it to finish draining.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("collector stops within its drain timeout")
            .expect("collector task did not panic")
            .expect("every pipeline stage ran until shutdown");
    }
}

/// Counter value of a labelled family, read through the Prometheus text encoding so that tests
/// see exactly what an operator would scrape.
pub fn metric(metrics: &Metrics, name_and_labels: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("encode metrics");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}
