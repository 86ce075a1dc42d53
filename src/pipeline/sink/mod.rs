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
//! backoff; a call that timed out is sent again in calls of half as many records, which grow
//! back once answered quickly, so that an endpoint slower the larger the call still takes them.
//! A record the stream refuses for good, named by the error (too large for it,
//! invalid), stops its submission so that one poison record cannot stop its lane: with a
//! dead-letter queue the body is forwarded there and the message deleted once that send
//! succeeded; without one the message stays in the queue, its visibility left to expire, for
//! the queue's own redrive policy to take. Nothing valid is ever deleted unpublished. A refusal
//! that names no record is the request's or the stream's fault, not a record's: the lane halves
//! its calls (a request too large for the endpoint gets through that way) and retries with
//! backoff, dropping nothing; once a call of a single record is refused, that record is the
//! one refused (some endpoints name none). An error no record can get past (access denied, KMS key
//! unusable, stream gone) opens the circuit breaker at once with that reason, and the lane
//! keeps retrying with backoff until it is fixed.
//!
//! Every call's outcome feeds the circuit breaker. At shutdown a lane gives back (through the
//! visibility keeper) the messages none of whose events has been sent yet, and finishes the rest.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use aws_sdk_kinesis::Client;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::dead_letter::DeadLetterQueue;
use super::deleter::DeleteQueue;
use super::message::{InFlightMessage, Receipt};
use super::shard_tally::ShardTally;
use crate::retry::RetryPolicy;

mod answer;
mod lane;
mod metrics;
mod request;
mod settle;

pub(crate) use lane::run_lane;
pub(crate) use metrics::SinkMetrics;
/// One event on its way to the stream.
///
/// It counts in `telemetry_collector_events_in_flight` from [`OutboundRecord::new`] until it is dropped,
/// whichever way it leaves the pipeline (published, given back, expired, refused, or left
/// unfinished at shutdown): no path has to remember to count it out.
pub(crate) struct OutboundRecord {
    /// Its part of the buffer its submission's records were written into.
    pub data: Bytes,
    /// Shared by the events of a submission: one allocation per submission, not per event.
    pub partition_key: Arc<str>,
    pub message: Arc<InFlightMessage>,
    /// What its message gives back of the byte cap when it is published: its buffer's bytes
    /// for the last record of a buffer (the buffer leaves memory with it), else nothing.
    pub releases: usize,
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
    /// An event of `message` entering the pipeline at `enqueued_at` (read once for all the
    /// events of a submission), counted in `in_flight` until dropped.
    pub fn new(
        data: Bytes,
        partition_key: Arc<str>,
        releases: usize,
        message: Arc<InFlightMessage>,
        in_flight: &Gauge,
        enqueued_at: Instant,
    ) -> Self {
        in_flight.inc();
        OutboundRecord {
            data,
            partition_key,
            message,
            releases,
            enqueued_at,
            _counted: CountedEvent(in_flight.clone()),
        }
    }

    /// What the record counts against the PutRecords size limits: data plus partition key.
    pub(crate) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The lane a partition key's records go to: stable, so that one submission never spans lanes.
pub(crate) fn lane_for(partition_key: &uuid::Uuid, lanes: usize) -> usize {
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
    /// Longest a record waits while its lane could send it (`DATA_STREAM_FLUSH_INTERVAL_SEC`):
    /// the bound on `linger`.
    pub flush_interval: Duration,
    /// How long a lane with no call in flight waits for more records before it sends
    /// (`DATA_STREAM_LINGER_MS`; at most `flush_interval`).
    pub linger: Duration,
}

/// What every lane shares.
#[derive(Clone)]
pub(crate) struct LaneContext {
    pub client: Client,
    pub stream_name: String,
    pub settings: SinkSettings,
    /// The PutRecords attempt timeout (`AWS_CALL_TIMEOUT_SEC`), which paces the size of calls.
    pub call_timeout: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_stable_per_key() {
        let id = uuid::Uuid::from_u128(12345);
        assert_eq!(lane_for(&id, 4), lane_for(&id, 4));
        assert_eq!(lane_for(&id, 1), 0);
        assert!(lane_for(&uuid::Uuid::from_u128(u128::MAX), 7) < 7);
    }
}
