//! The breaker: receiving stops while no record can be written, and resumes when one can.

use std::time::Duration;

use crate::rig::{AwsError, FakeAws, Op, Rig, exactly_once_in_order};

#[tokio::test(start_paused = true)]
async fn a_missing_stream_opens_the_breaker_and_stops_receiving_until_the_stream_is_back() {
    let rig = Rig::start(&[]).await;
    rig.wait_for_call(Op::ReceiveMessage, "the collector has started").await;
    rig.fake
        .fail_calls(Op::PutRecords, usize::MAX, AwsError::stream_not_found());
    // The probe finds no stream either: no trial receive is let through.
    rig.fake
        .fail_calls(Op::DescribeStreamSummary, usize::MAX, AwsError::stream_not_found());
    let first = rig.send(1, 2);
    rig.wait_until("the breaker opens", |rig| {
        rig.metric("telemetry_collector_breaker_open") == 1.0
    })
    .await;
    let receives_at_open = rig.fake.calls(Op::ReceiveMessage).len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let second = rig.send(2, 2);
    tokio::time::sleep(Duration::from_secs(60)).await;

    assert_eq!(
        rig.fake.calls(Op::ReceiveMessage).len(),
        receives_at_open,
        "no receive starts while the breaker is open"
    );
    assert_eq!(
        rig.fake.queue_counts(&rig.queue).visible,
        1,
        "the new message waits in the queue"
    );
    assert_eq!(rig.metric("telemetry_collector_ready"), 0.0, "not ready while open");
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;

    assert_eq!(rig.metric("telemetry_collector_breaker_open"), 0.0);
    exactly_once_in_order(&rig, &[first, second]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_refuses_every_record_drops_three_submissions_then_opens_the_breaker_and_keeps_the_rest() {
    refusing_every_record(|fake| fake.refuse_records(|_| true)).await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_refuses_every_record_naming_none_drops_three_submissions_then_opens_the_breaker() {
    refusing_every_record(|fake| fake.refuse_records_naming_none(|_| true)).await;
}

/// Six one-event submissions to a stream that refuses every record the way `refuse` sets.
async fn refusing_every_record(refuse: impl FnOnce(&FakeAws)) {
    let rig = Rig::start(&[
        ("DATA_STREAM_CONCURRENCY", "1"),
        ("DEAD_LETTER_QUEUE_URL", "{dead_letter}"),
    ])
    .await;
    refuse(&rig.fake);
    for n in 1..=6 {
        rig.send(n, 1);
    }
    rig.wait_until("the breaker opens", |rig| {
        rig.metric("telemetry_collector_breaker_open") == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(600)).await;

    assert_eq!(
        rig.fake.bodies(&rig.dead_letter).len(),
        3,
        "three refused, then the stream is blamed"
    );
    assert_eq!(rig.metric("telemetry_collector_submissions_refused_total"), 3.0);
    assert_eq!(rig.fake.bodies(&rig.queue).len(), 3, "the rest stay in the queue");
    assert!(rig.stream_events().is_empty());
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;
    assert_eq!(rig.stream_events().len(), 3);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn while_the_stream_answers_but_refuses_writes_the_breaker_lets_through_one_trial_receive_at_a_time() {
    let rig = Rig::start(&[("DATA_STREAM_CONCURRENCY", "1")]).await;
    rig.fake
        .fail_calls(Op::PutRecords, usize::MAX, AwsError::access_denied());
    let first = rig.send(1, 1);
    rig.wait_until("the breaker opens", |rig| {
        rig.metric("telemetry_collector_breaker_open") == 1.0
    })
    .await;
    let later: Vec<_> = (2..=4).map(|n| rig.send(n, 1)).collect();
    tokio::time::sleep(Duration::from_secs(600)).await;

    let taken_while_open = rig.metric("telemetry_collector_messages_received_total") - 1.0;
    assert!(
        (1.0..=3.0).contains(&taken_while_open),
        "trial receives take a message at a time, not the backlog: {taken_while_open}"
    );
    assert_eq!(
        rig.metric("telemetry_collector_breaker_open"),
        1.0,
        "an answered probe does not close it"
    );
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;
    assert_eq!(rig.metric("telemetry_collector_breaker_open"), 0.0);
    let mut all = vec![first];
    all.extend(later);
    exactly_once_in_order(&rig, &all);
    rig.stop().await;
}
