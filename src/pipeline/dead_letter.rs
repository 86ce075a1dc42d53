//! Dead-letter forwarding (opt-in, `DEAD_LETTER_QUEUE_URL`): the raw body of each invalid
//! submission is sent to a dead-letter queue with its rejection reason as message attributes,
//! so that nothing a sensor sent is thrown away unseen. The original message is deleted only
//! after that send succeeded. So are valid submissions the stream refuses for good (reason
//! `refused_by_stream`).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use prometheus_client::registry::Registry;

use crate::aws::SQS_MAX_MESSAGE_BYTES;
use crate::metrics::kit::{CallDurations, Counters, add, call_duration, outcome, start_at_zero, timed};
use crate::retry::{RetryEpisode, RetryPolicy, with_attempts};
use prometheus_client::metrics::histogram::Histogram;

/// Attempts per forwarded body before the original is left in the queue to come back.
const ATTEMPTS: u32 = 3;

/// Longest rejection detail put in an attribute.
const DETAIL_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DeadLetterError {
    #[error("SendMessage to the dead-letter queue failed {attempts} times; last error: {last}")]
    SendFailed { attempts: u32, last: String },
    #[error("cannot build the dead-letter message: {0}")]
    Build(String),
}

/// What becomes of the message of a submission that will not be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposal {
    /// Its body is where it should be (or nothing needs keeping): delete the message.
    Delete,
    /// Leave it in the queue: it comes back when its visibility ends.
    Keep,
}

/// The one path of a submission that will not be published (invalid, or refused by the
/// stream): its body forwarded to the dead-letter queue when one is set, then the message
/// deleted; kept in the queue when the forward failed, to be tried again when it comes back.
/// Without a dead-letter queue (or without the body), `otherwise`.
pub(crate) async fn dispose(
    dead_letter: Option<&DeadLetterQueue>,
    message_id: &str,
    body: Option<&str>,
    reason_label: &str,
    detail: &str,
    otherwise: Disposal,
) -> Disposal {
    let (Some(dead_letter), Some(body)) = (dead_letter, body) else {
        return otherwise;
    };
    match dead_letter.forward(message_id, body, reason_label, detail).await {
        Ok(()) => Disposal::Delete,
        Err(e) => {
            tracing::warn!(
                message_id,
                reason = reason_label,
                error = %e,
                "submission not forwarded to the dead-letter queue; it is kept in the queue and tried again when it comes back"
            );
            Disposal::Keep
        }
    }
}

#[derive(Clone)]
pub(crate) struct DeadLetterQueue {
    pub client: Client,
    pub queue_url: String,
    pub retry: RetryPolicy,
    pub metrics: DeadLetterMetrics,
}

impl DeadLetterQueue {
    /// Sends `body` as is, with attributes `rejection_reason` (the metric label),
    /// `source_message_id` and `rejection_detail` (the specific reason), as many of them as
    /// SQS's message size limit leaves room for beside the body. Counted by outcome.
    pub(crate) async fn forward(
        &self,
        message_id: &str,
        body: &str,
        reason_label: &str,
        detail: &str,
    ) -> Result<(), DeadLetterError> {
        let sent = self.send(message_id, body, reason_label, detail).await;
        outcome(
            &self.metrics.dead_letters,
            if sent.is_ok() { "ok" } else { "failed" },
            1,
        );
        sent
    }

    async fn send(
        &self,
        message_id: &str,
        body: &str,
        reason_label: &str,
        detail: &str,
    ) -> Result<(), DeadLetterError> {
        let detail: String = detail.chars().take(DETAIL_CHARS).collect();
        let wanted = [
            ("rejection_reason", reason_label),
            ("source_message_id", message_id),
            ("rejection_detail", detail.as_str()),
        ];
        let mut request = self.client.send_message().queue_url(&self.queue_url).message_body(body);
        for (name, value) in attributes_that_fit(body.len(), &wanted) {
            let value = MessageAttributeValue::builder()
                .data_type(ATTRIBUTE_TYPE)
                .string_value(value)
                .build()
                .map_err(|e| DeadLetterError::Build(e.to_string()))?;
            request = request.message_attributes(name, value);
        }
        let mut episode = RetryEpisode::new("SendMessage to the dead-letter queue", self.retry);
        with_attempts(&mut episode, ATTEMPTS, || async {
            timed(&self.metrics.send_duration, request.clone().send())
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(&e).to_string())
        })
        .await
        .map_err(|last| DeadLetterError::SendFailed {
            attempts: ATTEMPTS,
            last,
        })
    }
}

const ATTRIBUTE_TYPE: &str = "String";

/// The attributes, in order of importance, that fit beside a body of `body_len` bytes within
/// SQS's limit, which counts the body and every attribute's name, type and value. The original
/// body was at most that limit, so the body alone always fits; a body near it goes without some
/// or all attributes rather than never.
fn attributes_that_fit<'a>(body_len: usize, wanted: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut room = SQS_MAX_MESSAGE_BYTES.saturating_sub(body_len);
    let mut kept = Vec::new();
    for (name, value) in wanted {
        // SQS refuses empty attribute values.
        let value = if value.is_empty() { "-" } else { value };
        let size = name.len() + ATTRIBUTE_TYPE.len() + value.len();
        if size <= room {
            room -= size;
            kept.push((*name, value));
        }
    }
    kept
}

/// Dead-lettering's metrics.
#[derive(Clone)]
pub struct DeadLetterMetrics {
    pub dead_letters: Counters,
    pub send_duration: Histogram,
}

impl DeadLetterMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry, calls: &CallDurations) -> Self {
        let section = DeadLetterMetrics {
            send_duration: call_duration(calls, "SendMessage"),
            dead_letters: add(
                registry,
                "dead_letters",
                "Invalid submissions forwarded to the dead-letter queue, by outcome (ok, failed)",
                Counters::default(),
            ),
        };
        start_at_zero(&section.dead_letters, "outcome", &["ok", "failed"]);
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: [(&str, &str); 3] = [
        ("rejection_reason", "invalid_base64"),
        ("source_message_id", "0b6c1c7e-0000-4000-8000-000000000000"),
        ("rejection_detail", "not base64: invalid byte 0x21 at offset 7"),
    ];

    #[test]
    fn a_small_body_keeps_every_attribute() {
        assert_eq!(attributes_that_fit(1000, &WANTED), WANTED.to_vec());
    }

    #[test]
    fn a_body_near_the_limit_keeps_what_fits_and_a_full_one_none() {
        // Room for the reason (16 + 6 + 14 = 36 bytes) and not the message id (17 + 6 + 36).
        let kept = attributes_that_fit(SQS_MAX_MESSAGE_BYTES - 40, &WANTED);
        assert_eq!(kept, vec![WANTED[0]]);
        assert!(attributes_that_fit(SQS_MAX_MESSAGE_BYTES, &WANTED).is_empty());
        let total = |kept: &[(&str, &str)]| kept.iter().map(|(n, v)| n.len() + 6 + v.len()).sum::<usize>();
        for body in [0, 500_000, SQS_MAX_MESSAGE_BYTES - 100, SQS_MAX_MESSAGE_BYTES - 1] {
            assert!(body + total(&attributes_that_fit(body, &WANTED)) <= SQS_MAX_MESSAGE_BYTES);
        }
    }

    #[test]
    fn empty_values_are_sent_as_a_dash() {
        assert_eq!(
            attributes_that_fit(0, &[("source_message_id", "")]),
            vec![("source_message_id", "-")]
        );
    }
}
