//! telemetry-collector: moves sensor telemetry from an SQS queue to a Kinesis stream.
//!
//! The data's path, one module per stage, channels between them:
//!
//! ```text
//! config ─▶ sqs_source ─▶ submission (decode, validate) ─▶ event (explode) ─▶ kinesis_sink lanes
//!              │   │                                                              │
//!              │   └─ invalid ─▶ dead_letter (opt-in)              confirmed records ▼
//!              │ invalid / no events ──────────────▶ deleter ◀──────── ledger (per-message counter)
//!              └─ every message in flight ─▶ visibility (extend; give back at shutdown)
//! ```
//!
//! A message is deleted only when its ledger counter reaches zero, i.e. every one of its events
//! has a successful PutRecords result; everything else leaves it in the queue to come back.
//! Around the pipeline: `breaker` pauses receiving while Kinesis fails, `http_server` answers
//! `/healthz`, `/readyz` and `/metrics`, `liveness` tells `/healthz` whether every stage that
//! has work makes progress, `aws` builds the clients (every call with a timeout), `retry` paces
//! every retry, `shard_supervisor` watches the shards' utilisation (and, opt-in, resizes the
//! stream).
//!
//! [`fleet`] is not part of that path: it is the sensor-fleet simulator's side (generated
//! submissions, the manifest of what was sent, and the check of a stream against it), used by
//! the `sensor-fleet` and `stream-reader` binaries and by the tests.

pub mod aws;
pub mod breaker;
pub mod check;
pub mod config;
pub mod dead_letter;
pub mod deleter;
pub mod drop_log;
pub mod event;
pub mod fleet;
pub mod http_server;
pub mod kinesis_sink;
pub mod ledger;
pub mod liveness;
pub mod metrics;
pub mod retry;
pub mod shard_supervisor;
pub mod sqs_source;
pub mod submission;
pub mod visibility;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::aws::Clients;
use crate::breaker::Breaker;
use crate::config::{Config, QueueRef};
use crate::deleter::DeleteQueue;
use crate::http_server::Readiness;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::retry::{RetryEpisode, RetryPolicy};

/// Why the collector stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{stage} stopped while the collector was running")]
    StageExited { stage: String },
    #[error("{stage} panicked: {message}")]
    StagePanicked { stage: String, message: String },
}

