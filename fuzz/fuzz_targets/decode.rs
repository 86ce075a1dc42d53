//! Decodes arbitrary bytes as a submission, both as the base64 body of those bytes and (when
//! they are UTF-8) as the body itself; whatever validates must obey every field rule by the
//! independent oracle of `telemetry_testkit::oracle` (so fuzzing finds over-acceptance, not only
//! crashes), and is exploded and serialised, the records checked against the submission.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use telemetry_format::event::{PartitionKey, explode, to_records};
use telemetry_format::submission::{EventData, Submission, TimeBounds, decode};

use telemetry_testkit::oracle;

/// The seeds' timestamps are from 2021; a fixed clock keeps every run reproducible.
const NOW: &str = "2021-03-29T12:00:00Z";
const TIME_PROCESSED: &str = "2021-03-29T12:00:01.000000Z";
/// Kinesis' default record limit.
const MAX_RECORD_BYTES: usize = 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let now = DateTime::parse_from_rfc3339(NOW)
        .map(|t| t.with_timezone(&Utc))
        .unwrap();
    let bounds = TimeBounds::default();
    // The bytes as the JSON carried in base64: reaches the UTF-8 check with any bytes.
    let body = STANDARD.encode(data);
    if let Ok(submission) = decode(&body, &bounds, now) {
        check_oracle(&body);
        check_records(&submission);
    }
    // The bytes as the body itself: raw JSON or base64 text.
    if let Ok(body) = std::str::from_utf8(data)
        && let Ok(submission) = decode(body, &bounds, now)
    {
        check_oracle(body);
        check_records(&submission);
    }
});

/// An accepted body that breaks a field rule is a decoder bug, as much as a crash is.
fn check_oracle(body: &str) {
    if let Err(broken) = oracle::accepted_body_obeys_the_rules(body) {
        panic!("oracle disagreement: the decoder accepted a body that breaks a rule: {broken}");
    }
}

/// Every event becomes one JSON record that says exactly what the submission held.
fn check_records(submission: &Submission) {
    let events = explode(submission, TIME_PROCESSED);
    assert_eq!(events.len(), submission.events.len());
    let Ok((key, records)) = to_records(submission, TIME_PROCESSED, PartitionKey::SubmissionId, MAX_RECORD_BYTES)
    else {
        return;
    };
    assert_eq!(key, submission.submission_id.hyphenated().to_string());
    assert_eq!(records.len(), submission.events.len());
    for (index, (record, data)) in records.iter().zip(&submission.events).enumerate() {
        let value: serde_json::Value = serde_json::from_slice(record).expect("a record is JSON");
        assert_eq!(value["event_index"], index);
        assert_eq!(value["event_count"], submission.events.len());
        assert_eq!(value["time_created"], submission.time_created.as_str());
        assert_eq!(value["type"], data.type_name());
        let specific = &value["type_specific_data"];
        match data {
            EventData::NewProcess { cmdl, user } => {
                assert_eq!(specific["cmdl"], cmdl.as_str());
                assert_eq!(specific["user"], user.as_str());
            }
            EventData::NetworkConnection {
                source_ip,
                destination_ip,
                destination_port,
            } => {
                assert_eq!(specific["source_ip"], source_ip.to_string());
                assert_eq!(specific["destination_ip"], destination_ip.to_string());
                assert_eq!(specific["destination_port"], *destination_port);
            }
        }
    }
}
