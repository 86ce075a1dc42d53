//! Deleter: deletes finished messages from the queue in DeleteMessageBatch calls.
//!
//! Messages arrive from the sink lanes (all events published) and from the source (invalid or
//! event-less submissions). A batch is sent when `QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE`
//! receipts are waiting or the oldest has waited `QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC`. Up
//! to `QUEUE_DELETE_CONCURRENCY` calls are in flight at once, so deleting keeps up at any
//! round-trip time: one call at a time deletes at most 10 messages per round trip.
//!
//! A message stays in flight, and so keeps its slot of the cap and its visibility extensions,
//! until its delete is answered: the channel here never holds more messages than the cap.
//!
//! A failed delete loses nothing: the message becomes visible again and is processed again, and
//! its events are published again with the same `event_id`s. Whole-call failures and entries
//! that SQS marks as not the sender's fault are retried while the receipts can still be valid;
//! other per-entry failures are logged and counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::message::InFlightMessage;
use crate::aws::{EntryFailure, Queue, batch_results};
use crate::liveness::Activity;
use crate::metrics::kit::{CallDurations, Counters, add, call_duration, start_at_zero, timed};
use crate::retry::{RetryEpisode, RetryPolicy};
use prometheus_client::metrics::histogram::Histogram;

/// The deleter's settings: its section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleterSettings {
    /// Receipts per DeleteMessageBatch call (`QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE`).
    pub batch_size: usize,
    /// Longest a finished message waits for a fuller batch (`QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC`).
    pub interval: Duration,
    /// DeleteMessageBatch calls in flight at once (`QUEUE_DELETE_CONCURRENCY`).
    pub concurrency: usize,
}

/// A finished message on its way to being deleted; counted in the deleter's backlog gauge
/// until its delete is answered or given up.
pub(crate) struct Finished {
    entry: Arc<InFlightMessage>,
    backlog: Gauge,
}

impl Finished {
    fn new(entry: Arc<InFlightMessage>, backlog: &Gauge) -> Finished {
        entry.mark_finished();
        backlog.inc();
        Finished {
            entry,
            backlog: backlog.clone(),
        }
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.backlog.dec();
    }
}

impl std::ops::Deref for Finished {
    type Target = InFlightMessage;
    fn deref(&self) -> &InFlightMessage {
        &self.entry
    }
}

/// Where finished messages are handed to the deleter.
#[derive(Clone)]
pub(crate) struct DeleteQueue {
    tx: mpsc::Sender<Finished>,
    backlog: Gauge,
}

impl DeleteQueue {
    /// The queue and its receiving end. `capacity` is the in-flight message cap: every message
    /// in the channel holds one of its slots, so the channel always has room.
    pub(crate) fn channel(capacity: usize, metrics: &DeleterMetrics) -> (DeleteQueue, mpsc::Receiver<Finished>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queue = DeleteQueue {
            tx,
            backlog: metrics.messages_awaiting_delete.clone(),
        };
        (queue, rx)
    }

    /// Hands a finished message over without waiting. Should the channel be full after all, a
    /// task waits for room instead of the caller (a sink lane in the middle of a call's results).
    pub(crate) fn push(&self, entry: Arc<InFlightMessage>) {
        match self.tx.try_send(Finished::new(entry, &self.backlog)) {
            Ok(()) => {}
            Err(TrySendError::Full(entry)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(entry).await;
                });
            }
            // Only when stopping past the drain deadline: the message comes back.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Hands a finished message over, waiting for room.
    pub(crate) async fn send(&self, entry: Arc<InFlightMessage>) {
        let _ = self.tx.send(Finished::new(entry, &self.backlog)).await;
    }
}

