//! The deleter: when it gives a delete up, a delete call that is never answered, and how long
//! a finished message waits for a fuller batch.

use std::time::Duration;

use crate::rig::{AwsError, Op, Rig, exactly_once_in_order};

#[tokio::test(start_paused = true)]
async fn a_delete_given_up_because_its_receipt_expired_is_counted_as_expired_and_the_message_comes_back() {
    // No extension (the longest total is one timeout): the receipt runs out 3 s after receipt
    // while every delete call fails.
    let rig = Rig::start(&[
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "3"),
        ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "3"),
        ("RETRY_MAX_BACKOFF_MS", "500"),
    ])
    .await;
    rig.fake
        .fail_calls(Op::DeleteMessageBatch, usize::MAX, AwsError::internal());
    let sent = rig.send(1, 2);
    rig.wait_until("a delete given up", |rig| {
        rig.metric("telemetry_collector_deletes_total{outcome=\"expired\"}") >= 1.0
    })
    .await;
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;

    let deliveries = rig.fake.deliveries().len();
    assert_eq!(deliveries, 2, "delivered again after the receipt ran out");
    // Each delivery is published as it arrives (a long poll's call is logged when it starts,
    // not when it answers).
    let published: Vec<_> = rig.fake.calls(Op::PutRecords).iter().map(|c| c.at).collect();
    assert_eq!(published.len(), 2);
    let first_receipt_ends = published[0] + Duration::from_secs(3);
    assert!(published[1] >= first_receipt_ends, "back only once the receipt ran out");
    let tries: Vec<_> = rig
        .fake
        .calls(Op::DeleteMessageBatch)
        .into_iter()
        .filter(|c| c.at < published[1])
        .collect();
    assert!(tries.len() >= 2, "retried while the receipt was valid: {tries:?}");
    assert!(
        tries.iter().all(|c| c.at < first_receipt_ends),
        "not retried once the receipt had run out: {tries:?}"
    );
    assert_eq!(
        rig.metric("telemetry_collector_deletes_total{outcome=\"expired\"}"),
        1.0
    );
    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(
        rig.stream_events()[&sent.submission_id],
        [0, 1, 0, 1],
        "published once per delivery"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_delete_call_never_answered_times_out_and_is_retried_and_nothing_is_published_twice() {
    let rig = Rig::start(&[("AWS_CALL_TIMEOUT_SEC", "2")]).await;
    rig.fake.set_black_hole(Op::DeleteMessageBatch, true);
    let sent = rig.send(1, 3);
    rig.wait_until("the delete timed out", |rig| {
        rig.metric("telemetry_collector_deletes_retried_total") >= 1.0
    })
    .await;
    rig.fake.set_black_hole(Op::DeleteMessageBatch, false);
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::DeleteMessageBatch);
    assert_eq!(calls.len(), 2, "the swallowed call, then its retry");
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(2),
        "retried after the call timeout"
    );
    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(rig.fake.deliveries().len(), 1, "delivered once");
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_finished_message_waits_the_delete_interval_for_a_fuller_batch_and_a_full_batch_goes_at_once() {
    let rig = Rig::start(&[("QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC", "5")]).await;
    let mut sent = vec![rig.send(1, 1)];
    rig.wait_for_call(Op::DeleteMessageBatch, "the first delete").await;
    let published = rig.fake.calls(Op::PutRecords)[0].at;
    let deleted = rig.fake.calls(Op::DeleteMessageBatch)[0].at;
    assert_eq!(
        deleted - published,
        Duration::from_secs(5),
        "alone, it waited the interval"
    );

    sent.extend((2..=11).map(|n| rig.send(n, 1)));
    rig.wait_until_queue_empty().await;
    let deletes = rig.fake.calls(Op::DeleteMessageBatch);
    let entries: Vec<usize> = deletes.iter().map(|c| c.entries).collect();
    assert_eq!(entries, [1, 10]);
    let last_published = rig.fake.calls(Op::PutRecords).last().map(|c| c.at);
    assert_eq!(Some(deletes[1].at), last_published, "a full batch waits for nothing");
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}
