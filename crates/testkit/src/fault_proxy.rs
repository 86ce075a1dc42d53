//! A fault-injecting HTTP proxy between the collector and the emulator.
//!
//! Everything is forwarded unchanged except Kinesis PutRecords calls, of which a share of the
//! records is failed the way Kinesis does it: the failed records are *not* forwarded (so they
//! are not written), and the answer carries `ProvisionedThroughputExceededException` at their
//! positions, with HTTP 200. The emulator does not check signatures, so the rewritten body
//! needs no new one.
//!
//! Refusals (`set_access_denied`): every call of one action (its `X-Amz-Target`) is answered
//! with HTTP 400 `AccessDenied` in that service's JSON shape, as IAM refuses it, and not
//! forwarded. PutRecords can be refused whole with any error code (`set_put_records_error`,
//! naming no record), or with a validation error naming the call's first record
//! (`set_put_records_refusal_of_first_record`).
//!
//! Outages: every call can be cut (`set_offline`), every Kinesis call (`set_kinesis_down`) or
//! every SQS call (`set_sqs_down`); `set_latency` holds every call back before it is handled, a
//! slow network path. The proxy also notes every receipt handle SQS hands out, so tests can
//! look for them in logs.
//!
//! Black holes (`set_sqs_black_hole`, `set_kinesis_black_hole`): what a NAT or load balancer
//! that lost a connection's state does. Every request of that path, on open connections and on
//! new ones, is read and never answered, and so is the answer to a request that was upstream
//! when the hole began (the call may have taken effect); a connection that swallowed a request,
//! or that was open when the black hole began and then carries a request of that path, stays
//! dead after the network heals. Only a new connection gets through again.
//!
//! One upstream serves both services, or (`start_split`) Kinesis calls go to an upstream of
//! their own, told apart by their `X-Amz-Target`: one emulator is fast at SQS, another at
//! Kinesis. The proxy listens on two ports (`endpoint` and `kinesis_endpoint`), so that a
//! collector can reach each service on connections of its own, as it does on AWS; both ports
//! route by target.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

const PUT_RECORDS_TARGET: &str = "Kinesis_20131202.PutRecords";
const DELETE_MESSAGE_BATCH_TARGET: &str = "AmazonSQS.DeleteMessageBatch";
const CHANGE_VISIBILITY_BATCH_TARGET: &str = "AmazonSQS.ChangeMessageVisibilityBatch";
const RECEIVE_MESSAGE_TARGET: &str = "AmazonSQS.ReceiveMessage";
const SEND_MESSAGE_TARGET: &str = "AmazonSQS.SendMessage";
/// SQS's limit on one message: body plus every attribute's name, type and value.
const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;
const KINESIS_TARGET_PREFIX: &str = "Kinesis_20131202.";
const SQS_TARGET_PREFIX: &str = "AmazonSQS.";

