//! The shard supervisor: `telemetry-collector supervise`, one replica beside any number of
//! collectors, keeps the stream's shard count fitting the whole fleet's traffic.
//!
//! Every `SHARD_SUPERVISOR_INTERVAL_SEC` it reads the stream's state ([`stream`]) and the last
//! `SHARD_SUPERVISOR_WINDOWS` minutes of its CloudWatch metrics ([`cloudwatch`]), which count
//! what every replica wrote, and asks the pure [`policy`] whether the stream has stayed above or
//! below the target band. With `SHARD_AUTOSCALE_ENABLED` it then calls UpdateShardCount, safe
//! by construction:
//!
//! - never on an on-demand stream, a stream not ACTIVE, or a window with a missing point;
//! - at most double or half the open shards per call, within SHARD_COUNT_MIN/MAX, after the
//!   cooldown, and at most 10 calls (its own, counted) in any 24 hours, as Kinesis allows;
//! - only if the stream still has the open shard count the decision was made on (read again
//!   just before the call): a second supervisor run by mistake sees a changed count or
//!   ResourceInUseException, logs it and counts it, and never retries.
//!
//! It serves `/healthz`, `/readyz` and `/metrics` (its own small set) like the collector, and
//! logs each decision once with its figures.

pub mod check;
pub mod cloudwatch;
pub mod policy;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http_server::{self, HttpMetrics, Readiness};
use crate::liveness::Liveness;
use crate::metrics::kit::{Counters, Labels, Ratio, add, outcome, start_at_zero};
use crate::metrics::process::ProcessCollector;
use crate::pipeline::breaker::{Breaker, BreakerMetrics};
pub use policy::{Decider, Decision, Direction, Held, Observation, Policy, Recommendation, StreamMode, StreamState};
use stream::ResizeOutcome;

/// A failed AWS call: its error code and message when the service answered one (to tell a
/// refusal of the caller from anything else), and the whole error as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError {
    pub code: Option<String>,
    pub message: Option<String>,
    pub detail: String,
}

impl CallError {
    pub(crate) fn from_sdk<E, R>(error: aws_sdk_kinesis::error::SdkError<E, R>) -> CallError
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
        CallError {
            code: error.code().map(str::to_owned),
            message: error.message().map(str::to_owned),
            detail: aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string(),
        }
    }

    /// The caller was refused (IAM): AccessDenied and the like.
    pub(crate) fn is_refusal(&self) -> bool {
        crate::check::is_refusal(
            self.code.as_deref().unwrap_or_default(),
            self.message.as_deref().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The shard supervisor's settings: its section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSettings {
    /// One read and decision per interval (`SHARD_SUPERVISOR_INTERVAL_SEC`).
    pub interval: Duration,
    /// How far behind now the window ends (`SHARD_SUPERVISOR_METRICS_DELAY_SEC`), so that
    /// CloudWatch has its points.
    pub metrics_delay: Duration,
    pub policy: Policy,
}

/// What the supervisor needs of the configuration.
#[derive(Debug, Clone)]
pub struct Supervise {
    pub stream_name: String,
    pub settings: SupervisorSettings,
    /// Longest one call may take (`AWS_CALL_TIMEOUT_SEC`).
    pub call_timeout: Duration,
}

/// The clients of the supervisor: Kinesis and CloudWatch, every call with the attempt timeout
/// and without the SDK's own retries (the next interval is the retry).
pub(crate) fn clients(
    sdk_config: &SdkConfig,
    call_timeout: Duration,
) -> (aws_sdk_kinesis::Client, aws_sdk_cloudwatch::Client) {
    let kinesis = crate::aws::Clients::new(sdk_config, call_timeout).kinesis;
    let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(sdk_config)
            .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
            .timeout_config(crate::aws::timeouts(call_timeout))
            .build(),
    );
    (kinesis, cloudwatch)
}

