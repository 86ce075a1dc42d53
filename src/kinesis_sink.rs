//! Kinesis sink: buffers outbound records and publishes them with PutRecords.
//!
//! The sink runs as `DATA_STREAM_CONCURRENCY` independent *lanes*. The source routes every
//! event of a submission to the same lane (by partition key), and each lane has at most one
//! PutRecords call in flight, so a submission's events are written in order.
//!
//! PutRecords is not atomic: any record can fail (per-record `ErrorCode`, even on HTTP 200), and
//! the records after it in the same call may still succeed. When event *k* of a submission
//! fails, events *k..n* of that submission in the call are put back at the head of the buffer,
//! in order, and sent again, so the shard always holds `0..n` as an in-order subsequence. Only
//! records with a successful result are confirmed to the ledger.
//!
//! Every call's outcome feeds the circuit breaker. At shutdown a lane gives back (through the
//! visibility keeper) the messages none of whose events has been sent yet, and finishes the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, PutRecordsResultEntry};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::ledger::{GiveUp, LedgerEntry, Receipt};
use crate::metrics::Metrics;
use crate::retry::{RetryEpisode, RetryPolicy};

/// One event on its way to the stream.
pub struct OutboundRecord {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub message: Arc<LedgerEntry>,
    pub enqueued_at: Instant,
}

impl OutboundRecord {
    /// What the record counts against the PutRecords size limits: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The lane a partition key's records go to: stable, so that one submission never spans lanes.
pub fn lane_for(partition_key: &uuid::Uuid, lanes: usize) -> usize {
    (partition_key.as_u128() % lanes as u128) as usize
}

#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub stream_name: String,
    pub max_records: usize,
    pub max_request_bytes: usize,
    pub flush_interval: Duration,
    pub retry: RetryPolicy,
}

/// What every lane shares.
#[derive(Clone)]
pub struct LaneContext {
    pub client: Client,
    pub settings: SinkSettings,
    pub breaker: Arc<Breaker>,
    /// Receipts of messages to give back to the queue (the visibility keeper's input).
    pub give_back: mpsc::UnboundedSender<Receipt>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// Runs one lane until its input is closed and everything it holds is published (or given up
/// because its receipt expired, or given back at shutdown).
pub async fn run_lane(lane: usize, context: LaneContext, mut input: mpsc::Receiver<OutboundRecord>) {
    let shutdown = context.shutdown.clone();
    let mut lane = Lane {
        buffer: VecDeque::new(),
        buffered_bytes: 0,
        episode: RetryEpisode::new(
            format!("PutRecords to {} (lane {lane})", context.settings.stream_name),
            context.settings.retry,
        ),
        stopping: false,
        retry_at: None,
        context,
    };
    // Two calls' worth: one being sent, one filling. Beyond that the lane stops reading its
    // channel, the channel fills, and the source stops receiving from SQS.
    let capacity = lane.context.settings.max_records * 2;
    let mut closed = false;
    loop {
        // Checked here too: a lane busy retrying full batches may not reach a select below.
        if !lane.stopping && shutdown.is_cancelled() {
            lane.stop();
        }
        if lane.stopping {
            // Take in whatever the sources still hand over, so that messages waiting in the
            // channel are given back now rather than after the lane's retries.
            while let Ok(record) = input.try_recv() {
                lane.push(record);
            }
        }
        if let Some(retry_at) = lane.retry_at {
            // Backing off after a failed call: keep taking records in meanwhile.
            tokio::select! {
                _ = sleep_until(retry_at.into()) => lane.retry_at = None,
                record = input.recv(), if !closed && lane.buffer.len() < capacity => match record {
                    Some(record) => lane.push(record),
                    None => closed = true,
                },
                _ = shutdown.cancelled(), if !lane.stopping => lane.stop(),
            }
            continue;
        }
        if !lane.buffer.is_empty() && (closed || lane.has_full_batch()) {
            lane.send_batch().await;
            continue;
        }
        if closed {
            break;
        }
        let deadline = lane
            .buffer
            .front()
            .map(|r| r.enqueued_at + lane.context.settings.flush_interval);
        // Records already waiting come first: after a slow call the flush deadline of the
        // records queued meanwhile has passed, and a fair choice would send them one or two
        // per call, slowing the lane to a crawl just when it has the most to send.
        tokio::select! {
            biased;
            record = input.recv(), if lane.buffer.len() < capacity => match record {
                Some(record) => lane.push(record),
                None => closed = true,
            },
            _ = shutdown.cancelled(), if !lane.stopping => lane.stop(),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                lane.send_batch().await;
            }
        }
    }
}

struct Lane {
    buffer: VecDeque<OutboundRecord>,
    buffered_bytes: usize,
    episode: RetryEpisode,
    /// Shutdown has begun: messages not started are given back instead of sent.
    stopping: bool,
    /// After a failed call, when to send again.
    retry_at: Option<Instant>,
    context: LaneContext,
}

