//! Drops at the default log level, through the real binary against the emulator: a burst of
//! invalid submissions at `RUST_LOG=info` gives each reason a bounded number of info lines and
//! one line counting the rest.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use support::checks::wait_for_queue_empty;
use support::{CollectorHarness, TestEnv, sigterm, wait_until};
use telemetry_collector::drop_log::LINES_PER_INTERVAL;

const PER_REASON: u64 = 30;
const LOG_NAME: &str = "drop-logs";

fn log_lines() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{LOG_NAME}.log"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        // The last line may still be being written.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Per reason: (info lines of single drops, counts of suppressed ones).
fn by_reason(lines: &[Value]) -> BTreeMap<String, (u64, Vec<u64>)> {
    let mut out: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    for line in lines {
        let reason = line["reason_label"].as_str().unwrap_or_default().to_owned();
        match line["message"].as_str() {
            Some("invalid submission dropped") => out.entry(reason).or_default().0 += 1,
            Some("invalid submission log lines suppressed") => out
                .entry(reason)
                .or_default()
                .1
                .push(line["suppressed"].as_u64().unwrap_or(0)),
            _ => {}
        }
    }
    out
}

fn all_accounted_for(lines: &[Value]) -> bool {
    let reasons = by_reason(lines);
    ["not_base64", "invalid_uuid"].iter().all(|r| {
        reasons
            .get(*r)
            .is_some_and(|(logged, suppressed)| logged + suppressed.iter().sum::<u64>() == PER_REASON)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_invalid_submissions_logs_a_bounded_number_of_info_lines_and_the_rest_as_a_count() {
    let env = TestEnv::new("droplogs").await;
    let mut bodies = Vec::new();
    for i in 0..PER_REASON {
        bodies.push(format!("!!! not base64 {i} !!!"));
        bodies.push(STANDARD.encode(format!(
            r#"{{"submission_id":"8be01974-0f15-4d4f-809f-257a6de4d3f9","device_id":"device-{i}","time_created":"2021-03-28T15:44:18","events":{{}}}}"#
        )));
    }
    env.send(&bodies).await;
    // Throughput lines every second: they also report intervals that ended in quiet.
    let mut child = env.spawn_binary(&[("STATS_LOG_INTERVAL_SEC", "1")], LOG_NAME);
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_until(
        "every drop has its own line or is counted",
        Duration::from_secs(60),
        || async { all_accounted_for(&log_lines()) },
    )
    .await;
    sigterm(&child);
    assert!(child.wait().await.expect("exit").success());

    let lines = log_lines();
    assert!(
        lines.iter().all(|l| l["level"] != "DEBUG"),
        "RUST_LOG=info shows no debug line"
    );
    let reasons = by_reason(&lines);
    assert_eq!(reasons.keys().collect::<Vec<_>>(), ["invalid_uuid", "not_base64"]);
    for (reason, (logged, suppressed)) in &reasons {
        // Each interval gets at most its budget; only one that overflowed reports a count.
        let intervals = suppressed.len() as u64 + 1;
        assert!(
            *logged <= u64::from(LINES_PER_INTERVAL) * intervals,
            "{reason}: {logged} lines in at most {intervals} intervals"
        );
        assert!(
            !suppressed.is_empty(),
            "{reason}: a burst of {PER_REASON} suppressed none"
        );
        assert_eq!(logged + suppressed.iter().sum::<u64>(), PER_REASON, "{reason}");
    }
    let dropped: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "invalid submission dropped")
        .collect();
    assert!(dropped.iter().all(|l| l["level"] == "INFO"
        && l["message_id"].as_str().is_some_and(|id| !id.is_empty())
        && l["body_bytes"].as_u64().is_some_and(|n| n > 0)
        && l.get("body_prefix").is_none()
        && l["reason"].is_string()));
    // No sensor data at info: not one line holds a body's content.
    assert!(
        lines.iter().all(|l| !l.to_string().contains("not base64")),
        "a body reached the log"
    );
}
