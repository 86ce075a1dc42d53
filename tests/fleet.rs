//! The simulator, the collector and the stream reader together: what `sensor-fleet` sends is
//! what `stream-reader verify` finds on the stream, nothing lost, in order, nothing invalid.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::io::Write as _;
use std::process::Output;
use std::time::Duration;

use support::{CollectorHarness, REGION, TestEnv, tool_summary, wait_until};

/// The SDK's standard variables for the emulator, and nothing else of this process'.
fn aws_env(env: &TestEnv) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", env.endpoint.clone()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

async fn run(env: &TestEnv, program: &std::path::Path, args: &[&str]) -> Output {
    tokio::process::Command::new(program)
        .env_clear()
        .envs(aws_env(env))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_fleet_arrives_whole_and_in_order() {
    let env = TestEnv::new("fleet").await;
    let manifest = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.jsonl", env.stream_name));
    let manifest_arg = manifest.to_string_lossy().into_owned();

    let sent = run(
        &env,
        &support::workspace_binary("sensor-fleet"),
        &[
            "--queue-url",
            &env.queue_url,
            "--count",
            "150",
            "--rate",
            "0",
            "--seed",
            "11",
            "--devices",
            "20",
            "--invalid-share",
            "0.2",
            "--max-events",
            "80",
            "--manifest",
            &manifest_arg,
            "--progress",
            "0",
        ],
    )
    .await;
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let sent = tool_summary("sensor-fleet", &sent);
    assert_eq!(sent["sent"], 150);
    assert_eq!(sent["failed"], 0);
    assert!(sent["invalid"].as_u64().unwrap_or(0) > 0, "{sent}");

    let collector = env.start_collector(&env.endpoint.clone(), &[]).await;
    wait_until("queue empty", Duration::from_secs(240), || async {
        env.queue_total().await == 0
    })
    .await;
    collector.stop().await;

    let reader = support::workspace_binary("stream-reader");
    let verified = run(
        &env,
        &reader,
        &[
            "verify",
            "--stream",
            &env.stream_name,
            "--manifest",
            &manifest_arg,
            "--wait",
            "10",
        ],
    )
    .await;
    let report = tool_summary("stream-reader verify", &verified);
    assert!(verified.status.success(), "{report}");
    assert_eq!(report["events_expected"], sent["events"]);
    assert_eq!(report["events_found"], sent["events"]);
    assert_eq!(report["events_missing"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert_eq!(report["invalid_published"], 0);
    assert_eq!(report["malformed"], 0);
    assert_eq!(report["submissions_invalid"], sent["invalid"]);

    // Every event is measured: a send time in the manifest, an arrival time on the stream, and
    // the arrival after the send (the collector only started once the fleet was done).
    let measured = run(
        &env,
        &reader,
        &["latency", "--stream", &env.stream_name, "--manifest", &manifest_arg],
    )
    .await;
    let latency = tool_summary("stream-reader latency", &measured);
    assert!(measured.status.success(), "{latency}");
    assert_eq!(latency["events"], sent["events"]);
    assert_eq!(
        (latency["duplicates"].as_u64(), latency["unmatched"].as_u64()),
        (Some(0), Some(0))
    );
    let ms = |key: &str| latency[key].as_f64().unwrap_or(f64::NAN);
    assert!(
        0.0 < ms("min_ms")
            && ms("min_ms") <= ms("p50_ms")
            && ms("p50_ms") <= ms("p99_ms")
            && ms("p99_ms") <= ms("max_ms"),
        "{latency}"
    );

    // A submission the stream never saw: the check must fail and say what is missing.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&manifest)
        .expect("manifest");
    writeln!(
        file,
        r#"{{"submission_id":"00000000-0000-4000-8000-000000000001","device_id":"31980191-fa99-4768-8a7b-0e81397ca6ef","valid":true,"event_count":3}}"#
    )
    .expect("append to manifest");
    drop(file);
    let failed = run(
        &env,
        &reader,
        &["verify", "--stream", &env.stream_name, "--manifest", &manifest_arg],
    )
    .await;
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(tool_summary("stream-reader verify", &failed)["events_missing"], 3);
}
