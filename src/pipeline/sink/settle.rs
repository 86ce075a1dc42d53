//! What a PutRecords answer or error means for its records: settled by their results, or
//! classified by what can fix the failure.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::pipeline::message::InFlightMessage;

use super::OutboundRecord;
use super::answer::RecordResult;

/// What became of one PutRecords call's records.
#[derive(Default)]
pub(super) struct Settled {
    pub(super) confirmed: Vec<OutboundRecord>,
    /// To send again, in their original order.
    pub(super) resend: Vec<OutboundRecord>,
    /// Failed records by error code.
    pub(super) failed_by_code: HashMap<String, u64>,
    /// Records that succeeded but follow a failed event of their submission.
    pub(super) resent_after_failure: u64,
}

/// Refusals in a row (with nothing written between) after which the stream, not the records,
/// is taken to be at fault.
pub(super) const MAX_REFUSALS_IN_A_ROW: u32 = 3;

/// What a failed PutRecords call means for its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallFailure {
    /// Throttling, 5xx, network trouble, anything unknown: the same call can succeed later.
    Transient(String),
    /// No answer within the call timeout: the same call can succeed later, and a smaller one
    /// sooner.
    TimedOut(String),
    /// The stream refuses the call (`ValidationException`, `InvalidArgumentException`);
    /// `record` is the position of the record it names, when it names one.
    Refused { record: Option<usize>, reason: String },
    /// No record can be written until someone fixes something (permissions, KMS key, stream).
    StreamUnusable(String),
}

pub(super) fn classify_call<R>(
    error: &SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError, R>,
) -> CallFailure
where
    R: std::fmt::Debug,
{
    let text = DisplayErrorContext(error).to_string();
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = service.err().message().unwrap_or_default();
            classify(code, message, text)
        }
        SdkError::TimeoutError(_) => CallFailure::TimedOut(text),
        _ => CallFailure::Transient(text),
    }
}

/// Classifies a whole-call error by its AWS error code and message.
pub(super) fn classify(code: &str, message: &str, text: String) -> CallFailure {
    match code {
        "ValidationException" | "InvalidArgumentException" => CallFailure::Refused {
            record: refused_record(message),
            reason: format!("{code}: {message}"),
        },
        code if stream_unusable(code) => {
            CallFailure::StreamUnusable(format!("PutRecords fails with {code}: {message}"))
        }
        _ => CallFailure::Transient(text),
    }
}

/// Error codes (of the call or of a record) that no record can get past until an operator acts.
pub(super) fn stream_unusable(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "ResourceNotFoundException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "KMSDisabledException"
            | "KMSNotFoundException"
            | "KMSAccessDeniedException"
            | "KMSInvalidStateException"
            | "KMSOptInRequired"
    )
}

/// The position of the record a validation message names: `'records.N.member...'`, 1-based.
pub(super) fn refused_record(message: &str) -> Option<usize> {
    let rest = &message[message.find("records.")? + "records.".len()..];
    let digits = rest.split('.').next()?;
    let position: usize = digits.parse().ok()?;
    position.checked_sub(1)
}

/// A bounded label for the refusal metric.
pub(super) fn refusal_label(reason: &str) -> &'static str {
    // Kinesis names the constraint ("length less than or equal"); LocalStack's Kinesis says
    // "Data object is too large".
    if reason.contains("length less than or equal") || reason.contains("size") || reason.contains("too large") {
        "record_too_large"
    } else {
        "record_invalid"
    }
}

/// Splits a call's records by their results (same length and order as the request). Once an
/// event of a message fails, every later event of that message in the call is sent again too.
pub(super) fn settle(batch: Vec<OutboundRecord>, results: &[RecordResult]) -> Settled {
    // Most calls are confirmed whole: room for all of them at once, not grown record by record.
    let mut settled = Settled {
        confirmed: Vec::with_capacity(batch.len()),
        ..Settled::default()
    };
    let mut failed_messages: HashSet<*const InFlightMessage> = HashSet::new();
    for (record, result) in batch.into_iter().zip(results) {
        let message = Arc::as_ptr(&record.message);
        if failed_messages.contains(&message) {
            if result.error_code().is_none() {
                settled.resent_after_failure += 1;
            } else {
                *settled.failed_by_code.entry(code_of(result)).or_default() += 1;
            }
            settled.resend.push(record);
        } else if result.error_code().is_some() {
            failed_messages.insert(message);
            *settled.failed_by_code.entry(code_of(result)).or_default() += 1;
            settled.resend.push(record);
        } else {
            settled.confirmed.push(record);
        }
    }
    settled
}

pub(super) fn code_of(result: &RecordResult) -> String {
    result.error_code().unwrap_or("unknown").to_owned()
}

