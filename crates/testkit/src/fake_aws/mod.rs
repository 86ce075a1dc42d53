//! An SQS + Kinesis that lives in the test's own process, behind the real SDK clients.
//!
//! [`FakeAws::sdk_config`] gives an `SdkConfig` whose HTTP client is this fake: the SDK
//! serialises, signs and parses as it does against AWS, but no socket is opened and every wait
//! (latency, long polls, visibility timeouts) runs on tokio's clock. On a paused clock
//! (`#[tokio::test(start_paused = true)]`) a test of minutes of retries and visibility
//! extensions runs in milliseconds and the same way every time.
//!
//! What it models: queues (long polls, visibility timeouts, receipt handles that go stale,
//! `SentTimestamp`), streams (shards chosen by partition key, Kinesis's request limits enforced
//! with its own validation message), and a log of every call. What it does not: ordering across
//! shards, resharding, message attributes beyond `SentTimestamp`, FIFO queues.
//!
//! Fault switches, each until cleared or for the next N: per-call latency ([`FakeAws::set_latency`],
//! [`FakeAws::set_latency_per_entry`]),
//! whole-call errors by code ([`FakeAws::fail_calls`]), per-record and per-entry failures by
//! code ([`FakeAws::fail_records`], [`FakeAws::fail_entries`]), throttling (a per-record or
//! whole-call code), a black hole ([`FakeAws::set_black_hole`]: requests never answered),
//! answers lost after the call took effect ([`FakeAws::lose_answers`]), answers whose body
//! stalls after their headers ([`FakeAws::stall_answer_bodies`]), receipt expiry
//! ([`FakeAws::expire_receipts`]), duplicate delivery ([`FakeAws::deliver_twice`]) and records
//! the stream refuses ([`FakeAws::refuse_records`]).

mod kinesis;
mod sqs;
mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use kinesis::StoredRecord;
pub use sqs::QueueCounts;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
/// The endpoint the SDK is given; nothing resolves or connects to it.
const ENDPOINT: &str = "http://fake-aws.local";

/// The calls the fake answers, by their `X-Amz-Target` operation name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    ReceiveMessage,
    DeleteMessageBatch,
    ChangeMessageVisibilityBatch,
    SendMessage,
    GetQueueUrl,
    GetQueueAttributes,
    PutRecords,
    DescribeStreamSummary,
}

impl Op {
    fn from_target(target: &str) -> Option<Op> {
        let op = target.rsplit('.').next()?;
        Some(match op {
            "ReceiveMessage" => Op::ReceiveMessage,
            "DeleteMessageBatch" => Op::DeleteMessageBatch,
            "ChangeMessageVisibilityBatch" => Op::ChangeMessageVisibilityBatch,
            "SendMessage" => Op::SendMessage,
            "GetQueueUrl" => Op::GetQueueUrl,
            "GetQueueAttributes" => Op::GetQueueAttributes,
            "PutRecords" => Op::PutRecords,
            "DescribeStreamSummary" => Op::DescribeStreamSummary,
            _ => return None,
        })
    }

    fn is_kinesis(self) -> bool {
        matches!(self, Op::PutRecords | Op::DescribeStreamSummary)
    }
}

/// An error answered for a whole call: its HTTP status and AWS error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(status: u16, code: &str, message: &str) -> AwsError {
        AwsError {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// Kinesis's whole-call throttling.
    pub fn throughput_exceeded() -> AwsError {
        AwsError::new(
            400,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for stream",
        )
    }

    pub fn internal() -> AwsError {
        AwsError::new(500, "InternalFailure", "internal failure")
    }

    pub fn access_denied() -> AwsError {
        AwsError::new(400, "AccessDeniedException", "not authorized to perform this action")
    }

    pub fn stream_not_found() -> AwsError {
        AwsError::new(400, "ResourceNotFoundException", "Stream not found")
    }
}

/// One call as the fake saw it.
#[derive(Debug, Clone)]
pub struct CallLog {
    pub op: Op,
    /// When the request reached the fake (tokio's clock).
    pub at: Instant,
    /// Records asked to be written (PutRecords), entries (SQS batches) or messages answered
    /// (ReceiveMessage).
    pub entries: usize,
    /// The whole-call error answered, if any; `None` also for a call never answered.
    pub error: Option<String>,
}

/// One ChangeMessageVisibility entry the fake applied.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibilityChange {
    pub message_id: String,
    pub timeout: Duration,
    pub at: Instant,
}

/// A failure to come, for the next `remaining` calls, records or entries.
#[derive(Debug, Clone)]
struct Pending<T> {
    remaining: usize,
    what: T,
}

