//! `telemetry-collector check`: before a deployment, ask the real endpoints what the collector
//! would find, and say what is wrong in words an operator can act on.
//!
//! It resolves the queue (GetQueueUrl, GetQueueAttributes) and the stream
//! (DescribeStreamSummary), the calls the collector itself makes at start, so they also show
//! that those permissions work. Then it probes the permissions of the calls that change state
//! with requests that cannot change anything:
//!
//! | permission | request | answer when it is not refused |
//! | --- | --- | --- |
//! | `sqs:DeleteMessage` | DeleteMessageBatch, one entry with a receipt handle that cannot be valid | the entry fails (`ReceiptHandleIsInvalid`) |
//! | `sqs:ChangeMessageVisibility` | ChangeMessageVisibilityBatch, the same entry | the entry fails (`ReceiptHandleIsInvalid`) |
//! | `kinesis:PutRecords` | PutRecords with no records | a validation error (AWS asks for at least one record), or success with nothing written (moto, LocalStack) |
//! | `sqs:SendMessage` (dead-letter queue, when set) | SendMessageBatch with no entries | `EmptyBatchRequest` |
//! | `sqs:ReceiveMessage` | ReceiveMessage asking for 11 messages (SQS allows 1 to 10), visibility 0, no wait | `InvalidParameterValue` |
//!
//! These are the calls the collector makes (the batch calls are authorised as their single
//! actions). An `AccessDenied` / `AccessDeniedException` or "not authorized" answer fails the
//! check, naming the IAM action. An answer judged entry by entry (HTTP 200) or a success means
//! the request passed every check of the whole request, authorisation included: "allowed". A
//! request-level validation error means only "not refused": AWS does not document whether SQS
//! and Kinesis authorise a request before they validate it, so it does not prove the permission.
//!
//! The ReceiveMessage probe asks for 11 messages because SQS, moto and LocalStack all refuse
//! that count; 0 would not do (LocalStack answers it with a message). Should an endpoint still
//! hand out messages, the probe asked for a visibility timeout of 0, so they are visible again at
//! once, and the report says how many were received (each receive counts toward the message's
//! `maxReceiveCount`).
//!
//! With a dead-letter queue (`DEAD_LETTER_QUEUE_URL`), it also reads that queue's
//! `MaximumMessageSize` (GetQueueAttributes) and warns when it is below the source queue's: an
//! invalid body is forwarded as it was received, so a body larger than the dead-letter queue
//! takes can never be forwarded, and its message keeps coming back.
//!
//! One attempt per call, bounded by `AWS_CALL_TIMEOUT_SEC`.

use std::fmt;

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, QueueAttributeName,
};

use crate::aws::Clients;
use crate::config::{Config, QueueRef};

/// A source queue's `maxReceiveCount` below this sends valid submissions to its dead-letter
/// queue during rolling restarts: every give-back at shutdown counts as a receive.
pub(crate) const MIN_MAX_RECEIVE_COUNT: u64 = 10;

/// How a finding bears on running the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but deserves a look.
    Warn,
    /// The collector would not work, or would lose data to a dead-letter queue.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub subject: &'static str,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{tag} {}: {}", self.subject, self.text)
    }
}

fn finding(verdict: Verdict, subject: &'static str, text: impl Into<String>) -> Finding {
    Finding {
        verdict,
        subject,
        text: text.into(),
    }
}

/// Asks the endpoints about the queue and the stream of `config`.
pub async fn run(config: &Config, sdk_config: &aws_config::SdkConfig) -> Vec<Finding> {
    let clients = Clients::new(sdk_config, config.call_timeout);
    let mut findings = vec![finding(Verdict::Ok, "configuration", "every setting is valid")];
    let (queue_findings, queue) = check_queue(&clients.sqs, config).await;
    findings.extend(queue_findings);
    let (stream_findings, stream_found) = check_stream(&clients.kinesis, config).await;
    findings.extend(stream_findings);
    // Probes only where the resource was found: a missing one has failed above already.
    if let Some(FoundQueue { url, .. }) = &queue {
        findings.push(probe_delete(&clients.sqs, url).await);
        findings.push(probe_change_visibility(&clients.sqs, url).await);
        findings.push(probe_receive(&clients.sqs, url).await);
    }
    if stream_found {
        findings.push(probe_put_records(&clients.kinesis, &config.stream_name).await);
    }
    if let Some(dlq) = &config.pipeline.dead_letter_queue_url {
        findings.push(probe_send(&clients.sqs, dlq).await);
        if let Some(source_max) = queue.as_ref().and_then(|q| q.maximum_message_size) {
            findings.push(check_dead_letter_size(&clients.sqs, dlq, source_max).await);
        }
    }
    findings
}

