//! Events: what one Kinesis record carries, built from a validated submission.
//!
//! Pure domain code like `submission`: the clock value comes from the caller.

use std::net::Ipv4Addr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::submission::{EventData, Rejection, Submission};

/// Namespace of the name-based (v5) event ids. Fixed forever: changing it would give
/// redelivered submissions new ids and defeat consumers' de-duplication.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2a8c_5d34_4b7e_9a01_c3d2_e4f5_a6b7);

/// The deterministic id of the event at `index` of a submission: UUID v5 over
/// `"<submission id, lowercase hyphenated>/<index>"`.
///
/// The namespace and the name format are a public contract: consumers drop duplicates by id.
/// The expected value here was computed outside this code (Python's `uuid.uuid5`):
///
/// ```
/// use telemetry_format::event::event_id;
/// let submission = uuid::Uuid::parse_str("8BE01974-0F15-4D4F-809F-257A6DE4D3F9").unwrap();
/// assert_eq!(event_id(submission, 2).to_string(), "09420fda-c249-5a18-ad48-f71bbbb4b18c");
/// ```
pub fn event_id(submission_id: Uuid, index: usize) -> Uuid {
    // Built on the stack: this runs once per event.
    let mut digits = [0u8; MAX_USIZE_DIGITS];
    let index_digits = decimal(index, &mut digits);
    let mut name = [0u8; uuid::fmt::Hyphenated::LENGTH + 1 + MAX_USIZE_DIGITS];
    let id_len = submission_id.hyphenated().encode_lower(&mut name).len();
    name[id_len] = b'/';
    let len = id_len + 1 + index_digits.len();
    name[id_len + 1..len].copy_from_slice(index_digits);
    // RFC 9562's version 5, as `Uuid::new_v5` makes it, with a SHA-1 that uses the CPU's SHA
    // instructions where it has them: this runs once per event.
    let mut hasher = Sha1::new();
    hasher.update(EVENT_ID_NAMESPACE.as_bytes());
    hasher.update(&name[..len]);
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

const MAX_USIZE_DIGITS: usize = 20;

/// Writes `n` in decimal at the end of `buf` (which must be long enough) and returns the digits.
fn decimal(mut n: usize, buf: &mut [u8]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
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

/// Heap a record takes beyond its data and partition key while it waits to be sent: its
/// handle on its buffer and the allocator's rounding. What callers count per record when they
/// account for memory.
pub const RECORD_OVERHEAD_BYTES: usize = 64;

/// Most bytes of records written into one buffer (a record larger than this has a buffer of
/// its own). A buffer is freed once all of its records are, so a large submission's buffers
/// leave memory as its events are published, while small submissions take one allocation each
/// rather than one per event.
pub const RECORD_BUFFER_BYTES: usize = 64 * 1024;

/// Records written back to back into one buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBuffer {
    pub data: Vec<u8>,
    /// Where each record ends in `data`; the first starts at 0, each next where the last ended.
    pub ends: Vec<usize>,
}

impl RecordBuffer {
    /// The records, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.data[start..end])
    }
}

