//! Deleter: deletes finished messages from the queue in DeleteMessageBatch calls.
//!
//! Receipts arrive from the ledger (all events published) and from the source (invalid or
//! event-less submissions). A batch is sent when `QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE`
//! receipts are waiting or the oldest has waited `QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC`.
//!
//! A failed delete loses nothing: the message becomes visible again and is processed again,
//! and its events are published again with the same `event_id`s. So per-entry failures are
//! logged and counted, not retried; whole-call failures are retried a few times, and then only
//! while the receipts can still be valid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until};

use crate::ledger::Receipt;
use crate::metrics::Metrics;
use crate::retry::{RetryEpisode, RetryPolicy};

/// Whole-call attempts per batch before its messages are left to come back.
const MAX_ATTEMPTS: u64 = 5;

#[derive(Debug, Clone)]
pub struct DeleterSettings {
    pub queue_url: String,
    pub batch_size: usize,
    pub interval: Duration,
    pub retry: RetryPolicy,
}

/// Runs until every sender of receipts is gone, then deletes what is left and returns.
pub async fn run(
    client: Client,
    settings: DeleterSettings,
    mut receipts: mpsc::UnboundedReceiver<Receipt>,
    metrics: Arc<Metrics>,
) {
    let mut episode = RetryEpisode::new("DeleteMessageBatch", settings.retry);
    let mut pending: Vec<Receipt> = Vec::new();
    let mut oldest_at = Instant::now();
    loop {
        let deadline = oldest_at + settings.interval;
        tokio::select! {
            receipt = receipts.recv() => match receipt {
                Some(receipt) => {
                    if pending.is_empty() {
                        oldest_at = Instant::now();
                    }
                    pending.push(receipt);
                    if pending.len() >= settings.batch_size {
                        delete_batch(&client, &settings, std::mem::take(&mut pending), &mut episode, &metrics).await;
                    }
                }
                None => break,
            },
            _ = sleep_until(deadline.into()), if !pending.is_empty() => {
                delete_batch(&client, &settings, std::mem::take(&mut pending), &mut episode, &metrics).await;
            }
        }
    }
    for chunk in pending.chunks(settings.batch_size) {
        delete_batch(&client, &settings, chunk.to_vec(), &mut episode, &metrics).await;
    }
}

async fn delete_batch(
    client: &Client,
    settings: &DeleterSettings,
    batch: Vec<Receipt>,
    episode: &mut RetryEpisode,
    metrics: &Metrics,
) {
    // Entry ids only need to be distinct within the call: use the position.
    let entries: Result<Vec<_>, _> = batch
        .iter()
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&r.handle)
                .build()
        })
        .collect();
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(error = %e, "could not build a DeleteMessageBatch request; the messages will be delivered again");
            metrics.deleted("failed", batch.len() as u64);
            return;
        }
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let call = client
            .delete_message_batch()
            .queue_url(&settings.queue_url)
            .set_entries(Some(entries.clone()))
            .send()
            .await;
        match call {
            Ok(output) => {
                episode.succeeded();
                metrics.deleted("ok", output.successful().len() as u64);
                for failure in output.failed() {
                    let message_id = failure
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| batch.get(i))
                        .map(|r| r.message_id.as_str())
                        .unwrap_or("unknown");
                    tracing::warn!(
                        message_id,
                        code = failure.code(),
                        reason = failure.message().unwrap_or(""),
                        sender_fault = failure.sender_fault(),
                        "delete failed; the message will be delivered again and its events published again with the same ids"
                    );
                    metrics.deleted("failed", 1);
                }
                return;
            }
            Err(e) => {
                let delay = episode.failed(&DisplayErrorContext(&e));
                if attempt == MAX_ATTEMPTS {
                    break;
                }
                sleep(delay).await;
            }
        }
    }
    tracing::warn!(
        messages = batch.len(),
        attempts = MAX_ATTEMPTS,
        "giving up on a DeleteMessageBatch call; its messages will be delivered again"
    );
    metrics.deleted("failed", batch.len() as u64);
}