/// Runs the supervisor until `shutdown`; the HTTP endpoints are served on `http` throughout.
pub async fn run(config: Supervise, sdk_config: &SdkConfig, shutdown: CancellationToken, http: TcpListener) {
    // The process's standard figures unprefixed, as the collector's.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    let metrics = SupervisorMetrics::register(registry.sub_registry_with_prefix("telemetry_shard_supervisor"));
    // The collector's HTTP server, with nothing that can stall or trip: the supervisor is live
    // while it runs, and ready from the start.
    let mut unused = Registry::default();
    let readiness = Arc::new(Readiness::new(
        Arc::new(Breaker::new(BreakerMetrics::register(&mut unused))),
        Arc::new(Liveness::new(Duration::from_secs(3600))),
    ));
    readiness.queue_resolved.store(true, Ordering::Release);
    readiness.stream_resolved.store(true, Ordering::Release);
    let server = tokio::spawn(http_server::serve(
        http,
        readiness,
        metrics.http.clone(),
        Arc::new(registry),
    ));

    let (kinesis, cloudwatch) = clients(sdk_config, config.call_timeout);
    let settings = &config.settings;
    tracing::info!(
        stream = config.stream_name,
        interval_s = settings.interval.as_secs(),
        window_minutes = settings.policy.windows,
        autoscale = settings.policy.autoscale,
        "shard supervisor started"
    );
    let mut supervisor = Supervisor {
        stream: config.stream_name.clone(),
        settings: settings.clone(),
        kinesis,
        cloudwatch,
        metrics,
        decider: Decider::new(settings.policy),
        cloudwatch_failing: false,
        describe_failing: false,
    };
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        // Any call under way is dropped at shutdown: nothing is left half done that matters.
        tokio::select! {
            _ = supervisor.interval() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    server.abort();
    tracing::info!("shard supervisor stopped");
}

struct Supervisor {
    stream: String,
    settings: SupervisorSettings,
    kinesis: aws_sdk_kinesis::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    metrics: SupervisorMetrics,
    decider: Decider,
    cloudwatch_failing: bool,
    describe_failing: bool,
}

impl Supervisor {
    /// One read, one decision, and the call it asks for.
    async fn interval(&mut self) {
        let now = Instant::now();
        let budget = self.decider.budget_remaining(now);
        self.metrics.resize_budget_remaining.set(i64::from(budget));
        let described = match stream::describe(&self.kinesis, &self.stream).await {
            Ok(described) => {
                if std::mem::take(&mut self.describe_failing) {
                    tracing::info!(stream = self.stream, "DescribeStreamSummary answers again");
                }
                described
            }
            Err(error) => {
                count_decision(&self.metrics.decisions, "stream_unknown");
                if !std::mem::replace(&mut self.describe_failing, true) {
                    tracing::warn!(
                        stream = self.stream,
                        error = %error,
                        "DescribeStreamSummary failed; nothing decided until it answers (tried every interval)"
                    );
                }
                return;
            }
        };
        let state = described.state;
        self.metrics.stream_open_shards.set(i64::from(state.open_shards));
        let observation = self.observe(&described).await;
        if let Observation::Complete(w) = observation {
            for (stat, value) in [
                ("lowest_mean", w.lowest_mean),
                ("highest_mean", w.highest_mean),
                ("hottest", w.hottest),
            ] {
                self.metrics
                    .stream_utilisation
                    .get_or_create(&[("stat", stat)])
                    .set(value);
            }
        }
        let decision = self.decider.decide(observation, state, now);
        count_decision(&self.metrics.decisions, decision.label());
        self.log(&decision, observation, state, budget);
        if let Decision::Resize(r) = decision {
            self.resize(r).await;
        }
    }

    /// The window's figures from CloudWatch, with the open shards' own when published.
    async fn observe(&mut self, described: &stream::Described) -> Observation {
        let policy = &self.settings.policy;
        let now_secs = chrono::Utc::now().timestamp();
        let window = cloudwatch::window(now_secs, self.settings.metrics_delay.as_secs() as i64, policy.windows);
        let shards = if described.shard_metrics {
            // Without the shard ids, the stream's own figures still decide.
            stream::open_shards(&self.kinesis, &self.stream)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        match cloudwatch::read(&self.cloudwatch, &self.stream, window, &shards).await {
            Ok(minutes) => {
                outcome(&self.metrics.cloudwatch_calls, "ok", 1);
                if std::mem::take(&mut self.cloudwatch_failing) {
                    tracing::info!(stream = self.stream, "CloudWatch GetMetricData answers again");
                }
                policy::observe(&minutes, described.state.open_shards)
            }
            Err(error) => {
                outcome(&self.metrics.cloudwatch_calls, "failed", 1);
                if !std::mem::replace(&mut self.cloudwatch_failing, true) {
                    tracing::warn!(
                        stream = self.stream,
                        error = %error,
                        "CloudWatch GetMetricData failed; nothing decided until it answers (tried every interval; check cloudwatch:GetMetricData and AWS_ENDPOINT_URL_CLOUDWATCH)"
                    );
                }
                Observation::Unavailable
            }
        }
    }

    /// One line per decision, with the figures it was made on; a held recommendation once per
    /// episode at WARN as well.
    fn log(&self, decision: &Decision, observation: Observation, state: StreamState, budget: u32) {
        let (lowest, highest, hottest, throttled, minutes, missing) = match observation {
            Observation::Complete(w) => (
                Some(w.lowest_mean * 100.0),
                Some(w.highest_mean * 100.0),
                Some(w.hottest * 100.0),
                Some(w.throttled),
                w.minutes,
                0,
            ),
            Observation::Incomplete { missing, minutes } => (None, None, None, None, minutes, missing),
            Observation::Unavailable => (
                None,
                None,
                None,
                None,
                self.settings.policy.windows,
                self.settings.policy.windows,
            ),
        };
        tracing::info!(
            stream = self.stream,
            decision = decision.label(),
            open_shards = state.open_shards,
            window_minutes = minutes,
            missing_minutes = missing,
            lowest_mean_utilisation_pct = lowest,
            highest_mean_utilisation_pct = highest,
            hottest_utilisation_pct = hottest,
            throttled_records = throttled,
            resize_budget_remaining = budget,
            "shard supervisor decision"
        );
        if let Decision::Recommend {
            recommendation: r,
            held,
            first: true,
        } = decision
        {
            tracing::warn!(
                stream = self.stream,
                direction = r.direction.as_str(),
                current_shards = r.current,
                recommended_shards = r.target,
                lowest_mean_utilisation_pct = r.utilisation.lowest_mean * 100.0,
                highest_mean_utilisation_pct = r.utilisation.highest_mean * 100.0,
                not_applied_because = held.reason(),
                "shard count recommendation"
            );
        }
    }

    /// Reads the stream again and calls UpdateShardCount only if it is still the stream the
    /// decision was made on. Never retried: the next interval decides afresh.
    async fn resize(&mut self, r: Recommendation) {
        let stream = &self.stream;
        let now = match stream::describe(&self.kinesis, stream).await {
            Ok(d) => d.state,
            Err(error) => {
                outcome(&self.metrics.resize_calls, "stream_changed", 1);
                tracing::warn!(
                    stream,
                    error = %error,
                    "DescribeStreamSummary failed before resizing; not resizing"
                );
                return;
            }
        };
        let expected = StreamState {
            mode: StreamMode::Provisioned,
            status: policy::StreamStatus::Active,
            open_shards: r.current,
        };
        if now != expected {
            outcome(&self.metrics.resize_calls, "stream_changed", 1);
            tracing::warn!(
                stream,
                decided_on_shards = r.current,
                open_shards = now.open_shards,
                status = ?now.status,
                "the stream changed since the decision (another supervisor?); not resizing"
            );
            return;
        }
        let result = stream::update_shard_count(&self.kinesis, stream, r.target).await;
        self.decider.resize_called(Instant::now());
        outcome(&self.metrics.resize_calls, result.label(), 1);
        let figures = (r.utilisation.lowest_mean * 100.0, r.utilisation.highest_mean * 100.0);
        match result {
            ResizeOutcome::Accepted => tracing::info!(
                stream,
                direction = r.direction.as_str(),
                current_shards = r.current,
                target_shards = r.target,
                lowest_mean_utilisation_pct = figures.0,
                highest_mean_utilisation_pct = figures.1,
                "resizing the stream: UpdateShardCount accepted"
            ),
            ResizeOutcome::InUse(error) => tracing::warn!(
                stream,
                current_shards = r.current,
                target_shards = r.target,
                error,
                "UpdateShardCount refused: the stream is being updated (another supervisor?); not retried"
            ),
            ResizeOutcome::Failed(error) => tracing::warn!(
                stream,
                current_shards = r.current,
                target_shards = r.target,
                error,
                "UpdateShardCount failed; not retried (decided afresh after the cooldown; check kinesis:UpdateShardCount and the account's shard limits)"
            ),
        }
    }
}

fn count_decision(decisions: &Counters, label: &'static str) {
    decisions.get_or_create(&[("decision", label)]).inc();
}

/// The supervisor's metrics (prefix `shard_supervisor_`).
#[derive(Clone)]
pub struct SupervisorMetrics {
    pub http: HttpMetrics,
    pub stream_utilisation: Family<Labels, Ratio>,
    pub stream_open_shards: Gauge,
    pub decisions: Counters,
    pub resize_calls: Counters,
    pub cloudwatch_calls: Counters,
    pub resize_budget_remaining: Gauge,
}

impl SupervisorMetrics {
    /// Registers the metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = SupervisorMetrics {
            http: HttpMetrics::register(registry),
            stream_utilisation: add(
                registry,
                "stream_utilisation_ratio",
                "The stream's write utilisation over the last window read from CloudWatch: `lowest_mean` and `highest_mean` minute over the open shards, `hottest` shard (shard-level metrics when enabled, else the highest mean)",
                Family::default(),
            ),
            stream_open_shards: add(
                registry,
                "stream_open_shards",
                "Open shards of the stream (DescribeStreamSummary)",
                Gauge::default(),
            ),
            decisions: add(
                registry,
                "decisions",
                "Decisions, one per interval, by decision",
                Family::default(),
            ),
            resize_calls: add(
                registry,
                "resize_calls",
                "UpdateShardCount calls, by outcome (ok, in_use, failed; stream_changed: not made because the stream changed since the decision)",
                Family::default(),
            ),
            cloudwatch_calls: add(
                registry,
                "cloudwatch_calls",
                "GetMetricData calls, by outcome (ok, failed)",
                Family::default(),
            ),
            resize_budget_remaining: add(
                registry,
                "resize_budget_remaining",
                "UpdateShardCount calls left in the rolling 24 hours (Kinesis allows 10 per stream; the supervisor counts its own)",
                Gauge::default(),
            ),
        };
        start_at_zero(&metrics.decisions, "decision", Decision::LABELS);
        start_at_zero(
            &metrics.resize_calls,
            "outcome",
            &["ok", "in_use", "failed", "stream_changed"],
        );
        start_at_zero(&metrics.cloudwatch_calls, "outcome", &["ok", "failed"]);
        metrics
            .resize_budget_remaining
            .set(i64::from(policy::DAILY_RESIZE_CALLS));
        metrics
    }
}