/// Runs until every sender of finished messages is gone, then deletes what is left and returns.
pub(crate) async fn run(
    queue: Queue,
    settings: DeleterSettings,
    retry: RetryPolicy,
    mut input: mpsc::Receiver<Finished>,
    metrics: DeleterMetrics,
    activity: Arc<Activity>,
) {
    let episode = Arc::new(Mutex::new(RetryEpisode::new("DeleteMessageBatch", retry)));
    let mut pending: Vec<Finished> = Vec::new();
    let mut oldest_at = Instant::now();
    let mut calls: JoinSet<()> = JoinSet::new();
    let mut open = true;
    loop {
        // Send every batch that is due, as far as the concurrency allows.
        while calls.len() < settings.concurrency
            && !pending.is_empty()
            && (pending.len() >= settings.batch_size || !open || Instant::now() >= oldest_at + settings.interval)
        {
            let take = pending.len().min(settings.batch_size);
            let batch: Vec<_> = pending.drain(..take).collect();
            calls.spawn(delete_batch(
                queue.clone(),
                retry,
                batch,
                episode.clone(),
                metrics.clone(),
                activity.clone(),
            ));
        }
        if pending.is_empty() && calls.is_empty() {
            if !open {
                return;
            }
            activity.idle();
        } else {
            activity.busy();
        }
        let deadline = oldest_at + settings.interval;
        tokio::select! {
            done = calls.join_next(), if !calls.is_empty() => {
                if let Some(Err(e)) = done
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
            entry = input.recv(), if open => match entry {
                Some(entry) => {
                    if pending.is_empty() {
                        oldest_at = Instant::now();
                    }
                    pending.push(entry);
                }
                None => open = false,
            },
            _ = sleep_until(deadline), if !pending.is_empty() && calls.len() < settings.concurrency => {}
        }
    }
}

async fn delete_batch(
    queue: Queue,
    retry: RetryPolicy,
    mut batch: Vec<Finished>,
    episode: Arc<Mutex<RetryEpisode>>,
    metrics: DeleterMetrics,
    activity: Arc<Activity>,
) {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = timed(&metrics.delete_duration, call(&queue, &batch)).await;
        activity.progressed();
        let delay = match result {
            Ok(results) => {
                if let Ok(mut episode) = episode.lock() {
                    episode.succeeded();
                }
                metrics.deleted("ok", results.iter().filter(|r| r.is_ok()).count() as u64);
                let mut retry_positions = Vec::new();
                for (position, failure) in results.into_iter().enumerate().filter_map(|(i, r)| Some((i, r.err()?))) {
                    if !failure.sender_fault {
                        retry_positions.push(position);
                        continue;
                    }
                    let entry = &batch[position];
                    tracing::warn!(
                        message_id = entry.message_id(),
                        code = failure.code,
                        reason = entry.receipt().redact(&failure.message),
                        "delete refused; the message will be delivered again and its events published again with the same ids"
                    );
                    metrics.deleted("failed", 1);
                }
                if retry_positions.is_empty() {
                    return;
                }
                // SQS's own trouble: worth another try of just those entries.
                metrics.deletes_retried.inc_by(retry_positions.len() as u64);
                batch = batch
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| retry_positions.contains(i))
                    .map(|(_, e)| e)
                    .collect();
                retry.initial
            }
            Err(error) => {
                let error = batch.iter().fold(error, |text, e| e.receipt().redact(&text));
                metrics.deletes_retried.inc_by(batch.len() as u64);
                match episode.lock() {
                    Ok(mut episode) => episode.failed(&error),
                    Err(_) => retry.max,
                }
            }
        };
        // Worth retrying only while a receipt can still be valid: after that SQS has made the
        // message visible again, and whoever receives it next deletes it.
        let retry_at = Instant::now() + delay;
        let (expired, live): (Vec<Finished>, Vec<Finished>) =
            batch.into_iter().partition(|entry| entry.lease.ended(retry_at));
        batch = live;
        if !expired.is_empty() {
            // Each is a duplicate downstream, as a refused delete is: counted beside those.
            metrics.deleted("expired", expired.len() as u64);
            tracing::warn!(
                attempts = attempt,
                messages = expired.len(),
                first_message_id = expired[0].message_id(),
                "giving up on deleting messages whose receipts have expired; they will be delivered again and their events published again with the same ids"
            );
        }
        if batch.is_empty() {
            return;
        }
        sleep(delay).await;
    }
}

/// One DeleteMessageBatch call; the result of each entry in order.
async fn call(queue: &Queue, batch: &[Finished]) -> Result<Vec<Result<(), EntryFailure>>, String> {
    // Entry ids only need to be distinct within the call: use the position.
    let entries = batch
        .iter()
        .enumerate()
        .map(|(i, e)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&e.receipt().handle)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let output = queue
        .client
        .delete_message_batch()
        .queue_url(&queue.url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| DisplayErrorContext(e).to_string())?;
    Ok(batch_results(
        batch.len(),
        output.successful().iter().map(|ok| ok.id()),
        output.failed(),
    ))
}

/// The deleter's metrics.
#[derive(Clone)]
pub struct DeleterMetrics {
    pub deletes: Counters,
    pub deletes_retried: Counter,
    pub messages_awaiting_delete: Gauge,
    pub delete_duration: Histogram,
}

impl DeleterMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry, calls: &CallDurations) -> Self {
        let section = DeleterMetrics {
            delete_duration: call_duration(calls, "DeleteMessageBatch"),
            deletes: add(
                registry,
                "deletes",
                "Message deletions by outcome: ok; failed (refused by SQS); expired (given up after retries because the receipt expired). Each failed or expired one is delivered again",
                Counters::default(),
            ),
            deletes_retried: add(
                registry,
                "deletes_retried",
                "Delete entries sent again: after a whole DeleteMessageBatch call failed or timed out, or an entry failed through no fault of the sender",
                Counter::default(),
            ),
            messages_awaiting_delete: add(
                registry,
                "messages_awaiting_delete",
                "Finished messages handed to the deleter whose delete is not answered yet (the deleter's backlog)",
                Gauge::default(),
            ),
        };
        start_at_zero(&section.deletes, "outcome", &["ok", "failed", "expired"]);
        section
    }

    pub(crate) fn deleted(&self, outcome: &'static str, n: u64) {
        self.deletes.get_or_create(&[("outcome", outcome)]).inc_by(n);
    }
}
