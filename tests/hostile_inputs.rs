//! The hostile-input catalogue end to end: its bodies, interleaved with valid neighbours in the
//! same send (and so receive) batches, go through the collector against the emulator. None of
//! the invalid ones is published, each is counted under its reason, the valid ones (hostile or
//! not) are published exactly as written, and the queue drains.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use telemetry_testkit::hostile;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use hostile::{Case, MAX_BODY_BYTES, Verdict};
use support::checks::{verify, wait_for_events, wait_for_queue_empty};
use support::submissions::{self, Expected};
use support::{CollectorHarness, TestEnv, metric};

/// More events than this in one valid case would mostly measure the emulator's Kinesis; the
/// decoder's verdict on such a body is checked by the unit test of the catalogue.
const MAX_EVENTS_END_TO_END: usize = 100;

/// Sends bodies in order in SendMessageBatch calls of at most 10 entries and at most SQS' 1 MiB
/// of bodies per call, so a body of the maximal size travels in a batch of its own.
async fn send_in_batches(env: &TestEnv, bodies: &[String]) {
    let mut batches: Vec<Vec<&String>> = vec![Vec::new()];
    let mut bytes = 0;
    for body in bodies {
        let current = batches.last_mut().unwrap();
        if current.len() == 10 || bytes + body.len() > MAX_BODY_BYTES {
            batches.push(Vec::new());
            bytes = 0;
        }
        batches.last_mut().unwrap().push(body);
        bytes += body.len();
    }
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body.as_str())
                    .build()
                    .unwrap()
            })
            .collect();
        let out = env
            .sqs
            .send_message_batch()
            .queue_url(&env.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("SendMessageBatch");
        assert!(out.failed.is_empty(), "SendMessageBatch failures: {:?}", out.failed);
    }
}

fn expected_of(published: &hostile::Published) -> Expected {
    Expected {
        submission_id: published.submission_id.clone(),
        device_id: published.device_id.clone(),
        time_created: published.time_created.clone(),
        events: published.events.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_dropped_by_reason_and_valid_neighbours_are_published_in_order() {
    let env = TestEnv::new("hostile").await;
    let cases: Vec<Case> = hostile::catalogue()
        .into_iter()
        .filter(|c| match &c.verdict {
            Verdict::Valid(p) => p.events.len() <= MAX_EVENTS_END_TO_END,
            Verdict::Invalid(_) => true,
        })
        .collect();
    let mut bodies = Vec::new();
    let mut expected = Vec::new();
    let mut invalid_by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        // A valid neighbour before every hostile body: each receive batch mixes both.
        let (body, neighbour) = submissions::valid(7_000 + i as u64, 2, 1, i % 2 == 0);
        bodies.push(body);
        expected.push(neighbour);
        bodies.push(case.body.clone());
        match &case.verdict {
            Verdict::Valid(published) => expected.push(expected_of(published)),
            Verdict::Invalid(label) => *invalid_by_reason.entry(label).or_default() += 1,
        }
    }
    let (body, last) = submissions::valid(6_999, 1, 2, false);
    bodies.push(body);
    expected.push(last);
    send_in_batches(&env, &bodies).await;
    let collector = env.start_collector(&env.endpoint.clone(), &[]).await;

    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(60)).await;
    for (label, count) in &invalid_by_reason {
        let name = format!("telemetry_collector_submissions_invalid_total{{reason=\"{label}\"}}");
        assert_eq!(metric(&collector.metrics, &name), *count, "{name}");
    }
    let invalid: u64 = invalid_by_reason.values().sum();
    assert_eq!(
        metric(&collector.metrics, "telemetry_collector_submissions_valid_total"),
        expected.len() as u64
    );
    assert_eq!(
        metric(&collector.metrics, "telemetry_collector_messages_received_total"),
        expected.len() as u64 + invalid,
        "every message was received once: none stalled and came back"
    );
    collector.stop().await;

    // Every record belongs to a valid submission, each published exactly once, in order, as
    // written: nothing of an invalid body reached the stream.
    verify(&env.read_stream().await, &expected, true);
    assert_eq!(env.queue_counts().await, (0, 0));
}
