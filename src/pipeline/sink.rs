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
//! records with a successful result are confirmed to their message's event counter.
//!
//! Failures are classified. Throttling, 5xx, timeouts and network errors are retried with
//! backoff. A record the stream refuses for good, named by the error (too large for it,
//! invalid), stops its submission so that one poison record cannot stop its lane: with a
//! dead-letter queue the body is forwarded there and the message deleted once that send
//! succeeded; without one the message stays in the queue, its visibility left to expire, for
//! the queue's own redrive policy to take. Nothing valid is ever deleted unpublished. A refusal
//! that names no record is the request's or the stream's fault, not a record's: the lane halves
//! its calls (a request too large for the endpoint gets through that way) and retries with
//! backoff, dropping nothing. An error no record can get past (access denied, KMS key
//! unusable, stream gone) opens the circuit breaker at once with that reason, and the lane
//! keeps retrying with backoff until it is fixed.
//!
//! Every call's outcome feeds the circuit breaker. At shutdown a lane gives back (through the
//! visibility keeper) the messages none of whose events has been sent yet, and finishes the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, PutRecordsResultEntry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::dead_letter::DeadLetterQueue;
use super::deleter::DeleteQueue;
use super::message::{GiveUp, InFlightMessage, Receipt};
use super::shard_tally::ShardTally;
use crate::liveness::Activity;
use crate::metrics::kit::{CallDurations, Counters, add, call_duration, start_at_zero};
use crate::retry::{RetryEpisode, RetryPolicy};
use telemetry_format::event::RECORD_OVERHEAD_BYTES;

/// One event on its way to the stream.
///
/// It counts in `telemetry_collector_events_in_flight` from [`OutboundRecord::new`] until it is dropped,
/// whichever way it leaves the pipeline (published, given back, abandoned, refused, or left
/// unfinished at shutdown): no path has to remember to count it out.
pub struct OutboundRecord {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub message: Arc<InFlightMessage>,
    pub enqueued_at: Instant,
    _counted: CountedEvent,
}

/// A record's place in the gauge of events in flight.
struct CountedEvent(Gauge);

impl Drop for CountedEvent {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl OutboundRecord {
    /// An event of `message` entering the pipeline, counted in `in_flight` until dropped.
    pub fn new(data: Vec<u8>, partition_key: String, message: Arc<InFlightMessage>, in_flight: &Gauge) -> Self {
        in_flight.inc();
        OutboundRecord {
            data,
            partition_key,
            message,
            enqueued_at: Instant::now(),
            _counted: CountedEvent(in_flight.clone()),
        }
    }