/// Shared, adjustable fault plan and what the proxy did.
#[derive(Default)]
pub struct Faults {
    /// Share of PutRecords records to fail, in parts per million.
    put_records_failure_ppm: AtomicU64,
    /// Share of PutRecords calls to fail whole, in parts per million: alternately an HTTP 500
    /// and a connection closed without an answer.
    put_records_call_failure_ppm: AtomicU64,
    pub calls_failed: AtomicU64,
    /// Share of DeleteMessageBatch entries to refuse (an invalid receipt, the sender's fault),
    /// in parts per million.
    delete_failure_ppm: AtomicU64,
    /// Share of DeleteMessageBatch and ChangeMessageVisibilityBatch entries to fail with SQS's
    /// own `InternalError` (`SenderFault: false`), in parts per million.
    sqs_entry_internal_error_ppm: AtomicU64,
    pub entries_failed_internally: AtomicU64,
    pub deletes_failed: AtomicU64,
    /// Share of ChangeMessageVisibilityBatch entries to refuse, in parts per million.
    visibility_failure_ppm: AtomicU64,
    pub visibility_changes_failed: AtomicU64,
    pub records_failed: AtomicU64,
    pub records_forwarded: AtomicU64,
    offline: AtomicBool,
    kinesis_down: AtomicBool,
    sqs_down: AtomicBool,
    /// Calls cut because of `offline`, `kinesis_down` or `sqs_down`.
    pub calls_cut: AtomicU64,
    /// Of those, the Kinesis and the SQS calls.
    pub kinesis_calls_cut: AtomicU64,
    pub sqs_calls_cut: AtomicU64,
    /// Added delay per call, in milliseconds.
    latency_ms: AtomicU64,
    /// Calls held back by that delay.
    pub calls_delayed: AtomicU64,
    /// Every receipt handle SQS returned through the proxy.
    pub receipt_handles: Mutex<Vec<String>>,
    rng: AtomicU64,
    sqs_black_hole: AtomicBool,
    kinesis_black_hole: AtomicBool,
    /// How many black holes of each path have begun: a connection older than the latest is
    /// dead for that path.
    sqs_black_hole_epoch: AtomicU64,
    kinesis_black_hole_epoch: AtomicU64,
    /// Requests read and never answered, by path.
    pub sqs_calls_swallowed: AtomicU64,
    pub kinesis_calls_swallowed: AtomicU64,
    /// Connections accepted, over both ports.
    pub connections: AtomicU64,
    /// While set, every PutRecords call fails whole with this AWS error code and message
    /// (HTTP 400).
    put_records_error: Mutex<Option<(String, String)>>,
    /// SendMessage calls refused for exceeding SQS's size limit.
    pub messages_too_long: AtomicU64,
    /// While set, every call with this `X-Amz-Target` is refused with AccessDenied.
    access_denied: Mutex<Option<String>>,
    pub calls_denied: AtomicU64,
    /// ReceiveMessage requests that reached the proxy.
    pub receive_calls: AtomicU64,
}

/// What one client connection has been through.
struct Connection {
    /// Black-hole epochs when it was opened.
    sqs_epoch: u64,
    kinesis_epoch: u64,
    /// Swallowed a request: nothing on it is ever answered again.
    dead: AtomicBool,
}

impl Faults {
    pub fn set_put_records_failure_rate(&self, rate: f64) {
        self.put_records_failure_ppm
            .store((rate * 1e6) as u64, Ordering::SeqCst);
    }

    pub fn set_put_records_call_failure_rate(&self, rate: f64) {
        self.put_records_call_failure_ppm
            .store((rate * 1e6) as u64, Ordering::SeqCst);
    }

    pub fn set_delete_failure_rate(&self, rate: f64) {
        self.delete_failure_ppm.store((rate * 1e6) as u64, Ordering::SeqCst);
    }

    /// Makes every PutRecords call fail whole with `code` (e.g. `AccessDeniedException`), or
    /// stops doing so (`None`).
    pub fn set_put_records_error(&self, code: Option<&str>) {
        *self.put_records_error.lock().unwrap() =
            code.map(|code| (code.to_owned(), "injected by the test proxy".to_owned()));
    }

    /// Makes every PutRecords call fail whole with a 400 `code` (`ValidationException`,
    /// `InvalidArgumentException`) whose message names the call's first record, as Kinesis
    /// names a record it refuses (`records.1.member.data`, 1-based); or stops (`None`).
    pub fn set_put_records_refusal_of_first_record(&self, code: Option<&str>) {
        *self.put_records_error.lock().unwrap() = code.map(|code| {
            (
                code.to_owned(),
                "1 validation error detected: Value at 'records.1.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576".to_owned(),
            )
        });
    }

    /// Refuses every call whose `X-Amz-Target` is `target` (e.g. `AmazonSQS.DeleteMessageBatch`)
    /// the way IAM does, or stops doing so (`None`).
    pub fn set_access_denied(&self, target: Option<&str>) {
        *self.access_denied.lock().unwrap() = target.map(str::to_owned);
    }

    /// Fails a share of delete and visibility entries with `InternalError`, not the sender's
    /// fault: worth retrying.
    pub fn set_sqs_entry_internal_error_rate(&self, rate: f64) {
        self.sqs_entry_internal_error_ppm
            .store((rate * 1e6) as u64, Ordering::SeqCst);
    }

