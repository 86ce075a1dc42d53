//! The fake as the SDK's HTTP client: each request is answered in process, its waits on
//! tokio's clock.

use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use super::{AwsError, CallLog, Inner, Op, kinesis, sqs, take_one};

#[derive(Clone)]
pub(super) struct Wire(pub(super) Arc<Inner>);

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeAws")
    }
}

impl HttpClient for Wire {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Wire {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").map(str::to_owned);
        let body = request.body().bytes().map(<[u8]>::to_vec).unwrap_or_default();
        let inner = self.0.clone();
        HttpConnectorFuture::new(async move { Ok(answer(&inner, target.as_deref(), &body).await) })
    }
}

/// What one call does to the fake, and what it answers.
async fn answer(inner: &Inner, target: Option<&str>, body: &[u8]) -> HttpResponse {
    let Some(op) = target.and_then(Op::from_target) else {
        let error = AwsError::new(400, "UnknownOperationException", &format!("unknown target {target:?}"));
        return respond(false, Err(error));
    };
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => {
            return respond(
                op.is_kinesis(),
                Err(AwsError::new(400, "SerializationException", &e.to_string())),
            );
        }
    };
    let (index, latency, black_hole, error, lose, stall) = {
        let mut world = lock(inner);
        let index = world.calls.len();
        let requested = request["Records"].as_array().or(request["Entries"].as_array());
        let entries = requested.map_or(0, Vec::len);
        world.calls.push(CallLog {
            op,
            at: Instant::now(),
            entries,
            error: None,
        });
        let faults = &mut world.faults;
        let per_entry = faults.latency_per_entry.get(&op).copied().unwrap_or_default();
        let latency = faults.latency.get(&op).copied().unwrap_or_default() + per_entry * entries as u32;
        let black_hole = faults.black_hole.get(&op).copied().unwrap_or(false);
        let error = if black_hole {
            None
        } else {
            faults.call_errors.get_mut(&op).and_then(take_one)
        };
        let answered = !black_hole && error.is_none();
        let lose = answered && take_count(&mut faults.lost_answers, op);
        let stall = answered && !lose && take_count(&mut faults.stalled_bodies, op);
        (index, latency, black_hole, error, lose, stall)
    };
    sleep(latency / 2).await;
    if black_hole {
        return std::future::pending().await;
    }
    let result = match error {
        Some(error) => Err(error),
        None => match op {
            Op::ReceiveMessage => sqs::receive_message(inner, &request).await,
            _ => {
                let mut world = lock(inner);
                let result = match op {
                    Op::DeleteMessageBatch => sqs::delete_message_batch(&mut world, &request),
                    Op::ChangeMessageVisibilityBatch => sqs::change_visibility_batch(&mut world, &request),
                    Op::SendMessage => sqs::send_message(&mut world, &request),
                    Op::GetQueueUrl => sqs::get_queue_url(&world, &request),
                    Op::GetQueueAttributes => sqs::get_queue_attributes(&world, &request),
                    Op::PutRecords => kinesis::put_records(&mut world, &request),
                    Op::DescribeStreamSummary => kinesis::describe_stream_summary(&world, &request),
                    Op::ReceiveMessage => unreachable!("answered above"),
                };
                drop(world);
                if matches!(op, Op::SendMessage | Op::ChangeMessageVisibilityBatch) {
                    inner.arrivals.notify_waiters();
                }
                result
            }
        },
    };
    {
        let mut world = lock(inner);
        let call = &mut world.calls[index];
        match &result {
            Ok((_, messages)) if op == Op::ReceiveMessage => call.entries = *messages,
            Ok(_) => {}
            Err(e) => call.error = Some(e.code.clone()),
        }
    }
    sleep(latency - latency / 2).await;
    if lose {
        return std::future::pending().await;
    }
    let mut response = respond(op.is_kinesis(), result.map(|(value, _)| value));
    if stall {
        *response.body_mut() = SdkBody::from_body_1_x(StalledBody);
    }
    response
}

/// A body none of which ever arrives.
struct StalledBody;

impl http_body::Body for StalledBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// Takes one of the next calls of `op` that `counts` holds for a fault.
fn take_count(counts: &mut std::collections::HashMap<Op, usize>, op: Op) -> bool {
    match counts.get_mut(&op) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, super::World> {
    inner.world.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer in the service's JSON protocol (SQS: awsJson1_0; Kinesis: awsJson1_1).
fn respond(kinesis: bool, result: Result<Value, AwsError>) -> HttpResponse {
    let content_type = if kinesis {
        "application/x-amz-json-1.1"
    } else {
        "application/x-amz-json-1.0"
    };
    let (status, body) = match result {
        Ok(value) => (200, value),
        Err(error) => (error.status, json!({"__type": error.code, "message": error.message})),
    };
    let status = StatusCode::try_from(status).unwrap_or_else(|_| StatusCode::try_from(500).expect("500 is a status"));
    let body = body.to_string();
    let length = body.len().to_string();
    let mut response = HttpResponse::new(status, SdkBody::from(body));
    response.headers_mut().insert("content-type", content_type);
    // As AWS does: the collector reserves an answer's size from it before reading the body.
    response.headers_mut().insert("content-length", length);
    response
}
