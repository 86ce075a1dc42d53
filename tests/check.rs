//! `telemetry-collector check` against the emulator: a good setup passes, reports the queue and
//! the stream, and probes the permissions of the calls that change state without changing
//! anything; a low redrive `maxReceiveCount`, a missing stream, a missing queue and each refused
//! permission fail, named; a dead-letter queue that takes smaller messages than the queue warns.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use aws_sdk_sqs::types::QueueAttributeName;
use support::fault_proxy::FaultProxy;
use support::{CollectorHarness, TestEnv};

/// Runs `telemetry-collector check` with this test's queue and stream, plus `overrides`.
async fn check(env: &TestEnv, overrides: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-empty-home");
    std::fs::create_dir_all(&home).expect("empty HOME");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .arg("check")
        .env_clear()
        .env("HOME", &home)
        .envs(env.binary_env(overrides))
        .output()
        .await
        .expect("run telemetry-collector check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A queue of this test's own, for a dead-letter queue.
async fn create_queue(env: &TestEnv, label: &str) -> String {
    create_queue_with(env, label, &[]).await
}

/// A queue of this test's own with `attributes`.
async fn create_queue_with(env: &TestEnv, label: &str, attributes: &[(QueueAttributeName, &str)]) -> String {
    let mut request = env
        .sqs
        .create_queue()
        .queue_name(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    for (name, value) in attributes {
        request = request.attributes(name.clone(), *value);
    }
    request.send().await.expect("CreateQueue").queue_url.expect("queue URL")
}

/// The report line of the probe of `action`.
fn probe_line<'a>(stdout: &'a str, action: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.contains(&format!("permission: {action} ")))
        .unwrap_or_else(|| panic!("no probe of {action} in:\n{stdout}"))
}

async fn set_redrive(env: &TestEnv, max_receive_count: u32) {
    let dlq_url = create_queue(env, "redrive").await;
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
async fn check_passes_on_a_good_setup_and_reports_queue_stream_and_permissions() {
    let env = TestEnv::new("check-good").await;
    set_redrive(&env, 10).await;
    let dead_letter = create_queue(&env, "invalid").await;
    // A message waiting: the probes must leave it as it is.
    env.send(&["waiting".to_owned()]).await;
    let (code, stdout, stderr) = check(&env, &[("DEAD_LETTER_QUEUE_URL", &dead_letter)]).await;
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
    // "allowed" where the answer shows the whole request was accepted, "not refused" where it
    // was a validation error (which AWS may give before it authorises).
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "kinesis:PutRecords",
        "sqs:SendMessage",
    ] {
        let line = probe_line(&stdout, action);
        assert!(line.starts_with("ok   permission: "), "{line}");
        assert!(
            line.contains(" allowed on ") || line.contains(" not refused on "),
            "{line}"
        );
    }
    assert!(probe_line(&stdout, "sqs:SendMessage").contains(&dead_letter));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("ok   dead-letter queue: {dead_letter} takes messages up to "))),
        "the same default size as the queue: {stdout}"
    );
    assert!(
        probe_line(&stdout, "sqs:ReceiveMessage").contains("not refused on "),
        "the emulator refuses the count: {stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("check: ok"));
    assert!(stderr.is_empty(), "{stderr}");
    // Nothing changed: the message is still visible and was never received, nothing was
    // published, nothing was sent to the dead-letter queue.
    assert_eq!(env.queue_counts().await, (1, 0));
    let received = env
        .sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .expect("ReceiveMessage")
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1);
    let receive_count = received[0]
        .attributes
        .as_ref()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
        .cloned();
    assert_eq!(receive_count.as_deref(), Some("1"), "first receive");
    assert!(env.read_stream().await.is_empty(), "nothing published");
    assert_eq!(env.retarget(&dead_letter, &env.stream_name).queue_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_naming_each_refused_permission() {
    let env = TestEnv::new("check-denied").await;
    set_redrive(&env, 10).await;
    let dead_letter = create_queue(&env, "invalid").await;
    let proxy = FaultProxy::start_split(&env.endpoint, &env.kinesis_endpoint, 14).await;
    let through_proxy = [
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
        ("AWS_ENDPOINT_URL_SQS", proxy.endpoint.as_str()),
        ("AWS_ENDPOINT_URL_KINESIS", proxy.kinesis_endpoint.as_str()),
        ("DEAD_LETTER_QUEUE_URL", dead_letter.as_str()),
    ];
    for (target, action) in [
        ("AmazonSQS.ReceiveMessage", "sqs:ReceiveMessage"),
        ("AmazonSQS.DeleteMessageBatch", "sqs:DeleteMessage"),
        ("AmazonSQS.ChangeMessageVisibilityBatch", "sqs:ChangeMessageVisibility"),
        ("Kinesis_20131202.PutRecords", "kinesis:PutRecords"),
        ("AmazonSQS.SendMessageBatch", "sqs:SendMessage"),
    ] {
        proxy.faults.set_access_denied(Some(target));
        let (code, stdout, stderr) = check(&env, &through_proxy).await;
        assert_eq!(code, Some(1), "{action}: stdout:\n{stdout}\nstderr:\n{stderr}");
        let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert_eq!(fails.len(), 1, "{action}: {stdout}");
        assert!(
            fails[0].starts_with(&format!("FAIL permission: {action} refused on ")),
            "{action}: {}",
            fails[0]
        );
        assert!(fails[0].contains("AccessDenied"), "{}", fails[0]);
        assert!(fails[0].contains(&format!("grant {action} ")), "{}", fails[0]);
        assert_eq!(stdout.lines().last(), Some("check: 1 problem(s)"));
    }
    assert_eq!(
        proxy.faults.calls_denied.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "one attempt per probe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_naming_a_low_max_receive_count_and_a_missing_stream() {
    let env = TestEnv::new("check-bad").await;
    set_redrive(&env, 2).await;
    let missing = format!("no-such-stream-{}", uuid::Uuid::new_v4().simple());
    let (code, stdout, _) = check(&env, &[("EVENTS_DATA_STREAM_NAME", &missing)]).await;
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
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL queue: GetQueueUrl no-such-queue-for-check failed")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_when_the_dead_letter_queue_takes_smaller_messages_than_the_queue() {
    let env = TestEnv::new("check-dlq-size").await;
    set_redrive(&env, 10).await;
    // SQS's smallest MaximumMessageSize, below any queue's default.
    let dead_letter = create_queue_with(&env, "small", &[(QueueAttributeName::MaximumMessageSize, "1024")]).await;
    let (code, stdout, stderr) = check(&env, &[("DEAD_LETTER_QUEUE_URL", &dead_letter)]).await;
    let warning = format!(
        "warn dead-letter queue: {dead_letter} takes messages up to 1024 bytes (MaximumMessageSize), the queue up to "
    );
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&warning)).collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(
        warnings[0].contains("an invalid body larger than 1024 bytes cannot be forwarded"),
        "{}",
        warnings[0]
    );
    // A warning: everything else works, so the check passes.
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.lines().last(), Some("check: ok"));
}
