//! SQS source: long-polls the submissions queue, decodes each message and routes its events.
//!
//! Every message of a receive batch becomes an in-flight message, watched by the visibility
//! keeper, as soon as the batch arrives: later messages of a batch may wait a long time for
//! their turn (byte cap, full lane), and must stay hidden meanwhile. Then each is routed in
//! order: invalid or event-less submissions go straight to the deleter; a valid one's records
//! go to the sink lane of its partition key. A message takes an in-flight permit before it is
//! received, and a share of the byte cap before its records are queued; it gives the bytes back
//! when its events are published and the permit when its delete is answered, so receiving
//! pauses when the sink or the deleter falls behind. Receiving also pauses while the Kinesis
//! circuit breaker is open.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use super::body_budget::{BodyBudget, Ticket};
use super::breaker::Breaker;
use super::dead_letter::{DeadLetterQueue, Disposal, dispose};
use super::deleter::DeleteQueue;
use super::message::{GiveUp, InFlightMessage, InFlightMetrics, NewMessage, Receipt};
use super::receive_answer::{ReceiveMessageAnswer, ReceivedMessage, messages};
use super::sink::{LaneInput, OutboundRun, lane_for};
use crate::answer_reader::AnswerSlot;
use crate::liveness::Activity;
use crate::metrics::kit::{CallDurations, Counters, add, call_duration, start_at_zero, timed};
use crate::retry::{RetryEpisode, RetryPolicy};
use prometheus_client::metrics::histogram::Histogram;
use telemetry_format::event::{self, PartitionKey, RECORD_OVERHEAD_BYTES, RecordBuffer, Records};
use telemetry_format::submission::{self, DECODE_HEAP_PER_BODY_BYTE, Rejection, TimeBounds};

/// How long a receive in flight at shutdown may still take to answer.
pub(crate) const SHUTDOWN_RECEIVE_GRACE: Duration = Duration::from_secs(2);

/// How much of an invalid body a log line shows.
const BODY_PREFIX_CHARS: usize = 64;

/// How long before its answer arrived a message's visibility timeout may have started. SQS
/// starts it when it picks the message for an answer, which a long poll sends at once; so the
/// timeout started between the call being sent and the answer arriving, at most one network
/// trip before the latter. Counting from the call being sent instead would make a message that
/// arrives late in a long poll look expired on arrival when the wait is as long as the timeout.
pub(crate) const RECEIPT_CLOCK_ALLOWANCE: Duration = Duration::from_secs(1);

/// The receivers' settings: their section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Receive loops, each with one long poll at a time (`QUEUE_RECEIVERS`).
    pub receivers: usize,
    /// Long-poll wait of each receive (`QUEUE_WAIT_TIME_SEC`).
    pub wait_time: Duration,
    /// Messages asked for per receive (`QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST`).
    pub batch_size: i32,
    /// Asked for on receive; the visibility keeper's timeout.
    pub visibility_timeout: Duration,
    /// Kept free at the end of the visibility timeout for the delete call: the deleter's
    /// longest wait for a batch.
    pub delete_margin: Duration,
    /// Which `time_created` values are valid (`TIME_CREATED_*`).
    pub time_bounds: TimeBounds,
    /// What each record is keyed by (`DATA_STREAM_PARTITION_KEY`).
    pub partition_key: PartitionKey,
    /// Largest record (`DATA_STREAM_MAX_RECORD_BYTES`).
    pub max_record_bytes: usize,
    /// Whether a dropped submission's debug line shows the start of its body
    /// (`LOG_INVALID_BODY_SAMPLES`).
    pub log_body_samples: bool,
}

/// Where the source's output goes, and the limits it respects.
#[derive(Clone)]
pub(crate) struct Outputs {
    pub lanes: Vec<LaneInput>,
    pub deleter: DeleteQueue,
    /// The visibility keeper watches every message in flight.
    pub keeper: mpsc::UnboundedSender<std::sync::Weak<InFlightMessage>>,
    /// Receipts of messages to give back to the queue untouched (shutdown).
    pub give_back: mpsc::UnboundedSender<Receipt>,
    pub dead_letter: Option<DeadLetterQueue>,
    pub in_flight: Arc<Semaphore>,
    /// The byte cap on what decoding and records take (`MAX_IN_FLIGHT_BYTES`).
    pub in_flight_bytes: Arc<Semaphore>,
    /// The byte cap; a message larger than it takes the whole of it.
    pub max_in_flight_bytes: usize,
    /// The budget of raw bodies received and not yet decoded, as large as the byte cap.
    pub body_budget: BodyBudget,
    /// What every message in flight counts itself in.
    pub in_flight_metrics: InFlightMetrics,
    /// What every event on its way to the stream counts itself in (the sink's gauge).
    pub events_in_flight: Gauge,
    pub breaker: Arc<Breaker>,
}

