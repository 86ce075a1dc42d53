//! The deleter: per-entry retries, whole-call retries, and what it does not retry.

use crate::rig::{AwsError, Op, Rig, exactly_once_in_order, in_order_subsequence};

#[tokio::test(start_paused = true)]
async fn a_delete_entry_that_fails_on_the_queues_side_is_retried_alone_until_it_succeeds() {
    let rig = Rig::start(&[]).await;
    rig.fake.fail_entries(Op::DeleteMessageBatch, "InternalError", 1);
    let sent: Vec<_> = (1..=3).map(|n| rig.send(n, 1)).collect();
    rig.wait_until_queue_empty().await;

    let entries: Vec<usize> = rig.fake.entries(Op::DeleteMessageBatch);
    assert_eq!(
        entries,
        [3, 1],
        "entries per DeleteMessageBatch call: the failed one alone again"
    );
    assert_eq!(rig.metric("telemetry_collector_deletes_retried_total"), 1.0);
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_delete_call_that_fails_whole_is_retried_with_growing_backoff_until_it_succeeds() {
    let rig = Rig::start(&[]).await;
    rig.fake.fail_calls(
        Op::DeleteMessageBatch,
        4,
        AwsError::new(500, "InternalError", "try again"),
    );
    let sent = rig.send(1, 3);
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::DeleteMessageBatch);
    assert_eq!(calls.len(), 5, "four failed calls, then one that deletes");
    let gaps: Vec<_> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]),
        "the waits between attempts do not shrink: {gaps:?}"
    );
    assert!(gaps[3] > gaps[0], "the waits between attempts grow: {gaps:?}");
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_delete_the_queue_refuses_as_the_senders_fault_is_not_retried_and_the_message_comes_back() {
    let rig = Rig::start(&[("QUEUE_VISIBILITY_TIMEOUT_SEC", "30")]).await;
    rig.fake
        .fail_entries(Op::DeleteMessageBatch, "ReceiptHandleIsInvalid", 1);
    let sent = rig.send(1, 3);
    rig.wait_until_queue_empty().await;

    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(
        rig.metric("telemetry_collector_deletes_retried_total"),
        0.0,
        "not retried"
    );
    let deliveries = rig.fake.deliveries().len();
    assert_eq!(
        deliveries, 2,
        "the message was delivered again after its visibility ended"
    );
    let written = &rig.stream_events()[&sent.submission_id];
    assert_eq!(
        written,
        &[0, 1, 2, 0, 1, 2],
        "published once per delivery, each in order"
    );
    assert!(in_order_subsequence(written, 3));
    rig.stop().await;
}