    /// What the record counts against the PutRecords size limits: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The lane a partition key's records go to: stable, so that one submission never spans lanes.
pub fn lane_for(partition_key: &uuid::Uuid, lanes: usize) -> usize {
    (partition_key.as_u128() % lanes as u128) as usize
}

/// The sink's settings: its section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    /// Lanes, each with one PutRecords call at a time (`DATA_STREAM_CONCURRENCY`).
    pub lanes: usize,
    /// Records per PutRecords call (`DATA_STREAM_MAX_BUFFER_SIZE`).
    pub max_records: usize,
    /// Bytes per PutRecords call (`DATA_STREAM_MAX_REQUEST_BYTES`).
    pub max_request_bytes: usize,
    /// Longest a record waits for a fuller call (`DATA_STREAM_FLUSH_INTERVAL_SEC`).
    pub flush_interval: Duration,
}

/// What every lane shares.
#[derive(Clone)]
pub struct LaneContext {
    pub client: Client,
    pub stream_name: String,
    pub settings: SinkSettings,
    pub retry: RetryPolicy,
    pub breaker: Arc<Breaker>,
    /// Receipts of messages to give back to the queue (the visibility keeper's input).
    pub give_back: mpsc::UnboundedSender<Receipt>,
    /// Finished messages.
    pub deleter: DeleteQueue,
    /// Where a submission the stream refuses goes, when dead-lettering is on.
    pub dead_letter: Option<DeadLetterQueue>,
    /// What each shard took.
    pub shard_tally: Arc<ShardTally>,
    pub metrics: SinkMetrics,
    pub shutdown: CancellationToken,
}

/// Runs one lane until its input is closed and everything it holds is published (or given up
/// because its receipt expired, or given back at shutdown).
pub async fn run_lane(
    lane: usize,
    context: LaneContext,
    mut input: mpsc::Receiver<OutboundRecord>,
    activity: Arc<Activity>,
) {
    let shutdown = context.shutdown.clone();
    let mut lane = Lane::new(lane, context, activity);
    // Two calls' worth: one being sent, one filling. Beyond that the lane stops reading its
    // channel, the channel fills, and the source stops receiving from SQS.
    let capacity = lane.context.settings.max_records * 2;
    let mut closed = false;
    loop {
        if lane.buffer.is_empty() {
            lane.activity.idle();
        } else {
            lane.activity.busy();
        }
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
    /// Records per call: the configured maximum, halved while looking for a record the stream
    /// refuses without saying which.
    batch_cap: usize,
    /// Submissions dropped as refused with no record written in between: a refusal that every
    /// record meets is the stream's problem, not the records'.
    refusals_in_a_row: u32,
    activity: Arc<Activity>,
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
    fn new(index: usize, context: LaneContext, activity: Arc<Activity>) -> Lane {
        Lane {
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            batch_cap: context.settings.max_records,
            refusals_in_a_row: 0,
            activity,
            episode: RetryEpisode::new(
                format!("PutRecords to {} (lane {index})", context.stream_name),
                context.retry,
            ),
            stopping: false,
            retry_at: None,
            context,
        }
    }

    fn push(&mut self, record: OutboundRecord) {
        if self.stopping && !record.message.started() {
            self.give_back(record);
            return;
        }
        if record.message.is_given_up() {
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
        if record.message.give_up(GiveUp::GivenBack) {
            tracing::debug!(
                message_id = record.message.message_id(),
                "giving the message back to the queue"
            );
            let _ = self.context.give_back.send(record.message.receipt().clone());
        }
    }

    fn pop(&mut self) -> Option<OutboundRecord> {
        let record = self.buffer.pop_front()?;
        self.buffered_bytes -= record.size();
        Some(record)
    }

    fn has_full_batch(&self) -> bool {
        let settings = &self.context.settings;
        self.buffer.len() >= self.batch_cap || self.buffered_bytes >= settings.max_request_bytes
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
        let (max_records, max_bytes) = (self.batch_cap, self.context.settings.max_request_bytes);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.buffer.front() {
            if front.message.is_given_up() || front.message.lease.expiring(now) {
                // Refused and given-back messages are already accounted for; only an expiry is news.
                if let Some(record) = self.pop() {
                    self.give_up_expired(record);
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

    fn give_up_expired(&self, record: OutboundRecord) {
        if !record.message.is_given_up() && record.message.give_up(GiveUp::Expired) {
            tracing::warn!(
                message_id = record.message.message_id(),
                unpublished_events = record.message.outstanding(),
                "receipt expired before all events were published (visibility could not be extended further); the message will be delivered again"
            );
            self.context.metrics.messages_abandoned.inc();
        }
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
        let result = self.put_records(&batch).await;
        self.activity.progressed();
        metrics.put_records_duration.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(results) => self.settle_answer(batch, &results),
            Err(failure) => self.call_failed(batch, failure).await,
        }
    }

    /// One PutRecords call; its per-record results, as many as records sent.
    async fn put_records(&self, batch: &[OutboundRecord]) -> Result<Vec<PutRecordsResultEntry>, CallFailure> {
        let entries = batch
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.clone()))
                    .partition_key(&r.partition_key)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CallFailure::Transient(e.to_string()))?;
        let output = self
            .context
            .client
            .put_records()
            .stream_name(&self.context.stream_name)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| classify_call(&e))?;
        if output.records().len() != batch.len() {
            return Err(CallFailure::Transient(format!(
                "PutRecords answered {} results for {} records",
                output.records().len(),
                batch.len()
            )));
        }
        Ok(output.records)
    }

    /// An answered call: confirms what was written, puts back what was not.
    fn settle_answer(&mut self, batch: Vec<OutboundRecord>, results: &[PutRecordsResultEntry]) {
        let metrics = self.context.metrics.clone();
        let sent = batch.len();
        // What each shard took, for the shard supervisor: every written record counts,
        // resends included, as they use the shard's capacity all the same.
        self.context.shard_tally.add_response(
            batch
                .iter()
                .zip(results)
                .filter(|(_, result)| result.error_code().is_none())
                .filter_map(|(record, result)| Some((result.shard_id()?, record.size()))),
        );
        let settled = settle(batch, results);
        if settled.confirmed.is_empty() {
            self.context.breaker.failed();
        } else {
            self.context.breaker.succeeded();
            self.refusals_in_a_row = 0;
        }
        for record in settled.confirmed {
            if record.message.confirm_one(record.size() + RECORD_OVERHEAD_BYTES) {
                self.context.deleter.push(record.message.clone());
            }
            metrics.events_published.inc();
        }
        if settled.resend.is_empty() {
            metrics.put_records_call("ok");
            self.episode.succeeded();
            // Calls were halved to find a refused record; grow them back.
            self.batch_cap = (self.batch_cap * 2).min(self.context.settings.max_records);
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
        if let Some(code) = settled.failed_by_code.keys().find(|code| stream_unusable(code)) {
            self.context
                .breaker
                .open_because(format!("PutRecords records fail with {code}"));
        }
        self.push_front_in_order(settled.resend);
        let delay = self.episode.failed(&reason);
        self.retry_at = Some(Instant::now() + delay);
    }

    /// A call that failed whole.
    async fn call_failed(&mut self, batch: Vec<OutboundRecord>, failure: CallFailure) {
        let metrics = self.context.metrics.clone();
        let error = match failure {
            CallFailure::Refused { record, reason } => {
                metrics.put_records_call("refused");
                let Some(culprit) = record.filter(|i| *i < batch.len()) else {
                    // No record named: the request or the stream is at fault. Smaller calls
                    // get past a request-size limit; anything else waits with backoff like any
                    // failed call, and nothing is dropped for it.
                    self.batch_cap = (batch.len() / 2).max(1);
                    self.context.breaker.failed();
                    metrics.put_records_call("error");
                    metrics.records_retried("call_failed", batch.len() as u64);
                    let reason = format!(
                        "PutRecords refused naming no record ({reason}); retrying in calls of {}",
                        self.batch_cap
                    );
                    self.push_front_in_order(batch);
                    let delay = self.episode.failed(&reason);
                    self.retry_at = Some(Instant::now() + delay);
                    return;
                };
                self.refusals_in_a_row += 1;
                if self.refusals_in_a_row <= MAX_REFUSALS_IN_A_ROW {
                    let message = batch[culprit].message.clone();
                    self.refuse(&message, &reason).await;
                    let (_dropped, rest): (Vec<_>, Vec<_>) =
                        batch.into_iter().partition(|r| Arc::ptr_eq(&r.message, &message));
                    // The others were not written either: they go again at once.
                    self.push_front_in_order(rest);
                    return;
                }
                // Every record meets it: not the records' fault. Keep them and wait.
                let reason = format!("PutRecords refuses every record: {reason}");
                self.context.breaker.open_because(reason.clone());
                reason
            }
            CallFailure::StreamUnusable(reason) => {
                self.context.breaker.open_because(reason.clone());
                reason
            }
            CallFailure::Transient(reason) => {
                self.context.breaker.failed();
                reason
            }
        };
        metrics.put_records_call("error");
        metrics.records_retried("call_failed", batch.len() as u64);
        self.push_front_in_order(batch);
        let delay = self.episode.failed(&error);
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Stops a submission one of whose records the stream refuses for good: logged once and
    /// counted; with a dead-letter queue its body is forwarded and the message deleted once that
    /// send succeeded; otherwise (or when the send fails) the message stays in the queue, not
    /// extended, and comes back when its visibility ends, for the queue's redrive policy to
    /// take. Its events not yet published are dropped from the lane either way.
    async fn refuse(&self, message: &Arc<InFlightMessage>, reason: &str) {
        if !message.give_up(GiveUp::Refused) {
            return;
        }
        let metrics = &self.context.metrics;
        metrics.refused(refusal_label(reason));
        let (Some(dead_letter), Some(body)) = (&self.context.dead_letter, message.body()) else {
            tracing::warn!(
                message_id = message.message_id(),
                unpublished_events = message.outstanding(),
                reason,
                "the stream refuses a record of this submission; the submission is kept in the queue (no dead-letter queue set) and comes back when its visibility ends, until the queue's redrive policy moves it"
            );
            return;
        };
        tracing::warn!(
            message_id = message.message_id(),
            unpublished_events = message.outstanding(),
            reason,
            "the stream refuses a record of this submission; forwarding it to the dead-letter queue, then deleting it"
        );
        let forwarded = dead_letter
            .forward(message.message_id(), body, "refused_by_stream", reason)
            .await;
        self.activity.progressed();
        if let Err(e) = forwarded {
            tracing::warn!(
                message_id = message.message_id(),
                error = %e,
                "refused submission not forwarded to the dead-letter queue; it is kept in the queue and tried again when it comes back"
            );
            return;
        }
        self.context.deleter.push(message.clone());
    }
}

/// Refusals in a row (with nothing written between) after which the stream, not the records,
/// is taken to be at fault.
const MAX_REFUSALS_IN_A_ROW: u32 = 3;

/// What a failed PutRecords call means for its records.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallFailure {
    /// Throttling, 5xx, timeouts, network trouble, anything unknown: the same call can
    /// succeed later.
    Transient(String),
    /// The stream refuses the call (`ValidationException`, `InvalidArgumentException`);
    /// `record` is the position of the record it names, when it names one.
    Refused { record: Option<usize>, reason: String },
    /// No record can be written until someone fixes something (permissions, KMS key, stream).
    StreamUnusable(String),
}

fn classify_call<R>(error: &SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError, R>) -> CallFailure
where
    R: std::fmt::Debug,
{
    let text = DisplayErrorContext(error).to_string();
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = service.err().message().unwrap_or_default();
            classify(code, message, text)
        }
        _ => CallFailure::Transient(text),
    }
}

/// Classifies a whole-call error by its AWS error code and message.
fn classify(code: &str, message: &str, text: String) -> CallFailure {
    match code {
        "ValidationException" | "InvalidArgumentException" => CallFailure::Refused {
            record: refused_record(message),
            reason: format!("{code}: {message}"),
        },
        code if stream_unusable(code) => {
            CallFailure::StreamUnusable(format!("PutRecords fails with {code}: {message}"))
        }
        _ => CallFailure::Transient(text),
    }
}

/// Error codes (of the call or of a record) that no record can get past until an operator acts.
fn stream_unusable(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "ResourceNotFoundException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "KMSDisabledException"
            | "KMSNotFoundException"
            | "KMSAccessDeniedException"
            | "KMSInvalidStateException"
            | "KMSOptInRequired"
    )
}