    pub fn set_visibility_failure_rate(&self, rate: f64) {
        self.visibility_failure_ppm.store((rate * 1e6) as u64, Ordering::SeqCst);
    }

    /// Cuts every call (SQS and Kinesis) while set: an unreachable endpoint.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// Cuts every Kinesis call while set; SQS still answers.
    pub fn set_kinesis_down(&self, down: bool) {
        self.kinesis_down.store(down, Ordering::SeqCst);
    }

    /// Cuts every SQS call while set; Kinesis still answers.
    pub fn set_sqs_down(&self, down: bool) {
        self.sqs_down.store(down, Ordering::SeqCst);
    }

    /// Swallows every SQS request while set, and kills the connections it touches for good.
    pub fn set_sqs_black_hole(&self, on: bool) {
        if on && !self.sqs_black_hole.swap(true, Ordering::SeqCst) {
            self.sqs_black_hole_epoch.fetch_add(1, Ordering::SeqCst);
        }
        if !on {
            self.sqs_black_hole.store(false, Ordering::SeqCst);
        }
    }

    /// Swallows every Kinesis request while set, and kills the connections it touches for good.
    pub fn set_kinesis_black_hole(&self, on: bool) {
        if on && !self.kinesis_black_hole.swap(true, Ordering::SeqCst) {
            self.kinesis_black_hole_epoch.fetch_add(1, Ordering::SeqCst);
        }
        if !on {
            self.kinesis_black_hole.store(false, Ordering::SeqCst);
        }
    }

    pub fn calls_swallowed(&self) -> u64 {
        self.sqs_calls_swallowed.load(Ordering::SeqCst) + self.kinesis_calls_swallowed.load(Ordering::SeqCst)
    }

    /// True when a request of this path on `connection` must be swallowed.
    fn swallows(&self, connection: &Connection, kinesis: bool, sqs: bool) -> bool {
        let hole = (kinesis
            && (self.kinesis_black_hole.load(Ordering::SeqCst)
                || self.kinesis_black_hole_epoch.load(Ordering::SeqCst) > connection.kinesis_epoch))
            || (sqs
                && (self.sqs_black_hole.load(Ordering::SeqCst)
                    || self.sqs_black_hole_epoch.load(Ordering::SeqCst) > connection.sqs_epoch));
        connection.dead.load(Ordering::SeqCst) || hole
    }

    /// Holds every call back by `delay` before handling it (zero: no delay).
    pub fn set_latency(&self, delay: Duration) {
        self.latency_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// xorshift: reproducible enough and needs no dependency.
    fn next_ppm(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x % 1_000_000
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    /// A second port, for a client's Kinesis connections; it routes the same way.
    pub kinesis_endpoint: String,
    pub faults: Arc<Faults>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where calls go: Kinesis calls to `kinesis`, every other call to `sqs`.
#[derive(Clone, Copy)]
struct Upstreams {
    sqs: SocketAddr,
    kinesis: SocketAddr,
}

fn socket_address(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("upstream endpoint is http://IP:PORT")
}

impl FaultProxy {
    /// A proxy in front of one endpoint that serves SQS and Kinesis.
    pub async fn start(upstream: &str, seed: u64) -> FaultProxy {
        FaultProxy::start_split(upstream, upstream, seed).await
    }

    /// A proxy in front of an SQS endpoint and a Kinesis endpoint (possibly the same one).
    pub async fn start_split(sqs_upstream: &str, kinesis_upstream: &str, seed: u64) -> FaultProxy {
        let upstreams = Upstreams {
            sqs: socket_address(sqs_upstream),
            kinesis: socket_address(kinesis_upstream),
        };
        let faults = Arc::new(Faults::default());
        faults.rng.store(seed, Ordering::Relaxed);
        let mut endpoints = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            endpoints.push(format!("http://{}", listener.local_addr().unwrap()));
            tasks.push(tokio::spawn(serve(listener, upstreams, faults.clone())));
        }
        let kinesis_endpoint = endpoints.pop().unwrap();
        let endpoint = endpoints.pop().unwrap();
        FaultProxy {
            endpoint,
            kinesis_endpoint,
            faults,
            tasks,
        }
    }
}

async fn serve(listener: TcpListener, upstreams: Upstreams, faults: Arc<Faults>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        faults.connections.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            sqs_epoch: faults.sqs_black_hole_epoch.load(Ordering::SeqCst),
            kinesis_epoch: faults.kinesis_black_hole_epoch.load(Ordering::SeqCst),
            dead: AtomicBool::new(false),
        });
        let faults = faults.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, upstreams, faults.clone(), connection.clone()));
            let _ = server_http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The error makes hyper close the connection without an answer: a cut network path.