/// The records of a submission, in order, in one or more [`RecordBuffer`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Records {
    pub buffers: Vec<RecordBuffer>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.buffers.iter().map(|b| b.ends.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buffers.iter().all(|b| b.ends.is_empty())
    }

    /// Every record's data, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.buffers.iter().flat_map(RecordBuffer::records)
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a [u8];
    type IntoIter = Box<dyn Iterator<Item = &'a [u8]> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
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
) -> Result<(String, Records), Rejection> {
    let key = partition_key.of(submission).hyphenated().to_string();
    // Sized from the event data alone: building the events would hash every event id twice.
    let total: usize = submission
        .events
        .iter()
        .map(|data| estimated_record_len(time_processed, &submission.time_created, &data.into()))
        .sum();
    let mut records = Records::default();
    // Records are written into a scratch buffer, and each finished buffer is copied into an
    // allocation of exactly its size: sized by estimate and then shrunk, buffers left holes
    // the allocator kept (a fifth more RSS under a backlog).
    let mut scratch = Vec::with_capacity(total.min(RECORD_BUFFER_BYTES));
    let mut ends = Vec::new();
    let mut shared = None;
    for (index, event) in events(submission, time_processed).enumerate() {
        let shared = shared.get_or_insert_with(|| SharedFields::of(&event));
        let estimate = event.estimated_len();
        if !ends.is_empty() && scratch.len() + estimate > RECORD_BUFFER_BYTES {
            records.buffers.push(RecordBuffer {
                data: scratch.as_slice().to_vec(),
                ends: std::mem::take(&mut ends),
            });
            scratch.clear();
        }
        let start = scratch.len();
        event.write_json_sharing(&mut scratch, shared);
        let bytes = scratch.len() - start;
        if bytes + key.len() > max_record_bytes {
            return Err(Rejection::RecordTooLarge {
                index,
                bytes: bytes + key.len(),
                limit: max_record_bytes,
            });
        }
        ends.push(scratch.len());
    }
    if !ends.is_empty() {
        records.buffers.push(RecordBuffer {
            data: scratch.as_slice().to_vec(),
            ends,
        });
    }
    Ok((key, records))
}

/// One published event (docs/contract.md, "Output"). Field order is the record's field order.
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
    /// The record data: one UTF-8 JSON object, byte for byte what `serde_json` makes of this
    /// struct (its `Serialize` is the reference the tests compare with).
    ///
    /// Written by hand into one buffer sized up front: this runs once per event, and the
    /// generic serialiser spent most of its time on escaping ids and times that never need it
    /// and on growing the buffer.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.estimated_len());
        self.write_json(&mut out);
        out
    }

    /// At least the length of the record data (strings that need escaping aside).
    pub fn estimated_len(&self) -> usize {
        estimated_record_len(self.time_processed, self.time_created, &self.type_specific_data)
    }

    /// Appends the record data (see [`Event::to_json`]) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_sharing(out, &SharedFields::of(self));
    }

    /// Appends the record data, with what every event of its submission writes alike already
    /// encoded in `shared` (made from any event of the submission).
    fn write_json_sharing(&self, out: &mut Vec<u8>, shared: &SharedFields) {
        let mut uuid_buf = Uuid::encode_buffer();
        let mut digits = [0u8; MAX_USIZE_DIGITS];
        out.extend_from_slice(b"{\"event_id\":\"");
        out.extend_from_slice(self.event_id.hyphenated().encode_lower(&mut uuid_buf).as_bytes());
        out.extend_from_slice(b"\",\"type\":");
        write_json_str(out, self.kind);
        out.extend_from_slice(&shared.after_type);
        out.extend_from_slice(decimal(self.event_index, &mut digits));
        out.extend_from_slice(&shared.after_index);
        match self.type_specific_data {
            TypeSpecificData::NewProcess { cmdl, user } => {
                out.extend_from_slice(b"{\"cmdl\":");
                write_json_str(out, cmdl);
                out.extend_from_slice(b",\"user\":");
                write_json_str(out, user);
            }
            TypeSpecificData::NetworkConnection {
                source_ip,
                destination_ip,
                destination_port,
            } => {
                out.extend_from_slice(b"{\"source_ip\":\"");
                write_ipv4(out, source_ip);
                out.extend_from_slice(b"\",\"destination_ip\":\"");
                write_ipv4(out, destination_ip);
                out.extend_from_slice(b"\",\"destination_port\":");
                out.extend_from_slice(decimal(usize::from(destination_port), &mut digits));
            }
        }
        out.extend_from_slice(b"}}");
    }
}

/// The parts of an event's record that every event of its submission writes alike: the ids,
/// the times and the count, encoded once per submission rather than once per event.
struct SharedFields {
    /// From after the type to the index: `,"device_id":"…",…,"time_created":…,"event_index":`.
    after_type: Vec<u8>,
    /// From after the index to the type-specific data: `,"event_count":N,"type_specific_data":`.
    after_index: Vec<u8>,
}

