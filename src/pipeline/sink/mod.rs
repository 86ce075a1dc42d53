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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::dead_letter::DeadLetterQueue;
use super::deleter::DeleteQueue;
use super::message::{InFlightMessage, Receipt};
use super::shard_tally::ShardTally;
use crate::retry::RetryPolicy;
use telemetry_format::event::RecordBuffer;

mod answer;
mod lane;
mod metrics;
mod request;
mod settle;

pub(crate) use lane::run_lane;
pub(crate) use metrics::SinkMetrics;
/// One event on its way to the stream.
///
/// It counts in `telemetry_collector_events_in_flight` from [`OutboundRun::new`] until it is dropped,
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
    /// A record of `data` for a test, counted in a gauge of its own.
    #[cfg(test)]
    pub fn for_test(data: Bytes, partition_key: Arc<str>, message: Arc<InFlightMessage>) -> Self {
        let in_flight = Gauge::default();
        in_flight.inc();
        OutboundRecord {
            data,
            partition_key,
            message,
            releases: 0,
            enqueued_at: Instant::now(),
            _counted: CountedEvent(in_flight),
        }
    }

    /// What the record counts against the PutRecords size limits: data plus partition key.
    pub(crate) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The records of one buffer of a submission, in order: what the source hands a lane in one
/// message of its channel, and the lane makes into [`OutboundRecord`]s.
///
/// Handing over a run rather than each record crosses the channel, between the runtime's
/// threads, once per buffer of records rather than once per event: that crossing, and the
/// shared counts every record touched on one thread and dropped on the other, cost more than
/// building the record. Its events count in `telemetry_collector_events_in_flight` from
/// [`OutboundRun::new`], as the records do.
pub(crate) struct OutboundRun {
    data: Bytes,
    /// Where each record ends in `data`; taken when the records are made.
    ends: Vec<usize>,
    partition_key: Arc<str>,
    message: Arc<InFlightMessage>,
    /// What the last record gives back of the byte cap when it is published.
    releases: usize,
    enqueued_at: Instant,
    in_flight: Gauge,
    /// Its records' room in its lane's channel, from [`LaneInput::send`] until the lane takes
    /// them.
    room: Option<OwnedSemaphorePermit>,
}

impl OutboundRun {
    /// The events of `buffer`, of `message`, entering the pipeline at `enqueued_at`; the last
    /// one `releases` the buffer's share of the byte cap.
    pub fn new(
        buffer: RecordBuffer,
        partition_key: Arc<str>,
        releases: usize,
        message: Arc<InFlightMessage>,
        in_flight: &Gauge,
        enqueued_at: Instant,
    ) -> Self {
        in_flight.inc_by(buffer.ends.len() as i64);
        OutboundRun {
            data: Bytes::from(buffer.data),
            ends: buffer.ends,
            partition_key,
            message,
            releases,
            enqueued_at,
            in_flight: in_flight.clone(),
            room: None,
        }
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Hands its records to `take`, in order.
    pub fn into_records(mut self, mut take: impl FnMut(OutboundRecord)) {
        let ends = std::mem::take(&mut self.ends);
        let last = ends.len().saturating_sub(1);
        let mut start = 0;
        for (i, end) in ends.into_iter().enumerate() {
            // Counted in flight already, by the run; the record counts itself out when dropped.
            take(OutboundRecord {
                data: self.data.slice(start..end),
                partition_key: self.partition_key.clone(),
                message: self.message.clone(),
                releases: if i == last { self.releases } else { 0 },
                enqueued_at: self.enqueued_at,
                _counted: CountedEvent(self.in_flight.clone()),
            });
            start = end;
        }
    }
}

impl Drop for OutboundRun {
    /// Counts out the events of a run dropped before its records were made (a lane gone at
    /// shutdown); a run made into records has none left.
    fn drop(&mut self) {
        self.in_flight.dec_by(self.ends.len() as i64);
    }
}

/// Where the source hands a lane its runs of records.
///
/// The channel is bounded in records, not runs: a run goes in while fewer than a call's worth
/// of records (`DATA_STREAM_MAX_BUFFER_SIZE`) wait in it, whatever the size of the
/// submissions, so that a lane is fed as deeply by submissions of a few events as by large
/// ones, and decoded events do not pile up in front of a busy lane (a channel of 500 runs
/// raised the collector's peak RSS at its ceiling by half, and one of 16 starved the lanes of
/// small submissions at 80 ms round trips). The run that fills it goes in whole, so that what
/// waits while a call is in flight fills the next call, as when records went one by one.
#[derive(Clone)]
pub(crate) struct LaneInput {
    runs: mpsc::Sender<OutboundRun>,
    room: Arc<Semaphore>,
}

impl LaneInput {
    /// The input of a lane whose calls carry up to `call_records` records, and the lane's end
    /// of it.
    pub fn channel(call_records: usize) -> (LaneInput, mpsc::Receiver<OutboundRun>) {
        let call_records = call_records.clamp(1, Semaphore::MAX_PERMITS);
        // Every run holds room for at least one record, so the channel itself never fills.
        let (runs, receiver) = mpsc::channel(call_records);
        let room = Arc::new(Semaphore::new(call_records));
        (LaneInput { runs, room }, receiver)
    }

