//! telemetry-collector: moves sensor telemetry from an SQS queue to a Kinesis stream.
//!
//! The data's path, one module per stage, bounded channels between them:
//!
//! ```text
//! config ─▶ sqs_source ─▶ submission (decode, validate) ─▶ event (explode) ─▶ kinesis_sink lanes
//!                │                                                               │
//!                │ invalid / no events                       confirmed records   ▼
//!                └──────────────────────────▶ deleter ◀──────────────────── ledger (per-message counter)
//! ```
//!
//! A message is deleted only when its ledger counter reaches zero, i.e. every one of its events
//! has a successful PutRecords result; everything else leaves it in the queue to come back.
//!
//! [`fleet`] is not part of that path: it is the sensor-fleet simulator's side (generated
//! submissions, the manifest of what was sent, and the check of a stream against it), used by
//! the `sensor-fleet` and `stream-reader` binaries and by the tests.

pub mod config;
pub mod deleter;
pub mod event;
pub mod fleet;
pub mod kinesis_sink;
pub mod ledger;
pub mod metrics;
pub mod retry;
pub mod sqs_source;
pub mod submission;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, QueueRef};
use crate::metrics::Metrics;
use crate::retry::{RetryEpisode, RetryPolicy};

/// Runs the collector until `shutdown` is cancelled, then drains what is in flight for at most
/// the configured drain timeout.
pub async fn run(
    config: Config,
    sdk_config: &aws_config::SdkConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
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
    let Some(queue_url) = resolve_queue_url(&sqs, &config.queue, retry, &shutdown).await else {
        return;
    };
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

    let sink_settings = kinesis_sink::SinkSettings {
        stream_name: config.stream_name.clone(),
        max_records: config.max_records_per_request,
        max_request_bytes: config.max_request_bytes,
        flush_interval: config.flush_interval,
        retry,
    };
    let mut lanes = Vec::with_capacity(config.sink_lanes);
    for lane in 0..config.sink_lanes {
        let (tx, rx) = mpsc::channel(config.max_records_per_request);
        lanes.push(tx);
        stages.spawn(kinesis_sink::run_lane(
            lane,
            kinesis.clone(),
            sink_settings.clone(),
            rx,
            metrics.clone(),
        ));
    }

    let outputs = sqs_source::Outputs {
        lanes,
        deleter: deleter_tx,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight_messages)),
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
    // and the deleter when every ledger entry is gone.
    drop(outputs);

    let stats = tokio::spawn(log_stats(metrics.clone(), config.stats_interval));
    shutdown.cancelled().await;
    tracing::info!(
        drain_timeout_s = config.drain_timeout.as_secs(),
        "stopping: no more receiving; draining what is in flight"
    );
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while stages.join_next().await.is_some() {}
    })
    .await;
    stats.abort();
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
}

/// Finds the queue URL, retrying with backoff until it exists (or until shutdown).
async fn resolve_queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue: &QueueRef,
    retry: RetryPolicy,
    shutdown: &CancellationToken,
) -> Option<String> {
    let name = match queue {
        QueueRef::Url(url) => return Some(url.clone()),
        QueueRef::Name(name) => name,
    };
    let mut episode = RetryEpisode::new(format!("GetQueueUrl {name}"), retry);
    loop {
        match sqs.get_queue_url().queue_name(name).send().await {
            Ok(output) => {
                if let Some(url) = output.queue_url {
                    episode.succeeded();
                    return Some(url);
                }
                let delay = episode.failed(&"GetQueueUrl answered without a URL");
                wait_or_stop(delay, shutdown).await?;
            }
            Err(e) => {
                let delay = episode.failed(&DisplayErrorContext(&e));
                wait_or_stop(delay, shutdown).await?;
            }
        }
    }
}

async fn wait_or_stop(delay: Duration, shutdown: &CancellationToken) -> Option<()> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => Some(()),
        _ = shutdown.cancelled() => None,
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
            "throughput"
        );
        last = now;
    }
}