/// Runs the collector until `shutdown` is cancelled, then drains what is in flight for at most
/// the configured drain timeout. The HTTP endpoints are served on `http` throughout.
///
/// Every stage runs until shutdown: one that ends or panics before is an error, after which the
/// others drain and the caller exits non-zero, so that the orchestrator replaces the replica
/// instead of leaving it running with a stage missing.
pub async fn run(
    config: Config,
    sdk_config: &aws_config::SdkConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    http: TcpListener,
) -> Result<(), RunError> {
    let clients = Clients::new(sdk_config, config.call_timeout);
    let (sqs, kinesis) = (clients.sqs.clone(), clients.kinesis.clone());
    let retry = RetryPolicy {
        initial: config.retry_initial_backoff,
        max: config.retry_max_backoff,
    };
    let breaker = Arc::new(Breaker::new(metrics.clone()));
    let liveness = Arc::new(Liveness::new(config.stall_timeout));
    let readiness = Arc::new(Readiness::new(breaker.clone(), liveness.clone()));
    let mut services = Stages::default();
    services.spawn(
        "HTTP server",
        http_server::serve(http, readiness.clone(), metrics.clone()),
    );

    // Not ready until both exist; until then keep asking, with backoff, without restarting.
    let Some(queue_url) = resolve_queue_url(&sqs, &config.queue, retry, &shutdown).await else {
        return Ok(());
    };
    readiness.queue_resolved.store(true, Ordering::Release);
    let stream_found = {
        let stream = config.stream_name.clone();
        retry_until(format!("DescribeStreamSummary {stream}"), retry, &shutdown, || {
            let (kinesis, stream, metrics) = (kinesis.clone(), stream.clone(), metrics.clone());
            async move {
                let found = describe_stream(&kinesis, &stream).await;
                Metrics::outcome(&metrics.kinesis_probes, if found.is_ok() { "ok" } else { "failed" }, 1);
                found
            }
        })
        .await
    };
    if stream_found.is_none() {
        return Ok(());
    }
    readiness.stream_resolved.store(true, Ordering::Release);
    tracing::info!(queue_url, stream = config.stream_name, "collector started");

    let mut stages = Stages::default();
    let (delete_queue, deleter_rx) = DeleteQueue::channel(config.max_in_flight_messages, &metrics);
    let activity = liveness.stage("deleter");
    stages.spawn_watched(
        "deleter",
        Some(activity.clone()),
        deleter::run(
            sqs.clone(),
            deleter::DeleterSettings {
                queue_url: queue_url.clone(),
                batch_size: config.delete_batch_size,
                interval: config.delete_interval,
                concurrency: config.delete_concurrency,
                retry,
            },
            deleter_rx,
            metrics.clone(),
            activity,
        ),
    );

    let (track_tx, track_rx) = mpsc::unbounded_channel();
    let (give_back_tx, give_back_rx) = mpsc::unbounded_channel();
    let activity = liveness.stage("visibility keeper");
    stages.spawn_watched(
        "visibility keeper",
        Some(activity.clone()),
        visibility::run(
            sqs.clone(),
            visibility::VisibilitySettings {
                queue_url: queue_url.clone(),
                timeout: config.visibility_timeout,
                max_total: config.visibility_max_total,
                concurrency: config.visibility_concurrency,
                retry,
            },
            track_rx,
            give_back_rx,
            metrics.clone(),
            activity,
        ),
    );

    let dead_letter = config
        .dead_letter_queue_url
        .clone()
        .map(|queue_url| dead_letter::DeadLetterQueue {
            client: sqs.clone(),
            queue_url,
            retry,
        });
    let lane_context = kinesis_sink::LaneContext {
        client: kinesis.clone(),
        settings: kinesis_sink::SinkSettings {
            stream_name: config.stream_name.clone(),
            max_records: config.max_records_per_request,
            max_request_bytes: config.max_request_bytes,
            flush_interval: config.flush_interval,
            retry,
        },
        breaker: breaker.clone(),
        give_back: give_back_tx.clone(),
        deleter: delete_queue.clone(),
        dead_letter: dead_letter.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let mut lanes = Vec::with_capacity(config.sink_lanes);
    for lane in 0..config.sink_lanes {
        let (tx, rx) = mpsc::channel(config.max_records_per_request);
        lanes.push(tx);
        let name = format!("sink lane {lane}");
        let activity = liveness.stage(name.clone());
        stages.spawn_watched(
            name,
            Some(activity.clone()),
            kinesis_sink::run_lane(lane, lane_context.clone(), rx, activity),
        );
    }
    drop(lane_context);
    services.spawn(
        "circuit breaker probe",
        breaker::probe(
            kinesis.clone(),
            config.stream_name.clone(),
            breaker.clone(),
            retry,
            metrics.clone(),
            shutdown.clone(),
        ),
    );

    let outputs = sqs_source::Outputs {
        lanes,
        deleter: delete_queue,
        keeper: track_tx,
        give_back: give_back_tx,
        dead_letter,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight_messages)),
        in_flight_bytes: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
        max_in_flight_bytes: config.max_in_flight_bytes,
        breaker: breaker.clone(),
    };
    let source_settings = sqs_source::SourceSettings {
        queue_url,
        wait_time: config.queue_wait_time,
        batch_size: config.receive_batch_size,
        visibility_timeout: config.visibility_timeout,
        delete_margin: config.delete_interval,
        time_bounds: config.time_bounds,
        partition_key: config.partition_key,
        max_record_bytes: config.max_record_bytes,
        retry,
    };
    for receiver in 0..config.receivers {
        let name = format!("receiver {receiver}");
        let activity = liveness.stage(name.clone());
        stages.spawn_watched(
            name,
            Some(activity.clone()),
            sqs_source::run(
                receiver,
                clients.clone(),
                source_settings.clone(),
                outputs.clone(),
                metrics.clone(),
                shutdown.clone(),
                activity,
            ),
        );
    }
    // Only the stages hold senders now: the sink lanes end when every receiver has stopped,
    // the deleter when the receivers and the lanes have, and the keeper when they all have
    // and every watched message is deleted or given up.
    drop(outputs);

    services.spawn(
        "shard supervisor",
        shard_supervisor::run(
            kinesis.clone(),
            shard_supervisor::SupervisorSettings {
                stream_name: config.stream_name.clone(),
                interval: config.shard_supervisor_interval,
                policy: config.shard_policy,
                retry,
            },
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    services.spawn("throughput log", log_stats(metrics.clone(), config.stats_interval));

    let stopped = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some((stage, result)) = stages.join_next() => Some((stage, result)),
        Some((stage, result)) = services.join_next() => Some((stage, result)),
    };
    // Some stages end by themselves at shutdown: only an end before it is a failure.
    let failure = stopped
        .filter(|(_, result)| !shutdown.is_cancelled() || result.as_ref().is_err_and(JoinError::is_panic))
        .map(|(stage, result)| RunError::new(stage, result));
    if let Some(failure) = &failure {
        tracing::error!(
            error = %failure,
            "a pipeline stage is gone; stopping so that the replica is replaced (exit status 1)"
        );
        shutdown.cancel();
    }
    readiness.stopping.store(true, Ordering::Release);
    tracing::info!(
        drain_timeout_s = config.drain_timeout.as_secs(),
        "stopping: no more receiving; giving back messages not started, finishing the rest"
    );
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while stages.join_next().await.is_some() {}
    })
    .await;
    let s = metrics.snapshot();
    match drained {
        Ok(()) => tracing::info!(events_published = s.events_published, "stopped after draining"),
        Err(_) => {
            // Whatever is still unpublished keeps its message in the queue: nothing is lost,
            // those messages are delivered again after their visibility timeout.
            tracing::warn!(
                messages_in_flight = s.messages_in_flight,
                events_in_flight = s.events_in_flight,
                "drain timeout reached; unfinished messages stay in the queue and will be delivered again"
            );
        }
    }
    failure.map_or(Ok(()), Err)
}