/// What became of one PutRecords call's records.
#[derive(Default)]
struct Settled {
    confirmed: Vec<OutboundRecord>,
    /// To send again, in their original order.
    resend: Vec<OutboundRecord>,
    /// Failed records by error code.
    failed_by_code: HashMap<String, u64>,
    /// Records that succeeded but follow a failed event of their submission.
    resent_after_failure: u64,
}

impl Lane {
    fn push(&mut self, record: OutboundRecord) {
        if self.stopping && !record.message.started() {
            self.give_back(record);
            return;
        }
        if record.message.is_given_up() {
            self.context.metrics.events_in_flight.dec();
            return;
        }
        self.buffered_bytes += record.size();
        self.buffer.push_back(record);
    }

    /// Shutdown: gives back every buffered message none of whose events has been sent.
    fn stop(&mut self) {
        self.stopping = true;
        let buffered = std::mem::take(&mut self.buffer);
        self.buffered_bytes = 0;
        tracing::debug!(buffered = buffered.len(), "lane stopping");
        for record in buffered {
            self.push(record);
        }
    }

    /// Drops a record of a message that goes back to the queue untouched; the first record of
    /// the message sends its receipt to the keeper.
    fn give_back(&self, record: OutboundRecord) {
        if record.message.give_up(GiveUp::Released) {
            tracing::debug!(
                message_id = record.message.message_id(),
                "giving the message back to the queue"
            );
            let _ = self.context.give_back.send(record.message.receipt().clone());
        }
        self.context.metrics.events_in_flight.dec();
    }

    fn pop(&mut self) -> Option<OutboundRecord> {
        let record = self.buffer.pop_front()?;
        self.buffered_bytes -= record.size();
        Some(record)
    }

    fn has_full_batch(&self) -> bool {
        let settings = &self.context.settings;
        self.buffer.len() >= settings.max_records || self.buffered_bytes >= settings.max_request_bytes
    }

    /// Puts records back at the head of the buffer, keeping their order.
    fn push_front_in_order(&mut self, records: Vec<OutboundRecord>) {
        for record in records.into_iter().rev() {
            self.buffered_bytes += record.size();
            self.buffer.push_front(record);
        }
    }

    /// Takes the next call's records from the head of the buffer, within the record and byte
    /// limits, and drops the records of messages whose receipt has expired.
    fn next_batch(&mut self) -> Vec<OutboundRecord> {
        let now = Instant::now();
        let (max_records, max_bytes) = (
            self.context.settings.max_records,
            self.context.settings.max_request_bytes,
        );
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.buffer.front() {
            if front.message.is_given_up() || front.message.receipt_expired(now) {
                if let Some(record) = self.pop() {
                    self.abandon(record);
                }
                continue;
            }
            let size = front.size();
            if batch.len() == max_records || bytes + size > max_bytes {
                break;
            }
            bytes += size;
            batch.extend(self.pop());
        }
        batch
    }

    fn abandon(&self, record: OutboundRecord) {
        if record.message.give_up(GiveUp::Expired) {
            tracing::warn!(
                message_id = record.message.message_id(),
                unpublished_events = record.message.outstanding(),
                "receipt expired before all events were published (visibility could not be extended further); the message will be delivered again"
            );
            self.context.metrics.messages_abandoned.inc();
        }
        self.context.metrics.events_in_flight.dec();
    }

