//! Events: what one Kinesis record carries, built from a validated submission.
//!
//! Pure domain code like `submission`: the clock value comes from the caller.

use std::net::Ipv4Addr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::submission::{EventData, Rejection, Submission};

/// Namespace of the name-based (v5) event ids. Fixed forever: changing it would give
/// redelivered submissions new ids and defeat consumers' de-duplication.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2a8c_5d34_4b7e_9a01_c3d2_e4f5_a6b7);

/// The deterministic id of the event at `index` of a submission: UUID v5 over
/// `"<submission id, lowercase hyphenated>/<index>"`.
pub fn event_id(submission_id: Uuid, index: usize) -> Uuid {
    let name = format!("{}/{}", submission_id.hyphenated(), index);
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

/// Which id of a submission is the partition key of its records. Either keeps all events of a
/// submission on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey {
    SubmissionId,
    DeviceId,
}

impl PartitionKey {
    pub fn of(self, submission: &Submission) -> Uuid {
        match self {
            PartitionKey::SubmissionId => submission.submission_id,
            PartitionKey::DeviceId => submission.device_id,
        }
    }
}

/// The Kinesis records of a submission: one JSON document per event, in order.
///
/// A submission whose largest record (data + partition key) exceeds the stream's record limit
/// cannot be published whole, so it is rejected whole.
pub fn to_records(
    submission: &Submission,
    time_processed: &str,
    partition_key: PartitionKey,
    max_record_bytes: usize,
) -> Result<(String, Vec<Vec<u8>>), Rejection> {
    let key = partition_key.of(submission).hyphenated().to_string();
    let records: Vec<Vec<u8>> = explode(submission, time_processed).iter().map(Event::to_json).collect();
    if let Some((index, data)) = records
        .iter()
        .enumerate()
        .find(|(_, d)| d.len() + key.len() > max_record_bytes)
    {
        return Err(Rejection::RecordTooLarge {
            index,
            bytes: data.len() + key.len(),
            limit: max_record_bytes,
        });
    }
    Ok((key, records))
}

/// One published event (SPEC §3). Field order is the record's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event<'a> {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub device_id: Uuid,
    pub submission_id: Uuid,
    pub time_processed: &'a str,
    pub time_created: &'a str,
    pub event_index: usize,
    pub event_count: usize,
    pub type_specific_data: TypeSpecificData<'a>,
}

/// The `type_specific_data` object: only the known fields of the submitted item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TypeSpecificData<'a> {
    NewProcess {
        cmdl: &'a str,
        user: &'a str,
    },
    NetworkConnection {
        source_ip: Ipv4Addr,
        destination_ip: Ipv4Addr,
        destination_port: u16,
    },
}

impl<'a> From<&'a EventData> for TypeSpecificData<'a> {
    fn from(data: &'a EventData) -> Self {
        match data {
            EventData::NewProcess { cmdl, user } => TypeSpecificData::NewProcess { cmdl, user },
            EventData::NetworkConnection {
                source_ip,
                destination_ip,
                destination_port,
            } => TypeSpecificData::NetworkConnection {
                source_ip: *source_ip,
                destination_ip: *destination_ip,
                destination_port: *destination_port,
            },
        }
    }
}

impl Event<'_> {
    /// The record data: one UTF-8 JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, integers and ids into memory cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `time_processed` as published: UTC, RFC 3339, microseconds, `Z`.