/// The position of the record a validation message names: `'records.N.member...'`, 1-based.
fn refused_record(message: &str) -> Option<usize> {
    let rest = &message[message.find("records.")? + "records.".len()..];
    let digits = rest.split('.').next()?;
    let position: usize = digits.parse().ok()?;
    position.checked_sub(1)
}

/// A bounded label for the refusal metric.
fn refusal_label(reason: &str) -> &'static str {
    if reason.contains("length less than or equal") || reason.contains("size") {
        "record_too_large"
    } else {
        "record_invalid"
    }
}

/// Splits a call's records by their results (same length and order as the request). Once an
/// event of a message fails, every later event of that message in the call is sent again too.
fn settle(batch: Vec<OutboundRecord>, results: &[PutRecordsResultEntry]) -> Settled {
    let mut settled = Settled::default();
    let mut failed_messages: HashSet<*const InFlightMessage> = HashSet::new();
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

/// The `error_code` labels of `telemetry_collector_records_retried_total`: Kinesis's retryable codes,
/// the in-order suffix resent after a failure, whole-call failures, and `other`.
const RETRY_CODES: [&str; 6] = [
    "ProvisionedThroughputExceededException",
    "InternalFailure",
    "KMSThrottlingException",
    "resend_after_failure",
    "call_failed",
    "other",
];

/// Error codes become label values; unknown codes are folded into `other` so a misbehaving
/// endpoint cannot grow the label set without bound.
fn error_code_label(code: &str) -> &'static str {
    RETRY_CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

/// The Kinesis lanes' metrics: what was published, retried, refused or expired.
#[derive(Clone)]
pub struct SinkMetrics {
    pub events_published: Counter,
    pub put_records_calls: Counters,
    pub put_records_duration: Histogram,
    pub records_retried: Counters,
    pub submissions_refused: Counters,
    pub events_in_flight: Gauge,
    pub messages_abandoned: Counter,
}

impl SinkMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry, calls: &CallDurations) -> Self {
        let section = SinkMetrics {
            events_published: add(
                registry,
                "events_published",
                "Events confirmed written to the stream",
                Counter::default(),
            ),
            put_records_calls: add(
                registry,
                "put_records_calls",
                "PutRecords calls by outcome (ok, partial, error)",
                Counters::default(),
            ),
            put_records_duration: call_duration(calls, "PutRecords"),
            records_retried: add(
                registry,
                "records_retried",
                "Records sent again, by error code (`resend_after_failure` for the in-order suffix, `call_failed` for whole-call failures)",
                Counters::default(),
            ),
            submissions_refused: add(
                registry,
                "submissions_refused",
                "Valid submissions dropped because the stream refused one of their records for good (too large, invalid), by reason",
                Counters::default(),
            ),
            events_in_flight: add(
                registry,
                "events_in_flight",
                "Events buffered or being sent",
                Gauge::default(),
            ),
            messages_abandoned: add(
                registry,
                "messages_abandoned",
                "Messages whose receipt expired before their events were published; SQS delivers them again",
                Counter::default(),
            ),
        };
        start_at_zero(
            &section.submissions_refused,
            "reason",
            &["record_too_large", "record_invalid"],
        );
        start_at_zero(
            &section.put_records_calls,
            "outcome",
            &["ok", "partial", "error", "refused"],
        );
        start_at_zero(&section.records_retried, "error_code", &RETRY_CODES);
        section
    }

    pub fn put_records_call(&self, outcome: &'static str) {
        self.put_records_calls.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn records_retried(&self, code: &str, n: u64) {
        self.records_retried
            .get_or_create(&[("error_code", error_code_label(code))])
            .inc_by(n);
    }

    pub fn refused(&self, reason: &'static str) {
        self.submissions_refused.get_or_create(&[("reason", reason)]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::message::NewMessage;
    use tokio::sync::Semaphore;

    fn message(id: &str, events: usize) -> Arc<InFlightMessage> {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let receipt = Receipt {
            message_id: id.into(),
            handle: format!("handle-{id}"),
        };
        let entry = InFlightMessage::new(
            NewMessage {
                receipt,
                received_at: Instant::now(),
                visibility_timeout: Duration::from_secs(60),
                delete_margin: Duration::from_secs(1),
                permit,
                sent_at: None,
            },
            crate::pipeline::message::InFlightMetrics::register(&mut Registry::default()),
        );
        let bytes = Arc::new(Semaphore::new(0)).try_acquire_many_owned(0).unwrap();
        entry.publishing(events, bytes, 0, None);
        entry
    }

    fn record(message: &Arc<InFlightMessage>, index: usize) -> OutboundRecord {
        OutboundRecord::new(
            format!("{}:{index}", message.message_id()).into_bytes(),
            message.message_id().to_owned(),
            message.clone(),
            &Gauge::default(),
        )
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
        let a = message("a", 4);
        let b = message("b", 2);
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
        let a = message("a", 2);
        let settled = settle(vec![record(&a, 0), record(&a, 1)], &[ok(), ok()]);
        assert_eq!(settled.confirmed.len(), 2);
        assert!(settled.resend.is_empty());
    }

    #[test]
    fn call_errors_are_classified_by_what_can_fix_them() {
        let too_large = "1 validation error detected: Value at 'records.3.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576";
        assert_eq!(
            classify("ValidationException", too_large, String::new()),
            CallFailure::Refused {
                record: Some(2),
                reason: format!("ValidationException: {too_large}")
            }
        );
        assert_eq!(refusal_label(too_large), "record_too_large");
        assert_eq!(
            classify(
                "InvalidArgumentException",
                "Records size exceeds 5 MB limit",
                String::new()
            ),
            CallFailure::Refused {
                record: None,
                reason: "InvalidArgumentException: Records size exceeds 5 MB limit".into()
            }
        );
        for code in [
            "AccessDeniedException",
            "KMSDisabledException",
            "ResourceNotFoundException",
        ] {
            assert!(
                matches!(classify(code, "no", String::new()), CallFailure::StreamUnusable(_)),
                "{code}"
            );
        }
        for code in [
            "ProvisionedThroughputExceededException",
            "LimitExceededException",
            "KMSThrottlingException",
            "InternalFailure",
            "ServiceUnavailable",
            "SomethingNew",
        ] {
            assert_eq!(
                classify(code, "m", "text".into()),
                CallFailure::Transient("text".into()),
                "{code}"
            );
        }
        assert_eq!(
            refused_record("Value at 'records.1.member.partitionKey' failed"),
            Some(0)
        );
        assert_eq!(refused_record("records.0.member"), None);
        assert_eq!(refused_record("records.x.member"), None);
        assert_eq!(refused_record("no position here"), None);
    }

    #[test]
    fn lanes_are_stable_per_key() {
        let id = uuid::Uuid::from_u128(12345);
        assert_eq!(lane_for(&id, 4), lane_for(&id, 4));
        assert_eq!(lane_for(&id, 1), 0);
        assert!(lane_for(&uuid::Uuid::from_u128(u128::MAX), 7) < 7);
    }
}
