//! The PutRecords request body, written in one buffer of its final size.
//!
//! Through the SDK's input, every record's data and partition key would be copied into an
//! entry of their own, the data encoded into a string of its own, and the document grown as it
//! is written: about a seventh of the collector's work at its ceiling (`docs/performance.md`).
//! The lane writes the body here instead, straight from its records, and the SDK makes,
//! signs, times and answers the call as usual with this body in place of the one it
//! serialised from an input without records. The body is the AWS JSON 1.1 document of
//! PutRecords: `{"StreamName":…,"Records":[{"Data":<base64>,"PartitionKey":…},…]}`.

use base64_simd::STANDARD;
use bytes::Bytes;
use telemetry_format::event::write_json_str;

use super::OutboundRecord;

/// Punctuation and names around a record: `{"Data":"","PartitionKey":""},`.
const RECORD_FRAME_BYTES: usize = 32;
/// Punctuation and names around the records: `{"StreamName":"","Records":[]}`.
const DOCUMENT_FRAME_BYTES: usize = 32;

/// The body of a PutRecords call of `records`, in order, to `stream_name`.
pub(super) fn put_records_body(stream_name: &str, records: &[OutboundRecord]) -> Bytes {
    let mut body = Vec::with_capacity(body_size(stream_name, records));
    body.extend_from_slice(b"{\"StreamName\":");
    write_json_str(&mut body, stream_name);
    body.extend_from_slice(b",\"Records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"Data\":\"");
        // Encoded into the buffer's spare room, which is not zeroed first.
        STANDARD.encode_append(&record.data, &mut body);
        body.extend_from_slice(b"\",\"PartitionKey\":");
        write_json_str(&mut body, &record.partition_key);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// The body's size, as long as the stream name and partition keys need no escaping (a body
/// that needs more grows once).
fn body_size(stream_name: &str, records: &[OutboundRecord]) -> usize {
    DOCUMENT_FRAME_BYTES
        + stream_name.len()
        + records
            .iter()
            .map(|r| STANDARD.encoded_length(r.data.len()) + r.partition_key.len() + RECORD_FRAME_BYTES)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::{Value, json};

    use super::*;
    use crate::pipeline::message::test_message;

    fn record(data: &[u8], key: &str) -> OutboundRecord {
        OutboundRecord::for_test(data.to_vec().into(), key.into(), test_message("m", 1))
    }

    #[test]
    fn the_body_is_the_put_records_document_of_the_records_in_order() {
        let records = [
            record(br#"{"event_id":"1"}"#, "8be01974-0f15-4d4f-809f-257a6de4d3f9"),
            record(b"", "k"),
            record(&[0, 255, 1, 2], "quote\" back\\slash \u{1}"),
        ];
        let body = put_records_body("events", &records);
        let document: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            document,
            json!({
                "StreamName": "events",
                "Records": [
                    {"Data": BASE64.encode(br#"{"event_id":"1"}"#), "PartitionKey": "8be01974-0f15-4d4f-809f-257a6de4d3f9"},
                    {"Data": "", "PartitionKey": "k"},
                    {"Data": "AP8BAg==", "PartitionKey": "quote\" back\\slash \u{1}"},
                ]
            })
        );
    }

    #[test]
    fn the_buffer_is_sized_for_the_body_at_once() {
        let records: Vec<_> = (0..500).map(|i| record(&vec![b'x'; i * 7], "partition")).collect();
        let body = put_records_body("events", &records);
        let document: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(document["Records"].as_array().map(Vec::len), Some(500));
        for (i, entry) in document["Records"].as_array().unwrap().iter().enumerate() {
            assert_eq!(BASE64.decode(entry["Data"].as_str().unwrap()).unwrap().len(), i * 7);
        }
        let estimate = body_size("events", &records);
        assert!(body.len() <= estimate, "{} > {estimate}", body.len());
    }
}
