//! The pipeline: one module per stage, channels between them.
//!
//! ```text
//!  SQS ─▶ source ─ decode, validate (submission), explode (event) ─▶ sink lanes ─▶ Kinesis
//!           │  │                                                        │
//!           │  └─ invalid ─▶ dead_letter (opt-in)                        │ every event published
//!           │ invalid / no events ──────────────────▶ deleter ◀──────────┘ (message counter at 0)
//!           └─ every message, until its delete is answered ─▶ visibility (extend; give back)
//! ```
//!
//! A received message is an [`message::InFlightMessage`]: its receipt, its counter of events
//! not yet published, its visibility lease, and its share of the in-flight caps. It is deleted
//! only when its counter reaches zero, i.e. every one of its events has a successful PutRecords
//! result; everything else leaves it in the queue to come back. The [`breaker`] pauses
//! receiving while Kinesis fails; [`stages`] supervises every stage.

pub mod breaker;
pub mod dead_letter;
pub mod deleter;
pub mod message;
pub mod sink;
pub mod source;
pub mod stages;
pub mod visibility;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::aws::Clients;
use crate::config::Config;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use breaker::Breaker;
use deleter::DeleteQueue;
use stages::Stages;

/// What every stage shares.
pub struct Shared {
    pub clients: Clients,
    pub metrics: Arc<Metrics>,
    pub breaker: Arc<Breaker>,
    pub liveness: Arc<Liveness>,
    pub shutdown: CancellationToken,
    pub retry: RetryPolicy,
}

/// Starts every stage, from the deleter back to the receivers, and returns them supervised.
///
/// Only the stages hold the channels' senders once this returns, which is what ends them in
/// order at shutdown: the sink lanes end when every receiver has stopped, the deleter when the
/// receivers and the lanes have, and the visibility keeper when they all have and every message
/// it watches is deleted or given up.
pub fn spawn(config: &Config, queue_url: &str, shared: &Shared) -> Stages {
    let Shared {
        clients,
        metrics,
        breaker,
        liveness,
        shutdown,
        retry,
    } = shared;
    let retry = *retry;
    let mut stages = Stages::default();

    let (delete_queue, deleter_input) = DeleteQueue::channel(config.max_in_flight_messages, metrics);
    let activity = liveness.stage("deleter");
    stages.spawn_watched(
        "deleter",
        Some(activity.clone()),
        deleter::run(
            clients.sqs.clone(),
            deleter::DeleterSettings {
                queue_url: queue_url.to_owned(),
                batch_size: config.delete_batch_size,
                interval: config.delete_interval,
                concurrency: config.delete_concurrency,
                retry,
            },
            deleter_input,
            metrics.clone(),
            activity,
        ),
    );

    let (watch, watch_input) = mpsc::unbounded_channel();
    let (give_back, give_back_input) = mpsc::unbounded_channel();
    let activity = liveness.stage("visibility keeper");
    stages.spawn_watched(
        "visibility keeper",
        Some(activity.clone()),
        visibility::run(
            clients.sqs.clone(),
            visibility::VisibilitySettings {
                queue_url: queue_url.to_owned(),
                timeout: config.visibility_timeout,
                max_total: config.visibility_max_total,
                concurrency: config.visibility_concurrency,
                retry,
            },
            watch_input,
            give_back_input,
            metrics.clone(),
            activity,
        ),
    );

    let dead_letter = config
        .dead_letter_queue_url
        .clone()
        .map(|queue_url| dead_letter::DeadLetterQueue {
            client: clients.sqs.clone(),
            queue_url,
            retry,
        });
    let lane_context = sink::LaneContext {
        client: clients.kinesis.clone(),
        settings: sink::SinkSettings {
            stream_name: config.stream_name.clone(),
            max_records: config.max_records_per_request,
            max_request_bytes: config.max_request_bytes,
            flush_interval: config.flush_interval,
            retry,
        },
        breaker: breaker.clone(),
        give_back: give_back.clone(),
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
            sink::run_lane(lane, lane_context.clone(), rx, activity),
        );
    }

    let outputs = source::Outputs {
        lanes,
        deleter: delete_queue,
        keeper: watch,
        give_back,
        dead_letter,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight_messages)),
        in_flight_bytes: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
        max_in_flight_bytes: config.max_in_flight_bytes,
        breaker: breaker.clone(),
    };
    let source_settings = source::SourceSettings {
        queue_url: queue_url.to_owned(),
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
            source::run(
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
    stages
}