    async fn send_batch(&mut self) {
        let batch = self.next_batch();
        if batch.is_empty() {
            return;
        }
        for record in &batch {
            record.message.mark_started();
        }
        let metrics = self.context.metrics.clone();
        let started = Instant::now();
        let entries: Result<Vec<_>, _> = batch
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.clone()))
                    .partition_key(&r.partition_key)
                    .build()
            })
            .collect();
        let result = match entries {
            Ok(entries) => self
                .context
                .client
                .put_records()
                .stream_name(&self.context.settings.stream_name)
                .set_records(Some(entries))
                .send()
                .await
                .map_err(|e| DisplayErrorContext(e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        metrics.put_records_duration.observe(started.elapsed().as_secs_f64());
        let outcome = result.and_then(|output| {
            if output.records().len() == batch.len() {
                Ok(output)
            } else {
                Err(format!(
                    "PutRecords answered {} results for {} records",
                    output.records().len(),
                    batch.len()
                ))
            }
        });
        match outcome {
            Ok(output) => {
                let sent = batch.len();
                // What each shard took, for the shard supervisor: every written record counts,
                // resends included, as they use the shard's capacity all the same.
                metrics.shard_writes.add_response(
                    batch
                        .iter()
                        .zip(output.records())
                        .filter(|(_, result)| result.error_code().is_none())
                        .filter_map(|(record, result)| Some((result.shard_id()?, record.size()))),
                );
                let settled = settle(batch, output.records());
                if settled.confirmed.is_empty() {
                    self.context.breaker.failed();
                } else {
                    self.context.breaker.succeeded();
                }
                for record in settled.confirmed {
                    record.message.confirm_one();
                    metrics.events_published.inc();
                    metrics.events_in_flight.dec();
                }
                if settled.resend.is_empty() {
                    metrics.put_records_call("ok");
                    self.episode.succeeded();
                    return;
                }
                metrics.put_records_call("partial");
                for (code, n) in &settled.failed_by_code {
                    metrics.records_retried(code, *n);
                }
                metrics.records_retried("resend_after_failure", settled.resent_after_failure);
                let reason = format!(
                    "{} of {} records failed ({:?}); resending them and the later events of their submissions",
                    settled.failed_by_code.values().sum::<u64>(),
                    sent,
                    settled.failed_by_code
                );
                self.push_front_in_order(settled.resend);
                let delay = self.episode.failed(&reason);
                self.retry_at = Some(Instant::now() + delay);
            }
            Err(error) => {
                self.context.breaker.failed();
                metrics.put_records_call("error");
                metrics.records_retried("call_failed", batch.len() as u64);
                self.push_front_in_order(batch);
                let delay = self.episode.failed(&error);
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }
}

/// Splits a call's records by their results (same length and order as the request). Once an
/// event of a message fails, every later event of that message in the call is sent again too.
fn settle(batch: Vec<OutboundRecord>, results: &[PutRecordsResultEntry]) -> Settled {
    let mut settled = Settled::default();
    let mut failed_messages: HashSet<*const LedgerEntry> = HashSet::new();
    for (record, result) in batch.into_iter().zip(results) {
        let message = Arc::as_ptr(&record.message);
        if failed_messages.contains(&message) {
            if result.error_code().is_none() {
                settled.resent_after_failure += 1;
            } else {
                *settled.failed_by_code.entry(code_of(result)).or_default() += 1;
            }
            settled.resend.push(record);
        } else if result.error_code().is_some() {
            failed_messages.insert(message);
            *settled.failed_by_code.entry(code_of(result)).or_default() += 1;
            settled.resend.push(record);
        } else {
            settled.confirmed.push(record);
        }
    }
    settled
}

fn code_of(result: &PutRecordsResultEntry) -> String {
    result.error_code().unwrap_or("unknown").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::NewEntry;
    use tokio::sync::Semaphore;

    fn message(id: &str, events: usize, tx: &mpsc::UnboundedSender<Receipt>) -> Arc<LedgerEntry> {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let receipt = Receipt {
            message_id: id.into(),
            handle: format!("handle-{id}"),
        };
        LedgerEntry::new(
            NewEntry {
                receipt,
                event_count: events,
                record_bytes: 0,
                received_at: Instant::now(),
                visibility_timeout: Duration::from_secs(60),
                delete_margin: Duration::from_secs(1),
                deleter: tx.clone(),
                permit,
            },
            Arc::new(Metrics::new()),
        )
    }

    fn record(message: &Arc<LedgerEntry>, index: usize) -> OutboundRecord {
        OutboundRecord {
            data: format!("{}:{index}", message.message_id()).into_bytes(),
            partition_key: message.message_id().to_owned(),
            message: message.clone(),
            enqueued_at: Instant::now(),
        }
    }

    fn ok() -> PutRecordsResultEntry {
        PutRecordsResultEntry::builder()
            .shard_id("s")
            .sequence_number("1")
            .build()
    }

    fn throttled() -> PutRecordsResultEntry {
        PutRecordsResultEntry::builder()
            .error_code("ProvisionedThroughputExceededException")
            .error_message("slow down")
            .build()
    }

    fn names(records: &[OutboundRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.data.clone()).unwrap())
            .collect()
    }

    #[test]
    fn a_failed_event_sends_its_submission_suffix_again_in_order() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = message("a", 4, &tx);
        let b = message("b", 2, &tx);
        // Interleaved as two submissions on one lane could be.
        let batch = vec![
            record(&a, 0),
            record(&b, 0),
            record(&a, 1),
            record(&a, 2),
            record(&b, 1),
            record(&a, 3),
        ];
        let results = [ok(), ok(), throttled(), ok(), ok(), throttled()];
        let settled = settle(batch, &results);
        assert_eq!(names(&settled.confirmed), ["a:0", "b:0", "b:1"]);
        assert_eq!(names(&settled.resend), ["a:1", "a:2", "a:3"]);
        assert_eq!(settled.failed_by_code["ProvisionedThroughputExceededException"], 2);
        assert_eq!(settled.resent_after_failure, 1);
    }

    #[test]
    fn all_ok_confirms_everything() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = message("a", 2, &tx);
        let settled = settle(vec![record(&a, 0), record(&a, 1)], &[ok(), ok()]);
        assert_eq!(settled.confirmed.len(), 2);
        assert!(settled.resend.is_empty());
    }

    #[test]
    fn lanes_are_stable_per_key() {
        let id = uuid::Uuid::from_u128(12345);
        assert_eq!(lane_for(&id, 4), lane_for(&id, 4));
        assert_eq!(lane_for(&id, 1), 0);
        assert!(lane_for(&uuid::Uuid::from_u128(u128::MAX), 7) < 7);
    }
}