/// The source queue, as `check` found it.
struct FoundQueue {
    url: String,
    /// Its `MaximumMessageSize` attribute in bytes, when the endpoint answered one.
    maximum_message_size: Option<u64>,
}

/// The queue's findings, and the queue when it was found.
async fn check_queue(sqs: &aws_sdk_sqs::Client, config: &Config) -> (Vec<Finding>, Option<FoundQueue>) {
    match queue_attributes(sqs, config).await {
        Ok((url, attributes)) => {
            let findings = queue_findings(&url, &attributes, config);
            let maximum_message_size = maximum_message_size(&attributes);
            (
                findings,
                Some(FoundQueue {
                    url,
                    maximum_message_size,
                }),
            )
        }
        Err(failed) => (vec![failed], None),
    }
}

fn maximum_message_size(attributes: &std::collections::HashMap<QueueAttributeName, String>) -> Option<u64> {
    attributes
        .get(&QueueAttributeName::MaximumMessageSize)
        .and_then(|v| v.trim().parse().ok())
}

const DEAD_LETTER_QUEUE: &str = "dead-letter queue";

/// Reads the dead-letter queue's `MaximumMessageSize` and judges it against the source
/// queue's `source_max`.
async fn check_dead_letter_size(sqs: &aws_sdk_sqs::Client, dlq_url: &str, source_max: u64) -> Finding {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(dlq_url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await;
    match answer {
        Ok(out) => match out.attributes.as_ref().and_then(maximum_message_size) {
            Some(dlq_max) => dead_letter_size_finding(dlq_url, dlq_max, source_max),
            None => finding(
                Verdict::Warn,
                DEAD_LETTER_QUEUE,
                format!("GetQueueAttributes {dlq_url} answered without a MaximumMessageSize"),
            ),
        },
        // A warning, not a failure: the collector itself never reads the dead-letter queue's
        // attributes, so a role without the permission still works.
        Err(e) => finding(
            Verdict::Warn,
            DEAD_LETTER_QUEUE,
            format!(
                "cannot compare its MaximumMessageSize with the queue's: GetQueueAttributes {dlq_url} failed (sqs:GetQueueAttributes on it?): {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            ),
        ),
    }
}

/// Judges the dead-letter queue's `MaximumMessageSize` (`dlq_max`) against the source
/// queue's: the collector forwards an invalid body as it was received, so the dead-letter
/// queue must take every body the source queue does.
pub(crate) fn dead_letter_size_finding(dlq_url: &str, dlq_max: u64, source_max: u64) -> Finding {
    if dlq_max < source_max {
        finding(
            Verdict::Warn,
            DEAD_LETTER_QUEUE,
            format!(
                "{dlq_url} takes messages up to {dlq_max} bytes (MaximumMessageSize), the queue up to {source_max}: an invalid body larger than {dlq_max} bytes cannot be forwarded, and its message comes back until the redrive policy or the retention period removes it; raise the dead-letter queue's MaximumMessageSize to {source_max} (docs/operations.md)"
            ),
        )
    } else {
        finding(
            Verdict::Ok,
            DEAD_LETTER_QUEUE,
            format!("{dlq_url} takes messages up to {dlq_max} bytes, the queue up to {source_max}"),
        )
    }
}

/// The queue's URL and every attribute, or the finding that says which call failed.
async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    config: &Config,
) -> Result<(String, std::collections::HashMap<QueueAttributeName, String>), Finding> {
    const SUBJECT: &str = "queue";
    let url = match &config.queue {
        QueueRef::Url(url) => url.clone(),
        QueueRef::Name(name) => match sqs.get_queue_url().queue_name(name).send().await {
            Ok(out) => out
                .queue_url
                .ok_or_else(|| finding(Verdict::Fail, SUBJECT, "GetQueueUrl answered without a URL"))?,
            Err(e) => {
                return Err(finding(
                    Verdict::Fail,
                    SUBJECT,
                    format!(
                        "GetQueueUrl {name} failed (queue name, region, endpoint, sqs:GetQueueUrl?): {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    ),
                ));
            }
        },
    };
    match sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
    {
        Ok(out) => Ok((url, out.attributes.unwrap_or_default())),
        Err(e) => Err(finding(
            Verdict::Fail,
            SUBJECT,
            format!(
                "GetQueueAttributes {url} failed (URL, region, endpoint, sqs:GetQueueAttributes?): {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            ),
        )),
    }
}

/// What the queue's attributes mean for the collector.
fn queue_findings(
    url: &str,
    attributes: &std::collections::HashMap<QueueAttributeName, String>,
    config: &Config,
) -> Vec<Finding> {
    const SUBJECT: &str = "queue";
    let get = |name: QueueAttributeName| attributes.get(&name).map(String::as_str);
    let mut findings = vec![finding(Verdict::Ok, SUBJECT, format!("{url} resolved"))];
    if let Some(timeout) = get(QueueAttributeName::VisibilityTimeout) {
        findings.push(finding(
            Verdict::Ok,
            SUBJECT,
            format!(
                "visibility timeout {timeout} s; the collector asks for QUEUE_VISIBILITY_TIMEOUT_SEC={} s on each receive and extends it up to {} s",
                config.pipeline.visibility.timeout.as_secs(),
                config.pipeline.visibility.max_total.as_secs()
            ),
        ));
    }
    findings.push(redrive_finding(get(QueueAttributeName::RedrivePolicy)));
    if let Some(retention) = get(QueueAttributeName::MessageRetentionPeriod).and_then(|v| v.parse::<u64>().ok()) {
        findings.push(finding(
            Verdict::Ok,
            SUBJECT,
            format!(
                "messages are kept {} h: the longest outage of the stream that loses nothing",
                retention / 3600
            ),
        ));
    }
    if get(QueueAttributeName::KmsMasterKeyId).is_some_and(|k| !k.is_empty()) {
        findings.push(finding(
            Verdict::Warn,
            SUBJECT,
            "encrypted with a customer-managed KMS key: the collector's role needs kms:Decrypt on it (deploy/iam/collector-kms-policy.json)",
        ));
    }
    findings
}

/// Judges a queue's `RedrivePolicy` attribute (JSON; `maxReceiveCount` a string or a number).
pub(crate) fn redrive_finding(policy: Option<&str>) -> Finding {
    const SUBJECT: &str = "queue redrive policy";
    let Some(policy) = policy.filter(|p| !p.trim().is_empty()) else {
        return finding(
            Verdict::Warn,
            SUBJECT,
            format!(
                "none: a message that fails every time stays in the queue until it expires; consider a dead-letter queue with maxReceiveCount >= {MIN_MAX_RECEIVE_COUNT} (docs/operations.md)"
            ),
        );
    };
    let parsed: Option<serde_json::Value> = serde_json::from_str(policy).ok();
    let count = parsed.as_ref().and_then(|p| match &p["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let target = parsed
        .as_ref()
        .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    match count {
        None => finding(
            Verdict::Fail,
            SUBJECT,
            format!("cannot read maxReceiveCount in {policy}"),
        ),
        Some(count) if count < MIN_MAX_RECEIVE_COUNT => finding(
            Verdict::Fail,
            SUBJECT,
            format!(
                "maxReceiveCount {count} to {target}: below {MIN_MAX_RECEIVE_COUNT}, rolling restarts (each give-back at shutdown is a receive) send valid submissions to the dead-letter queue; raise it (docs/operations.md)"
            ),
        ),
        Some(count) => finding(Verdict::Ok, SUBJECT, format!("maxReceiveCount {count} to {target}")),
    }
}

/// The stream's findings, and whether it was found.
async fn check_stream(kinesis: &aws_sdk_kinesis::Client, config: &Config) -> (Vec<Finding>, bool) {
    const SUBJECT: &str = "stream";
    let name = &config.stream_name;
    let summary = match kinesis.describe_stream_summary().stream_name(name).send().await {
        Ok(out) => out.stream_description_summary,
        Err(e) => {
            return (
                vec![finding(
                    Verdict::Fail,
                    SUBJECT,
                    format!(
                        "DescribeStreamSummary {name} failed (stream name, region, endpoint, kinesis:DescribeStreamSummary?): {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(e)
                    ),
                )],
                false,
            );
        }
    };
    let Some(summary) = summary else {
        return (
            vec![finding(
                Verdict::Fail,
                SUBJECT,
                "DescribeStreamSummary answered without a description",
            )],
            false,
        );
    };
    let status = summary.stream_status.as_str().to_owned();
    let mode = summary
        .stream_mode_details
        .map(|m| m.stream_mode.as_str().to_owned())
        .unwrap_or_else(|| "PROVISIONED".to_owned());
    let shards = summary.open_shard_count;
    let mut findings = Vec::new();
    let verdict = match status.as_str() {
        "ACTIVE" | "UPDATING" => Verdict::Ok,
        _ => Verdict::Fail,
    };
    findings.push(finding(
        verdict,
        SUBJECT,
        format!(
            "{name} is {status}, {mode}, {shards} open shards (writes up to {} records/s and {shards} MiB/s)",
            i64::from(shards) * 1000
        ),
    ));
    if mode == "ON_DEMAND" && config.shard_supervisor.policy.autoscale {
        findings.push(finding(
            Verdict::Warn,
            SUBJECT,
            "SHARD_AUTOSCALE_ENABLED=true has no effect on an on-demand stream",
        ));
    }
    if summary.encryption_type.is_some_and(|e| e.as_str() == "KMS") {
        findings.push(finding(
            Verdict::Warn,
            SUBJECT,
            "encrypted with KMS: the collector's role needs kms:GenerateDataKey on the key (deploy/iam/collector-kms-policy.json)",
        ));
    }
    (findings, true)
}

const PERMISSION: &str = "permission";

/// A receipt handle no queue ever issued: SQS's are long base64 strings.
const IMPOSSIBLE_RECEIPT_HANDLE: &str = "telemetry-collector-check-not-a-receipt-handle";

/// The one entry of the batch probes, and its id.
const PROBE_ENTRY_ID: &str = "check";

/// What a probe's answer says of a permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeAnswer {
    /// The whole request was accepted: answered entry by entry, or a success that changed
    /// nothing. The text says how.
    Allowed(String),
    /// A validation error of the whole request (its code): not refused, not proven either.
    NotRefused(String),
    /// Refused: the code and the message.
    Refused(String),
    /// Neither (a timeout, an unexpected error): what happened.
    Unclear(String),
}

/// True when an error code or message is a refusal of the caller.
pub(crate) fn is_refusal(code: &str, message: &str) -> bool {
    code.contains("AccessDenied") || code == "UnauthorizedOperation" || message.contains("not authorized to perform")
}

/// Judges an error answer: a refusal, one of `not_refused` (error codes, matched at their end:
/// SQS's may be prefixed with `AWS.SimpleQueueService.`), or unclear.
fn judge_error<E, R>(error: &SdkError<E, R>, not_refused: &[&str]) -> ProbeAnswer
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    if let SdkError::ServiceError(_) = error {
        let code = error.code().unwrap_or_default();
        let message = error.message().unwrap_or_default();
        if is_refusal(code, message) {
            return ProbeAnswer::Refused(format!("{code}: {message}"));
        }
        if !code.is_empty() && not_refused.iter().any(|c| code.ends_with(c)) {
            return ProbeAnswer::NotRefused(code.to_owned());
        }
    }
    ProbeAnswer::Unclear(aws_sdk_sqs::error::DisplayErrorContext(error).to_string())
}

/// Judges the answer of a batch probe that came back with HTTP 200: its entry failed (as it
/// must, the receipt handle being impossible), or an endpoint that does not check receipt
/// handles answered it as done, which did nothing either.
fn judge_batch_entries(failed: &[BatchResultErrorEntry], call: &str) -> ProbeAnswer {
    match failed.iter().find(|f| f.id == PROBE_ENTRY_ID) {
        Some(entry) if is_refusal(&entry.code, entry.message.as_deref().unwrap_or_default()) => ProbeAnswer::Refused(
            format!("{}: {}", entry.code, entry.message.as_deref().unwrap_or_default()),
        ),
        Some(entry) => ProbeAnswer::Allowed(format!(
            "{call} with a receipt handle that cannot be valid was answered entry by entry ({})",
            entry.code
        )),
        None => ProbeAnswer::Allowed(format!(
            "{call} with a receipt handle that cannot be valid was answered as done (an endpoint that does not check receipt handles; no message has it)"
        )),
    }
}

/// The report line of a probe of `action` on `resource`; `consequence` says what the
/// collector could not do without it.
pub(crate) fn probe_finding(action: &str, resource: &str, answer: ProbeAnswer, consequence: &str) -> Finding {
    match answer {
        ProbeAnswer::Allowed(how) => finding(
            Verdict::Ok,
            PERMISSION,
            format!("{action} allowed on {resource}: {how}; nothing changed"),
        ),
        ProbeAnswer::NotRefused(code) => finding(
            Verdict::Ok,
            PERMISSION,
            format!(
                "{action} not refused on {resource}: the probe was answered {code}, nothing changed (AWS does not document whether it authorises before it validates, so this is no proof)"
            ),
        ),
        ProbeAnswer::Refused(why) => finding(
            Verdict::Fail,
            PERMISSION,
            format!(
                "{action} refused on {resource} ({why}): {consequence}; grant {action} to the collector's role (deploy/iam/collector-policy.json)"
            ),
        ),
        ProbeAnswer::Unclear(what) => finding(
            Verdict::Warn,
            PERMISSION,
            format!("{action} on {resource} could not be probed: {what}"),
        ),
    }
}

/// SQS's most messages per ReceiveMessage call, plus one: a count every endpoint refuses.
const IMPOSSIBLE_RECEIVE_COUNT: i32 = 11;

/// `sqs:ReceiveMessage`: ReceiveMessage asking for more messages than SQS allows.
async fn probe_receive(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Finding {
    let answer = match sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(IMPOSSIBLE_RECEIVE_COUNT)
        .visibility_timeout(0)
        .wait_time_seconds(0)
        .send()
        .await
    {
        Ok(out) => match out.messages.unwrap_or_default().len() {
            0 => ProbeAnswer::Allowed(format!(
                "ReceiveMessage asking for {IMPOSSIBLE_RECEIVE_COUNT} messages was answered with none (an endpoint that does not check the count)"
            )),
            n => ProbeAnswer::Unclear(format!(
                "ReceiveMessage asking for {IMPOSSIBLE_RECEIVE_COUNT} messages, which SQS refuses, was answered with {n} message(s): they are visible again at once, each with one more receive counted"
            )),
        },
        Err(e) => judge_error(&e, &["InvalidParameterValue"]),
    };
    probe_finding(
        "sqs:ReceiveMessage",
        queue_url,
        answer,
        "the collector could receive nothing",
    )
}

/// `sqs:DeleteMessage`: DeleteMessageBatch with an impossible receipt handle.
async fn probe_delete(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Finding {
    let entry = DeleteMessageBatchRequestEntry::builder()
        .id(PROBE_ENTRY_ID)
        .receipt_handle(IMPOSSIBLE_RECEIPT_HANDLE)
        .build();
    let answer = match entry {
        Err(e) => ProbeAnswer::Unclear(e.to_string()),
        Ok(entry) => match sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .entries(entry)
            .send()
            .await
        {
            Ok(out) => judge_batch_entries(&out.failed, "DeleteMessageBatch"),
            Err(e) => judge_error(&e, &["ReceiptHandleIsInvalid", "InvalidParameterValue"]),
        },
    };
    probe_finding(
        "sqs:DeleteMessage",
        queue_url,
        answer,
        "messages whose events are published could not be deleted, and would be received and published again",
    )
}

/// `sqs:ChangeMessageVisibility`: ChangeMessageVisibilityBatch with an impossible receipt handle.
async fn probe_change_visibility(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Finding {
    let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
        .id(PROBE_ENTRY_ID)
        .receipt_handle(IMPOSSIBLE_RECEIPT_HANDLE)
        .visibility_timeout(0)
        .build();
    let answer = match entry {
        Err(e) => ProbeAnswer::Unclear(e.to_string()),
        Ok(entry) => match sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .entries(entry)
            .send()
            .await
        {
            Ok(out) => judge_batch_entries(&out.failed, "ChangeMessageVisibilityBatch"),
            Err(e) => judge_error(&e, &["ReceiptHandleIsInvalid", "InvalidParameterValue"]),
        },
    };
    probe_finding(
        "sqs:ChangeMessageVisibility",
        queue_url,
        answer,
        "messages still being published could not be kept hidden, nor given back at shutdown",
    )
}

/// `kinesis:PutRecords`: PutRecords with no records.
async fn probe_put_records(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Finding {
    let answer = match kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(Vec::new()))
        .send()
        .await
    {
        Ok(out) if out.records.is_empty() => {
            ProbeAnswer::Allowed("PutRecords with no records was answered with no results".to_owned())
        }
        Ok(out) => ProbeAnswer::Unclear(format!(
            "PutRecords with no records was answered with {} results",
            out.records.len()
        )),
        Err(e) => judge_error(&e, &["ValidationException", "InvalidArgumentException"]),
    };
    probe_finding(
        "kinesis:PutRecords",
        stream,
        answer,
        "no event could be published, and receiving would pause behind the circuit breaker",
    )
}

/// `sqs:SendMessage` on the dead-letter queue: SendMessageBatch with no entries.
async fn probe_send(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Finding {
    let answer = match sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(Vec::new()))
        .send()
        .await
    {
        Ok(out) if out.successful.is_empty() => ProbeAnswer::Allowed(
            "SendMessageBatch with no entries was answered as done, with no message sent".to_owned(),
        ),
        Ok(out) => ProbeAnswer::Unclear(format!(
            "SendMessageBatch with no entries was answered with {} messages sent",
            out.successful.len()
        )),
        Err(e) => judge_error(&e, &["EmptyBatchRequest", "InvalidParameterValue"]),
    };
    probe_finding(
        "sqs:SendMessage",
        queue_url,
        answer,
        "invalid submissions could not be kept in the dead-letter queue (DEAD_LETTER_QUEUE_URL), and would stay in the source queue",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_max_receive_count_fails_and_a_missing_policy_warns() {
        let arn = "arn:aws:sqs:eu-west-1:111122223333:redrive";
        let low = redrive_finding(Some(&format!(
            r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":3}}"#
        )));
        assert_eq!(low.verdict, Verdict::Fail);
        assert!(low.text.starts_with("maxReceiveCount 3 to arn:"), "{low}");
        let enough = redrive_finding(Some(&format!(
            r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"10"}}"#
        )));
        assert_eq!(enough.verdict, Verdict::Ok, "{enough}");
        assert_eq!(redrive_finding(None).verdict, Verdict::Warn);
        assert_eq!(redrive_finding(Some("{}")).verdict, Verdict::Fail);
    }

    #[test]
    fn a_dead_letter_queue_smaller_than_the_source_queue_warns() {
        let smaller = dead_letter_size_finding("dlq", 262_144, 1_048_576);
        assert_eq!(smaller.verdict, Verdict::Warn);
        assert!(
            smaller
                .to_string()
                .starts_with("warn dead-letter queue: dlq takes messages up to 262144 bytes (MaximumMessageSize), the queue up to 1048576: "),
            "{smaller}"
        );
        assert!(smaller.text.contains("MaximumMessageSize to 1048576"), "{smaller}");
        assert_eq!(
            dead_letter_size_finding("dlq", 1_048_576, 1_048_576).verdict,
            Verdict::Ok
        );
        assert_eq!(dead_letter_size_finding("dlq", 1_048_576, 262_144).verdict, Verdict::Ok);
    }

    #[test]
    fn refusals_are_told_from_validation_answers() {
        assert!(is_refusal("AccessDenied", ""));
        assert!(is_refusal("AccessDeniedException", ""));
        assert!(is_refusal("KMS.AccessDeniedException", ""));
        assert!(is_refusal(
            "Unknown",
            "User: arn:aws:iam::1:user/x is not authorized to perform: sqs:sendmessage"
        ));
        for code in [
            "ReceiptHandleIsInvalid",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "ValidationException",
        ] {
            assert!(!is_refusal(code, "invalid"), "{code}");
        }
    }

    #[test]
    fn a_refused_probe_fails_naming_the_action_and_a_validation_answer_is_only_not_refused() {
        let refused = probe_finding(
            "sqs:DeleteMessage",
            "q",
            ProbeAnswer::Refused("AccessDenied: no".into()),
            "x",
        );
        assert_eq!(refused.verdict, Verdict::Fail);
        assert!(
            refused
                .text
                .starts_with("sqs:DeleteMessage refused on q (AccessDenied: no)"),
            "{refused}"
        );
        assert!(refused.text.contains("grant sqs:DeleteMessage "), "{refused}");
        let not_refused = probe_finding(
            "sqs:SendMessage",
            "q",
            ProbeAnswer::NotRefused("EmptyBatchRequest".into()),
            "x",
        );
        assert_eq!(not_refused.verdict, Verdict::Ok);
        assert!(
            not_refused.text.starts_with("sqs:SendMessage not refused on q"),
            "{not_refused}"
        );
        let unclear = probe_finding("kinesis:PutRecords", "s", ProbeAnswer::Unclear("timeout".into()), "x");
        assert_eq!(unclear.verdict, Verdict::Warn);
    }
}