impl SharedFields {
    fn of(event: &Event) -> SharedFields {
        let mut uuid_buf = Uuid::encode_buffer();
        let mut digits = [0u8; MAX_USIZE_DIGITS];
        let mut after_type =
            Vec::with_capacity(SHARED_FIXED_BYTES + event.time_processed.len() + event.time_created.len());
        after_type.extend_from_slice(b",\"device_id\":\"");
        after_type.extend_from_slice(event.device_id.hyphenated().encode_lower(&mut uuid_buf).as_bytes());
        after_type.extend_from_slice(b"\",\"submission_id\":\"");
        after_type.extend_from_slice(event.submission_id.hyphenated().encode_lower(&mut uuid_buf).as_bytes());
        after_type.extend_from_slice(b"\",\"time_processed\":");
        write_json_str(&mut after_type, event.time_processed);
        after_type.extend_from_slice(b",\"time_created\":");
        write_json_str(&mut after_type, event.time_created);
        after_type.extend_from_slice(b",\"event_index\":");
        let mut after_index = Vec::with_capacity(48);
        after_index.extend_from_slice(b",\"event_count\":");
        after_index.extend_from_slice(decimal(event.event_count, &mut digits));
        after_index.extend_from_slice(b",\"type_specific_data\":");
        SharedFields {
            after_type,
            after_index,
        }
    }
}

/// The shared parts' keys, punctuation and two ids.
const SHARED_FIXED_BYTES: usize = 160;

/// At least the length of an event's record data (strings that need escaping aside), from what
/// varies between records: no event id needed, so no hashing.
fn estimated_record_len(time_processed: &str, time_created: &str, data: &TypeSpecificData) -> usize {
    RECORD_FIXED_BYTES
        + time_processed.len()
        + time_created.len()
        + match data {
            TypeSpecificData::NewProcess { cmdl, user } => cmdl.len() + user.len(),
            TypeSpecificData::NetworkConnection { .. } => 64,
        }
}

/// A record's bytes besides its times and type-specific strings: keys, punctuation, three ids,
/// the type, two integers.
const RECORD_FIXED_BYTES: usize = 320;

/// A JSON string literal as `serde_json` writes it: as is when nothing needs escaping (the ids
/// and times always, most command lines), else through `serde_json` itself.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escaping(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into memory cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether any byte of `bytes` is one JSON escapes. Checked in blocks without stopping early,
/// which the compiler vectorises: most command lines are long and have nothing to escape.
fn needs_escaping(bytes: &[u8]) -> bool {
    const BLOCK: usize = 32;
    let escapes = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut blocks = bytes.chunks_exact(BLOCK);
    let in_blocks = blocks.any(|block| block.iter().fold(false, |found, &b| found | escapes(b)));
    in_blocks || blocks.remainder().iter().any(|&b| escapes(b))
}

/// Dotted-quad text, as `Ipv4Addr`'s `Display` (and so its `Serialize`) writes it; composed on
/// the stack and appended at once (appending each octet was a copy call apiece).
fn write_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

