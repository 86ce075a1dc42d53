//! The manifest: one JSON line per submission the simulator sent, so that a stream can be
//! checked against it later ([`super::verify`]).

use std::io::BufRead;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::generate::{Generated, Outcome};

/// What one sent submission must become: `event_count` events if valid, none if not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Lowercase hyphenated; absent when the document has no well-formed id.
    pub submission_id: Option<String>,
    pub device_id: String,
    pub valid: bool,
    /// Events the submission must publish (0 for an invalid one).
    pub event_count: usize,
    /// For an invalid submission, the reason label the collector must count it under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the SendMessageBatch call that SQS accepted was made (RFC 3339, UTC, microseconds);
    /// absent in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

impl ManifestEntry {
    /// The entry of a submission SQS accepted from a call made at `sent_at`.
    pub fn sent(g: &Generated, sent_at: DateTime<Utc>) -> Self {
        ManifestEntry {
            sent_at: Some(sent_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            ..ManifestEntry::from(g)
        }
    }

    /// [`Self::sent_at`] as a time; `None` when absent or not RFC 3339.
    pub fn sent_time(&self) -> Option<DateTime<Utc>> {
        let text = self.sent_at.as_deref()?;
        DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
    }
}

impl From<&Generated> for ManifestEntry {
    fn from(g: &Generated) -> Self {
        let (valid, event_count, reason) = match &g.outcome {
            Outcome::Valid(expected) => (true, expected.events.len(), None),
            Outcome::Invalid(class) => (false, 0, Some(class.label().to_owned())),
        };
        ManifestEntry {
            submission_id: g.submission_id.clone(),
            device_id: g.device_id.clone(),
            valid,
            event_count,
            reason,
            sent_at: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest: {0}")]
    Io(#[from] std::io::Error),
    #[error("manifest line {line}: {source}")]
    Line { line: usize, source: serde_json::Error },
}

/// Reads a manifest of JSON lines; blank lines are skipped.
pub fn read(reader: impl BufRead) -> Result<Vec<ManifestEntry>, ManifestError> {
    let mut entries = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|source| ManifestError::Line {
            line: index + 1,
            source,
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_errors_name_the_line() {
        let entries = vec![
            ManifestEntry {
                submission_id: Some("8be01974-0f15-4d4f-809f-257a6de4d3f9".into()),
                device_id: "31980191-fa99-4768-8a7b-0e81397ca6ef".into(),
                valid: true,
                event_count: 3,
                reason: None,
                sent_at: Some("2026-03-28T15:44:18.592840Z".into()),
            },
            ManifestEntry {
                submission_id: None,
                device_id: "31980191-fa99-4768-8a7b-0e81397ca6ef".into(),
                valid: false,
                event_count: 0,
                reason: Some("invalid_uuid".into()),
                sent_at: None,
            },
        ];
        let text: String = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        assert_eq!(read(text.as_bytes()).unwrap(), entries);
        assert_eq!(
            entries[0].sent_time().map(|t| t.timestamp_micros()),
            Some(1_774_712_658_592_840)
        );
        let err = read("\n{\"valid\": true}\n".as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("manifest line 2:"), "{err}");
    }

    #[test]
    fn manifests_without_send_times_still_read() {
        let line = r#"{"submission_id":null,"device_id":"d","valid":false,"event_count":0,"reason":"not_json"}"#;
        let entries = read(line.as_bytes()).unwrap();
        assert_eq!(entries[0].sent_at, None);
        assert_eq!(entries[0].sent_time(), None);
        assert_eq!(serde_json::to_string(&entries[0]).unwrap(), line);
    }
}
