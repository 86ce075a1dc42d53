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
pub mod shard_tally;
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
    /// What the lanes wrote to each shard, for the shard supervisor.
    pub shard_tally: Arc<shard_tally::ShardTally>,
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
    let mut stages = Stages::default();
    let deleter = spawn_deleter(&mut stages, config, queue_url, shared);
    let keeper = spawn_keeper(&mut stages, config, queue_url, shared);
    let dead_letter = config
        .dead_letter_queue_url
        .clone()
        .map(|queue_url| dead_letter::DeadLetterQueue {
            client: shared.clients.sqs.clone(),
            queue_url,
            retry: shared.retry,
        });
    let lanes = spawn_lanes(&mut stages, config, shared, &deleter, &keeper, &dead_letter);
    let outputs = source::Outputs {
        lanes,
        deleter,
        keeper: keeper.watch,
        give_back: keeper.give_back,
        dead_letter,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight_messages)),
        in_flight_bytes: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
        max_in_flight_bytes: config.max_in_flight_bytes,
        breaker: shared.breaker.clone(),
    };
    spawn_receivers(&mut stages, config, queue_url, shared, outputs);
    stages
}

fn spawn_deleter(stages: &mut Stages, config: &Config, queue_url: &str, shared: &Shared) -> DeleteQueue {
    let (queue, input) = DeleteQueue::channel(config.max_in_flight_messages, &shared.metrics);
    let settings = deleter::DeleterSettings {
        queue_url: queue_url.to_owned(),
        batch_size: config.delete_batch_size,
        interval: config.delete_interval,
        concurrency: config.delete_concurrency,
        retry: shared.retry,
    };
    let activity = shared.liveness.stage("deleter");
    let stage = deleter::run(
        shared.clients.sqs.clone(),
        settings,
        input,
        shared.metrics.clone(),
        activity.clone(),
    );
    stages.spawn_watched("deleter", Some(activity), stage);
    queue
}

/// How the visibility keeper is reached: messages to watch, receipts to give back.
struct Keeper {
    watch: mpsc::UnboundedSender<std::sync::Weak<message::InFlightMessage>>,
    give_back: mpsc::UnboundedSender<message::Receipt>,
}

fn spawn_keeper(stages: &mut Stages, config: &Config, queue_url: &str, shared: &Shared) -> Keeper {
    let (watch, watch_input) = mpsc::unbounded_channel();
    let (give_back, give_back_input) = mpsc::unbounded_channel();
    let settings = visibility::VisibilitySettings {
        queue_url: queue_url.to_owned(),
        timeout: config.visibility_timeout,
        max_total: config.visibility_max_total,
        concurrency: config.visibility_concurrency,
        retry: shared.retry,
    };
    let activity = shared.liveness.stage("visibility keeper");
    let stage = visibility::run(
        shared.clients.sqs.clone(),
        settings,
        watch_input,
        give_back_input,
        shared.metrics.clone(),
        activity.clone(),
    );
    stages.spawn_watched("visibility keeper", Some(activity), stage);
    Keeper { watch, give_back }
}

fn spawn_lanes(
    stages: &mut Stages,
    config: &Config,
    shared: &Shared,
    deleter: &DeleteQueue,
    keeper: &Keeper,
    dead_letter: &Option<dead_letter::DeadLetterQueue>,
) -> Vec<mpsc::Sender<sink::OutboundRecord>> {
    let context = sink::LaneContext {
        client: shared.clients.kinesis.clone(),
        settings: sink::SinkSettings {
            stream_name: config.stream_name.clone(),
            max_records: config.max_records_per_request,
            max_request_bytes: config.max_request_bytes,
            flush_interval: config.flush_interval,
            retry: shared.retry,
        },
        breaker: shared.breaker.clone(),
        give_back: keeper.give_back.clone(),
        deleter: deleter.clone(),
        dead_letter: dead_letter.clone(),
        shard_tally: shared.shard_tally.clone(),
        metrics: shared.metrics.clone(),
        shutdown: shared.shutdown.clone(),
    };
    (0..config.sink_lanes)
        .map(|lane| {
            let (tx, rx) = mpsc::channel(config.max_records_per_request);
            let name = format!("sink lane {lane}");
            let activity = shared.liveness.stage(name.clone());
            let stage = sink::run_lane(lane, context.clone(), rx, activity.clone());
            stages.spawn_watched(name, Some(activity), stage);
            tx
        })
        .collect()
}

fn spawn_receivers(stages: &mut Stages, config: &Config, queue_url: &str, shared: &Shared, outputs: source::Outputs) {
    let settings = source::SourceSettings {
        queue_url: queue_url.to_owned(),
        wait_time: config.queue_wait_time,
        batch_size: config.receive_batch_size,
        visibility_timeout: config.visibility_timeout,
        delete_margin: config.delete_interval,
        time_bounds: config.time_bounds,
        partition_key: config.partition_key,
        max_record_bytes: config.max_record_bytes,
        retry: shared.retry,
    };
    for receiver in 0..config.receivers {
        let name = format!("receiver {receiver}");
        let activity = shared.liveness.stage(name.clone());
        let stage = source::run(
            receiver,
            shared.clients.clone(),
            settings.clone(),
            outputs.clone(),
            shared.metrics.clone(),
            shared.shutdown.clone(),
            activity.clone(),
        );
        stages.spawn_watched(name, Some(activity), stage);
    }
}