#[derive(Debug)]
struct ConnectionCut;

impl std::fmt::Display for ConnectionCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by the test proxy")
    }
}

impl std::error::Error for ConnectionCut {}

async fn handle(
    req: Request<Incoming>,
    upstreams: Upstreams,
    faults: Arc<Faults>,
    connection: Arc<Connection>,
) -> Result<Response<Full<Bytes>>, ConnectionCut> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts
        .headers
        .get("x-amz-target")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    if target == RECEIVE_MESSAGE_TARGET {
        faults.receive_calls.fetch_add(1, Ordering::SeqCst);
    }
    let latency = faults.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        faults.calls_delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let kinesis = target.starts_with(KINESIS_TARGET_PREFIX);
    let sqs = target.starts_with(SQS_TARGET_PREFIX);
    let upstream = if kinesis { upstreams.kinesis } else { upstreams.sqs };
    if faults.swallows(&connection, kinesis, sqs) {
        return swallow(&faults, &connection, kinesis).await;
    }
    if faults.offline.load(Ordering::SeqCst)
        || (kinesis && faults.kinesis_down.load(Ordering::SeqCst))
        || (sqs && faults.sqs_down.load(Ordering::SeqCst))
    {
        faults.calls_cut.fetch_add(1, Ordering::Relaxed);
        if kinesis {
            faults.kinesis_calls_cut.fetch_add(1, Ordering::Relaxed);
        } else if sqs {
            faults.sqs_calls_cut.fetch_add(1, Ordering::Relaxed);
        }
        return Err(ConnectionCut);
    }
    let denied = faults.access_denied.lock().unwrap().clone();
    if denied.as_deref() == Some(target.as_str()) {
        faults.calls_denied.fetch_add(1, Ordering::Relaxed);
        return Ok(access_denied(&target));
    }
    let injected_error = faults.put_records_error.lock().unwrap().clone();
    if let (PUT_RECORDS_TARGET, Some((code, message))) = (target.as_str(), injected_error) {
        faults.calls_failed.fetch_add(1, Ordering::Relaxed);
        let answer = json!({"__type": code, "message": message});
        return Ok(Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(answer.to_string())))
            .unwrap());
    }
    // The emulators check a message's body alone; SQS counts its attributes too.
    if target == SEND_MESSAGE_TARGET && sqs_message_size(&body) > SQS_MAX_MESSAGE_BYTES {
        faults.messages_too_long.fetch_add(1, Ordering::Relaxed);
        let answer = json!({
            "__type": "com.amazonaws.sqs#InvalidParameterValue",
            "message": "One or more parameters are invalid. Reason: Message must be shorter than 1048576 bytes."
        });
        return Ok(Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", "InvalidParameterValue;Sender")
            .body(Full::new(Bytes::from(answer.to_string())))
            .unwrap());
    }
    if target == PUT_RECORDS_TARGET && faults.next_ppm() < faults.put_records_call_failure_ppm.load(Ordering::SeqCst) {
        let n = faults.calls_failed.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(2) {
            return Err(ConnectionCut);
        }
        return Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from_static(
                br#"{"__type":"InternalFailure","message":"injected by the test proxy"}"#,
            )))
            .unwrap());
    }
    let response = match target.as_str() {
        PUT_RECORDS_TARGET => put_records_with_failures(parts, body, upstream, &faults).await,
        DELETE_MESSAGE_BATCH_TARGET => {
            let threshold = faults.delete_failure_ppm.load(Ordering::SeqCst);
            batch_with_failures(parts, body, upstream, &faults, threshold, &faults.deletes_failed).await
        }
        CHANGE_VISIBILITY_BATCH_TARGET => {
            let threshold = faults.visibility_failure_ppm.load(Ordering::SeqCst);
            batch_with_failures(
                parts,
                body,
                upstream,
                &faults,
                threshold,
                &faults.visibility_changes_failed,
            )
            .await
        }
        RECEIVE_MESSAGE_TARGET => note_receipt_handles(parts, body, upstream, &faults).await,
        _ => forward(parts, body, upstream).await,
    };
    // A black hole that began while the request was upstream swallows its answer too: the
    // call may have taken effect (records written, messages received) without the client
    // ever learning of it, as on a real network.
    if faults.swallows(&connection, kinesis, sqs) {
        return swallow(&faults, &connection, kinesis).await;
    }
    Ok(response.unwrap_or_else(|e| {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Full::new(Bytes::from(e)))
            .unwrap()
    }))
}

