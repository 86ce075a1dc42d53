//! `telemetry-collector supervise --check`: before the supervisor is deployed, ask the real
//! endpoints what it would find, with its own role, and say what is wrong.
//!
//! The configuration is valid once this runs (the binary stops on a bad setting first). Then it
//! makes the supervisor's two reads, which change nothing:
//!
//! | permission | request |
//! | --- | --- |
//! | `kinesis:DescribeStreamSummary` | DescribeStreamSummary of `EVENTS_DATA_STREAM_NAME`: its status, mode, open shards and shard-level metrics |
//! | `cloudwatch:GetMetricData` | the supervisor's own GetMetricData query (`AWS/Kinesis` `IncomingRecords`, `IncomingBytes`, `WriteProvisionedThroughputExceeded` of the stream, Sum per minute) over the window it would read now: `SHARD_SUPERVISOR_WINDOWS` minutes ending `SHARD_SUPERVISOR_METRICS_DELAY_SEC` ago |
//!
//! Both are reads the supervisor cannot work without, so any failure fails the check: a refusal
//! (`AccessDenied…`, "not authorized") names the action to grant; anything else (an endpoint
//! that cannot be reached, a timeout) says what happened. A window with minutes lacking a point
//! is a warning: the supervisor decides nothing on it. `kinesis:UpdateShardCount` is not probed:
//! no request of it is sure to change nothing.
//!
//! One attempt per call, bounded by `AWS_CALL_TIMEOUT_SEC`.

use crate::check::{Finding, Verdict};
use crate::config::Config;

use super::policy::{Minute, StreamMode, StreamStatus};
use super::{CallError, clients, cloudwatch, stream};

const PERMISSION: &str = "permission";
const POLICY: &str = "deploy/iam/supervisor-policy.json";

fn finding(verdict: Verdict, subject: &'static str, text: impl Into<String>) -> Finding {
    Finding {
        verdict,
        subject,
        text: text.into(),
    }
}

/// The report line of a failed read of `action` on `resource`; `consequence` says what the
/// supervisor could not do.
pub(crate) fn failed_read(action: &str, resource: &str, error: &CallError, consequence: &str) -> Finding {
    let text = match (error.is_refusal(), &error.code) {
        (true, code) => format!(
            "{action} refused on {resource} ({}: {}): {consequence}; grant {action} to the supervisor's role ({POLICY})",
            code.as_deref().unwrap_or_default(),
            error.message.as_deref().unwrap_or_default()
        ),
        (false, Some(code)) => format!(
            "{action} on {resource} was answered {code}: {}: {consequence}",
            error.message.as_deref().unwrap_or_default()
        ),
        (false, None) => format!("{action} on {resource} failed (endpoint, region, network?): {consequence}: {error}"),
    };
    finding(Verdict::Fail, PERMISSION, text)
}

/// Asks the endpoints about the stream and its metrics, as the supervisor of `config` would.
pub async fn run(config: &Config, sdk_config: &aws_config::SdkConfig) -> Vec<Finding> {
    let settings = &config.shard_supervisor;
    let policy = &settings.policy;
    let (kinesis, cloudwatch_client) = clients(sdk_config, config.call_timeout);
    let name = &config.stream_name;
    let mut findings = vec![finding(
        Verdict::Ok,
        "configuration",
        format!(
            "every setting is valid; every {} s the last {} minutes ending {} s ago, band {}-{}%, {}-{} shards, cooldown {} s, SHARD_AUTOSCALE_ENABLED={}",
            settings.interval.as_secs(),
            policy.windows,
            settings.metrics_delay.as_secs(),
            policy.band_low * 100.0,
            policy.band_high * 100.0,
            policy.min_shards,
            policy.max_shards,
            policy.cooldown.as_secs(),
            policy.autoscale
        ),
    )];

    const STREAM: &str = "stream";
    match stream::describe(&kinesis, name).await {
        Ok(described) => {
            findings.push(finding(
                Verdict::Ok,
                PERMISSION,
                format!("kinesis:DescribeStreamSummary allowed on {name}: the stream was described"),
            ));
            let state = described.state;
            let (verdict, status) = match state.status {
                StreamStatus::Active => (Verdict::Ok, "ACTIVE"),
                StreamStatus::Updating => (
                    Verdict::Ok,
                    "UPDATING (a resize under way: nothing is decided until it ends)",
                ),
                StreamStatus::Other => (Verdict::Fail, "neither ACTIVE nor UPDATING (creating or deleting)"),
            };
            let mode = match state.mode {
                StreamMode::Provisioned => "PROVISIONED",
                StreamMode::OnDemand => "ON_DEMAND",
            };
            findings.push(finding(
                verdict,
                STREAM,
                format!("{name} is {status}, {mode}, {} open shards", state.open_shards),
            ));
            if state.mode == StreamMode::OnDemand {
                findings.push(finding(
                    Verdict::Warn,
                    STREAM,
                    "on-demand: Kinesis sizes it, and the supervisor never resizes it (it only exports the utilisation)",
                ));
            } else if !(policy.min_shards..=policy.max_shards).contains(&state.open_shards) {
                findings.push(finding(
                    Verdict::Warn,
                    STREAM,
                    format!(
                        "{} open shards, outside SHARD_COUNT_MIN..SHARD_COUNT_MAX ({}..{}): the supervisor never moves it further out, nor into the bounds against the traffic",
                        state.open_shards, policy.min_shards, policy.max_shards
                    ),
                ));
            }
            findings.push(finding(
                Verdict::Ok,
                STREAM,
                if described.shard_metrics {
                    "shard-level IncomingRecords and IncomingBytes are on (enhanced monitoring): a hot shard is seen"
                } else {
                    "shard-level metrics are off: the stream's own figures decide, a hot shard is not seen (enable enhanced monitoring for IncomingRecords and IncomingBytes to see it)"
                },
            ));
        }
        Err(error) => findings.push(failed_read(
            "kinesis:DescribeStreamSummary",
            name,
            &error,
            "the supervisor could not read the stream's state, and would decide nothing",
        )),
    }

    let window = cloudwatch::window(
        chrono::Utc::now().timestamp(),
        settings.metrics_delay.as_secs() as i64,
        policy.windows,
    );
    let resource = format!("the AWS/Kinesis metrics of {name}");
    match cloudwatch::read(&cloudwatch_client, name, window, &[]).await {
        Ok(minutes) => {
            findings.push(finding(
                Verdict::Ok,
                PERMISSION,
                format!("cloudwatch:GetMetricData allowed on {resource}: the supervisor's query was answered"),
            ));
            findings.push(window_finding(&minutes, window, settings.metrics_delay.as_secs()));
        }
        Err(error) => findings.push(failed_read(
            "cloudwatch:GetMetricData",
            &resource,
            &error,
            "the supervisor could not read the stream's traffic, and would decide nothing (check AWS_ENDPOINT_URL_CLOUDWATCH when set)",
        )),
    }
    findings
}

