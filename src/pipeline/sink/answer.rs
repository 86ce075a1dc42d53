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
use memchr::memmem;
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
        match RecordResults::all_written(body) {
            Some(results) => Ok(results),
            None => RecordResults::parse_entries(body),
        }
    }

    /// The answer of a call whose every record was written, with the members of each entry in
    /// the order of Kinesis's API reference and the emulators' answers: `{"SequenceNumber":"…","ShardId":"…"}`
    /// for every record, and `"FailedRecordCount":0` in the document around them. `None` for
    /// any other answer, which is parsed entry by entry.
    ///
    /// Parsing a full call's answer, about 50 KiB of mostly sequence numbers, entry by entry
    /// was about a twentieth of the collector's work at its ceiling; stepping over the entries
    /// takes about a third of that (`docs/performance.md`). The entries are read strictly, each
    /// string checked as a JSON parser checks it, and the document around them is parsed whole
    /// with the array left empty, so an answer is taken here only as the full parse reads it.
    fn all_written(body: &[u8]) -> Option<RecordResults> {
        const RECORDS: &[u8] = br#""Records""#;
        // The first `"Records"` followed by a colon is a key, for no string holds a bare quote;
        // it is the answer's own if no other follows the entries (checked below) and the
        // document around them has its `Records`.
        let records_at = memmem::find(body, RECORDS)?;
        let mut answer = JsonTokens(&body[records_at + RECORDS.len()..]);
        answer.token(b":")?;
        answer.token(b"[")?;
        let entries_at = body.len() - answer.0.len();
        let mut results = RecordResults {
            shards: Vec::new(),
            results: Vec::with_capacity(PUT_RECORDS_MAX_RECORDS),
        };
        loop {
            answer.token(b"{")?;
            answer.token(br#""SequenceNumber""#)?;
            answer.token(b":")?;
            answer.string()?;
            answer.token(b",")?;
            answer.token(br#""ShardId""#)?;
            answer.token(b":")?;
            results.push(None, Some(answer.string()?));
            answer.token(b"}")?;
            if answer.token(b",").is_none() {
                answer.token(b"]")?;
                break;
            }
        }
        if memmem::find(answer.0, RECORDS).is_some() {
            return None;
        }
        #[derive(Deserialize)]
        struct Around {
            #[serde(rename = "FailedRecordCount")]
            failed: u64,
            #[serde(rename = "Records")]
            records: Vec<serde::de::IgnoredAny>,
        }
        let mut around = Vec::with_capacity(entries_at + 1 + answer.0.len());
        around.extend_from_slice(&body[..entries_at]);
        around.push(b']');
        around.extend_from_slice(answer.0);
        let around: Around = serde_json::from_slice(&around).ok()?;
        (around.failed == 0 && around.records.is_empty()).then_some(results)
    }

    /// Reads the `Records` entry by entry.
    fn parse_entries(body: &[u8]) -> Result<RecordResults, serde_json::Error> {
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

/// What is left of a JSON text, taken token by token.
struct JsonTokens<'a>(&'a [u8]);

impl<'a> JsonTokens<'a> {
    /// Takes `token` after any JSON whitespace; `None` when something else comes first.
    fn token(&mut self, token: &[u8]) -> Option<()> {
        // Compact JSON first, as the instant fake writes it; whitespace as the emulators do.
        if let Some(rest) = self.0.strip_prefix(token) {
            self.0 = rest;
            return Some(());
        }
        let start = self.0.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        self.0 = self.0[start..].strip_prefix(token)?;
        Some(())
    }

    /// Takes a string without escapes, checked as a JSON parser checks it (no control
    /// characters, UTF-8); `None` for anything else.
    fn string(&mut self) -> Option<&'a str> {
        self.token(b"\"")?;
        let text = self.0;
        let len = memchr::memchr2(b'"', b'\\', text)?;
        let contents = &text[..len];
        // Folded rather than searched: without an early exit the check is vectorised.
        let control = contents.iter().fold(false, |found, &b| found | (b < 0x20));
        if text[len] != b'"' || control {
            return None;
        }
        self.0 = &text[len + 1..];
        std::str::from_utf8(contents).ok()
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

    /// A compact PutRecords answer: every record written, to `shards` in turn.
    fn written_answer(records: usize, shards: &[&str]) -> String {
        let entries: Vec<String> = (0..records)
            .map(|i| {
                format!(
                    r#"{{"SequenceNumber":"4959033827149025660855969253836157109592157598913658{i:04}","ShardId":"{}"}}"#,
                    shards[i % shards.len()]
                )
            })
            .collect();
        format!(
            r#"{{"EncryptionType":"NONE","FailedRecordCount":0,"Records":[{}]}}"#,
            entries.join(",")
        )
    }

    #[test]
    fn a_wholly_written_answer_is_read_by_its_shard_ids_as_the_entries_read() {
        let body = written_answer(500, &["shardId-000000000000", "shardId-000000000001"]);
        let shortcut = RecordResults::all_written(body.as_bytes()).expect("read by its shard ids");
        assert_eq!(shortcut.len(), 500);
        assert_eq!(shortcut.shard_name(&shortcut.results[1]), Some("shardId-000000000001"));
        assert_eq!(shortcut, RecordResults::parse_entries(body.as_bytes()).unwrap());
        let at_the_end = body
            .replace(r#""FailedRecordCount":0,"#, "")
            .replace("]}", r#"],"FailedRecordCount":0}"#);
        assert_eq!(
            RecordResults::all_written(at_the_end.as_bytes()),
            Some(shortcut.clone())
        );
        // As moto and LocalStack write it: a space after each colon and comma.
        let spaced = body.replace(':', ": ").replace(',', ", ");
        assert_eq!(RecordResults::all_written(spaced.as_bytes()), Some(shortcut.clone()));
        let indented = body.replace('{', "{\n\t").replace(',', ",\r\n  ").replace('}', "\n}");
        assert_eq!(RecordResults::all_written(indented.as_bytes()), Some(shortcut));
    }

    #[test]
    fn an_answer_as_localstack_writes_it_is_read_by_its_shard_ids() {
        let body = br#"{"FailedRecordCount": 0, "Records": [{"SequenceNumber": "49680930356648693023035791622138910935112672849378148354", "ShardId": "shardId-000000000000"}, {"SequenceNumber": "49680930356670993768234322245280446653385321210884128786", "ShardId": "shardId-000000000001"}], "EncryptionType": "NONE"}"#;
        let shortcut = RecordResults::all_written(body).expect("read by its shard ids");
        let shards: Vec<_> = shortcut.results.iter().map(|r| shortcut.shard_name(r)).collect();
        assert_eq!(shards, [Some("shardId-000000000000"), Some("shardId-000000000001")]);
        assert_eq!(Some(shortcut), RecordResults::parse_entries(body).ok());
    }

    #[test]
    fn answers_the_shortcut_cannot_vouch_for_are_read_entry_by_entry() {
        let written = written_answer(3, &["shardId-000000000000"]);
        let failed = r#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1","ShardId":"shardId-000000000000"},{"ErrorCode":"InternalFailure","ErrorMessage":"x"}]}"#;
        for (i, body) in [
            failed.to_owned(),
            // A failed entry where the count says none failed.
            failed.replace(r#""FailedRecordCount":1"#, r#""FailedRecordCount":0"#),
            written.replace(r#""FailedRecordCount":0"#, r#""FailedRecordCount":2"#),
            written.replace(r#""FailedRecordCount":0"#, r#""FailedRecordCount":01"#),
            written.replace(r#""FailedRecordCount":0,"#, ""),
            written.replace(r#""EncryptionType""#, r#""FailedRecordCount":0,"EncryptionType""#),
            written.replacen("shardId-000000000000", r"shardId-00000000000\u0030", 1),
            written.replacen(r#","ShardId":"shardId-000000000000""#, "", 1),
            written.replacen(r#"{"SequenceNumber":"#, r#"{"ShardId":"0","SequenceNumber":"#, 1),
            written.replacen(r#","ShardId":"#, "\u{c},\"ShardId\":", 1),
            written.replace(r#""Records":["#, r#""Records":[{"SequenceNumber":"0"},"#),
            written.trim_end_matches('}').to_owned(),
            written.replacen("shardId-000000000000", "shardId-\u{1}", 1),
            written.replace(r#""EncryptionType":"NONE""#, r#""Nested":{"Records":[]}"#),
            written.replace(r#""EncryptionType":"NONE""#, r#""Records":[]"#),
            // Entries under a key that ends in `"Records`, the answer's own empty.
            written
                .replace(r#""Records":["#, r#""x\"Records":["#)
                .replace("]}", r#"],"Records":[]}"#),
            // Entries in a nested `Records`, the answer's own empty.
            written
                .replace(r#""Records":["#, r#""Nested":{"Records":["#)
                .replace("]}", r#"]},"Records":[]}"#),
            r#"{"FailedRecordCount":0,"Records":[]}"#.to_owned(),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(RecordResults::all_written(body.as_bytes()), None, "{i}: {body}");
            assert_eq!(
                RecordResults::parse(body.as_bytes()).ok(),
                RecordResults::parse_entries(body.as_bytes()).ok(),
                "{i}: {body}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the answer, reading it by its shard ids, when that is taken, gives what
        /// reading it entry by entry gives.
        #[test]
        fn the_shortcut_agrees_with_the_entries(
            entries in proptest::collection::vec(
                (
                    proptest::option::of(0..3usize),
                    proptest::sample::select(vec![
                        "shardId-000000000000",
                        r"shardId-00000000000\u0031",
                        r#"\"ShardId\":\""#,
                        "",
                    ]),
                    proptest::sample::select(vec![",", " , ", ",\n"]),
                    proptest::bool::ANY,
                ),
                0..20,
            ),
            stated_failures in proptest::option::of(0..3u32),
        ) {
            let shards = ["shardId-000000000000", "shardId-000000000001", r"shardId-00000000000\u0032"];
            let body_entries: Vec<String> = entries
                .iter()
                .map(|(shard, text, gap, sequence_first)| match shard {
                    Some(i) if *sequence_first => {
                        format!(r#"{{"SequenceNumber":"1"{gap}"ShardId":"{}"}}"#, shards[*i])
                    }
                    Some(i) => format!(r#"{{"ShardId":"{}"{gap}"SequenceNumber":"1"}}"#, shards[*i]),
                    None => format!(r#"{{"ErrorCode":"InternalFailure"{gap}"ErrorMessage":"{text}"}}"#),
                })
                .collect();
            let failed = entries.iter().filter(|(shard, ..)| shard.is_none()).count() as u32;
            let body = format!(
                r#"{{"FailedRecordCount":{},"Records":[{}]}}"#,
                stated_failures.unwrap_or(failed),
                body_entries.join(",")
            );
            if let Some(shortcut) = RecordResults::all_written(body.as_bytes()) {
                proptest::prop_assert_eq!(Some(shortcut), RecordResults::parse_entries(body.as_bytes()).ok());
            }
            proptest::prop_assert_eq!(
                RecordResults::parse(body.as_bytes()).ok(),
                RecordResults::parse_entries(body.as_bytes()).ok()
            );
        }
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
