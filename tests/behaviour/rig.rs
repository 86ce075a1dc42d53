//! A collector on the fake: its queue, stream and dead-letter queue, its metrics, and what the
//! tests read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use telemetry_collector::config::Config;
use telemetry_collector::metrics::Metrics;
use telemetry_fleet::generate;
pub use telemetry_testkit::fake_aws::{AwsError, FakeAws, Op};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const STREAM: &str = "events";

/// How long (on the paused clock) a test waits for what it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(3600);

pub struct Rig {
    pub fake: FakeAws,
    pub queue: String,
    pub dead_letter: String,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), telemetry_collector::RunError>>,
}

/// A submission sent: its id and its events' count.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    pub submission_id: String,
    pub events: usize,
}

impl Rig {
    /// A queue, a dead-letter queue and a two-shard stream, and a collector on them with the
    /// default settings and `overrides`.
    pub async fn start(overrides: &[(&str, &str)]) -> Rig {
        Rig::start_with(overrides, |_, _| {}).await
    }

    /// As [`Rig::start`], with `setup` done to the fake and the queue before the collector
    /// starts.
    pub async fn start_with(overrides: &[(&str, &str)], setup: impl FnOnce(&FakeAws, &str)) -> Rig {
        let fake = FakeAws::new();
        let queue = fake.create_queue("submissions");
        let dead_letter = fake.create_queue("submissions-dead-letter");
        fake.create_stream(STREAM, 2);
        setup(&fake, &queue);
        let mut vars: HashMap<String, String> = [
            ("SUBMISSIONS_QUEUE_URL", queue.as_str()),
            ("EVENTS_DATA_STREAM_NAME", STREAM),
            ("HTTP_LISTEN_ADDRESS", "127.0.0.1:0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
        for (k, v) in overrides {
            let value = v.replace("{dead_letter}", &dead_letter);
            vars.insert(k.to_ascii_lowercase(), value);
        }
        let config = Config::from_vars(&vars).expect("the test's configuration is valid");
        let sdk = fake.sdk_config().await;
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let task = tokio::spawn({
            let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
            async move { telemetry_collector::run(config, &sdk, metrics, shutdown, http).await }
        });
        Rig {
            fake,
            queue,
            dead_letter,
            metrics,
            shutdown,
            task,
        }
    }

    /// Sends a valid submission of `events` events (deterministic in `n`).
    pub fn send(&self, n: u64, events: usize) -> Sent {
        let (body, expected) = generate::valid(n, events, 0, false);
        let message_id = self.fake.send(&self.queue, &body);
        Sent {
            message_id,
            submission_id: expected.submission_id,
            events,
        }
    }

    /// Waits on the paused clock until `condition` holds.
    pub async fn wait_until(&self, what: &str, mut condition: impl FnMut(&Rig) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "gave up waiting (on the paused clock) until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the fake has seen a call of `op`.
    pub async fn wait_for_call(&self, op: Op, what: &str) {
        self.wait_until(what, |rig| !rig.fake.calls(op).is_empty()).await;
    }

    /// Waits until the queue holds nothing: every message deleted.
    pub async fn wait_until_queue_empty(&self) {
        self.wait_until("every message is deleted", |rig| {
            let counts = rig.fake.queue_counts(&rig.queue);
            counts.visible + counts.in_flight == 0
        })
        .await;
    }

    /// A metric's value summed over every series whose name and labels start with `prefix`,
    /// read through the Prometheus text encoding, as an operator would scrape it.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                series.starts_with(prefix).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// The event indexes written to the stream, by submission id, in the order written.
    pub fn stream_events(&self) -> BTreeMap<String, Vec<u64>> {
        let mut by_submission: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for record in self.fake.records(STREAM) {
            let event: Value = record.json();
            let id = event["submission_id"].as_str().unwrap_or_default().to_owned();
            by_submission
                .entry(id)
                .or_default()
                .push(event["event_index"].as_u64().unwrap_or(u64::MAX));
        }
        by_submission
    }

    /// Asks the collector to stop and waits for its drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the collector did not panic")
            .expect("every stage ran until shutdown");
    }
}

/// Whether `written` holds `0..events` as an in-order subsequence (the contract's ordering
/// within a submission: resends after a partial failure may repeat events).
pub fn in_order_subsequence(written: &[u64], events: usize) -> bool {
    let mut next = 0u64;
    for &index in written {
        if index == next {
            next += 1;
        }
    }
    next == events as u64
}

/// Every event of `sent` was written exactly once and in order.
pub fn exactly_once_in_order(rig: &Rig, sent: &[Sent]) {
    let written = rig.stream_events();
    for s in sent {
        let expected: Vec<u64> = (0..s.events as u64).collect();
        assert_eq!(
            written.get(&s.submission_id).cloned().unwrap_or_default(),
            expected,
            "events of {} on the stream",
            s.submission_id
        );
    }
}
