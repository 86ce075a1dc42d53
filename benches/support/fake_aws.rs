//! A fake SQS + Kinesis endpoint that answers at once, so that a benchmark measures only the
//! collector's own cost (parsing, serialisation, signing, HTTP, scheduling).
//!
//! It speaks the JSON protocols the SDKs use (SQS awsJson1_0, `X-Amz-Target: AmazonSQS.<Op>`;
//! Kinesis awsJson1_1, `X-Amz-Target: Kinesis_20131202.<Op>`). ReceiveMessage hands out
//! messages from a pre-generated pool, each with its own receipt handle, until the configured
//! number of messages is served; PutRecords, DeleteMessageBatch and ChangeMessageVisibilityBatch
//! succeed for every entry. It runs on one thread of its own so that it takes at most one core.
//!
//! It is made cheap where the volume is: a PutRecords body is not parsed as JSON, its records
//! are counted by their `"Data"` and `"PartitionKey"` members (base64 data and partition keys
//! cannot contain those strings), the two counts must agree, and the answer carries one result
//! per record. The small SQS batch calls are parsed.
//!
//! On request ([`FakeState::tracked`]) it also notes, memory-cheaply, when each message was
//! served and deleted and, for each submission of the pool, which of its events arrived in
//! which order and when its first record was sent and its last one acknowledged: every record's
//! data is then decoded for its `submission_id` and `event_index`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

const SQS_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const KINESIS_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// How long an empty long poll is held before it answers: not the 20 s a real queue would
/// wait, so that a run ends soon after its last message.
const MAX_EMPTY_POLL_WAIT: Duration = Duration::from_secs(1);

/// One message of the pool.
#[derive(Clone)]
pub struct PooledMessage {
    /// The body as a JSON string literal, quotes included.
    pub body_literal: String,
    /// The events it must become on the stream (0 for an invalid submission).
    pub events: u64,
    /// The submission id its records carry, when it has events and the id is known: what
    /// tracking follows.
    pub submission_id: Option<u128>,
}

impl PooledMessage {
    pub fn new(body: &str, events: u64) -> PooledMessage {
        PooledMessage {
            body_literal: serde_json::to_string(body).expect("a string serialises"),
            events,
            submission_id: None,
        }
    }

    pub fn with_submission_id(mut self, id: u128) -> PooledMessage {
        self.submission_id = Some(id);
        self
    }
}

/// Events of the first `messages` messages served from `pool` (which is served in a cycle).
pub fn events_of_first(pool: &[PooledMessage], messages: u64) -> u64 {
    let per_cycle: u64 = pool.iter().map(|m| m.events).sum();
    let len = pool.len() as u64;
    let rest: u64 = pool[..(messages % len) as usize].iter().map(|m| m.events).sum();
    messages / len * per_cycle + rest
}

