//! The visibility keeper: extensions before a message's visibility ends, up to its longest
//! total, and messages given back at shutdown.

use std::time::Duration;

use tokio::time::Instant;

use crate::rig::{AwsError, Op, Rig, exactly_once_in_order};

/// When the single message's first delivery was answered.
fn first_delivery(rig: &Rig) -> Instant {
    rig.fake
        .deliveries()
        .first()
        .map(|c| c.at)
        .expect("the message was received")
}

#[tokio::test(start_paused = true)]
async fn a_message_waiting_on_a_failing_stream_is_extended_before_its_visibility_ends_and_delivered_once() {
    let rig = Rig::start(&[("QUEUE_VISIBILITY_TIMEOUT_SEC", "30")]).await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    let sent = rig.send(1, 4);
    rig.wait_until("five visibility extensions", |rig| {
        rig.fake.visibility_changes().len() >= 5
    })
    .await;
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;

    let mut visible_at = first_delivery(&rig) + Duration::from_secs(30);
    for change in rig.fake.visibility_changes() {
        assert!(
            change.at < visible_at,
            "an extension came {:?} after the visibility ended",
            change.at - visible_at
        );
        assert_eq!(change.timeout, Duration::from_secs(30));
        visible_at = change.at + change.timeout;
    }
    let deliveries = rig.fake.deliveries().len();
    assert_eq!(deliveries, 1, "the message never became visible again");
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_past_its_longest_visibility_is_no_longer_extended_and_comes_back() {
    let rig = Rig::start(&[
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "30"),
        ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "120"),
    ])
    .await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    rig.send(1, 2);
    rig.wait_until("a second delivery", |rig| rig.fake.deliveries().len() >= 2)
        .await;

    let first = first_delivery(&rig);
    let second = rig.fake.deliveries().get(1).map(|c| c.at);
    let changes_in_first_delivery: Vec<_> = rig
        .fake
        .visibility_changes()
        .into_iter()
        .filter(|c| Some(c.at) < second)
        .collect();
    let hidden_until = changes_in_first_delivery
        .iter()
        .map(|c| c.at + c.timeout)
        .max()
        .unwrap_or(first + Duration::from_secs(30));
    assert!(
        !changes_in_first_delivery.is_empty(),
        "it was extended while it could be"
    );
    assert!(
        hidden_until <= first + Duration::from_secs(120),
        "never hidden past its longest total: {:?} after receipt",
        hidden_until - first
    );
    assert_eq!(rig.metric("telemetry_collector_messages_expired_total"), 1.0);
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_a_message_none_of_whose_events_was_sent_is_given_back_for_another_replica_within_seconds() {
    let rig = Rig::start(&[("DATA_STREAM_CONCURRENCY", "1")]).await;
    // Slow, but within the call timeout (10 s): the call under way finishes during the drain.
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(8));
    let sending = rig.send(1, 1);
    rig.wait_for_call(Op::PutRecords, "the first PutRecords call").await;
    let waiting = rig.send(2, 1);
    rig.wait_until("the second message is received", |rig| {
        rig.metric("telemetry_collector_messages_received_total") >= 2.0
    })
    .await;
    let (fake, queue) = (rig.fake.clone(), rig.queue.clone());
    let metrics = rig.metrics.clone();
    rig.stop().await;

    // Not 0: long enough that this replica's own long polls, answering in their shutdown grace
    // (2 s), cannot take it again and add to its receive count.
    let given_back: Vec<_> = fake
        .visibility_changes()
        .into_iter()
        .filter(|c| c.timeout == Duration::from_secs(3))
        .collect();
    assert_eq!(given_back.len(), 1, "one message given back: {given_back:?}");
    assert_eq!(given_back[0].message_id, waiting.message_id);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.queue_counts(&queue).visible, 1, "it is visible again 3 s later");
    assert_eq!(
        fake.bodies(&queue),
        [telemetry_fleet::generate::valid(2, 1, 0, false).0]
    );
    let written: Vec<_> = fake
        .records(crate::rig::STREAM)
        .iter()
        .map(|r| r.json()["submission_id"].clone())
        .collect();
    assert_eq!(
        written,
        [serde_json::json!(sending.submission_id)],
        "the message being sent was finished"
    );
    assert!(
        metrics
            .encode()
            .contains("telemetry_collector_messages_given_back_total{outcome=\"ok\"} 1\n")
    );
}
