//! Checks the events read from a stream against the simulator's manifest: every event of every
//! valid submission is there, each submission's events appear in order on one shard, and
//! nothing of an invalid submission was published (docs/contract.md, "Guarantees").

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::manifest::ManifestEntry;
use telemetry_format::event::event_id;

/// The fields of a published event that the check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub shard_id: String,
    pub event_id: String,
    pub submission_id: String,
    pub event_index: usize,
    pub event_count: usize,
}

#[derive(Deserialize)]
struct EventFields {
    event_id: String,
    submission_id: String,
    event_index: usize,
    event_count: usize,
}

impl StreamEvent {
    /// Reads a record's data; `None` when it is not an event document.
    pub fn parse(shard_id: &str, data: &[u8]) -> Option<StreamEvent> {
        let f: EventFields = serde_json::from_slice(data).ok()?;
        Some(StreamEvent {
            shard_id: shard_id.to_owned(),
            event_id: f.event_id,
            submission_id: f.submission_id,
            event_index: f.event_index,
            event_count: f.event_count,
        })
    }
}

/// The outcome of a check; also printed as the reader's final JSON line.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub submissions_valid: usize,
    pub submissions_invalid: usize,
    /// Events the valid submissions of the manifest must have published.
    pub events_expected: usize,
    /// Records read from the stream, duplicates and strangers included.
    pub records_read: usize,
    /// Distinct expected events found.
    pub events_found: usize,
    pub events_missing: usize,
    /// Records repeating an `event_id` already read (at-least-once redelivery).
    pub duplicates: usize,
    /// Submissions whose events are not an in-order subsequence `0..n` of one shard.
    pub out_of_order: usize,
    /// Records of submissions the manifest lists as invalid.
    pub invalid_published: usize,
    /// Records of submissions the manifest does not list (another producer, an earlier run).
    pub unexpected: usize,
    /// Records that are not events, or disagree with the manifest or the event id scheme.
    pub malformed: usize,
    pub ok: bool,
}

/// Checks `events` (in stream order: each shard's records in sequence order) against the
/// manifest; `unparsed` is the number of records that were not event documents.
pub fn verify(manifest: &[ManifestEntry], events: &[StreamEvent], unparsed: usize) -> Report {
    let mut report = Report {
        records_read: events.len() + unparsed,
        malformed: unparsed,
        ..Report::default()
    };
    let mut expected: HashMap<&str, usize> = HashMap::new();
    let mut invalid: HashSet<&str> = HashSet::new();
    for entry in manifest {
        if entry.valid {
            report.submissions_valid += 1;
            report.events_expected += entry.event_count;
            if let Some(id) = &entry.submission_id {
                expected.insert(id, entry.event_count);
            }
        } else {
            report.submissions_invalid += 1;
            if let Some(id) = &entry.submission_id {
                invalid.insert(id);
            }
        }
    }

    let mut seen_ids: HashSet<&str> = HashSet::new();
    // Per submission: (shard, index) in stream order.
    let mut placed: HashMap<&str, Vec<(&str, usize)>> = HashMap::new();
    for event in events {
        if !seen_ids.insert(&event.event_id) {
            report.duplicates += 1;
        }
        let submission = event.submission_id.as_str();
        if let Some(&count) = expected.get(submission) {
            let id_ok = Uuid::parse_str(submission)
                .is_ok_and(|s| event_id(s, event.event_index).hyphenated().to_string() == event.event_id);
            if event.event_index >= count || event.event_count != count || !id_ok {
                report.malformed += 1;
                continue;
            }
            placed
                .entry(submission)
                .or_default()
                .push((&event.shard_id, event.event_index));
        } else if invalid.contains(submission) {
            report.invalid_published += 1;
        } else {
            report.unexpected += 1;
        }
    }

    for sequence in placed.values() {
        let present: BTreeSet<usize> = sequence.iter().map(|(_, i)| *i).collect();
        report.events_found += present.len();
        let shards: HashSet<&str> = sequence.iter().map(|(s, _)| *s).collect();
        if shards.len() > 1 || !contains_in_order(sequence.iter().map(|(_, i)| *i), &present) {
            report.out_of_order += 1;
        }
    }
    report.events_missing = report.events_expected.saturating_sub(report.events_found);
    report.ok = report.events_missing == 0
        && report.out_of_order == 0
        && report.invalid_published == 0
        && report.malformed == 0;
    report
}

