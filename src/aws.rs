//! The AWS clients every stage shares, and what bounds each call.
//!
//! The SDK's own retries are off: every call site retries through `retry`, so that each failure
//! is counted, logged once per episode, and paced by the configured backoff. Every call has an
//! attempt timeout (`AWS_CALL_TIMEOUT_SEC`): without one, a request swallowed by the network (a
//! NAT or load balancer that lost the connection's state) is never answered and its caller waits
//! forever. A timed-out attempt is dropped with its connection, so the retry opens a new one.
//! The SDK's stalled-stream protection is off for the same reason: the attempt timeout already
//! bounds a body that stops flowing, and the protection's watch on every body and call was
//! about 1% of the collector's work at its ceiling (`docs/performance.md`).
//!
//! Also here: SQS's limits, and the calls more than one stage makes (resolving the queue,
//! describing the stream).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::types::{StreamMode, StreamStatus};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use tokio_util::sync::CancellationToken;

use crate::metrics::kit::{Counters, outcome};
use crate::pipeline::body_budget::ReceiveHttpClient;
use crate::retry::{RetryPolicy, retry_until};

/// SQS's limit on entries per batch call (DeleteMessageBatch, ChangeMessageVisibilityBatch).
pub(crate) const SQS_BATCH_ENTRIES: usize = 10;

/// SQS's longest visibility timeout, in seconds (12 hours).
pub(crate) const SQS_MAX_VISIBILITY_SECS: u64 = 43_200;

/// SQS's limit on a message: body plus attributes (names, types and values).
pub(crate) const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Time allowed for the TCP (and TLS) connection, within the attempt timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the queue is found: by name (GetQueueUrl) or by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    Name(String),
    Url(String),
}

/// The queue once resolved: the client, and the URL every SQS call names.
#[derive(Clone)]
pub(crate) struct Queue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

/// The SQS and Kinesis clients, built once from the SDK's configuration.
#[derive(Clone)]
pub(crate) struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    /// The SQS client's HTTP client, which the ReceiveMessage calls' client wraps to reserve
    /// each answer's size in the body budget (`pipeline::body_budget`).
    pub sqs_http: SharedHttpClient,
    /// The attempt timeout of every call but ReceiveMessage.
    pub call_timeout: Duration,
}

impl Clients {
    pub fn new(sdk_config: &SdkConfig, call_timeout: Duration) -> Clients {
        let timeouts = timeouts(call_timeout);
        let sqs_http = sdk_config.http_client().unwrap_or_else(default_https_client);
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk_config)
                .http_client(sqs_http.clone())
                .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
                .stalled_stream_protection(aws_sdk_sqs::config::StalledStreamProtectionConfig::disabled())
                .timeout_config(timeouts.clone())
                .build(),
        );
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(sdk_config)
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
                .stalled_stream_protection(aws_sdk_kinesis::config::StalledStreamProtectionConfig::disabled())
                .timeout_config(timeouts)
                .build(),
        );
        Clients {
            sqs,
            kinesis,
            sqs_http,
            call_timeout,
        }
    }

    /// The client of the ReceiveMessage calls: a long poll is answered only after its wait
    /// time when the queue is empty, so its attempt may last that much longer; and its HTTP
    /// client reserves each answer's size in the body budget (`pipeline::body_budget`). Made
    /// once: a per-call configuration override costs about as much as the call's signing.
    pub(crate) fn receive_client(&self, wait_time: Duration) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            self.sqs
                .config()
                .to_builder()
                .timeout_config(timeouts(wait_time + self.call_timeout))
                .http_client(ReceiveHttpClient::new(self.sqs_http.clone()))
                .build(),
        )
    }
}

/// The SDK's default HTTPS client, as its clients build it when none is set (rustls with
/// aws-lc, the proxy taken from `HTTPS_PROXY`/`NO_PROXY`), made here so that the ReceiveMessage
/// call can wrap the very client the other SQS calls use, and share its connections.
fn default_https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = aws_smithy_http_client::ConnectorBuilder::default().tls_provider(
            aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ),
        );
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(aws_smithy_http_client::proxy::ProxyConfig::from_env()));
        connector.build()
    })
}

/// The connect and attempt timeouts of every call of a client.
pub(crate) fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt)
        .build()
}

/// The largest body the queue accepts (its `MaximumMessageSize`), which bounds what a receive
/// can bring. SQS's own limit when the attribute cannot be read: a safe over-estimate.
pub(crate) async fn queue_max_message_bytes(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)
        .send()
        .await;
    let size = answer.as_ref().ok().and_then(|output| {
        output
            .attributes()?
            .get(&aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)?
            .parse::<usize>()
            .ok()
    });
    match size {
        Some(size) => size.clamp(1, SQS_MAX_MESSAGE_BYTES),
        None => {
            tracing::warn!(
                error = answer.err().map(|e| DisplayErrorContext(e).to_string()),
                assumed = SQS_MAX_MESSAGE_BYTES,
                "the queue's MaximumMessageSize could not be read; assuming SQS's limit"
            );
            SQS_MAX_MESSAGE_BYTES
        }
    }
}