/// When a receive was sent and when its answer arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceiveTiming {
    pub sent_at: Instant,
    pub arrived_at: Instant,
}

impl ReceiveTiming {
    /// The earliest the visibility timeout of a message in the answer can have started.
    pub(crate) fn visibility_started(&self) -> Instant {
        self.arrived_at
            .checked_sub(RECEIPT_CLOCK_ALLOWANCE)
            .map_or(self.sent_at, |earliest| earliest.max(self.sent_at))
    }
}

/// Receives until `shutdown` is cancelled.
pub(crate) async fn run(receiver: Receiver) {
    let mut episode = RetryEpisode::new(format!("ReceiveMessage (receiver {})", receiver.index), receiver.retry);
    let batch_size = receiver.settings.batch_size as u32;
    let (outputs, shutdown) = (&receiver.outputs, &receiver.shutdown);
    loop {
        // Capacity first: never receive a message there is no room for. Biased towards
        // shutdown: once it is signalled no new long poll may start, or its messages would
        // only be given back.
        let permits = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            permits = outputs.in_flight.clone().acquire_many_owned(batch_size) => match permits {
                Ok(permits) => permits,
                Err(_) => return,
            },
        };
        let Some(ticket) = outputs.body_budget.ticket(batch_size as usize, shutdown).await else {
            return;
        };
        // Checked last, right before the call: a receiver that waited for room may find the
        // breaker opened meanwhile.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = outputs.breaker.wait_may_receive() => {}
        }
        let Some((answer, timing)) = receiver.receive(&ticket).await else {
            return;
        };
        let messages = match answer {
            Ok(messages) => {
                episode.succeeded();
                messages
            }
            Err(error) => {
                // Nothing is held while backing off: other receivers may use the room.
                drop((ticket, permits));
                receiver.metrics.receive_errors.inc();
                let delay = episode.failed(&error);
                tokio::select! {
                    _ = sleep(delay) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let Some(batch) = receiver.take_in(messages, permits, ticket.into_room(), timing).await else {
            return;
        };
        for received in batch {
            route(
                received,
                &receiver.settings,
                outputs,
                &receiver.metrics,
                &receiver.activity,
                shutdown,
            )
            .await;
        }
    }
}

/// What one receive loop works with.
pub(crate) struct Receiver {
    /// Which of the receive loops, for logs.
    pub index: usize,
    /// The ReceiveMessage calls' client (`Clients::receive_client`).
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub settings: SourceSettings,
    pub retry: RetryPolicy,
    pub outputs: Outputs,
    pub metrics: SourceMetrics,
    pub shutdown: CancellationToken,
    pub activity: Arc<Activity>,
}

impl Receiver {
    /// One long poll for the messages `ticket` asked for, and when its answer arrived; the
    /// answer's size is reserved in the body budget, with the ticket, when its headers arrive.
    /// `None` when shutdown came first.
    async fn receive(&self, ticket: &Ticket) -> Option<(Result<Vec<ReceivedMessage>, String>, ReceiveTiming)> {
        let settings = &self.settings;
        self.metrics.receive_calls.inc();
        self.activity.busy();
        let sent_at = Instant::now();
        let read = AnswerSlot::<ReceiveMessageAnswer>::default();
        let call = timed(
            &self.metrics.receive_duration,
            ticket.during(
                self.sqs
                    .receive_message()
                    .queue_url(&self.queue_url)
                    .max_number_of_messages(ticket.asked() as i32)
                    // For the freshness from the queue: when SQS accepted the message.
                    .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                    .wait_time_seconds(settings.wait_time.as_secs() as i32)
                    .visibility_timeout(settings.visibility_timeout.as_secs() as i32)
                    .customize()
                    .interceptor(read.reader())
                    .send(),
            ),
        );
        tokio::pin!(call);
        let answer = tokio::select! {
            answer = &mut call => answer,
            _ = self.shutdown.cancelled() => {
                // SQS may already have handed this call messages, which would stay hidden for
                // a whole visibility timeout if the call were dropped. A long poll with
                // messages to give answers at once, so wait a moment for it, then give back
                // whatever it brought. A call still waiting after that found an empty queue.
                if let Ok(Ok(output)) = tokio::time::timeout(SHUTDOWN_RECEIVE_GRACE, &mut call).await {
                    for message in messages(read.take(), output) {
                        self.metrics.messages_received.inc();
                        if let (Some(message_id), Some(handle)) = (message.message_id, message.receipt_handle) {
                            let _ = self.outputs.give_back.send(Receipt { message_id, handle });
                        }
                    }
                }
                self.activity.idle();
                return None;
            }
        };
        let timing = ReceiveTiming {
            sent_at,
            arrived_at: Instant::now(),
        };
        self.activity.progressed();
        self.activity.idle();
        let received = answer
            .map(|output| messages(read.take(), output))
            .map_err(|e| DisplayErrorContext(&e).to_string());
        Some((received, timing))
    }

    /// Makes each message of a batch a message in flight, with one of the batch's permits and
    /// its body's share of the body budget (from the answer's reservation; the rest goes back),
    /// and has the keeper watch them all before any is routed: every message of the batch stays
    /// hidden while the earlier ones wait for room. `None` when stopping.
    async fn take_in(
        &self,
        messages: Vec<ReceivedMessage>,
        mut permits: OwnedSemaphorePermit,
        mut bodies_room: Option<OwnedSemaphorePermit>,
        timing: ReceiveTiming,
    ) -> Option<Vec<Received>> {
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages {
            self.metrics.messages_received.inc();
            let permit = match permits.split(1) {
                Some(permit) => permit,
                // SQS returned more than asked for; take a permit the ordinary way.
                None => self.outputs.in_flight.clone().acquire_owned().await.ok()?,
            };
            let sent_at = message.sent_at;
            let message_id = message.message_id.unwrap_or_default();
            let Some(handle) = message.receipt_handle else {
                tracing::warn!(
                    message_id,
                    "message without a receipt handle; it cannot be deleted and is skipped"
                );
                continue;
            };
            let body = message.body.unwrap_or_default();
            // Within the reservation, which is at least the answer's length, unless the answer
            // was larger than the whole budget: then the body is already here, and waiting for
            // room could only stall; it takes what is left.
            let share = body.len().clamp(1, self.outputs.max_in_flight_bytes);
            let body_room = bodies_room
                .as_mut()
                .and_then(|room| room.split(share.min(room.num_permits())));
            let entry = InFlightMessage::new(
                NewMessage {
                    receipt: Receipt { message_id, handle },
                    received_at: timing.visibility_started(),
                    visibility_timeout: self.settings.visibility_timeout,
                    delete_margin: self.settings.delete_margin,
                    permit,
                    sent_at,
                },
                self.outputs.in_flight_metrics.clone(),
            );
            batch.push(Received { entry, body, body_room });
        }
        for received in &batch {
            let _ = self.outputs.keeper.send(Arc::downgrade(&received.entry));
        }
        Some(batch)
    }
}

/// A received message, in flight, its body not decoded yet.
struct Received {
    entry: Arc<InFlightMessage>,
    body: String,
    /// The body's share of the body budget, held while the body is (none only when the answer
    /// came without a reservation, which the receive's HTTP client always makes).
    body_room: Option<OwnedSemaphorePermit>,
}

/// Bodies up to this size are decoded on the receiver's own task; larger ones (a 1 MiB body
/// takes tens of milliseconds) on the blocking pool, so that they cannot hold up the runtime's
/// workers, which the other stages need.
const DECODE_INLINE_MAX_BYTES: usize = 64 * 1024;

/// What decoding a body found: the submission's records, keyed, with its `time_created` read as
/// UTC; or why it is invalid.
type Decoded = Result<(uuid::Uuid, String, Records, Option<SystemTime>), Rejection>;

fn decode(body: &str, settings: &SourceSettings) -> Decoded {
    let now = Utc::now();
    let time_processed = event::format_time_processed(now);
    submission::decode(body, &settings.time_bounds, now).and_then(|sub| {
        event::to_records(&sub, &time_processed, settings.partition_key, settings.max_record_bytes).map(
            |(key, records)| {
                let created = sub.time_created_utc().map(SystemTime::from);
                (settings.partition_key.of(&sub), key, records, created)
            },
        )
    })
}

/// Decodes `body`, off the runtime's workers when it is large; gives the body back.
async fn decode_off_the_workers(body: String, settings: &SourceSettings) -> (String, Decoded) {
    if body.len() <= DECODE_INLINE_MAX_BYTES {
        let decoded = decode(&body, settings);
        return (body, decoded);
    }
    let settings = settings.clone();
    match tokio::task::spawn_blocking(move || {
        let decoded = decode(&body, &settings);
        (body, decoded)
    })
    .await
    {
        Ok(done) => done,
        // A panic in decoding is a bug: it stops this receiver, and supervision the process.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Decodes a message within the byte cap and sends it on: invalid or event-less submissions
/// to the deleter (through the dead-letter queue when that is on), a valid one's records to
/// the sink lane of its partition key.
///
/// The cap is taken before anything is decoded, for the most that decoding and building the
/// records can take ([`DECODE_HEAP_PER_BODY_BYTE`] per body byte, at most the whole cap: a
/// larger message goes through alone). Once the records exist, the message keeps what they
/// take and gives back the rest, and holds that until its events are published.
async fn route(
    received: Received,
    settings: &SourceSettings,
    outputs: &Outputs,
    metrics: &SourceMetrics,
    activity: &Activity,
    shutdown: &CancellationToken,
) {
    let Received { entry, body, body_room } = received;
    let cap = outputs.max_in_flight_bytes;
    let reserved = body.len().saturating_mul(DECODE_HEAP_PER_BODY_BYTE).clamp(1, cap);
    let room = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        room = outputs.in_flight_bytes.clone().acquire_many_owned(reserved as u32) => room.ok(),
    };
    let Some(mut bytes) = room else {
        // Stopping (perhaps while it waited for room): nothing of it has started, so it goes
        // back to the queue now rather than after its visibility timeout.
        if shutdown.is_cancelled() && entry.give_up(GiveUp::GivenBack) {
            let _ = outputs.give_back.send(entry.receipt().clone());
        }
        return;
    };
    let (body, decoded) = decode_off_the_workers(body, settings).await;
    let (key_id, partition_key, records, created) = match decoded {
        Err(rejection) => {
            drop(bytes);
            drop_invalid(entry.receipt(), &body, &rejection, settings.log_body_samples, metrics);
            // Invalid for good: deleted, its body in the dead-letter queue first if one is set.
            activity.busy();
            let disposal = dispose(
                outputs.dead_letter.as_ref(),
                entry.message_id(),
                Some(&body),
                rejection.label(),
                &rejection.to_string(),
                Disposal::Delete,
            )
            .await;
            activity.progressed();
            activity.idle();
            if disposal == Disposal::Keep {
                return;
            }
            drop((body, body_room));
            outputs.deleter.send(entry).await;
            return;
        }
        Ok((_, _, records, _)) if records.is_empty() => {
            drop((bytes, body, body_room));
            metrics.submissions_valid.inc();
            outputs.deleter.send(entry).await;
            return;
        }
        Ok(publish) => publish,
    };
    metrics.submissions_valid.inc();
    // Kept for dead-lettering should the stream refuse one of its records; it then counts in
    // the byte cap like the records, and leaves the body budget.
    let kept_body = outputs.dead_letter.is_some().then_some(body);
    drop(body_room);
    let record_bytes = records_heap_bytes(&records, &partition_key) + kept_body.as_ref().map_or(0, String::len);
    let held = record_bytes.clamp(1, cap);
    if held < reserved {
        drop(bytes.split(reserved - held));
    }
    if let Some(created) = created {
        entry.created_at(created);
    }
    entry.publishing(records.len(), bytes, record_bytes, kept_body);
    let partition_key: Arc<str> = partition_key.into();
    let lane = &outputs.lanes[lane_for(&key_id, outputs.lanes.len())];
    // One reading of the clock for the whole submission: a record that waited for room in the
    // lane's channel is taken to have waited in the lane, and leaves no later for it.
    let enqueued_at = Instant::now();
    for buffer in records.buffers {
        let releases = buffer_heap_bytes(&buffer);
        let run = OutboundRun::new(
            buffer,
            partition_key.clone(),
            releases,
            entry.clone(),
            &outputs.events_in_flight,
            enqueued_at,
        );
        if lane.send(run).await.is_err() {
            // The lane is gone only when the collector is stopping; the entry is dropped
            // unfinished and the message comes back.
            return;
        }
    }
}

/// What a message's records take on the heap until they are sent: data, partition key and
/// each record's own bookkeeping.
fn records_heap_bytes(records: &Records, partition_key: &str) -> usize {
    partition_key.len() + records.buffers.iter().map(buffer_heap_bytes).sum::<usize>()
}

/// What a buffer of records takes on the heap until the last of them is sent.
fn buffer_heap_bytes(buffer: &RecordBuffer) -> usize {
    buffer.data.len() + buffer.ends.len() * RECORD_OVERHEAD_BYTES
}

fn drop_invalid(receipt: &Receipt, body: &str, rejection: &Rejection, samples: bool, metrics: &SourceMetrics) {
    // Sensor data stays out of the logs unless an operator asks for it.
    let body_sample: Option<String> = samples.then(|| body.chars().take(BODY_PREFIX_CHARS).collect());
    // The message id only: the receipt handle is never logged.
    crate::drop_log::dropped(&receipt.message_id, rejection, body.len(), body_sample.as_deref());
    metrics.invalid(rejection.label());
}

/// The receivers' metrics: what came from the queue and how it was judged.
#[derive(Clone)]
pub struct SourceMetrics {
    pub receive_calls: Counter,
    pub receive_errors: Counter,
    pub receive_duration: Histogram,
    pub messages_received: Counter,
    pub submissions_valid: Counter,
    pub submissions_invalid: Counters,
}

impl SourceMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry, calls: &CallDurations) -> Self {
        let section = SourceMetrics {
            receive_duration: call_duration(calls, "ReceiveMessage"),
            receive_calls: add(
                registry,
                "receive_calls",
                "ReceiveMessage calls made",
                Counter::default(),
            ),
            receive_errors: add(
                registry,
                "receive_errors",
                "ReceiveMessage calls that failed",
                Counter::default(),
            ),
            messages_received: add(
                registry,
                "messages_received",
                "SQS messages received",
                Counter::default(),
            ),
            submissions_valid: add(
                registry,
                "submissions_valid",
                "Submissions that passed validation",
                Counter::default(),
            ),
            submissions_invalid: add(
                registry,
                "submissions_invalid",
                "Invalid submissions (deleted unpublished), by rejection reason",
                Counters::default(),
            ),
        };
        start_at_zero(&section.submissions_invalid, "reason", &Rejection::LABELS);
        section
    }

    pub(crate) fn invalid(&self, reason: &'static str) {
        self.submissions_invalid.get_or_create(&[("reason", reason)]).inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A valid submission of `events` of the smallest events, as raw JSON.
    fn body(events: usize) -> String {
        let items = vec![r#"{"cmdl":"","user":""}"#; events].join(",");
        format!(
            r#"{{"submission_id":"7a3c0000-0000-4000-8000-000000000001","device_id":"31980191-fa99-4768-8a7b-0e81397ca6ef","time_created":"2021-03-28T15:44:18.592840","events":{{"new_process":[{items}]}}}}"#
        )
    }

    /// Whether another task of a one-thread runtime got the thread while `body` was decoded.
    async fn others_ran_during_decode(body: String) -> bool {
        let settings = crate::config::Config::from_vars(&std::collections::HashMap::new())
            .expect("the defaults are valid")
            .pipeline
            .source;
        let ran = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let ran = ran.clone();
            async move { ran.store(true, Ordering::SeqCst) }
        });
        let (_, decoded) = decode_off_the_workers(body, &settings).await;
        assert!(decoded.is_ok(), "a valid body");
        ran.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_large_body_is_decoded_off_the_runtime_so_that_other_tasks_run_meanwhile() {
        // ~110 KiB: the runtime's one thread is free while it is decoded.
        let large = body(5_000);
        assert!(large.len() > DECODE_INLINE_MAX_BYTES);
        assert!(others_ran_during_decode(large).await);
        // A small one is decoded in place, without giving up the thread (cheaper than a hop).
        let small = body(10);
        assert!(small.len() <= DECODE_INLINE_MAX_BYTES);
        assert!(!others_ran_during_decode(small).await);
    }
}