/// IAM's refusal of the call `target`, in its service's JSON protocol: Kinesis names the error
/// in `__type`; SQS (JSON with query compatibility) in the `x-amzn-query-error` header too. The
/// batch calls are authorised as their single action (`sqs:DeleteMessage` for
/// DeleteMessageBatch), and SQS writes action names in lower case.
fn access_denied(target: &str) -> Response<Full<Bytes>> {
    const USER: &str = "arn:aws:sts::123456789012:assumed-role/collector/test";
    let (service, operation) = target.split_once('.').unwrap_or(("", target));
    let response = Response::builder().status(StatusCode::BAD_REQUEST);
    let (response, answer) = if service.starts_with("Kinesis") {
        let answer = json!({
            "__type": "AccessDeniedException",
            "message": format!("User: {USER} is not authorized to perform: kinesis:{operation} on resource: arn:aws:kinesis:eu-west-1:123456789012:stream/events because no identity-based policy allows the kinesis:{operation} action (injected by the test proxy)"),
        });
        (response.header("content-type", "application/x-amz-json-1.1"), answer)
    } else {
        let action = format!("sqs:{}", operation.trim_end_matches("Batch").to_ascii_lowercase());
        let answer = json!({
            "__type": "com.amazon.coral.service#AccessDeniedException",
            "message": format!("User: {USER} is not authorized to perform: {action} on resource: arn:aws:sqs:eu-west-1:123456789012:submissions because no identity-based policy allows the {action} action (injected by the test proxy)"),
        });
        let response = response
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", "AccessDenied;Sender");
        (response, answer)
    };
    response.body(Full::new(Bytes::from(answer.to_string()))).unwrap()
}

/// Read, and never answered: the client learns of it only by timing out. The connection is
/// dead for good.
async fn swallow(
    faults: &Faults,
    connection: &Connection,
    kinesis: bool,
) -> Result<Response<Full<Bytes>>, ConnectionCut> {
    connection.dead.store(true, Ordering::SeqCst);
    if kinesis {
        faults.kinesis_calls_swallowed.fetch_add(1, Ordering::Relaxed);
    } else {
        faults.sqs_calls_swallowed.fetch_add(1, Ordering::Relaxed);
    }
    std::future::pending().await
}

/// What SQS counts against its message size limit in a SendMessage request (JSON protocol):
/// the body, and each attribute's name, data type and value.
fn sqs_message_size(request: &[u8]) -> usize {
    let Ok(request) = serde_json::from_slice::<Value>(request) else {
        return 0;
    };
    let body = request["MessageBody"].as_str().map_or(0, str::len);
    let attributes: usize = request["MessageAttributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            name.len()
                + value["DataType"].as_str().map_or(0, str::len)
                + value["StringValue"].as_str().map_or(0, str::len)
        })
        .sum();
    body + attributes
}