/// The `error_code` labels of `telemetry_collector_records_retried_total`: Kinesis's retryable codes,
/// the in-order suffix resent after a failure, whole-call failures, and `other`.
pub(super) const RETRY_CODES: [&str; 6] = [
    "ProvisionedThroughputExceededException",
    "InternalFailure",
    "KMSThrottlingException",
    "resend_after_failure",
    "call_failed",
    "other",
];

/// Error codes become label values; unknown codes are folded into `other` so a misbehaving
/// endpoint cannot grow the label set without bound.
pub(super) fn error_code_label(code: &str) -> &'static str {
    RETRY_CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::pipeline::message::test_message as message;

    fn record(message: &Arc<InFlightMessage>, index: usize) -> OutboundRecord {
        OutboundRecord::for_test(
            format!("{}:{index}", message.message_id()).into_bytes().into(),
            message.message_id().into(),
            message.clone(),
        )
    }

    fn ok() -> RecordResult {
        RecordResult::Written { shard: Some(0) }
    }

    fn throttled() -> RecordResult {
        RecordResult::Failed {
            code: "ProvisionedThroughputExceededException".into(),
        }
    }

    fn names(records: &[OutboundRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_failed_event_sends_its_submission_suffix_again_in_order() {
        let a = message("a", 4);
        let b = message("b", 2);
        // Interleaved as two submissions on one lane could be.
        let batch = vec![
            record(&a, 0),
            record(&b, 0),
            record(&a, 1),
            record(&a, 2),
            record(&b, 1),
            record(&a, 3),
        ];
        let results = [ok(), ok(), throttled(), ok(), ok(), throttled()];
        let settled = settle(batch, &results);
        assert_eq!(names(&settled.confirmed), ["a:0", "b:0", "b:1"]);
        assert_eq!(names(&settled.resend), ["a:1", "a:2", "a:3"]);
        assert_eq!(settled.failed_by_code["ProvisionedThroughputExceededException"], 2);
        assert_eq!(settled.resent_after_failure, 1);
    }

    #[test]
    fn all_ok_confirms_everything() {
        let a = message("a", 2);
        let settled = settle(vec![record(&a, 0), record(&a, 1)], &[ok(), ok()]);
        assert_eq!(settled.confirmed.len(), 2);
        assert!(settled.resend.is_empty());
    }

    #[test]
    fn a_call_with_no_answer_in_time_is_told_from_other_transient_failures() {
        type Error = SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError, ()>;
        let timed_out: Error = SdkError::timeout_error("operation attempt timeout");
        assert!(matches!(classify_call(&timed_out), CallFailure::TimedOut(_)));
        let cut: Error = SdkError::dispatch_failure(aws_smithy_runtime_api::client::result::ConnectorError::io(
            "connection reset".into(),
        ));
        assert!(matches!(classify_call(&cut), CallFailure::Transient(_)));
    }

    #[test]
    fn call_errors_are_classified_by_what_can_fix_them() {
        let too_large = "1 validation error detected: Value at 'records.3.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576";
        assert_eq!(
            classify("ValidationException", too_large, String::new()),
            CallFailure::Refused {
                record: Some(2),
                reason: format!("ValidationException: {too_large}")
            }
        );
        assert_eq!(refusal_label(too_large), "record_too_large");
        assert_eq!(
            refusal_label("InvalidArgumentException: Data object is too large"),
            "record_too_large"
        );
        assert_eq!(
            refusal_label("ValidationException: Value at 'records.1.member.partitionKey' failed"),
            "record_invalid"
        );
        assert_eq!(
            classify(
                "InvalidArgumentException",
                "Records size exceeds 5 MB limit",
                String::new()
            ),
            CallFailure::Refused {
                record: None,
                reason: "InvalidArgumentException: Records size exceeds 5 MB limit".into()
            }
        );
        for code in [
            "AccessDeniedException",
            "KMSDisabledException",
            "ResourceNotFoundException",
        ] {
            assert!(
                matches!(classify(code, "no", String::new()), CallFailure::StreamUnusable(_)),
                "{code}"
            );
        }
        for code in [
            "ProvisionedThroughputExceededException",
            "LimitExceededException",
            "KMSThrottlingException",
            "InternalFailure",
            "ServiceUnavailable",
            "SomethingNew",
        ] {
            assert_eq!(
                classify(code, "m", "text".into()),
                CallFailure::Transient("text".into()),
                "{code}"
            );
        }
        assert_eq!(
            refused_record("Value at 'records.1.member.partitionKey' failed"),
            Some(0)
        );
        assert_eq!(refused_record("records.0.member"), None);
        assert_eq!(refused_record("records.x.member"), None);
        assert_eq!(refused_record("no position here"), None);
    }
}
