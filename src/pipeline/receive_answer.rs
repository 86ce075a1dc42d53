//! The ReceiveMessage answer, read straight from its body (`answer_reader`).
//!
//! The SDK would give every message strings of its own for its MD5 digests and a map of its
//! attributes, and unescape its body token by token. The source needs each message's id,
//! receipt handle, body and `SentTimestamp`, so a successful answer is read here.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::operation::receive_message::{ReceiveMessage, ReceiveMessageOutput};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use aws_smithy_runtime_api::client::interceptors::context::Output;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
use aws_smithy_types::config_bag::FrozenLayer;
use serde::Deserialize;

use crate::answer_reader::OwnReading;

/// What the source takes of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceivedMessage {
    pub message_id: Option<String>,
    pub receipt_handle: Option<String>,
    pub body: Option<String>,
    /// When SQS accepted the message (its `SentTimestamp` attribute), if it says.
    pub sent_at: Option<SystemTime>,
}

impl ReceivedMessage {
    /// The same from the SDK's message.
    pub(crate) fn from_sdk(message: Message) -> ReceivedMessage {
        let sent_at = message
            .attributes
            .as_ref()
            .and_then(|attributes| attributes.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|millis| epoch_millis(millis));
        ReceivedMessage {
            message_id: message.message_id,
            receipt_handle: message.receipt_handle,
            body: message.body,
            sent_at,
        }
    }
}

/// Epoch milliseconds, as SQS writes `SentTimestamp`.
fn epoch_millis(text: &str) -> Option<SystemTime> {
    let millis: u64 = text.parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// Reads the messages of a ReceiveMessage answer's JSON body (none when it names none).
pub(crate) fn parse(body: &[u8]) -> Result<Vec<ReceivedMessage>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "Messages", borrow)]
        messages: Option<Vec<Entry<'a>>>,
    }
    #[derive(Deserialize)]
    struct Entry<'a> {
        #[serde(rename = "MessageId")]
        message_id: Option<String>,
        #[serde(rename = "ReceiptHandle")]
        receipt_handle: Option<String>,
        #[serde(rename = "Body")]
        body: Option<String>,
        #[serde(rename = "Attributes", borrow)]
        attributes: Option<Attributes<'a>>,
    }
    #[derive(Deserialize)]
    struct Attributes<'a> {
        #[serde(rename = "SentTimestamp", borrow)]
        sent_timestamp: Option<Cow<'a, str>>,
    }
    let answer: Answer = serde_json::from_slice(body)?;
    Ok(answer
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|entry| ReceivedMessage {
            message_id: entry.message_id,
            receipt_handle: entry.receipt_handle,
            body: entry.body,
            sent_at: entry
                .attributes
                .and_then(|attributes| attributes.sent_timestamp)
                .and_then(|millis| epoch_millis(&millis)),
        })
        .collect())
}

/// The messages of an answered call: as read here, or from the SDK's output.
pub(crate) fn messages(read: Option<Vec<ReceivedMessage>>, output: ReceiveMessageOutput) -> Vec<ReceivedMessage> {
    read.unwrap_or_else(|| {
        output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(ReceivedMessage::from_sdk)
            .collect()
    })
}

/// ReceiveMessage answers, read here.
pub(crate) struct ReceiveMessageAnswer;

impl OwnReading for ReceiveMessageAnswer {
    type Read = Vec<ReceivedMessage>;

    fn operation_layer() -> Option<&'static FrozenLayer> {
        static LAYER: OnceLock<Option<FrozenLayer>> = OnceLock::new();
        LAYER.get_or_init(|| ReceiveMessage::new().config()).as_ref()
    }

    fn read(body: &[u8]) -> Option<Vec<ReceivedMessage>> {
        parse(body).ok()
    }

    fn empty_output() -> Option<Output> {
        Some(Output::erase(ReceiveMessageOutput::builder().build()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn an_answer_gives_each_message_its_id_handle_body_and_sent_time() {
        let body = br#"{"Messages":[
            {"MessageId":"m-1","ReceiptHandle":"AQEB+h/1==","MD5OfBody":"x","Body":"{\"submission_id\":\"\u00e9\\\/\"}",
             "Attributes":{"ApproximateReceiveCount":"1","SentTimestamp":"1764979200123"},
             "MessageAttributes":{"k":{"DataType":"String","StringValue":"v"}},"MD5OfMessageAttributes":"y"},
            {"MessageId":"m-2","ReceiptHandle":"h2","Body":"eyJ9"},
            {"MessageId":"m-3","Body":"b","Attributes":{"SentTimestamp":"not a number"}}
        ]}"#;
        let messages = parse(body).unwrap();
        assert_eq!(
            messages,
            [
                ReceivedMessage {
                    message_id: Some("m-1".into()),
                    receipt_handle: Some("AQEB+h/1==".into()),
                    body: Some("{\"submission_id\":\"\u{e9}\\/\"}".into()),
                    sent_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_979_200_123)),
                },
                ReceivedMessage {
                    message_id: Some("m-2".into()),
                    receipt_handle: Some("h2".into()),
                    body: Some("eyJ9".into()),
                    sent_at: None,
                },
                ReceivedMessage {
                    message_id: Some("m-3".into()),
                    receipt_handle: None,
                    body: Some("b".into()),
                    sent_at: None,
                },
            ]
        );
    }

    #[test]
    fn an_answer_without_messages_has_none() {
        assert_eq!(parse(b"{}").unwrap(), []);
        assert_eq!(parse(b"{\"Messages\":null}").unwrap(), []);
        assert_eq!(parse(b"{\"Messages\":[]}").unwrap(), []);
    }

    #[test]
    fn what_is_not_a_messages_answer_is_left_to_the_sdk() {
        for body in [
            &b""[..],
            b"[]",
            b"{\"Messages\":{}}",
            b"{\"Messages\":[{\"Body\":1}]}",
            b"{\"Messages\":[",
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_sdk_message_gives_the_same_message() {
        let message = Message::builder()
            .message_id("m")
            .receipt_handle("h")
            .body("b")
            .set_attributes(Some(HashMap::from([(
                MessageSystemAttributeName::SentTimestamp,
                "1000".to_owned(),
            )])))
            .build();
        assert_eq!(
            parse(br#"{"Messages":[{"MessageId":"m","ReceiptHandle":"h","Body":"b","Attributes":{"SentTimestamp":"1000"}}]}"#)
                .unwrap(),
            [ReceivedMessage::from_sdk(message)]
        );
    }
}