/// Whether `wanted`, ascending, is a subsequence of `sequence`. Redelivered or resent events
/// may repeat earlier ones; that is fine as long as one in-order pass exists.
fn contains_in_order(sequence: impl Iterator<Item = usize>, wanted: &BTreeSet<usize>) -> bool {
    let mut next = wanted.iter().peekable();
    for index in sequence {
        if next.peek() == Some(&&index) {
            next.next();
        }
    }
    next.peek().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "8be01974-0f15-4d4f-809f-257a6de4d3f9";
    const BAD: &str = "badbad00-0f15-4d4f-809f-257a6de4d3f9";

    fn manifest() -> Vec<ManifestEntry> {
        let entry = |id: &str, valid: bool, event_count: usize| ManifestEntry {
            submission_id: Some(id.into()),
            device_id: "31980191-fa99-4768-8a7b-0e81397ca6ef".into(),
            valid,
            event_count,
            reason: (!valid).then(|| "invalid_ipv4".to_owned()),
            sent_at: None,
        };
        vec![entry(SUB, true, 3), entry(BAD, false, 0)]
    }

    fn ev(submission: &str, shard: &str, index: usize) -> StreamEvent {
        let sub = Uuid::parse_str(submission).unwrap();
        StreamEvent {
            shard_id: shard.into(),
            event_id: event_id(sub, index).to_string(),
            submission_id: submission.into(),
            event_index: index,
            event_count: 3,
        }
    }

    fn check(indices: &[usize]) -> Report {
        let events: Vec<StreamEvent> = indices.iter().map(|&i| ev(SUB, "s0", i)).collect();
        verify(&manifest(), &events, 0)
    }

    #[test]
    fn complete_in_order_is_ok() {
        let r = check(&[0, 1, 2]);
        assert!(r.ok, "{r:?}");
        assert_eq!((r.events_expected, r.events_found, r.events_missing), (3, 3, 0));
        assert_eq!((r.submissions_valid, r.submissions_invalid), (1, 1));
    }

    #[test]
    fn redelivery_and_resent_suffixes_are_duplicates_not_disorder() {
        // A whole redelivery, and a partial failure of event 1 with event 2 landing first.
        let r = check(&[0, 1, 2, 0, 1, 2]);
        assert!(r.ok && r.duplicates == 3, "{r:?}");
        let r = check(&[0, 2, 1, 2]);
        assert!(r.ok && r.duplicates == 1, "{r:?}");
    }

    #[test]
    fn disorder_loss_and_strangers_are_reported() {
        let r = check(&[1, 0, 2]);
        assert_eq!(r.out_of_order, 1);
        assert!(!r.ok);
        let r = check(&[0, 2]);
        assert_eq!((r.events_missing, r.out_of_order), (1, 0));
        assert!(!r.ok);
        let split = vec![ev(SUB, "s0", 0), ev(SUB, "s1", 1), ev(SUB, "s0", 2)];
        assert_eq!(verify(&manifest(), &split, 0).out_of_order, 1);
        let mut events: Vec<StreamEvent> = (0..3).map(|i| ev(SUB, "s0", i)).collect();
        events.push(ev(BAD, "s0", 0));
        events.push(ev("00000000-0f15-4d4f-809f-257a6de4d3f9", "s0", 0));
        let r = verify(&manifest(), &events, 1);
        assert_eq!((r.invalid_published, r.unexpected, r.malformed), (1, 1, 1));
        assert!(!r.ok);
    }

    #[test]
    fn a_wrong_event_id_or_count_is_malformed() {
        let mut wrong_id = ev(SUB, "s0", 1);
        wrong_id.event_id = ev(SUB, "s0", 2).event_id;
        let mut wrong_count = ev(SUB, "s0", 2);
        wrong_count.event_count = 4;
        let r = verify(&manifest(), &[ev(SUB, "s0", 0), wrong_id, wrong_count], 0);
        assert_eq!((r.malformed, r.events_missing), (2, 2));
    }

    #[test]
    fn parses_published_events_only() {
        let data = format!(
            r#"{{"event_id":"{}","type":"new_process","submission_id":"{SUB}","event_index":0,"event_count":3}}"#,
            event_id(Uuid::parse_str(SUB).unwrap(), 0)
        );
        assert_eq!(StreamEvent::parse("s0", data.as_bytes()), Some(ev(SUB, "s0", 0)));
        assert_eq!(StreamEvent::parse("s0", b"not json"), None);
    }
}