/// `time_processed` as published: UTC, RFC 3339, microseconds, `Z`.
pub fn format_time_processed(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Explodes a submission into its events, in document order, each knowing its position and the
/// submission's total so that consumers can check order and completeness.
pub fn explode<'a>(submission: &'a Submission, time_processed: &'a str) -> Vec<Event<'a>> {
    events(submission, time_processed).collect()
}

fn events<'a>(submission: &'a Submission, time_processed: &'a str) -> impl Iterator<Item = Event<'a>> {
    let event_count = submission.events.len();
    submission
        .events
        .iter()
        .enumerate()
        .map(move |(event_index, data)| Event {
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
}

#[cfg(test)]
mod tests {
    /// Known answers computed outside this code, with Python's standard library:
    /// `uuid.uuid5(uuid.UUID("6f1e2a8c-5d34-4b7e-9a01-c3d2e4f5a6b7"), f"{submission_id}/{index}")`.
    #[test]
    fn event_ids_match_independently_computed_vectors() {
        let vectors = [
            (
                "8be01974-0f15-4d4f-809f-257a6de4d3f9",
                0,
                "1867d8bb-d11c-5915-a51d-e3503c5ed257",
            ),
            (
                "8be01974-0f15-4d4f-809f-257a6de4d3f9",
                1,
                "7fe47d33-809e-52e9-ad80-84ff02f31dc1",
            ),
            (
                "8be01974-0f15-4d4f-809f-257a6de4d3f9",
                2,
                "09420fda-c249-5a18-ad48-f71bbbb4b18c",
            ),
            (
                "00000000-0000-0000-0000-000000000000",
                0,
                "f3279702-6ade-5b91-8c87-11e67d9fa0af",
            ),
            (
                "ffffffff-ffff-4fff-bfff-ffffffffffff",
                499,
                "33099e98-09c4-5bca-98b5-3bcae3df74c0",
            ),
        ];
        for (submission, index, expected) in vectors {
            let submission = Uuid::parse_str(submission).unwrap();
            assert_eq!(
                event_id(submission, index).to_string(),
                expected,
                "{submission}/{index}"
            );
        }
    }

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
    fn records_are_byte_for_byte_what_serde_json_writes() {
        let mut sub = submission();
        for (cmdl, user) in [
            ("plain.exe --flag", "john"),
            ("quoted \"arg\" and back\\slash", "tab\there"),
            ("control \u{1} \u{1f} \n\r\u{8}\u{c} and DEL \u{7f}", "jürgen"),
            ("Überprüfung.exe /größe:42 \u{2028} 🦀", ""),
        ] {
            sub.events.push(EventData::NewProcess {
                cmdl: cmdl.into(),
                user: user.into(),
            });
        }
        sub.events.push(EventData::NetworkConnection {
            source_ip: Ipv4Addr::new(0, 0, 0, 0),
            destination_ip: Ipv4Addr::new(255, 255, 255, 255),
            destination_port: 0,
        });
        sub.events.push(EventData::NetworkConnection {
            source_ip: Ipv4Addr::new(10, 20, 100, 7),
            destination_ip: Ipv4Addr::new(1, 2, 3, 4),
            destination_port: 65535,
        });
        for time_created in ["2021-03-28T15:44:18.592840", "2021-03-28T15:44:18+14:00"] {
            sub.time_created = time_created.to_owned();
            for event in explode(&sub, "2021-03-29T12:06:20.123456Z") {
                let expected = serde_json::to_vec(&event).unwrap();
                assert_eq!(
                    String::from_utf8(event.to_json()).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
        let mut big = submission();
        big.events = vec![big.events[0].clone(); 12_345];
        let events = explode(&big, "2021-03-29T12:06:20.123456Z");
        assert_eq!(events[12_344].to_json(), serde_json::to_vec(&events[12_344]).unwrap());
    }

    #[test]
    fn event_ids_are_the_v5_uuid_of_the_id_and_the_index() {
        let id = Uuid::parse_str("8BE01974-0F15-4D4F-809F-257A6DE4D3F9").unwrap();
        for index in [0, 7, 10, 99, 12_345, usize::MAX] {
            let name = format!("8be01974-0f15-4d4f-809f-257a6de4d3f9/{index}");
            assert_eq!(event_id(id, index), Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()));
        }
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
    fn records_are_written_in_order_into_buffers_that_never_grow_past_their_bound() {
        let mut sub = submission();
        // About 1,000 bytes of records each; one of 100 KiB, larger than a buffer, in the middle.
        sub.events = (0..300)
            .map(|i| EventData::NewProcess {
                cmdl: if i == 150 {
                    "y".repeat(100 * 1024)
                } else {
                    format!("{i}{}", "x".repeat(700))
                },
                user: "u".into(),
            })
            .collect();
        let time_processed = "2021-03-29T12:06:20.123456Z";
        let (_, records) = to_records(&sub, time_processed, PartitionKey::SubmissionId, 1 << 20).unwrap();
        let expected: Vec<Vec<u8>> = explode(&sub, time_processed).iter().map(Event::to_json).collect();
        assert_eq!(records.len(), 300);
        assert_eq!(records.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), expected);
        assert!(
            records.buffers.len() >= 5,
            "{} buffers for 400 KiB",
            records.buffers.len()
        );
        for buffer in &records.buffers {
            assert!(!buffer.ends.is_empty());
            assert_eq!(buffer.ends.last(), Some(&buffer.data.len()));
            if buffer.ends.len() > 1 {
                assert!(buffer.data.len() <= RECORD_BUFFER_BYTES, "{}", buffer.data.len());
            }
            // Sized once for what it holds: nothing left over for the allocator to keep.
            assert_eq!(buffer.data.capacity(), buffer.data.len());
        }
        let alone = records
            .buffers
            .iter()
            .find(|b| b.data.len() > RECORD_BUFFER_BYTES)
            .unwrap();
        assert_eq!(alone.ends.len(), 1, "a record larger than a buffer has one of its own");
    }

    #[test]
    fn a_small_submission_takes_one_buffer() {
        let (_, records) = to_records(
            &submission(),
            "2021-03-29T12:06:20.123456Z",
            PartitionKey::SubmissionId,
            1024,
        )
        .unwrap();
        assert_eq!(records.buffers.len(), 1);
        assert_eq!(records.buffers[0].ends.len(), 2);
    }

    #[test]
    fn a_character_to_escape_is_found_wherever_it_is() {
        let clear = "a".repeat(100);
        assert!(!needs_escaping(clear.as_bytes()));
        for len in [0, 1, 31, 32, 33, 64, 100] {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut text = vec![b'a'; len];
                    text[at] = special;
                    assert!(needs_escaping(&text), "{len} bytes, {special:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn zero_events_explode_to_nothing() {
        let mut sub = submission();
        sub.events.clear();
        assert!(explode(&sub, "2021-03-29T12:06:20.123456Z").is_empty());
    }

    proptest::proptest! {
        /// Any text a sensor can send, any ids, positions and addresses: the hand-written record
        /// is exactly what `serde_json` writes.
        #[test]
        fn any_event_is_byte_for_byte_what_serde_json_writes(
            cmdl in "\\PC*|[\\x00-\\x7f]*",
            user in proptest::prelude::any::<String>(),
            time_created in "[ -~]{0,40}",
            ids in proptest::prelude::any::<(u128, u128)>(),
            ips in proptest::prelude::any::<(u32, u32, u16)>(),
            index in 0usize..100_000,
        ) {
            let sub = Submission {
                submission_id: Uuid::from_u128(ids.0),
                device_id: Uuid::from_u128(ids.1),
                time_created,
                events: vec![
                    EventData::NewProcess { cmdl, user },
                    EventData::NetworkConnection {
                        source_ip: Ipv4Addr::from(ips.0),
                        destination_ip: Ipv4Addr::from(ips.1),
                        destination_port: ips.2,
                    },
                ],
            };
            for mut event in explode(&sub, "2021-03-29T12:06:20.123456Z") {
                event.event_index = index;
                proptest::prop_assert_eq!(event.to_json(), serde_json::to_vec(&event).unwrap());
            }
            // The records, which share the submission's common fields, are the same events.
            let (_, records) = to_records(&sub, "2021-03-29T12:06:20.123456Z", PartitionKey::SubmissionId, 1 << 20).unwrap();
            let expected: Vec<Vec<u8>> = explode(&sub, "2021-03-29T12:06:20.123456Z")
                .iter()
                .map(|event| serde_json::to_vec(event).unwrap())
                .collect();
            proptest::prop_assert_eq!(records.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), expected);
        }
    }
}