    /// Hands `run` to the lane once fewer than a call's worth of records wait for it: the run
    /// takes what room is left, up to its records, and goes in whole. `Err` when the lane is
    /// gone, which happens only at shutdown.
    pub async fn send(&self, mut run: OutboundRun) -> Result<(), LaneGone> {
        let mut room = self.room.clone().acquire_owned().await.map_err(|_| LaneGone)?;
        let more = run.len().saturating_sub(1).min(self.room.available_permits()) as u32;
        // Another source may take the room first; the run then goes in with what it has.
        if more > 0
            && let Ok(taken) = self.room.clone().try_acquire_many_owned(more)
        {
            room.merge(taken);
        }
        run.room = Some(room);
        self.runs.send(run).await.map_err(|_| LaneGone)
    }
}

/// The lane a run was handed to has ended.
#[derive(Debug)]
pub(crate) struct LaneGone;

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
    use crate::pipeline::message::test_message;

    fn run_of(records: &[&[u8]], releases: usize, in_flight: &Gauge) -> OutboundRun {
        let mut buffer = RecordBuffer::default();
        for record in records {
            buffer.data.extend_from_slice(record);
            buffer.ends.push(buffer.data.len());
        }
        OutboundRun::new(
            buffer,
            "key".into(),
            releases,
            test_message("m", records.len()),
            in_flight,
            Instant::now(),
        )
    }

    #[test]
    fn a_run_makes_its_records_in_order_the_last_releasing_the_buffer() {
        let in_flight = Gauge::default();
        let run = run_of(&[b"one", b"", b"three"], 4096, &in_flight);
        let mut records = Vec::new();
        run.into_records(|record| records.push(record));
        let made: Vec<_> = records
            .iter()
            .map(|r| (&r.data[..], &*r.partition_key, r.releases))
            .collect();
        assert_eq!(
            made,
            [(&b"one"[..], "key", 0), (b"", "key", 0), (b"three", "key", 4096)]
        );
    }

    #[test]
    fn a_runs_events_count_in_flight_from_its_making_until_their_records_are_dropped() {
        let in_flight = Gauge::default();
        let run = run_of(&[b"a", b"b", b"c"], 1, &in_flight);
        assert_eq!(in_flight.get(), 3);
        let mut records = Vec::new();
        run.into_records(|record| records.push(record));
        assert_eq!(in_flight.get(), 3, "the records carry the count on");
        records.truncate(1);
        assert_eq!(in_flight.get(), 1);
        drop(records);
        assert_eq!(in_flight.get(), 0);

        // A run dropped before its records were made (its lane gone) counts its events out.
        drop(run_of(&[b"a", b"b"], 1, &in_flight));
        assert_eq!(in_flight.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lanes_input_takes_runs_while_fewer_than_a_calls_worth_of_records_wait() {
        let in_flight = Gauge::default();
        let (input, mut lane) = LaneInput::channel(10);
        for _ in 0..4 {
            input.send(run_of(&[b"a", b"b"], 1, &in_flight)).await.unwrap();
        }
        // Two records of room left: a run of five goes in whole, and fills it.
        input.send(run_of(&[&b"c"[..]; 5], 1, &in_flight)).await.unwrap();
        let next = run_of(&[b"d"], 1, &in_flight);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), input.send(next))
                .await
                .is_err(),
            "a call's worth of records waits"
        );
        lane.recv().await.unwrap().into_records(drop);
        input.send(run_of(&[b"d"], 1, &in_flight)).await.unwrap();
        let mut taken = Vec::new();
        while let Ok(run) = lane.try_recv() {
            taken.push(run.len());
        }
        assert_eq!(taken, [2, 2, 2, 5, 1]);
    }

    #[tokio::test]
    async fn a_run_sent_to_a_lane_that_is_gone_is_refused() {
        let (input, lane) = LaneInput::channel(10);
        drop(lane);
        assert!(input.send(run_of(&[b"a"], 1, &Gauge::default())).await.is_err());
    }

    #[test]
    fn lanes_are_stable_per_key() {
        let id = uuid::Uuid::from_u128(12345);
        assert_eq!(lane_for(&id, 4), lane_for(&id, 4));
        assert_eq!(lane_for(&id, 1), 0);
        assert!(lane_for(&uuid::Uuid::from_u128(u128::MAX), 7) < 7);
    }
}
