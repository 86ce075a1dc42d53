//! `telemetry-collector check` against the emulator: a good setup passes and reports the queue
//! and the stream; a low redrive `maxReceiveCount` and a missing stream each fail, named.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use aws_sdk_sqs::types::QueueAttributeName;
use support::{CollectorHarness, TestEnv};

/// Runs `telemetry-collector check` with this test's queue and stream, plus `overrides`.
fn check(env: &TestEnv, overrides: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-empty-home");
    std::fs::create_dir_all(&home).expect("empty HOME");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .arg("check")
        .env_clear()
        .env("HOME", &home)
        .envs(env.binary_env(overrides))
        .output()
        .expect("run telemetry-collector check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn set_redrive(env: &TestEnv, max_receive_count: u32) {
    let dlq_url = env
        .sqs
        .create_queue()
        .queue_name(format!("redrive-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    let arn = env
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue ARN");
    env.sqs
        .set_queue_attributes()
        .queue_url(&env.queue_url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}"#),
        )
        .send()
        .await
        .expect("SetQueueAttributes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_good_setup_and_reports_queue_and_stream() {
    let env = TestEnv::new("check-good").await;
    set_redrive(&env, 10).await;
    let (code, stdout, stderr) = check(&env, &[]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for expected in [
        "ok   configuration: every setting is valid".to_owned(),
        format!("ok   queue: {} resolved", env.queue_url),
        "ok   queue: visibility timeout ".to_owned(),
        "ok   queue redrive policy: maxReceiveCount 10 to arn:".to_owned(),
        format!("ok   stream: {} is ACTIVE, ", env.stream_name),
        "2 open shards (writes up to 2000 records/s and 2 MiB/s)".to_owned(),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} in:\n{stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("check: ok"));
    assert!(stderr.is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_naming_a_low_max_receive_count_and_a_missing_stream() {
    let env = TestEnv::new("check-bad").await;
    set_redrive(&env, 2).await;
    let missing = format!("no-such-stream-{}", uuid::Uuid::new_v4().simple());
    let (code, stdout, _) = check(&env, &[("EVENTS_DATA_STREAM_NAME", &missing)]);
    assert_eq!(code, Some(1), "{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 2, "{stdout}");
    assert!(
        fails[0].starts_with("FAIL queue redrive policy: maxReceiveCount 2 to arn:"),
        "{stdout}"
    );
    assert!(
        fails[1].starts_with(&format!("FAIL stream: DescribeStreamSummary {missing} failed")),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("check: 2 problem(s)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_when_the_queue_does_not_exist() {
    let env = TestEnv::new("check-noqueue").await;
    let (code, stdout, _) = check(
        &env,
        &[
            ("SUBMISSIONS_QUEUE_URL", ""),
            ("SUBMISSIONS_QUEUE_NAME", "no-such-queue-for-check"),
        ],
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL queue: GetQueueUrl no-such-queue-for-check failed")),
        "{stdout}"
    );
}