/// Finds the queue URL, retrying with backoff until it exists (or until shutdown).
pub(crate) async fn resolve_queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue: &QueueRef,
    retry: RetryPolicy,
    shutdown: &CancellationToken,
) -> Option<String> {
    let name = match queue {
        QueueRef::Url(url) => {
            // Checked all the same, so that a wrong URL or an unreachable endpoint shows at start.
            let url = url.clone();
            return retry_until(format!("GetQueueAttributes {url}"), retry, shutdown, || {
                let (sqs, url) = (sqs.clone(), url.clone());
                async move {
                    sqs.get_queue_attributes()
                        .queue_url(&url)
                        .send()
                        .await
                        .map(|_| url)
                        .map_err(|e| DisplayErrorContext(e).to_string())
                }
            })
            .await;
        }
        QueueRef::Name(name) => name.clone(),
    };
    retry_until(format!("GetQueueUrl {name}"), retry, shutdown, || {
        let (sqs, name) = (sqs.clone(), name.clone());
        async move {
            match sqs.get_queue_url().queue_name(name).send().await {
                Ok(output) => output
                    .queue_url
                    .ok_or_else(|| "GetQueueUrl answered without a URL".to_owned()),
                Err(e) => Err(DisplayErrorContext(e).to_string()),
            }
        }
    })
    .await
}

/// What DescribeStreamSummary says of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamSummary {
    pub status: StreamStatus,
    pub mode: Option<StreamMode>,
    pub open_shards: u32,
}

impl StreamSummary {
    /// True when the stream takes writes.
    pub(crate) fn writable(&self) -> bool {
        matches!(self.status, StreamStatus::Active | StreamStatus::Updating)
    }
}

/// One DescribeStreamSummary call, the one Kinesis call that start-up, the breaker's probe and
/// the shard supervisor share.
pub(crate) async fn describe_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<StreamSummary, String> {
    let output = kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())?;
    let summary = output
        .stream_description_summary
        .ok_or_else(|| "DescribeStreamSummary answered without a description".to_owned())?;
    Ok(StreamSummary {
        status: summary.stream_status,
        mode: summary.stream_mode_details.map(|d| d.stream_mode),
        open_shards: summary.open_shard_count.max(0) as u32,
    })
}

/// Asks for the stream until it exists and takes writes, with backoff; `None` if shutdown
/// comes first. Each answer counts in `probes` (the breaker's Kinesis probes).
pub(crate) async fn wait_for_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    retry: RetryPolicy,
    probes: &Counters,
    shutdown: &CancellationToken,
) -> Option<()> {
    retry_until(format!("DescribeStreamSummary {stream}"), retry, shutdown, || async {
        let found = describe_stream(kinesis, stream).await.and_then(|summary| {
            if summary.writable() {
                Ok(())
            } else {
                Err(format!("stream is {}", summary.status.as_str()))
            }
        });
        outcome(probes, if found.is_ok() { "ok" } else { "failed" }, 1);
        found
    })
    .await
}

/// Why SQS did not apply one entry of a batch call (DeleteMessageBatch,
/// ChangeMessageVisibilityBatch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryFailure {
    /// SQS's code (`ReceiptHandleIsInvalid`, `InternalError`, ...).
    pub code: String,
    pub message: String,
    /// False when SQS says the failure was its own, not the request's: worth asking again.
    pub sender_fault: bool,
}

impl EntryFailure {
    pub(crate) fn reason(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

/// The result of each entry of an SQS batch call, in request order, from the answer's
/// successful ids and failures. The request's entry ids must be the entries' positions. An entry
/// the answer does not mention failed, not by the sender's fault: asking again is safe.
pub(crate) fn batch_results<'a>(
    entries: usize,
    successful_ids: impl IntoIterator<Item = &'a str>,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) -> Vec<Result<(), EntryFailure>> {
    let missing = EntryFailure {
        code: "Missing".to_owned(),
        message: "the entry is missing from the answer".to_owned(),
        sender_fault: false,
    };
    let mut results = vec![Err(missing); entries];
    for id in successful_ids {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Ok(());
        }
    }
    for failure in failed {
        if let Some(slot) = failure.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Err(EntryFailure {
                code: failure.code().to_owned(),
                message: failure.message().unwrap_or_default().to_owned(),
                sender_fault: failure.sender_fault(),
            });
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::BatchResultErrorEntry;

    use super::*;

    fn failure(id: &str, code: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .message("why")
            .sender_fault(sender_fault)
            .build()
            .expect("every required field is set")
    }

    #[test]
    fn each_entry_gets_its_result_by_position_and_an_unmentioned_one_is_worth_asking_again() {
        let failed = [
            failure("2", "ReceiptHandleIsInvalid", true),
            failure("0", "InternalError", false),
            failure("9", "InternalError", false),
        ];
        let results = batch_results(4, ["1", "x"], &failed);
        assert_eq!(results[1], Ok(()));
        assert_eq!(
            results[0].as_ref().map_err(|f| (f.code.as_str(), f.sender_fault)),
            Err(("InternalError", false))
        );
        assert_eq!(
            results[2].as_ref().map_err(|f| f.reason()),
            Err("ReceiptHandleIsInvalid: why".to_owned())
        );
        assert_eq!(
            results[3].as_ref().map_err(|f| (f.code.as_str(), f.sender_fault)),
            Err(("Missing", false))
        );
    }
}