/// The fault switches.
#[derive(Default)]
struct Faults {
    latency: HashMap<Op, Duration>,
    /// Added to a call's latency for each of its records or entries.
    latency_per_entry: HashMap<Op, Duration>,
    call_errors: HashMap<Op, VecDeque<Pending<AwsError>>>,
    black_hole: HashMap<Op, bool>,
    lost_answers: HashMap<Op, usize>,
    stalled_bodies: HashMap<Op, usize>,
    /// Per-record PutRecords failures, by error code.
    record_failures: VecDeque<Pending<String>>,
    /// Per-entry SQS batch failures, by error code.
    entry_failures: HashMap<Op, VecDeque<Pending<String>>>,
    /// Messages delivered a second time, at once, while the first receipt is still valid.
    duplicates: usize,
    refused: Option<RefusedRecords>,
    /// Whether a refusal names the record (Kinesis) or nothing (LocalStack's kinesis-mock).
    refusal_names_record: bool,
}

/// Picks, by its data, a record the stream refuses.
type RefusedRecords = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Takes one from the first of a list of pending failures.
fn take_one<T: Clone>(list: &mut VecDeque<Pending<T>>) -> Option<T> {
    let first = list.front_mut()?;
    let what = first.what.clone();
    first.remaining -= 1;
    if first.remaining == 0 {
        list.pop_front();
    }
    Some(what)
}

#[derive(Default)]
struct World {
    queues: BTreeMap<String, sqs::Queue>,
    streams: BTreeMap<String, kinesis::Stream>,
    faults: Faults,
    calls: Vec<CallLog>,
    visibility_changes: Vec<VisibilityChange>,
    next_id: u64,
}