/// What the window the supervisor would read now holds.
pub(crate) fn window_finding(minutes: &[Minute], (start, end): (i64, i64), delay_secs: u64) -> Finding {
    const SUBJECT: &str = "metrics";
    let complete = minutes
        .iter()
        .filter(|m| m.records.is_some() && m.bytes.is_some() && m.throttled.is_some())
        .count();
    let span = format!(
        "the {} minutes from {} to {} UTC",
        minutes.len(),
        chrono::DateTime::from_timestamp(start, 0).map_or_else(|| start.to_string(), |t| t.format("%H:%M").to_string()),
        chrono::DateTime::from_timestamp(end, 0).map_or_else(|| end.to_string(), |t| t.format("%H:%M").to_string())
    );
    if complete == minutes.len() && !minutes.is_empty() {
        finding(Verdict::Ok, SUBJECT, format!("{span}: every minute has its figures"))
    } else {
        finding(
            Verdict::Warn,
            SUBJECT,
            format!(
                "{span}: {} of {} minutes lack a figure: the supervisor decides nothing on such a window (a stream nothing writes to has no points; or CloudWatch is later than SHARD_SUPERVISOR_METRICS_DELAY_SEC={delay_secs})",
                minutes.len() - complete,
                minutes.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_read_fails_naming_the_action_and_any_other_failure_fails_saying_what_happened() {
        let refused = CallError {
            code: Some("AccessDenied".into()),
            message: Some("User: x is not authorized to perform: cloudwatch:GetMetricData".into()),
            detail: "service error".into(),
        };
        let line = failed_read("cloudwatch:GetMetricData", "m", &refused, "no figures").to_string();
        assert!(
            line.starts_with("FAIL permission: cloudwatch:GetMetricData refused on m (AccessDenied: "),
            "{line}"
        );
        assert!(
            line.contains("grant cloudwatch:GetMetricData to the supervisor's role"),
            "{line}"
        );
        let unreachable = CallError {
            code: None,
            message: None,
            detail: "dispatch failure: connection refused".into(),
        };
        let line = failed_read("cloudwatch:GetMetricData", "m", &unreachable, "no figures").to_string();
        assert!(
            line.starts_with("FAIL permission: cloudwatch:GetMetricData on m failed (endpoint, region, network?)"),
            "{line}"
        );
        assert!(line.ends_with("connection refused"), "{line}");
        let missing = CallError {
            code: Some("ResourceNotFoundException".into()),
            message: Some("Stream s not found".into()),
            detail: "service error".into(),
        };
        let line = failed_read("kinesis:DescribeStreamSummary", "s", &missing, "nothing decided").to_string();
        assert_eq!(
            line,
            "FAIL permission: kinesis:DescribeStreamSummary on s was answered ResourceNotFoundException: Stream s not found: nothing decided"
        );
    }

    #[test]
    fn a_window_lacking_points_warns() {
        let full = Minute {
            records: Some(1.0),
            bytes: Some(1.0),
            throttled: Some(0.0),
            hottest_shard: None,
        };
        assert_eq!(window_finding(&[full; 3], (0, 180), 180).verdict, Verdict::Ok);
        let gap = window_finding(&[full, Minute::default(), full], (0, 180), 180);
        assert_eq!(gap.verdict, Verdict::Warn);
        assert!(
            gap.text
                .starts_with("the 3 minutes from 00:00 to 00:03 UTC: 1 of 3 minutes lack a figure"),
            "{gap}"
        );
    }
}