pub fn format_time_processed(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Explodes a submission into its events, in document order, each knowing its position and the
/// submission's total so that consumers can check order and completeness.
pub fn explode<'a>(submission: &'a Submission, time_processed: &'a str) -> Vec<Event<'a>> {
    let event_count = submission.events.len();
    submission
        .events
        .iter()
        .enumerate()
        .map(|(event_index, data)| Event {
            event_id: event_id(submission.submission_id, event_index),
            kind: data.type_name(),
            device_id: submission.device_id,
            submission_id: submission.submission_id,
            time_processed,
            time_created: &submission.time_created,
            event_index,
            event_count,
            type_specific_data: data.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission() -> Submission {
        Submission {
            submission_id: Uuid::parse_str("8BE01974-0F15-4D4F-809F-257A6DE4D3F9").unwrap(),
            device_id: Uuid::parse_str("31980191-fa99-4768-8a7b-0e81397ca6ef").unwrap(),
            time_created: "2021-03-28T15:44:18.592840".to_owned(),
            events: vec![
                EventData::NewProcess {
                    cmdl: "notepad.exe".into(),
                    user: "john".into(),
                },
                EventData::NetworkConnection {
                    source_ip: Ipv4Addr::new(192, 168, 0, 2),
                    destination_ip: Ipv4Addr::new(23, 13, 252, 39),
                    destination_port: 43696,
                },
            ],
        }
    }

    #[test]
    fn record_matches_the_spec_format_exactly() {
        let sub = submission();
        let events = explode(&sub, "2021-03-29T12:06:20.123456Z");
        let record: serde_json::Value = serde_json::from_slice(&events[1].to_json()).unwrap();
        let expected = serde_json::json!({
            "event_id": event_id(sub.submission_id, 1).to_string(),
            "type": "network_connection",
            "device_id": "31980191-fa99-4768-8a7b-0e81397ca6ef",
            "submission_id": "8be01974-0f15-4d4f-809f-257a6de4d3f9",
            "time_processed": "2021-03-29T12:06:20.123456Z",
            "time_created": "2021-03-28T15:44:18.592840",
            "event_index": 1,
            "event_count": 2,
            "type_specific_data": {"source_ip": "192.168.0.2", "destination_ip": "23.13.252.39", "destination_port": 43696}
        });
        assert_eq!(record, expected);
        let first: serde_json::Value = serde_json::from_slice(&events[0].to_json()).unwrap();
        assert_eq!(first["type"], "new_process");
        assert_eq!(
            first["type_specific_data"],
            serde_json::json!({"cmdl": "notepad.exe", "user": "john"})
        );
    }

    #[test]
    fn event_ids_are_deterministic_distinct_and_version_5() {
        let id = Uuid::parse_str("8be01974-0f15-4d4f-809f-257a6de4d3f9").unwrap();
        assert_eq!(event_id(id, 0), event_id(id, 0));
        assert_ne!(event_id(id, 0), event_id(id, 1));
        assert_eq!(event_id(id, 3).get_version_num(), 5);
        let other = Uuid::parse_str("8be01974-0f15-4d4f-809f-257a6de4d3fa").unwrap();
        assert_ne!(event_id(id, 0), event_id(other, 0));
    }

    #[test]
    fn time_processed_is_utc_with_z() {
        let at = DateTime::parse_from_rfc3339("2021-03-29T14:06:20.123456+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_time_processed(at), "2021-03-29T12:06:20.123456Z");
    }

    #[test]
    fn records_carry_the_chosen_partition_key_and_respect_the_size_limit() {
        let sub = submission();
        let (key, records) = to_records(&sub, "2021-03-29T12:06:20.123456Z", PartitionKey::SubmissionId, 1024).unwrap();
        assert_eq!(key, "8be01974-0f15-4d4f-809f-257a6de4d3f9");
        assert_eq!(records.len(), 2);
        let (key, _) = to_records(&sub, "2021-03-29T12:06:20.123456Z", PartitionKey::DeviceId, 1024).unwrap();
        assert_eq!(key, "31980191-fa99-4768-8a7b-0e81397ca6ef");
        let mut big = submission();
        big.events.push(EventData::NewProcess {
            cmdl: "x".repeat(2000),
            user: "u".into(),
        });
        let err = to_records(&big, "2021-03-29T12:06:20.123456Z", PartitionKey::SubmissionId, 1024).unwrap_err();
        assert_eq!(err.label(), "record_too_large");
        assert!(matches!(err, Rejection::RecordTooLarge { index: 2, .. }));
    }

    #[test]
    fn zero_events_explode_to_nothing() {
        let mut sub = submission();
        sub.events.clear();
        assert!(explode(&sub, "2021-03-29T12:06:20.123456Z").is_empty());
    }
}