/// The fewest messages served from `pool` that carry at least `events` events.
pub fn messages_for_events(pool: &[PooledMessage], events: u64) -> u64 {
    let (mut low, mut high) = (1u64, events.max(1) * pool.len() as u64);
    while low < high {
        let mid = low + (high - low) / 2;
        if events_of_first(pool, mid) >= events {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// What the fake serves and what it counted; read by the benchmark while the collector runs.
pub struct FakeState {
    pool: Vec<PooledMessage>,
    /// Messages to serve in all: the queue's backlog at the start.
    total_messages: u64,
    /// Delay before PutRecords answers, in microseconds: a slow stream, so that the
    /// collector's caps fill. Adjustable while running.
    pub put_records_delay_us: AtomicU64,
    pub messages_served: AtomicU64,
    /// Events of the messages served.
    pub events_served: AtomicU64,
    pub records_acknowledged: AtomicU64,
    /// Distinct messages deleted (a second delete of one receipt is not counted).
    pub messages_deleted: AtomicU64,
    pub duplicate_deletes: AtomicU64,
    pub visibility_changes: AtomicU64,
    pub receive_calls: AtomicU64,
    pub put_records_calls: AtomicU64,
    pub connections: AtomicU64,
    pub requests_started: AtomicU64,
    pub requests_answered: AtomicU64,
    /// PutRecords calls received and not yet answered.
    pub put_records_waiting: AtomicU64,
    pub delete_calls: AtomicU64,
    /// Requests the fake could not understand (an unknown operation or a malformed body).
    pub bad_requests: AtomicU64,
    pub first_bad_request: Mutex<Option<String>>,
    deleted: Mutex<Vec<bool>>,
    /// When the first message was handed out.
    pub first_served_at: OnceLock<Instant>,
    /// What is noted per message and submission, when asked for.
    pub tracking: Option<Mutex<Tracking>>,
}

/// Times in microseconds after [`Tracking::base`]; 0 means "not yet".
pub struct Tracking {
    pub base: Instant,
    /// Per message number: when it was first served.
    pub served_us: Vec<u64>,
    /// Per message number: when its first delete arrived.
    pub deleted_us: Vec<u64>,
    /// One per submission of the pool that has events, in pool order.
    pub submissions: Vec<SubmissionTrack>,
    by_id: HashMap<u128, usize>,
    /// Records whose submission id is none of the pool's.
    pub unknown_records: u64,
    /// Records whose data is not base64 or lacks `submission_id` or `event_index`.
    pub unreadable_records: u64,
    /// Reused buffer for a record's decoded data.
    data: Vec<u8>,
}

/// What the stream received of one submission.
#[derive(Debug, Clone)]
pub struct SubmissionTrack {
    pub id: u128,
    /// Its position in the pool.
    pub pool_index: usize,
    pub events: u64,
    /// The next event index due: every index below it arrived, in order.
    pub next: u64,
    /// Records that repeated an index already received (at least once is allowed).
    pub repeated: u64,
    /// Records that came ahead of `next`: an earlier event missing, or out of order.
    pub skipped_ahead: u64,
    /// When the PutRecords call that carried its first record arrived.
    pub first_sent_us: u64,
    /// When the PutRecords call that carried its last record (index `events - 1`, once all
    /// before it had arrived) was answered.
    pub last_acked_us: u64,
}

impl Tracking {
    fn now_us(&self) -> u64 {
        (self.base.elapsed().as_micros() as u64).max(1)
    }

    /// Notes one record's data (base64); returns the submission it completed, if it did.
    fn record(&mut self, data_base64: &[u8], now_us: u64) -> Option<usize> {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode_vec(data_base64, &mut data)
            .is_ok();
        let parsed = decoded.then(|| record_ids(&data)).flatten();
        self.data = data;
        let Some((id, index)) = parsed else {
            self.unreadable_records += 1;
            return None;
        };
        let Some(&at) = self.by_id.get(&id) else {
            self.unknown_records += 1;
            return None;
        };
        let track = &mut self.submissions[at];
        if track.first_sent_us == 0 {
            track.first_sent_us = now_us;
        }
        if index < track.next {
            track.repeated += 1;
        } else if index > track.next {
            track.skipped_ahead += 1;
        } else {
            track.next += 1;
            if track.next == track.events {
                return Some(at);
            }
        }
        None
    }
}

/// The `submission_id` and `event_index` of a record's data (the collector's event JSON).
fn record_ids(data: &[u8]) -> Option<(u128, u64)> {
    const ID: &[u8] = br#""submission_id":""#;
    const INDEX: &[u8] = br#""event_index":"#;
    let at = find(data, ID)? + ID.len();
    let id = std::str::from_utf8(data.get(at..at + 36)?).ok()?;
    let id = uuid::Uuid::parse_str(id).ok()?.as_u128();
    let at = find(data, INDEX)? + INDEX.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let index = std::str::from_utf8(&data[at..at + digits]).ok()?.parse().ok()?;
    Some((id, index))
}

impl FakeState {
    pub fn new(pool: Vec<PooledMessage>, total_messages: u64, put_records_delay: Duration) -> FakeState {
        assert!(!pool.is_empty(), "the message pool is not empty");
        FakeState {
            pool,
            total_messages,
            put_records_delay_us: AtomicU64::new(put_records_delay.as_micros() as u64),
            messages_served: AtomicU64::new(0),
            events_served: AtomicU64::new(0),
            records_acknowledged: AtomicU64::new(0),
            messages_deleted: AtomicU64::new(0),
            duplicate_deletes: AtomicU64::new(0),
            visibility_changes: AtomicU64::new(0),
            receive_calls: AtomicU64::new(0),
            put_records_calls: AtomicU64::new(0),
            put_records_waiting: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            requests_started: AtomicU64::new(0),
            requests_answered: AtomicU64::new(0),
            delete_calls: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            first_bad_request: Mutex::new(None),
            deleted: Mutex::new(Vec::new()),
            first_served_at: OnceLock::new(),
            tracking: None,
        }
    }

    /// Notes what each message and submission went through (see [`Tracking`]). Each submission
    /// id must occur once in the backlog: the pool is not served twice.
    pub fn tracked(mut self) -> FakeState {
        assert!(
            self.total_messages <= self.pool.len() as u64,
            "tracking needs a pool as large as the backlog"
        );
        let messages = self.total_messages as usize;
        let submissions: Vec<SubmissionTrack> = self.pool[..messages]
            .iter()
            .enumerate()
            .filter(|(_, m)| m.events > 0)
            .map(|(pool_index, m)| SubmissionTrack {
                id: m.submission_id.expect("a message with events has its submission id"),
                pool_index,
                events: m.events,
                next: 0,
                repeated: 0,
                skipped_ahead: 0,
                first_sent_us: 0,
                last_acked_us: 0,
            })
            .collect();
        let by_id: HashMap<u128, usize> = submissions.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        assert_eq!(by_id.len(), submissions.len(), "submission ids are distinct");
        self.tracking = Some(Mutex::new(Tracking {
            base: Instant::now(),
            served_us: vec![0; messages],
            deleted_us: vec![0; messages],
            submissions,
            by_id,
            unknown_records: 0,
            unreadable_records: 0,
            data: Vec::new(),
        }));
        self
    }

    pub fn pool(&self) -> &[PooledMessage] {
        &self.pool
    }

    pub fn total_messages(&self) -> u64 {
        self.total_messages
    }

    /// Every message is served, its events acknowledged, and it is deleted.
    pub fn all_done(&self) -> bool {
        let served = self.messages_served.load(Ordering::SeqCst);
        served == self.total_messages
            && self.messages_deleted.load(Ordering::SeqCst) == served
            && self.records_acknowledged.load(Ordering::SeqCst) >= self.events_served.load(Ordering::SeqCst)
    }

    fn bad_request(&self, what: String) -> Response<Full<Bytes>> {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_bad_request.lock().unwrap();
        if first.is_none() {
            *first = Some(what.clone());
        }
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", SQS_CONTENT_TYPE)
            .body(Full::new(Bytes::from(format!(
                r#"{{"__type":"InvalidParameterValue","message":{}}}"#,
                serde_json::to_string(&what).unwrap()
            ))))
            .unwrap()
    }
}

pub struct FakeAws {
    pub endpoint: String,
    pub state: Arc<FakeState>,
}

impl FakeAws {
    /// Starts the fake on a thread of its own, on a free loopback port.
    pub fn start(state: FakeState) -> FakeAws {
        let state = Arc::new(state);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake endpoint");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("fake-aws".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake endpoint runtime");
                runtime.block_on(serve(listener, shared));
            })
            .expect("start the fake endpoint thread");
        FakeAws { endpoint, state }
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<FakeState>) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, state: Arc<FakeState>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    state.requests_started.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let response = match target {
        "AmazonSQS.ReceiveMessage" => receive_message(&state, &body).await,
        "AmazonSQS.DeleteMessageBatch" => delete_message_batch(&state, &body),
        "AmazonSQS.ChangeMessageVisibilityBatch" => change_visibility_batch(&state, &body),
        "Kinesis_20131202.PutRecords" => put_records(&state, &body).await,
        "AmazonSQS.GetQueueUrl" => {
            let url = format!(
                "http://{}/000000000000/submissions",
                parts
                    .headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("localhost")
            );
            json_response(
                SQS_CONTENT_TYPE,
                format!(r#"{{"QueueUrl":{}}}"#, serde_json::to_string(&url).unwrap()),
            )
        }
        // What a queue created with SQS's defaults answers (256 KiB): the collector reserves
        // this much of its body budget per message it asks for.
        "AmazonSQS.GetQueueAttributes" => json_response(
            SQS_CONTENT_TYPE,
            r#"{"Attributes":{"MaximumMessageSize":"262144"}}"#.to_owned(),
        ),
        "Kinesis_20131202.DescribeStreamSummary" => json_response(KINESIS_CONTENT_TYPE, STREAM_SUMMARY.to_owned()),
        other => state.bad_request(format!("unexpected operation {other:?}")),
    };
    state.requests_answered.fetch_add(1, Ordering::Relaxed);
    Ok(response)
}

const STREAM_SUMMARY: &str = r#"{"StreamDescriptionSummary":{"StreamName":"events","StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/events","StreamStatus":"ACTIVE","StreamModeDetails":{"StreamMode":"PROVISIONED"},"RetentionPeriodHours":24,"StreamCreationTimestamp":1700000000.0,"EnhancedMonitoring":[{"ShardLevelMetrics":[]}],"EncryptionType":"NONE","OpenShardCount":2,"ConsumerCount":0}}"#;

fn json_response(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveRequest {
    max_number_of_messages: Option<u64>,
    wait_time_seconds: Option<u64>,
}

async fn receive_message(state: &FakeState, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(request) = serde_json::from_slice::<ReceiveRequest>(body) else {
        return state.bad_request("malformed ReceiveMessage body".to_owned());
    };
    state.receive_calls.fetch_add(1, Ordering::Relaxed);
    let wanted = request.max_number_of_messages.unwrap_or(1).clamp(1, 10);
    // Take up to `wanted` message numbers; the fake is single-threaded, but stay exact anyway.
    let mut first = state.messages_served.load(Ordering::SeqCst);
    let taken = loop {
        let taken = wanted.min(state.total_messages - first);
        match state
            .messages_served
            .compare_exchange(first, first + taken, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => break taken,
            Err(now) => first = now,
        }
    };
    if taken == 0 {
        let wait = Duration::from_secs(request.wait_time_seconds.unwrap_or(0)).min(MAX_EMPTY_POLL_WAIT);
        tokio::time::sleep(wait).await;
        return json_response(SQS_CONTENT_TYPE, r#"{"Messages":[]}"#.to_owned());
    }
    state.first_served_at.get_or_init(Instant::now);
    if let Some(tracking) = &state.tracking {
        let mut tracking = tracking.lock().unwrap();
        let now = tracking.now_us();
        for number in first..first + taken {
            tracking.served_us[number as usize] = now;
        }
    }
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(r#"{"Messages":["#);
    let mut events = 0;
    for number in first..first + taken {
        let message = &state.pool[(number % state.pool.len() as u64) as usize];
        events += message.events;
        if number > first {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"MessageId":"00000000-0000-4000-8000-{number:012x}","ReceiptHandle":"rh-{number}","Body":"#
        ));
        out.push_str(&message.body_literal);
        out.push('}');
    }
    out.push_str("]}");
    state.events_served.fetch_add(events, Ordering::SeqCst);
    json_response(SQS_CONTENT_TYPE, out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchRequest<'a> {
    #[serde(borrow)]
    entries: Vec<BatchEntry<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchEntry<'a> {
    id: &'a str,
    receipt_handle: &'a str,
}

/// `{"Successful":[{"Id":..},...],"Failed":[]}` for every entry.
fn all_successful(entries: &[BatchEntry]) -> String {
    let ids: Vec<String> = entries
        .iter()
        .map(|e| format!(r#"{{"Id":{}}}"#, serde_json::to_string(e.id).unwrap()))
        .collect();
    format!(r#"{{"Successful":[{}],"Failed":[]}}"#, ids.join(","))
}

fn delete_message_batch(state: &FakeState, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(request) = serde_json::from_slice::<BatchRequest>(body) else {
        return state.bad_request("malformed DeleteMessageBatch body".to_owned());
    };
    state.delete_calls.fetch_add(1, Ordering::Relaxed);
    let mut deleted = state.deleted.lock().unwrap();
    for entry in &request.entries {
        let Some(number) = entry
            .receipt_handle
            .strip_prefix("rh-")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            drop(deleted);
            return state.bad_request(format!("unknown receipt handle {:?}", entry.receipt_handle));
        };
        if number >= deleted.len() {
            deleted.resize(number + 1, false);
        }
        if deleted[number] {
            state.duplicate_deletes.fetch_add(1, Ordering::Relaxed);
        } else {
            deleted[number] = true;
            if let Some(tracking) = &state.tracking {
                let mut tracking = tracking.lock().unwrap();
                let now = tracking.now_us();
                if let Some(at) = tracking.deleted_us.get_mut(number) {
                    *at = now;
                }
            }
            state.messages_deleted.fetch_add(1, Ordering::SeqCst);
        }
    }
    drop(deleted);
    json_response(SQS_CONTENT_TYPE, all_successful(&request.entries))
}

fn change_visibility_batch(state: &FakeState, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(request) = serde_json::from_slice::<BatchRequest>(body) else {
        return state.bad_request("malformed ChangeMessageVisibilityBatch body".to_owned());
    };
    state
        .visibility_changes
        .fetch_add(request.entries.len() as u64, Ordering::Relaxed);
    json_response(SQS_CONTENT_TYPE, all_successful(&request.entries))
}

/// Non-overlapping occurrences of `needle` in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    let mut count = 0;
    let mut at = 0;
    while let Some(found) = find(&haystack[at..], needle) {
        count += 1;
        at += found + needle.len();
    }
    count
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        let offset = haystack[at..haystack.len() - rest.len()]
            .iter()
            .position(|&b| b == first)?;
        let start = at + offset;
        if &haystack[start + 1..start + needle.len()] == rest {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

const RECORD_RESULT: &str =
    r#"{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000000"}"#;

async fn put_records(state: &FakeState, body: &[u8]) -> Response<Full<Bytes>> {
    let records = occurrences(body, br#""Data":"#);
    let keys = occurrences(body, br#""PartitionKey":"#);
    if records == 0 || records != keys || records > 500 {
        return state.bad_request(format!("PutRecords with {records} data and {keys} partition keys"));
    }
    let completed = state.tracking.as_ref().map(|t| track_records(t, body));
    let delay_us = state.put_records_delay_us.load(Ordering::Relaxed);
    if delay_us > 0 {
        state.put_records_waiting.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        state.put_records_waiting.fetch_sub(1, Ordering::SeqCst);
    }
    state.put_records_calls.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(40 + records * (RECORD_RESULT.len() + 1));
    out.push_str(r#"{"FailedRecordCount":0,"Records":["#);
    for i in 0..records {
        if i > 0 {
            out.push(',');
        }
        out.push_str(RECORD_RESULT);
    }
    out.push_str("]}");
    if let (Some(tracking), Some(completed)) = (&state.tracking, completed)
        && !completed.is_empty()
    {
        let mut tracking = tracking.lock().unwrap();
        let now = tracking.now_us();
        for at in completed {
            tracking.submissions[at].last_acked_us = now;
        }
    }
    state.records_acknowledged.fetch_add(records as u64, Ordering::SeqCst);
    json_response(KINESIS_CONTENT_TYPE, out)
}

/// Notes every record of a PutRecords body; returns the submissions whose last record it holds.
fn track_records(tracking: &Mutex<Tracking>, body: &[u8]) -> Vec<usize> {
    const DATA: &[u8] = br#""Data":""#;
    let mut tracking = tracking.lock().unwrap();
    let now = tracking.now_us();
    let mut completed = Vec::new();
    let mut at = 0;
    while let Some(found) = find(&body[at..], DATA) {
        let start = at + found + DATA.len();
        let len = body[start..]
            .iter()
            .position(|&b| b == b'"')
            .unwrap_or(body.len() - start);
        if let Some(done) = tracking.record(&body[start..start + len], now) {
            completed.push(done);
        }
        at = start + len;
    }
    completed
}