async fn forward(
    mut parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> Result<Response<Full<Bytes>>, String> {
    let stream = TcpStream::connect(upstream).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    parts.headers.insert("content-length", body.len().into());
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

async fn put_records_with_failures(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
    faults: &Faults,
) -> Result<Response<Full<Bytes>>, String> {
    let mut request: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let threshold = faults.put_records_failure_ppm.load(Ordering::SeqCst);
    let fail: Vec<bool> = records.iter().map(|_| faults.next_ppm() < threshold).collect();
    let kept: Vec<Value> = records
        .iter()
        .zip(&fail)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.clone())
        .collect();
    let failed_count = fail.iter().filter(|f| **f).count();
    if failed_count == 0 {
        faults
            .records_forwarded
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        return forward(parts, body, upstream).await;
    }
    faults.records_failed.fetch_add(failed_count as u64, Ordering::Relaxed);
    let mut upstream_results = Vec::new().into_iter();
    let mut upstream_failed = 0;
    if !kept.is_empty() {
        faults.records_forwarded.fetch_add(kept.len() as u64, Ordering::Relaxed);
        request["Records"] = Value::Array(kept);
        let forwarded = Bytes::from(serde_json::to_vec(&request).unwrap());
        let response = forward(parts, forwarded, upstream).await?;
        if response.status() != StatusCode::OK {
            return Ok(response);
        }
        let answer: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
            .map_err(|e| e.to_string())?;
        upstream_failed = answer["FailedRecordCount"].as_u64().unwrap_or(0);
        upstream_results = answer["Records"].as_array().cloned().unwrap_or_default().into_iter();
    }
    let merged: Vec<Value> = fail
        .iter()
        .map(|failed| {
            if *failed {
                json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected by the test proxy"})
            } else {
                upstream_results.next().unwrap_or(Value::Null)
            }
        })
        .collect();
    let answer = json!({"FailedRecordCount": failed_count as u64 + upstream_failed, "Records": merged});
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())))
        .unwrap())
}

/// Fails a share of a DeleteMessageBatch or ChangeMessageVisibilityBatch call's entries the way
/// SQS does: HTTP 200 with the entries in `Failed`; those entries are not forwarded, so nothing
/// happens to their messages. Refused entries are the sender's fault (`ReceiptHandleIsInvalid`);
/// internal errors are not (`InternalError`, `SenderFault: false`).
async fn batch_with_failures(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
    faults: &Faults,
    threshold: u64,
    failed_counter: &AtomicU64,
) -> Result<Response<Full<Bytes>>, String> {
    let internal = faults.sqs_entry_internal_error_ppm.load(Ordering::SeqCst);
    if threshold == 0 && internal == 0 {
        return forward(parts, body, upstream).await;
    }
    let mut request: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    let (mut failed, mut kept) = (Vec::new(), Vec::new());
    for entry in entries {
        if faults.next_ppm() < threshold {
            failed_counter.fetch_add(1, Ordering::Relaxed);
            failed.push(json!({"Id": entry["Id"], "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "injected by the test proxy"}));
        } else if faults.next_ppm() < internal {
            faults.entries_failed_internally.fetch_add(1, Ordering::Relaxed);
            failed.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError", "Message": "injected by the test proxy"}));
        } else {
            kept.push(entry);
        }
    }
    let mut answer = json!({"Successful": [], "Failed": []});
    if !kept.is_empty() {
        request["Entries"] = Value::Array(kept);
        let response = forward(parts, Bytes::from(serde_json::to_vec(&request).unwrap()), upstream).await?;
        if response.status() != StatusCode::OK {
            return Ok(response);
        }
        answer = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
            .map_err(|e| e.to_string())?;
    }
    let mut all_failed = answer["Failed"].as_array().cloned().unwrap_or_default();
    all_failed.append(&mut failed);
    answer["Failed"] = Value::Array(all_failed);
    if answer["Successful"].is_null() {
        answer["Successful"] = json!([]);
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())))
        .unwrap())
}

async fn note_receipt_handles(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
    faults: &Faults,
) -> Result<Response<Full<Bytes>>, String> {
    let response = forward(parts, body, upstream).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    if let Ok(answer) = serde_json::from_slice::<Value>(&bytes) {
        let handles = answer["Messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["ReceiptHandle"].as_str().map(str::to_owned));
        faults.receipt_handles.lock().unwrap().extend(handles);
    }
    Ok(Response::from_parts(parts, Full::new(bytes)))
}