impl World {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

struct Inner {
    world: Mutex<World>,
    /// Woken when a message may have become receivable.
    arrivals: Notify,
}

/// The fake: cheap to clone, shared by the SDK clients and the test.
#[derive(Clone)]
pub struct FakeAws {
    inner: Arc<Inner>,
}

impl Default for FakeAws {
    fn default() -> Self {
        FakeAws::new()
    }
}

impl FakeAws {
    pub fn new() -> FakeAws {
        FakeAws {
            inner: Arc::new(Inner {
                world: Mutex::new(World::default()),
                arrivals: Notify::new(),
            }),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding it has failed already; the state is still usable.
        self.inner.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The SDK configuration of clients that talk to this fake.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .test_credentials()
            .endpoint_url(ENDPOINT)
            .http_client(wire::Wire(self.inner.clone()))
            .load()
            .await
    }

    /// Creates a queue; its URL.
    pub fn create_queue(&self, name: &str) -> String {
        let url = format!("{ENDPOINT}/{ACCOUNT}/{name}");
        self.world().queues.insert(url.clone(), sqs::Queue::new(name));
        url
    }

    /// Sets a queue's `MaximumMessageSize` attribute (256 KiB unless set).
    pub fn set_max_message_size(&self, queue_url: &str, bytes: usize) {
        if let Some(queue) = self.world().queues.get_mut(queue_url) {
            queue.max_message_size = bytes;
        }
    }

    /// Creates a provisioned stream of `shards` shards.
    pub fn create_stream(&self, name: &str, shards: usize) {
        self.world()
            .streams
            .insert(name.to_owned(), kinesis::Stream::new(name, shards.max(1)));
    }

    /// Puts a message on a queue, as a sender's SendMessage would; its message id.
    pub fn send(&self, queue_url: &str, body: &str) -> String {
        let id = {
            let mut world = self.world();
            let n = world.next_id();
            let queue = world.queues.get_mut(queue_url).expect("the queue exists");
            queue.push(n, body.to_owned())
        };
        self.inner.arrivals.notify_waiters();
        id
    }

    // --- What happened -----------------------------------------------------------------------

    /// Every record written to a stream, in the order written.
    pub fn records(&self, stream: &str) -> Vec<StoredRecord> {
        self.world()
            .streams
            .get(stream)
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }

    /// What a queue holds.
    pub fn queue_counts(&self, queue_url: &str) -> QueueCounts {
        self.world()
            .queues
            .get(queue_url)
            .map(|q| q.counts(Instant::now()))
            .unwrap_or_default()
    }

    /// The bodies of the messages a queue holds (not deleted), in the order sent.
    pub fn bodies(&self, queue_url: &str) -> Vec<String> {
        self.world()
            .queues
            .get(queue_url)
            .map(sqs::Queue::bodies)
            .unwrap_or_default()
    }

    /// Every call of `op`, in the order they arrived.
    pub fn calls(&self, op: Op) -> Vec<CallLog> {
        self.world().calls.iter().filter(|c| c.op == op).cloned().collect()
    }

    /// The records or entries of each call of `op`, in order.
    pub fn entries(&self, op: Op) -> Vec<usize> {
        self.calls(op).iter().map(|c| c.entries).collect()
    }

    /// The ReceiveMessage calls that brought messages, in order: one per delivery batch.
    pub fn deliveries(&self) -> Vec<CallLog> {
        let mut receives = self.calls(Op::ReceiveMessage);
        receives.retain(|c| c.entries > 0);
        receives
    }

    /// Every visibility change applied, in order.
    pub fn visibility_changes(&self) -> Vec<VisibilityChange> {
        self.world().visibility_changes.clone()
    }

    // --- Fault switches ------------------------------------------------------------------------

    /// Holds every call of `op` back this long before it is answered (half before it takes
    /// effect, half after).
    pub fn set_latency(&self, op: Op, latency: Duration) {
        self.world().faults.latency.insert(op, latency);
    }

    /// Holds every call of `op` back this much longer for each record or entry it carries (on
    /// top of [`FakeAws::set_latency`]): an endpoint slower the larger the call, as an
    /// overloaded stream or LocalStack's Kinesis.
    pub fn set_latency_per_entry(&self, op: Op, latency: Duration) {
        self.world().faults.latency_per_entry.insert(op, latency);
    }

    /// Answers the next `times` calls of `op` with `error` (`usize::MAX`: until cleared).
    pub fn fail_calls(&self, op: Op, times: usize, error: AwsError) {
        if times > 0 {
            let pending = Pending {
                remaining: times,
                what: error,
            };
            self.world()
                .faults
                .call_errors
                .entry(op)
                .or_default()
                .push_back(pending);
        }
    }

    /// Fails the next `records` PutRecords records with `code` (as Kinesis does: HTTP 200, the
    /// code at the record's position, the record not written).
    pub fn fail_records(&self, code: &str, records: usize) {
        if records > 0 {
            self.world().faults.record_failures.push_back(Pending {
                remaining: records,
                what: code.to_owned(),
            });
        }
    }

    /// Fails the next `entries` entries of `op` (an SQS batch call) with `code`.
    pub fn fail_entries(&self, op: Op, code: &str, entries: usize) {
        if entries > 0 {
            self.world()
                .faults
                .entry_failures
                .entry(op)
                .or_default()
                .push_back(Pending {
                    remaining: entries,
                    what: code.to_owned(),
                });
        }
    }

    /// While on, calls of `op` are taken in and never answered, nor take effect.
    pub fn set_black_hole(&self, op: Op, on: bool) {
        self.world().faults.black_hole.insert(op, on);
    }

    /// The next `calls` calls of `op` take effect, but their answers never arrive.
    pub fn lose_answers(&self, op: Op, calls: usize) {
        *self.world().faults.lost_answers.entry(op).or_default() += calls;
    }

    /// The next `calls` calls of `op` take effect and their answers' status and headers arrive,
    /// but their bodies never do: a connection that stops mid-answer.
    pub fn stall_answer_bodies(&self, op: Op, calls: usize) {
        *self.world().faults.stalled_bodies.entry(op).or_default() += calls;
    }

    /// PutRecords calls holding a record whose data `refused` picks are refused whole with
    /// Kinesis's validation error naming that record.
    pub fn refuse_records(&self, refused: impl Fn(&[u8]) -> bool + Send + Sync + 'static) {
        self.set_refused(Arc::new(refused), true);
    }

    /// PutRecords calls holding a record whose data `refused` picks are refused whole with
    /// `InvalidArgumentException` naming no record, as LocalStack's Kinesis refuses a record
    /// too large for it.
    pub fn refuse_records_naming_none(&self, refused: impl Fn(&[u8]) -> bool + Send + Sync + 'static) {
        self.set_refused(Arc::new(refused), false);
    }

    fn set_refused(&self, refused: RefusedRecords, names_record: bool) {
        let mut world = self.world();
        world.faults.refused = Some(refused);
        world.faults.refusal_names_record = names_record;
    }

    /// The next `messages` messages received are delivered again at once, under a second
    /// receipt, while the first is still valid (SQS's at-least-once delivery).
    pub fn deliver_twice(&self, messages: usize) {
        self.world().faults.duplicates += messages;
    }

    /// Every receipt handed out so far goes stale and its message becomes visible again, as
    /// when visibility ran out: calls naming those receipts fail per entry.
    pub fn expire_receipts(&self, queue_url: &str) {
        if let Some(queue) = self.world().queues.get_mut(queue_url) {
            queue.expire_receipts();
        }
        self.inner.arrivals.notify_waiters();
    }

    /// Turns every switch off.
    pub fn clear_faults(&self) {
        self.world().faults = Faults::default();
    }
}
