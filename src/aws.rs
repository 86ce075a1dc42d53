//! The AWS clients every stage shares, and what bounds each call.
//!
//! The SDK's own retries are off: every call site retries through `retry`, so that each failure
//! is counted, logged once per episode, and paced by the configured backoff. Every call has an
//! attempt timeout (`AWS_CALL_TIMEOUT_SEC`): without one, a request swallowed by the network (a
//! NAT or load balancer that lost the connection's state) is never answered and its caller waits
//! forever. A timed-out attempt is dropped with its connection, so the retry opens a new one.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;

/// SQS's limit on entries per batch call (DeleteMessageBatch, ChangeMessageVisibilityBatch).
pub const SQS_BATCH_ENTRIES: usize = 10;

/// SQS's longest visibility timeout, in seconds (12 hours).
pub const SQS_MAX_VISIBILITY_SECS: u64 = 43_200;

/// SQS's limit on a message: body plus attributes (names, types and values).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Time allowed for the TCP (and TLS) connection, within the attempt timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The SQS and Kinesis clients, built once from the SDK's configuration.
#[derive(Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    /// The attempt timeout of every call but ReceiveMessage.
    pub call_timeout: Duration,
}

impl Clients {
    pub fn new(sdk_config: &SdkConfig, call_timeout: Duration) -> Clients {
        let timeouts = timeouts(call_timeout);
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk_config)
                .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
                .timeout_config(timeouts.clone())
                .build(),
        );
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(sdk_config)
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
                .timeout_config(timeouts)
                .build(),
        );
        Clients {
            sqs,
            kinesis,
            call_timeout,
        }
    }

    /// The configuration override of a ReceiveMessage call: a long poll is answered only after
    /// its wait time when the queue is empty, so its attempt may last that much longer.
    pub fn receive_override(&self, wait_time: Duration) -> aws_sdk_sqs::config::Builder {
        aws_sdk_sqs::config::Builder::default().timeout_config(timeouts(wait_time + self.call_timeout))
    }
}

fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt)
        .build()
}
