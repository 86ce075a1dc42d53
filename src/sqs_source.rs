//! SQS source: long-polls the submissions queue, decodes each message and routes its events.
//!
//! For every message: invalid or event-less submissions go straight to the deleter; a valid
//! one gets a ledger entry counting its events, and its records go to the sink lane of its
//! partition key. A message takes an in-flight permit before it is received, and a share of the
//! byte cap before its records are queued; it gives both back when its ledger entry is gone, so
//! receiving pauses when the sink falls behind. Receiving also pauses while the Kinesis circuit
//! breaker is open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::Message;
use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::dead_letter::DeadLetterQueue;
use crate::event::{self, PartitionKey};
use crate::kinesis_sink::{OutboundRecord, lane_for};
use crate::ledger::{LedgerEntry, NewEntry, Receipt};
use crate::metrics::Metrics;
use crate::retry::{RetryEpisode, RetryPolicy};
use crate::submission::{self, Rejection, TimeBounds};

/// How long a receive in flight at shutdown may still take to answer.
const SHUTDOWN_RECEIVE_GRACE: Duration = Duration::from_secs(2);

/// How much of an invalid body a log line shows.
const BODY_PREFIX_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub queue_url: String,
    pub wait_time: Duration,
    pub batch_size: i32,
    pub visibility_timeout: Duration,
    /// Kept free at the end of the visibility timeout for the delete call.
    pub delete_margin: Duration,
    pub time_bounds: TimeBounds,
    pub partition_key: PartitionKey,
    pub max_record_bytes: usize,
    pub retry: RetryPolicy,
}

/// Where the source's output goes, and the limits it respects.
#[derive(Clone)]
pub struct Outputs {
    pub lanes: Vec<mpsc::Sender<OutboundRecord>>,
    pub deleter: mpsc::UnboundedSender<Receipt>,
    /// The visibility keeper watches every message in flight.
    pub keeper: mpsc::UnboundedSender<std::sync::Weak<LedgerEntry>>,
    /// Receipts of messages to give back to the queue untouched (shutdown).
    pub give_back: mpsc::UnboundedSender<Receipt>,
    pub dead_letter: Option<DeadLetterQueue>,
    pub in_flight: Arc<Semaphore>,
    pub in_flight_bytes: Arc<Semaphore>,
    /// The byte cap; a message larger than it takes the whole of it.
    pub max_in_flight_bytes: usize,
    pub breaker: Arc<Breaker>,
}

