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
//! `/healthz`, `/readyz` and `/metrics`, `retry` paces every retry, `shard_supervisor` watches
//! the shards' utilisation (and, opt-in, resizes the stream).
//!
//! [`fleet`] is not part of that path: it is the sensor-fleet simulator's side (generated
//! submissions, the manifest of what was sent, and the check of a stream against it), used by
//! the `sensor-fleet` and `stream-reader` binaries and by the tests.

pub mod breaker;
pub mod config;
pub mod dead_letter;
pub mod deleter;
pub mod drop_log;
pub mod event;
pub mod fleet;
pub mod http_server;
pub mod kinesis_sink;
pub mod ledger;
pub mod metrics;
pub mod retry;
pub mod shard_supervisor;
pub mod sqs_source;
pub mod submission;
pub mod visibility;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::config::{Config, QueueRef};
use crate::http_server::Readiness;
use crate::metrics::Metrics;
use crate::retry::{RetryEpisode, RetryPolicy};

/// Runs the collector until `shutdown` is cancelled, then drains what is in flight for at most
/// the configured drain timeout. The HTTP endpoints are served on `http` throughout.
pub async fn run(
    config: Config,
    sdk_config: &aws_config::SdkConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    http: TcpListener,
) {
    // The SDK's own retries are off: every call site retries through `retry`, so that each
    // failure is counted, logged once per episode, and paced by the configured backoff.
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk_config)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build(),
    );
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(sdk_config)
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build(),
    );
    let retry = RetryPolicy {
        initial: config.retry_initial_backoff,
        max: config.retry_max_backoff,
    };
    let breaker = Arc::new(Breaker::new(metrics.clone()));
    let readiness = Arc::new(Readiness::new(breaker.clone()));
    let http_server = tokio::spawn(http_server::serve(http, readiness.clone(), metrics.clone()));

    // Not ready until both exist; until then keep asking, with backoff, without restarting.
    let Some(queue_url) = resolve_queue_url(&sqs, &config.queue, retry, &shutdown).await else {
        http_server.abort();
        return;
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
        http_server.abort();
        return;
    }
    readiness.stream_resolved.store(true, Ordering::Release);
    tracing::info!(queue_url, stream = config.stream_name, "collector started");

    let mut stages = JoinSet::new();
    let (deleter_tx, deleter_rx) = mpsc::unbounded_channel();
    stages.spawn(deleter::run(
        sqs.clone(),
        deleter::DeleterSettings {
            queue_url: queue_url.clone(),
            batch_size: config.delete_batch_size,
            interval: config.delete_interval,
            retry,
        },
        deleter_rx,
        metrics.clone(),
    ));

    let (track_tx, track_rx) = mpsc::unbounded_channel();
    let (give_back_tx, give_back_rx) = mpsc::unbounded_channel();
    stages.spawn(visibility::run(
        sqs.clone(),
        visibility::VisibilitySettings {
            queue_url: queue_url.clone(),
            timeout: config.visibility_timeout,
            max_total: config.visibility_max_total,
            retry,
        },
        track_rx,
        give_back_rx,
        metrics.clone(),
    ));

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
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let mut lanes = Vec::with_capacity(config.sink_lanes);
    for lane in 0..config.sink_lanes {
        let (tx, rx) = mpsc::channel(config.max_records_per_request);
        lanes.push(tx);
        stages.spawn(kinesis_sink::run_lane(lane, lane_context.clone(), rx));
    }
    drop(lane_context);
    let probe = tokio::spawn(breaker::probe(
        kinesis.clone(),
        config.stream_name.clone(),
        breaker.clone(),
        retry,
        metrics.clone(),
        shutdown.clone(),
    ));

    let outputs = sqs_source::Outputs {
        lanes,
        deleter: deleter_tx,
        keeper: track_tx,
        give_back: give_back_tx,
        dead_letter: config
            .dead_letter_queue_url
            .clone()
            .map(|queue_url| dead_letter::DeadLetterQueue {
                client: sqs.clone(),
                queue_url,
                retry,
            }),
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
        stages.spawn(sqs_source::run(
            receiver,
            sqs.clone(),
            source_settings.clone(),
            outputs.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    // Only the stages hold senders now: the sink lanes end when every receiver has stopped,
    // the keeper when the lanes have and every watched message is finished, and the deleter
    // when every ledger entry is gone.
    drop(outputs);

    let shard_supervisor = tokio::spawn(shard_supervisor::run(
        kinesis.clone(),
        shard_supervisor::SupervisorSettings {
            stream_name: config.stream_name.clone(),
            interval: config.shard_supervisor_interval,
            policy: config.shard_policy,
            retry,
        },
        metrics.clone(),
        shutdown.clone(),
    ));
    let stats = tokio::spawn(log_stats(metrics.clone(), config.stats_interval));
    shutdown.cancelled().await;
    readiness.stopping.store(true, Ordering::Release);
    tracing::info!(
        drain_timeout_s = config.drain_timeout.as_secs(),
        "stopping: no more receiving; giving back messages not started, finishing the rest"
    );
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while stages.join_next().await.is_some() {}
    })
    .await;
    stats.abort();
    probe.abort();
    shard_supervisor.abort();
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
            stages.abort_all();
        }
    }
    http_server.abort();
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