impl RunError {
    fn new(stage: String, result: Result<(), JoinError>) -> RunError {
        match result {
            Ok(()) => RunError::StageExited { stage },
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".to_owned());
                RunError::StagePanicked { stage, message }
            }
            Err(_) => RunError::StageExited { stage },
        }
    }
}

/// Tasks that must run until shutdown, each with its name. Dropping the set aborts them.
#[derive(Default)]
struct Stages {
    tasks: JoinSet<()>,
    names: HashMap<tokio::task::Id, String>,
}

impl Stages {
    fn spawn(&mut self, name: impl Into<String>, stage: impl Future<Output = ()> + Send + 'static) {
        self.spawn_watched(name, None, stage);
    }

    /// Spawns a stage whose progress `liveness` watches through `activity`.
    fn spawn_watched(
        &mut self,
        name: impl Into<String>,
        activity: Option<Arc<liveness::Activity>>,
        stage: impl Future<Output = ()> + Send + 'static,
    ) {
        let name = name.into();
        let handle = self.tasks.spawn(fault_injection::wrap(name.clone(), activity, stage));
        self.names.insert(handle.id(), name);
    }

    /// The next task to end, by name, and how it ended.
    async fn join_next(&mut self) -> Option<(String, Result<(), JoinError>)> {
        let (id, result) = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => (id, Ok(())),
            Err(e) => (e.id(), Err(e)),
        };
        let name = self.names.remove(&id).unwrap_or_else(|| "a stage".to_owned());
        Some((name, result))
    }
}

/// Test-only faults, compiled in with the `fault-injection` feature: `COLLECTOR_FAULT_STAGE`
/// set to `NAME:panic`, `NAME:exit` or `NAME:hang` (e.g. `deleter:panic`) makes that stage
/// panic, return, or stop in the middle of its work one second after it starts, to show that
/// the process notices.
#[cfg(feature = "fault-injection")]
mod fault_injection {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::liveness::Activity;