/// Receives until `shutdown` is cancelled.
pub async fn run(
    receiver: usize,
    client: Client,
    settings: SourceSettings,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut episode = RetryEpisode::new(format!("ReceiveMessage (receiver {receiver})"), settings.retry);
    let batch_size = settings.batch_size as u32;
    loop {
        // Capacity first: never receive a message there is no room for.
        let mut permits = tokio::select! {
            permits = outputs.in_flight.clone().acquire_many_owned(batch_size) => match permits {
                Ok(permits) => permits,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        tokio::select! {
            _ = outputs.breaker.wait_closed() => {}
            _ = shutdown.cancelled() => return,
        }
        metrics.receive_calls.inc();
        let sent_at = Instant::now();
        let call = client
            .receive_message()
            .queue_url(&settings.queue_url)
            .max_number_of_messages(settings.batch_size)
            .wait_time_seconds(settings.wait_time.as_secs() as i32)
            .visibility_timeout(settings.visibility_timeout.as_secs() as i32)
            .send();
        tokio::pin!(call);
        let call = tokio::select! {
            call = &mut call => call,
            _ = shutdown.cancelled() => {
                // SQS may already have handed this call messages, which would stay hidden for
                // a whole visibility timeout if the call were dropped. A long poll with
                // messages to give answers at once, so wait a moment for it, then give back
                // whatever it brought. A call still waiting after that found an empty queue.
                if let Ok(Ok(output)) = tokio::time::timeout(SHUTDOWN_RECEIVE_GRACE, &mut call).await {
                    for message in output.messages.unwrap_or_default() {
                        metrics.messages_received.inc();
                        if let (Some(message_id), Some(handle)) = (message.message_id, message.receipt_handle) {
                            let _ = outputs.give_back.send(Receipt { message_id, handle });
                        }
                    }
                }
                return;
            }
        };
        let messages = match call {
            Ok(output) => {
                episode.succeeded();
                output.messages.unwrap_or_default()
            }
            Err(e) => {
                metrics.receive_errors.inc();
                let delay = episode.failed(&DisplayErrorContext(&e));
                tokio::select! {
                    _ = sleep(delay) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        // The visibility timeout is counted from when the call was sent (SQS starts it a
        // little later), so the receipt is never trusted longer than it is valid.
        for message in messages {
            let Some(permit) = permits.split(1) else {
                // SQS returned more than asked for; take a permit the ordinary way.
                match outputs.in_flight.clone().acquire_owned().await {
                    Ok(permit) => handle(message, permit, sent_at, &settings, &outputs, &metrics).await,
                    Err(_) => return,
                }
                continue;
            };
            handle(message, permit, sent_at, &settings, &outputs, &metrics).await;
        }
    }
}

async fn handle(
    message: Message,
    permit: OwnedSemaphorePermit,
    received_at: Instant,
    settings: &SourceSettings,
    outputs: &Outputs,
    metrics: &Arc<Metrics>,
) {
    metrics.messages_received.inc();
    let message_id = message.message_id.unwrap_or_default();
    let Some(handle) = message.receipt_handle else {
        tracing::warn!(
            message_id,
            "message without a receipt handle; it cannot be deleted and is skipped"
        );
        return;
    };
    let receipt = Receipt { message_id, handle };
    let body = message.body.unwrap_or_default();
    let now = Utc::now();
    let time_processed = event::format_time_processed(now);
    let prepared = submission::decode(&body, &settings.time_bounds, now).and_then(|sub| {
        event::to_records(&sub, &time_processed, settings.partition_key, settings.max_record_bytes)
            .map(|(key, records)| (settings.partition_key.of(&sub), key, records))
    });
    let (key_id, partition_key, records) = match prepared {
        Ok(prepared) => prepared,
        Err(rejection) => {
            drop_invalid(&receipt, &body, &rejection, metrics);
            if let Some(dead_letter) = &outputs.dead_letter {
                if let Err(e) = dead_letter.forward(&receipt.message_id, &body, &rejection).await {
                    Metrics::outcome(&metrics.dead_letters, "failed", 1);
                    tracing::warn!(
                        message_id = receipt.message_id,
                        error = %e,
                        "invalid submission not forwarded to the dead-letter queue; it is kept in the queue and tried again when it comes back"
                    );
                    return;
                }
                Metrics::outcome(&metrics.dead_letters, "ok", 1);
            }
            let _ = outputs.deleter.send(receipt);
            return;
        }
    };
    metrics.submissions_valid.inc();
    if records.is_empty() {
        // Nothing to publish: the message is done.
        let _ = outputs.deleter.send(receipt);
        return;
    }
    let record_bytes: usize = records.iter().map(|r| r.len() + partition_key.len()).sum();
    let entry = LedgerEntry::new(
        NewEntry {
            receipt,
            event_count: records.len(),
            record_bytes,
            received_at,
            visibility_timeout: settings.visibility_timeout,
            delete_margin: settings.delete_margin,
            deleter: outputs.deleter.clone(),
            permit,
        },
        metrics.clone(),
    );
    // Watched from now on, so it stays hidden even while it waits for byte capacity.
    let _ = outputs.keeper.send(Arc::downgrade(&entry));
    let share = record_bytes.clamp(1, outputs.max_in_flight_bytes) as u32;
    match outputs.in_flight_bytes.clone().acquire_many_owned(share).await {
        Ok(bytes) => entry.hold_bytes(bytes),
        Err(_) => return,
    }
    let lane = &outputs.lanes[lane_for(&key_id, outputs.lanes.len())];
    for data in records {
        metrics.events_in_flight.inc();
        let record = OutboundRecord {
            data,
            partition_key: partition_key.clone(),
            message: entry.clone(),
            enqueued_at: Instant::now(),
        };
        if lane.send(record).await.is_err() {
            // The lane is gone only when the collector is stopping; the entry is dropped
            // unfinished and the message comes back.
            metrics.events_in_flight.dec();
            return;
        }
    }
}

fn drop_invalid(receipt: &Receipt, body: &str, rejection: &Rejection, metrics: &Metrics) {
    let body_prefix: String = body.chars().take(BODY_PREFIX_CHARS).collect();
    // The message id only: the receipt handle is never logged.
    crate::drop_log::dropped(&receipt.message_id, rejection, &body_prefix);
    metrics.invalid(rejection.label());
}
