//! Dead-letter forwarding (opt-in, `DEAD_LETTER_QUEUE_URL`): the raw body of each invalid
//! submission is sent to a dead-letter queue with its rejection reason as message attributes,
//! so that nothing a sensor sent is thrown away unseen. The original message is deleted only
//! after that send succeeded.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use tokio::time::sleep;

use crate::retry::{RetryEpisode, RetryPolicy};
use crate::submission::Rejection;

/// Attempts per forwarded body before the original is left in the queue to come back.
const ATTEMPTS: u32 = 3;

/// Longest rejection detail put in an attribute.
const DETAIL_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("SendMessage to the dead-letter queue failed {attempts} times; last error: {last}")]
    SendFailed { attempts: u32, last: String },
    #[error("cannot build the dead-letter message: {0}")]
    Build(String),
}

#[derive(Clone)]
pub struct DeadLetterQueue {
    pub client: Client,
    pub queue_url: String,
    pub retry: RetryPolicy,
}

impl DeadLetterQueue {
    /// Sends `body` as is, with attributes `rejection_reason` (the metric label),
    /// `rejection_detail` (the specific reason) and `source_message_id`.
    pub async fn forward(&self, message_id: &str, body: &str, rejection: &Rejection) -> Result<(), DeadLetterError> {
        let detail: String = rejection.to_string().chars().take(DETAIL_CHARS).collect();
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(if value.is_empty() { "-" } else { value })
                .build()
                .map_err(|e| DeadLetterError::Build(e.to_string()))
        };
        let request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes("rejection_reason", attribute(rejection.label())?)
            .message_attributes("rejection_detail", attribute(&detail)?)
            .message_attributes("source_message_id", attribute(message_id)?);
        let mut episode = RetryEpisode::new("SendMessage to the dead-letter queue", self.retry);
        let mut attempt = 1;
        loop {
            match request.clone().send().await {
                Ok(_) => {
                    episode.succeeded();
                    return Ok(());
                }
                Err(e) => {
                    let last = DisplayErrorContext(&e).to_string();
                    let delay: Duration = episode.failed(&last);
                    if attempt == ATTEMPTS {
                        return Err(DeadLetterError::SendFailed {
                            attempts: ATTEMPTS,
                            last,
                        });
                    }
                    attempt += 1;
                    sleep(delay).await;
                }
            }
        }
    }
}
