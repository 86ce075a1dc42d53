//! The PutRecords answer, read straight from its body (`answer_reader`).
//!
//! The SDK would build an entry per record, with strings of its own for the sequence number
//! and the shard id: two allocations per record. The lane needs only each record's shard or
//! error code, so a successful answer is read here, into one vector of small results.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use aws_sdk_kinesis::operation::put_records::{PutRecords, PutRecordsOutput};
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_smithy_runtime_api::client::interceptors::context::Output;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
use aws_smithy_types::config_bag::FrozenLayer;

use crate::answer_reader::OwnReading;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

/// PutRecords's limit on records per call: room for a whole answer's results at once.
const PUT_RECORDS_MAX_RECORDS: usize = 500;

/// What became of one record of a call, in the order of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RecordResult {
    /// Written; `shard` indexes [`RecordResults::shard_name`] (absent if the answer named none).
    Written { shard: Option<u32> },
    /// Not written, with Kinesis's error code.
    Failed { code: String },
}

impl RecordResult {
    pub(super) fn error_code(&self) -> Option<&str> {
        match self {
            RecordResult::Written { .. } => None,
            RecordResult::Failed { code } => Some(code),
        }
    }
}

/// The per-record results of one answered call; the shard ids, which few records share, are
/// kept once each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RecordResults {
    shards: Vec<String>,
    pub(super) results: Vec<RecordResult>,
}

impl RecordResults {
    /// Reads the `Records` of a PutRecords answer's JSON body.
    pub(super) fn parse(body: &[u8]) -> Result<RecordResults, serde_json::Error> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Records")]
            records: RecordResults,
        }
        Ok(serde_json::from_slice::<Answer>(body)?.records)
    }

    /// The same results from the SDK's entries.
    pub(super) fn from_entries(entries: &[PutRecordsResultEntry]) -> RecordResults {
        let mut results = RecordResults::default();
        for entry in entries {
            results.push(entry.error_code(), entry.shard_id());
        }
        results
    }

    /// Adds the next record's result: failed with its error code, or written to its shard.
    fn push(&mut self, error_code: Option<&str>, shard_id: Option<&str>) {
        let result = match error_code {
            Some(code) => RecordResult::Failed { code: code.to_owned() },
            None => RecordResult::Written {
                shard: shard_id.map(|shard| self.shard_index(shard)),
            },
        };
        self.results.push(result);
    }

    fn shard_index(&mut self, shard: &str) -> u32 {
        // An answer names few distinct shards: a short scan beats hashing.
        let i = match self.shards.iter().position(|s| s == shard) {
            Some(i) => i,
            None => {
                self.shards.push(shard.to_owned());
                self.shards.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    pub(super) fn len(&self) -> usize {
        self.results.len()
    }

    /// The shard a written record went to.
    pub(super) fn shard_name(&self, result: &RecordResult) -> Option<&str> {
        match result {
            RecordResult::Written { shard: Some(i) } => self.shards.get(*i as usize).map(String::as_str),
            _ => None,
        }
    }
}

/// Each entry is read into its result as it comes, without a vector of entries between.
impl<'de> Deserialize<'de> for RecordResults {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = RecordResults;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of PutRecords result entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut entries: A) -> Result<RecordResults, A::Error> {
        #[derive(Deserialize)]
        struct Entry<'a> {
            #[serde(rename = "ShardId", borrow)]
            shard_id: Option<Cow<'a, str>>,
            #[serde(rename = "ErrorCode", borrow)]
            error_code: Option<Cow<'a, str>>,
        }
        let mut results = RecordResults {
            shards: Vec::new(),
            results: Vec::with_capacity(PUT_RECORDS_MAX_RECORDS),
        };
        while let Some(entry) = entries.next_element::<Entry>()? {
            results.push(entry.error_code.as_deref(), entry.shard_id.as_deref());
        }
        Ok(results)
    }
}

/// PutRecords answers, read here (`answer_reader`).
pub(super) struct PutRecordsAnswer;

impl OwnReading for PutRecordsAnswer {
    type Read = RecordResults;

    fn operation_layer() -> Option<&'static FrozenLayer> {
        static LAYER: OnceLock<Option<FrozenLayer>> = OnceLock::new();
        LAYER.get_or_init(|| PutRecords::new().config()).as_ref()
    }

    fn read(body: &[u8]) -> Option<RecordResults> {
        RecordResults::parse(body).ok()
    }

    fn empty_output() -> Option<Output> {
        let output = PutRecordsOutput::builder().set_records(Some(Vec::new())).build().ok()?;
        Some(Output::erase(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_each_record_its_shard_or_error_code_in_order() {
        let body = br#"{"EncryptionType":"NONE","FailedRecordCount":2,"Records":[
            {"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000001"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard shardId-000000000001"},
            {"SequenceNumber":"2","ShardId":"shardId-000000000002"},
            {"SequenceNumber":"3","ShardId":"shardId-00000000000\u0031"},
            {"ErrorCode":"Internal\u0046ailure","ErrorMessage":"x"},
            {"SequenceNumber":"4"}
        ]}"#;
        let results = RecordResults::parse(body).unwrap();
        let shards: Vec<_> = results.results.iter().map(|r| results.shard_name(r)).collect();
        assert_eq!(
            shards,
            [
                Some("shardId-000000000001"),
                None,
                Some("shardId-000000000002"),
                Some("shardId-000000000001"),
                None,
                None
            ]
        );
        let codes: Vec<_> = results.results.iter().map(RecordResult::error_code).collect();
        assert_eq!(
            codes,
            [
                None,
                Some("ProvisionedThroughputExceededException"),
                None,
                None,
                Some("InternalFailure"),
                None
            ]
        );
        assert_eq!(results.shards.len(), 2);
    }

    #[test]
    fn the_sdk_entries_give_the_same_results() {
        let body = br#"{"FailedRecordCount":1,"Records":[
            {"SequenceNumber":"1","ShardId":"shardId-000000000000"},
            {"ErrorCode":"KMSThrottlingException","ErrorMessage":"slow"},
            {"SequenceNumber":"2","ShardId":"shardId-000000000003"}
        ]}"#;
        let entries = [
            PutRecordsResultEntry::builder()
                .sequence_number("1")
                .shard_id("shardId-000000000000")
                .build(),
            PutRecordsResultEntry::builder()
                .error_code("KMSThrottlingException")
                .error_message("slow")
                .build(),
            PutRecordsResultEntry::builder()
                .sequence_number("2")
                .shard_id("shardId-000000000003")
                .build(),
        ];
        assert_eq!(
            RecordResults::parse(body).unwrap(),
            RecordResults::from_entries(&entries)
        );
    }

    #[test]
    fn what_is_not_a_records_answer_is_left_to_the_sdk() {
        for body in [
            &b""[..],
            b"{}",
            b"{\"Records\":{}}",
            b"{\"Records\":[{\"ShardId\":7}]}",
            b"{\"__type\":\"ResourceNotFoundException\",\"message\":\"no stream\"}",
            b"{\"Records\":[]",
        ] {
            assert!(RecordResults::parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