    pub async fn wrap(name: String, activity: Option<Arc<Activity>>, stage: impl Future<Output = ()>) {
        let fault = std::env::var("COLLECTOR_FAULT_STAGE").unwrap_or_default();
        let Some((target, how)) = fault.split_once(':') else {
            return stage.await;
        };
        if target != name {
            return stage.await;
        }
        tokio::select! {
            () = stage => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match how {
            "panic" => panic!("fault injected into {name}"),
            "hang" => {
                // Stuck with work in hand, as a call without a timeout would leave it.
                if let Some(activity) = activity {
                    activity.busy();
                }
                std::future::pending::<()>().await;
            }
            _ => {}
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod fault_injection {
    use std::future::Future;
    use std::sync::Arc;

    use crate::liveness::Activity;

    pub async fn wrap(_name: String, _activity: Option<Arc<Activity>>, stage: impl Future<Output = ()>) {
        stage.await
    }
}

/// Finds the queue URL, retrying with backoff until it exists (or until shutdown).
async fn resolve_queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue: &QueueRef,
    retry: RetryPolicy,
    shutdown: &CancellationToken,
) -> Option<String> {
    let name = match queue {
        QueueRef::Url(url) => {
            // Checked all the same, so that a wrong URL or an unreachable endpoint shows at start.
            let url = url.clone();
            return retry_until(format!("GetQueueAttributes {url}"), retry, shutdown, || {
                let (sqs, url) = (sqs.clone(), url.clone());
                async move {
                    sqs.get_queue_attributes()
                        .queue_url(&url)
                        .send()
                        .await
                        .map(|_| url)
                        .map_err(|e| DisplayErrorContext(e).to_string())
                }
            })
            .await;
        }
        QueueRef::Name(name) => name.clone(),
    };
    retry_until(format!("GetQueueUrl {name}"), retry, shutdown, || {
        let (sqs, name) = (sqs.clone(), name.clone());
        async move {
            match sqs.get_queue_url().queue_name(name).send().await {
                Ok(output) => output
                    .queue_url
                    .ok_or_else(|| "GetQueueUrl answered without a URL".to_owned()),
                Err(e) => Err(DisplayErrorContext(e).to_string()),
            }
        }
    })
    .await
}

/// Ok when the stream exists and takes writes.
async fn describe_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<(), String> {
    let output = kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())?;
    let status = output
        .stream_description_summary
        .map(|s| s.stream_status)
        .ok_or_else(|| "DescribeStreamSummary answered without a description".to_owned())?;
    match status.as_str() {
        "ACTIVE" | "UPDATING" => Ok(()),
        other => Err(format!("stream is {other}")),
    }
}

/// Calls `attempt` until it succeeds, with backoff; `None` if shutdown comes first.
async fn retry_until<T, F, Fut>(
    what: String,
    retry: RetryPolicy,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut episode = RetryEpisode::new(what, retry);
    loop {
        let result = tokio::select! {
            result = attempt() => result,
            _ = shutdown.cancelled() => return None,
        };
        match result {
            Ok(value) => {
                episode.succeeded();
                return Some(value);
            }
            Err(error) => {
                let delay = episode.failed(&error);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// Logs one summary line per interval: what moved since the last line, and what is in flight.
async fn log_stats(metrics: Arc<Metrics>, interval: Duration) {
    let mut last = metrics.snapshot();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = metrics.snapshot();
        // Drop counts whose interval ended in a quiet spell get their line here.
        drop_log::flush();
        tracing::info!(
            interval_s = interval.as_secs(),
            messages_received = now.messages_received - last.messages_received,
            submissions_valid = now.submissions_valid - last.submissions_valid,
            submissions_dropped = now.submissions_invalid - last.submissions_invalid,
            events_published = now.events_published - last.events_published,
            messages_deleted = now.deletes_ok - last.deletes_ok,
            deletes_failed = now.deletes_failed - last.deletes_failed,
            messages_in_flight = now.messages_in_flight,
            events_in_flight = now.events_in_flight,
            bytes_in_flight = metrics.bytes_in_flight.get(),
            breaker_open = metrics.breaker_open.get() == 1,
            "throughput"
        );
        last = now;
    }
}
