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

pub(crate) mod body_budget;
pub mod breaker;
pub mod dead_letter;
pub mod deleter;
pub mod message;
mod receive_answer;
pub mod shard_tally;
pub mod sink;
pub mod source;
pub mod stages;
pub mod visibility;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::aws::{Clients, Queue};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use breaker::Breaker;
use deleter::DeleteQueue;
use stages::Stages;

/// The pipeline's settings: one section per stage, as the configuration reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub source: source::SourceSettings,
    pub sink: sink::SinkSettings,
    pub deleter: deleter::DeleterSettings,
    pub visibility: visibility::VisibilitySettings,
    pub in_flight: InFlightLimits,
    /// Where invalid bodies are forwarded (`DEAD_LETTER_QUEUE_URL`); none when unset.
    pub dead_letter_queue_url: Option<String>,
}

/// The caps on what is held at once: received and not yet deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightLimits {
    /// Messages (`MAX_IN_FLIGHT_MESSAGES`).
    pub messages: usize,
    /// Bytes of their records (`MAX_IN_FLIGHT_BYTES`); a larger message takes the whole of it.
    pub bytes: usize,
}

/// What every stage shares.
pub(crate) struct Shared {
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
///
/// `max_body_bytes` is the largest body the queue accepts: what a receive's answer without a
/// `Content-Length` reserves of the body budget per message asked for.
pub(crate) fn spawn(
    settings: &Settings,
    stream_name: &str,
    queue_url: &str,
    max_body_bytes: usize,
    shared: &Shared,
) -> Stages {
    let mut stages = Stages::default();
    let queue = Queue {
        client: shared.clients.sqs.clone(),
        url: queue_url.to_owned(),
    };
    let deleter = spawn_deleter(&mut stages, settings, &queue, shared);
    let keeper = spawn_keeper(&mut stages, settings, &queue, shared);
    let dead_letter = settings
        .dead_letter_queue_url
        .clone()
        .map(|queue_url| dead_letter::DeadLetterQueue {
            client: shared.clients.sqs.clone(),
            queue_url,
            retry: shared.retry,
            metrics: shared.metrics.dead_letter.clone(),
        });
    let lanes = spawn_lanes(
        &mut stages,
        settings,
        stream_name,
        shared,
        &deleter,
        &keeper,
        &dead_letter,
    );
    let outputs = source::Outputs {
        lanes,
        deleter,
        keeper: keeper.watch,
        give_back: keeper.give_back,
        dead_letter,
        in_flight: Arc::new(Semaphore::new(settings.in_flight.messages)),
        in_flight_bytes: Arc::new(Semaphore::new(settings.in_flight.bytes)),
        body_budget: body_budget::BodyBudget::new(settings.in_flight.bytes, max_body_bytes),
        in_flight_metrics: shared.metrics.in_flight.clone(),
        events_in_flight: shared.metrics.sink.events_in_flight.clone(),
        max_in_flight_bytes: settings.in_flight.bytes,
        breaker: shared.breaker.clone(),
    };
    spawn_receivers(&mut stages, settings, queue_url, shared, outputs);
    stages
}

fn spawn_deleter(stages: &mut Stages, settings: &Settings, queue: &Queue, shared: &Shared) -> DeleteQueue {
    let (deletes, input) = DeleteQueue::channel(settings.in_flight.messages, &shared.metrics.deleter);
    let activity = shared.liveness.stage("deleter");
    let stage = deleter::run(
        queue.clone(),
        settings.deleter.clone(),
        shared.retry,
        input,
        shared.metrics.deleter.clone(),
        activity.clone(),
    );
    stages.spawn_watched("deleter", Some(activity), stage);
    deletes
}

/// How the visibility keeper is reached: messages to watch, receipts to give back.
struct Keeper {
    watch: mpsc::UnboundedSender<std::sync::Weak<message::InFlightMessage>>,
    give_back: mpsc::UnboundedSender<message::Receipt>,
}

fn spawn_keeper(stages: &mut Stages, settings: &Settings, queue: &Queue, shared: &Shared) -> Keeper {
    let (watch, watch_input) = mpsc::unbounded_channel();
    let (give_back, give_back_input) = mpsc::unbounded_channel();
    let activity = shared.liveness.stage("visibility keeper");
    let stage = visibility::run(
        queue.clone(),
        settings.visibility.clone(),
        settings.in_flight.messages,
        shared.retry,
        visibility::KeeperInputs {
            track: watch_input,
            give_back: give_back_input,
        },
        shared.metrics.visibility.clone(),
        activity.clone(),
    );
    stages.spawn_watched("visibility keeper", Some(activity), stage);
    Keeper { watch, give_back }
}

fn spawn_lanes(
    stages: &mut Stages,
    settings: &Settings,
    stream_name: &str,
    shared: &Shared,
    deleter: &DeleteQueue,
    keeper: &Keeper,
    dead_letter: &Option<dead_letter::DeadLetterQueue>,
) -> Vec<sink::LaneInput> {
    let context = sink::LaneContext {
        client: shared.clients.kinesis.clone(),
        stream_name: stream_name.to_owned(),
        settings: settings.sink.clone(),
        call_timeout: shared.clients.call_timeout,
        retry: shared.retry,
        breaker: shared.breaker.clone(),
        give_back: keeper.give_back.clone(),
        deleter: deleter.clone(),
        dead_letter: dead_letter.clone(),
        shard_tally: shared.shard_tally.clone(),
        metrics: shared.metrics.sink.clone(),
        shutdown: shared.shutdown.clone(),
    };
    (0..settings.sink.lanes)
        .map(|lane| {
            let (tx, rx) = sink::LaneInput::channel(settings.sink.max_records);
            let name = format!("sink lane {lane}");
            let activity = shared.liveness.stage(name.clone());
            let stage = sink::run_lane(lane, context.clone(), rx, activity.clone());
            stages.spawn_watched(name, Some(activity), stage);
            tx
        })
        .collect()
}

fn spawn_receivers(
    stages: &mut Stages,
    settings: &Settings,
    queue_url: &str,
    shared: &Shared,
    outputs: source::Outputs,
) {
    let receive_client = shared.clients.receive_client(settings.source.wait_time);
    for index in 0..settings.source.receivers {
        let name = format!("receiver {index}");
        let activity = shared.liveness.stage(name.clone());
        let stage = source::run(source::Receiver {
            index,
            sqs: receive_client.clone(),
            queue_url: queue_url.to_owned(),
            settings: settings.source.clone(),
            retry: shared.retry,
            outputs: outputs.clone(),
            metrics: shared.metrics.source.clone(),
            shutdown: shared.shutdown.clone(),
            activity: activity.clone(),
        });
        stages.spawn_watched(name, Some(activity), stage);
    }
}
