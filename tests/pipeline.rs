//! The collector end to end against a real SQS + Kinesis emulator: what is on the stream and
//! what is left in the queue afterwards.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use support::checks::{has_in_order_subsequence, mixed_submissions, verify, wait_for_events, wait_for_queue_empty};
use support::submissions::{self, Expected};
use support::{CollectorHarness, TestEnv, metric, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_submissions_are_published_once_in_order_and_deleted() {
    let env = TestEnv::new("valid").await;
    let (bodies, expected) = mixed_submissions(1_000, 203);
    env.send(&bodies).await;
    let collector = env.start_collector(&env.endpoint.clone(), &[]).await;

    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    let events: u64 = expected.iter().map(|e| e.events.len() as u64).sum();
    assert_eq!(
        metric(&collector.metrics, "telemetry_collector_events_published_total"),
        events
    );
    assert_eq!(
        metric(&collector.metrics, "telemetry_collector_submissions_valid_total"),
        203
    );
    assert!(
        metric(
            &collector.metrics,
            "telemetry_collector_put_records_calls_total{outcome=\"ok\"}"
        ) >= 2
    );
    collector.stop().await;

    verify(&env.read_stream().await, &expected, true);
    assert_eq!(env.queue_counts().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_are_dropped_and_deleted_without_harming_valid_ones() {
    let env = TestEnv::new("invalid").await;
    let invalid = submissions::invalid_of_every_class(2_000);
    let mut bodies = Vec::new();
    let mut expected = Vec::new();
    // Valid and invalid alternate, so each receive batch of 10 mixes both.
    for (i, (_, body, _)) in invalid.iter().enumerate() {
        let (valid_body, e) = submissions::valid(2_000 + i as u64, 2, 1, i % 2 == 0);
        bodies.push(valid_body);
        expected.push(e);
        bodies.push(body.clone());
    }
    env.send(&bodies).await;
    let collector = env.start_collector(&env.endpoint.clone(), &[]).await;

    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    let mut by_reason: HashMap<&str, u64> = HashMap::new();
    for (label, _, _) in &invalid {
        *by_reason.entry(label).or_default() += 1;
    }
    for (label, count) in &by_reason {
        let name = format!("telemetry_collector_submissions_invalid_total{{reason=\"{label}\"}}");
        assert_eq!(metric(&collector.metrics, &name), *count, "{name}");
    }
    assert_eq!(
        metric(&collector.metrics, "telemetry_collector_submissions_valid_total"),
        expected.len() as u64
    );
    collector.stop().await;

    let records = env.read_stream().await;
    let invalid_ids: HashSet<&str> = invalid.iter().filter_map(|(_, _, id)| id.as_deref()).collect();
    assert!(
        records.iter().all(|r| !invalid_ids.contains(r.submission_id())),
        "an invalid submission was published"
    );
    verify(&records, &expected, true);
    assert_eq!(env.queue_counts().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_records_failures_are_resent_in_order_and_nothing_is_deleted_early() {
    let env = TestEnv::new("partial").await;
    let proxy = support::fault_proxy::FaultProxy::start(&env.endpoint, 42).await;
    proxy.faults.set_put_records_failure_rate(0.05);
    proxy.faults.set_put_records_call_failure_rate(0.2);
    let (bodies, expected) = mixed_submissions(4_000, 120);
    env.send(&bodies).await;
    let collector = env
        .start_collector(&proxy.endpoint, &[("DATA_STREAM_MAX_BUFFER_SIZE", "100")])
        .await;

    // While records keep failing, every message already deleted must have all its events on
    // the stream: check at a few moments.
    for _ in 0..3 {
        wait_until("some records failed", Duration::from_secs(60), || async {
            proxy.faults.records_failed.load(std::sync::atomic::Ordering::Relaxed) > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // SQS's counts are approximate (moto reads the two apart, so a message received in
        // between counts twice): at most this many were deleted.
        let remaining = (env.queue_total().await as usize).min(expected.len());
        let records = env.read_stream().await;
        let mut indices: HashMap<&str, Vec<u64>> = HashMap::new();
        for r in &records {
            indices.entry(r.submission_id()).or_default().push(r.event_index());
        }
        let complete = expected
            .iter()
            .filter(|e| {
                e.events.is_empty()
                    || indices
                        .get(e.submission_id.as_str())
                        .is_some_and(|i| has_in_order_subsequence(i, e.events.len()))
            })
            .count();
        assert!(
            complete >= expected.len() - remaining,
            "{} messages deleted but only {complete} submissions complete on the stream",
            expected.len() - remaining
        );
    }
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    assert!(
        metric(
            &collector.metrics,
            "telemetry_collector_records_retried_total{error_code=\"ProvisionedThroughputExceededException\"}"
        ) > 0
    );
    assert!(
        metric(
            &collector.metrics,
            "telemetry_collector_put_records_calls_total{outcome=\"partial\"}"
        ) > 0
    );
    collector.stop().await;

    verify(&env.read_stream().await, &expected, false);
    assert_eq!(env.queue_counts().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deletes_are_counted_and_their_messages_are_processed_again() {
    let env = TestEnv::new("delfail").await;
    let proxy = support::fault_proxy::FaultProxy::start(&env.endpoint, 7).await;
    proxy.faults.set_delete_failure_rate(0.5);
    // Small submissions only: the short visibility timeout (for quick redelivery) must leave
    // time to publish each one, even on an emulator whose Kinesis is slow.
    let (bodies, expected): (Vec<String>, Vec<Expected>) = (0..40)
        .map(|n| submissions::valid(6_000 + n, (n % 4) as usize, (n % 3) as usize, n % 2 == 0))
        .unzip();
    env.send(&bodies).await;
    let collector = env
        .start_collector(&proxy.endpoint, &[("QUEUE_VISIBILITY_TIMEOUT_SEC", "3")])
        .await;

    wait_until("failed deletes counted", Duration::from_secs(60), || async {
        metric(
            &collector.metrics,
            "telemetry_collector_deletes_total{outcome=\"failed\"}",
        ) >= 5
    })
    .await;
    proxy.faults.set_delete_failure_rate(0.0);
    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    let failed = metric(
        &collector.metrics,
        "telemetry_collector_deletes_total{outcome=\"failed\"}",
    );
    let injected = proxy.faults.deletes_failed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, injected, "every failed entry is counted");
    // Each failed delete brought its message back: it was received and published again.
    assert!(metric(&collector.metrics, "telemetry_collector_messages_received_total") >= 40 + failed);
    collector.stop().await;

    let records = env.read_stream().await;
    verify(&records, &expected, false);
    let distinct: HashSet<(String, u64)> = records
        .iter()
        .map(|r| (r.submission_id().to_owned(), r.event_index()))
        .collect();
    assert!(
        records.len() > distinct.len(),
        "reprocessed messages published their events again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_given_up_because_their_receipts_expired_are_counted() {
    let env = TestEnv::new("delexpired").await;
    let proxy = support::fault_proxy::FaultProxy::start(&env.endpoint, 8).await;
    // Every delete call is refused whole, and the receipts are kept for three seconds only: the
    // deleter retries until they expire, then gives up on each; each will be a duplicate.
    proxy.faults.set_access_denied(Some("AmazonSQS.DeleteMessageBatch"));
    let (bodies, expected): (Vec<String>, Vec<Expected>) =
        (0..3).map(|n| submissions::valid(6_500 + n, 1, 1, true)).unzip();
    env.send(&bodies).await;
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "3"),
                ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "3"),
                ("RETRY_MAX_BACKOFF_MS", "500"),
            ],
        )
        .await;
    wait_until("expired deletes counted", Duration::from_secs(60), || async {
        metric(
            &collector.metrics,
            "telemetry_collector_deletes_total{outcome=\"expired\"}",
        ) >= 3
    })
    .await;
    proxy.faults.set_access_denied(None);
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    collector.stop().await;
    verify(&env.read_stream().await, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_with_sigkill_loses_nothing_and_duplicates_share_event_ids() {
    let env = TestEnv::new("sigkill").await;
    let (bodies, expected) = mixed_submissions(5_000, 150);
    env.send(&bodies).await;
    let settings = [
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "3"),
        ("MAX_IN_FLIGHT_MESSAGES", "20"),
        ("DATA_STREAM_MAX_BUFFER_SIZE", "20"),
    ];

    let mut first = env.spawn_binary(&settings, "sigkill-first");
    wait_until("first events published", Duration::from_secs(60), || async {
        !env.read_stream().await.is_empty()
    })
    .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("wait for the killed collector");
    let left_at_kill = env.queue_total().await;
    assert!(
        left_at_kill > 0,
        "the collector finished before it was killed: the test proves nothing"
    );

    let mut second = env.spawn_binary(&settings, "sigkill-second");
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    second.start_kill().expect("stop the second collector");
    second.wait().await.expect("wait for the second collector");

    let records = env.read_stream().await;
    verify(&records, &expected, false);
    // Duplicates of an event are the same event: same id, same content.
    let mut seen: HashMap<(String, u64), Value> = HashMap::new();
    for r in &records {
        let mut content = r.event.clone();
        content["time_processed"] = Value::Null;
        let key = (r.submission_id().to_owned(), r.event_index());
        if let Some(previous) = seen.get(&key) {
            assert_eq!(previous, &content, "a duplicate differs from its original");
        }
        seen.insert(key, content);
    }
    let total: usize = expected.iter().map(|e| e.events.len()).sum();
    assert_eq!(seen.len(), total, "distinct events");
}
