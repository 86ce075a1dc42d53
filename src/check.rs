//! `telemetry-collector check`: before a deployment, ask the real endpoints what the collector
//! would find, and say what is wrong in words an operator can act on.
//!
//! Read-only: it resolves the queue (GetQueueUrl, GetQueueAttributes) and the stream
//! (DescribeStreamSummary), the calls the collector itself makes at start, so they also show
//! that those permissions work. It receives, sends and deletes nothing, so the permissions of
//! the calls that change state (ReceiveMessage, DeleteMessage, ChangeMessageVisibility,
//! PutRecords, SendMessage to the dead-letter queue) are not exercised. One attempt per call,
//! bounded by `AWS_CALL_TIMEOUT_SEC`.

use std::fmt;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::aws::Clients;
use crate::config::{Config, QueueRef};

/// A source queue's `maxReceiveCount` below this sends valid submissions to its dead-letter
/// queue during rolling restarts: every give-back at shutdown counts as a receive.
pub const MIN_MAX_RECEIVE_COUNT: u64 = 10;

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
    findings.extend(check_queue(&clients.sqs, config).await);
    findings.extend(check_stream(&clients.kinesis, config).await);
    findings
}

async fn check_queue(sqs: &aws_sdk_sqs::Client, config: &Config) -> Vec<Finding> {
    const SUBJECT: &str = "queue";
    let url = match &config.queue {
        QueueRef::Url(url) => url.clone(),
        QueueRef::Name(name) => match sqs.get_queue_url().queue_name(name).send().await {
            Ok(out) => match out.queue_url {
                Some(url) => url,
                None => return vec![finding(Verdict::Fail, SUBJECT, "GetQueueUrl answered without a URL")],
            },
            Err(e) => {
                return vec![finding(
                    Verdict::Fail,
                    SUBJECT,
                    format!(
                        "GetQueueUrl {name} failed (queue name, region, endpoint, sqs:GetQueueUrl?): {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    ),
                )];
            }
        },
    };
    let attributes = match sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
    {
        Ok(out) => out.attributes.unwrap_or_default(),
        Err(e) => {
            return vec![finding(
                Verdict::Fail,
                SUBJECT,
                format!(
                    "GetQueueAttributes {url} failed (URL, region, endpoint, sqs:GetQueueAttributes?): {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ),
            )];
        }
    };
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
pub fn redrive_finding(policy: Option<&str>) -> Finding {
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

async fn check_stream(kinesis: &aws_sdk_kinesis::Client, config: &Config) -> Vec<Finding> {
    const SUBJECT: &str = "stream";
    let name = &config.stream_name;
    let summary = match kinesis.describe_stream_summary().stream_name(name).send().await {
        Ok(out) => out.stream_description_summary,
        Err(e) => {
            return vec![finding(
                Verdict::Fail,
                SUBJECT,
                format!(
                    "DescribeStreamSummary {name} failed (stream name, region, endpoint, kinesis:DescribeStreamSummary?): {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(e)
                ),
            )];
        }
    };
    let Some(summary) = summary else {
        return vec![finding(
            Verdict::Fail,
            SUBJECT,
            "DescribeStreamSummary answered without a description",
        )];
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
    findings
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
}
