//! The visibility keeper's answers from SQS, and the lease of a message that arrives late in a
//! long poll.

use std::time::Duration;

use crate::rig::{AwsError, FakeAws, Op, Rig, Sent, exactly_once_in_order};

/// The receive calls that brought the test's one message, by when each arrived (a long poll
/// that waited arrives before it answers).
fn deliveries(rig: &Rig) -> Vec<tokio::time::Instant> {
    rig.fake.deliveries().iter().map(|c| c.at).collect()
}

#[tokio::test(start_paused = true)]
async fn an_extension_sqs_refuses_as_the_senders_fault_is_counted_not_asked_again_and_the_message_is_processed_again() {
    let rig = Rig::start(&[("QUEUE_VISIBILITY_TIMEOUT_SEC", "30")]).await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    rig.fake
        .fail_entries(Op::ChangeMessageVisibilityBatch, "ReceiptHandleIsInvalid", 1);
    let sent = rig.send(1, 2);
    rig.wait_until("a second delivery", |rig| deliveries(rig).len() >= 2)
        .await;

    // The second delivery's own extensions come half a timeout later.
    assert_eq!(
        rig.fake.calls(Op::ChangeMessageVisibilityBatch).len(),
        1,
        "asked once, not again after the refusal"
    );
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"ok\"}"),
        0.0
    );
    assert_eq!(rig.metric("telemetry_collector_messages_expired_total"), 1.0);
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;

    assert_eq!(deliveries(&rig).len(), 2);
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_extension_entry_sqs_fails_through_no_fault_of_the_sender_is_asked_again_after_a_backoff_and_the_message_is_delivered_once()
 {
    let rig = Rig::start(&[("QUEUE_VISIBILITY_TIMEOUT_SEC", "30")]).await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    rig.fake
        .fail_entries(Op::ChangeMessageVisibilityBatch, "InternalError", 1);
    let sent = rig.send(1, 2);
    rig.wait_until("an extension applied", |rig| !rig.fake.visibility_changes().is_empty())
        .await;

    let calls = rig.fake.calls(Op::ChangeMessageVisibilityBatch);
    assert_eq!(calls.len(), 2, "the failed entry, then the same again");
    // The keeper ticks every quarter of the timeout, at most every 5 s; the first retry waits
    // the initial backoff (100 ms by default) and at most twice that with jitter.
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(100) && gap <= Duration::from_millis(200),
        "asked again after the initial backoff, not at the next tick: {gap:?}"
    );
    let applied = rig.fake.visibility_changes()[0].at;
    assert!(
        applied < deliveries(&rig)[0] + Duration::from_secs(30),
        "extended before its visibility ended"
    );
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"retried\"}"),
        1.0
    );
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"failed\"}"),
        0.0
    );
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;

    assert_eq!(deliveries(&rig).len(), 1, "the message never became visible again");
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

/// With a 4 s timeout the keeper ticks every second and a message is due from 2.1 s before its
/// end: asked only once a tick, three failures in a row would let its visibility end. Sends a
/// message whose first `failures` extension calls `fail` makes fail, and returns once it is
/// extended, having checked that every attempt came before the next tick and the extension
/// before its visibility ended.
async fn extended_after_failures(failures: usize, fail: impl FnOnce(&FakeAws)) -> (Rig, Sent) {
    let rig = Rig::start(&[
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "4"),
        ("RETRY_INITIAL_BACKOFF_MS", "20"),
        ("RETRY_MAX_BACKOFF_MS", "100"),
    ])
    .await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    fail(&rig.fake);
    let sent = rig.send(1, 2);
    rig.wait_until("an extension applied", |rig| !rig.fake.visibility_changes().is_empty())
        .await;

    let calls = rig.fake.calls(Op::ChangeMessageVisibilityBatch);
    assert_eq!(calls.len(), failures + 1, "the failures, then the extension");
    let asked_within = calls[failures].at - calls[0].at;
    assert!(
        asked_within < Duration::from_secs(1),
        "all asked before the next tick: {asked_within:?}"
    );
    assert!(
        rig.fake.visibility_changes()[0].at < deliveries(&rig)[0] + Duration::from_secs(4),
        "extended before its visibility ended"
    );
    (rig, sent)
}

/// Lets the stream work again and checks that the message was delivered once.
async fn published_and_delivered_once(rig: Rig, sent: Sent) {
    rig.fake.clear_faults();
    rig.wait_until_queue_empty().await;
    assert_eq!(deliveries(&rig).len(), 1, "the message never became visible again");
    assert_eq!(rig.metric("telemetry_collector_messages_expired_total"), 0.0);
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn extension_entries_failing_through_no_fault_of_the_sender_again_and_again_are_asked_until_extended_in_time() {
    let (rig, sent) = extended_after_failures(5, |fake| {
        fake.fail_entries(Op::ChangeMessageVisibilityBatch, "InternalError", 5)
    })
    .await;
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"retried\"}"),
        5.0
    );
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"failed\"}"),
        0.0
    );
    published_and_delivered_once(rig, sent).await;
}

/// A whole ChangeMessageVisibilityBatch call that fails (here SQS's 500) is asked again after a
/// backoff too, not a tick later.
#[tokio::test(start_paused = true)]
async fn a_failed_extension_call_is_asked_again_after_a_backoff_and_the_message_is_delivered_once() {
    let (rig, sent) = extended_after_failures(3, |fake| {
        fake.fail_calls(Op::ChangeMessageVisibilityBatch, 3, AwsError::internal())
    })
    .await;
    // A failed call is counted as a failed extension of each of its messages.
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"failed\"}"),
        3.0
    );
    published_and_delivered_once(rig, sent).await;
}

/// An extension on its way while the message is deleted reaches SQS after the delete and is
/// refused: nothing is wrong, and nothing is counted as a failed extension.
#[tokio::test(start_paused = true)]
async fn an_extension_refused_because_the_message_was_deleted_meanwhile_is_not_a_failure() {
    let rig = Rig::start(&[("QUEUE_VISIBILITY_TIMEOUT_SEC", "30"), ("RETRY_MAX_BACKOFF_MS", "500")]).await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    // An extension takes effect 4 s after it is sent (within the 10 s call timeout): long
    // enough for the stream to be back and the delete to land first.
    let slow_extensions = |rig: &Rig| {
        rig.fake
            .set_latency(Op::ChangeMessageVisibilityBatch, Duration::from_secs(8))
    };
    slow_extensions(&rig);
    let sent = rig.send(1, 2);
    rig.wait_for_call(Op::ChangeMessageVisibilityBatch, "an extension sent")
        .await;
    rig.fake.clear_faults();
    slow_extensions(&rig);
    rig.wait_until_queue_empty().await;
    let deleted_at = rig.fake.calls(Op::DeleteMessageBatch)[0].at;
    rig.wait_until("the extension answered", |rig| {
        rig.metric("telemetry_collector_aws_call_duration_seconds_count{call=\"ChangeMessageVisibilityBatch\"") >= 1.0
    })
    .await;

    let extension = &rig.fake.calls(Op::ChangeMessageVisibilityBatch)[0];
    assert!(extension.at < deleted_at, "the extension was sent before the delete");
    assert_eq!(
        extension.error, None,
        "the call itself succeeded; its one entry was refused"
    );
    assert!(rig.fake.visibility_changes().is_empty(), "the extension was refused");
    assert_eq!(
        rig.metric("telemetry_collector_visibility_extensions_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(deliveries(&rig).len(), 1);
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_arriving_late_in_a_long_poll_is_not_expired_on_arrival_and_is_published_once() {
    // A long poll twice the visibility timeout: a message arriving 6 s into it would look
    // expired on arrival if its visibility were counted from when the call was sent.
    let rig = Rig::start(&[
        ("QUEUE_RECEIVERS", "1"),
        ("QUEUE_WAIT_TIME_SEC", "10"),
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
    ])
    .await;
    rig.wait_for_call(Op::ReceiveMessage, "the first long poll is waiting")
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = rig.send(1, 3);
    rig.wait_until_queue_empty().await;

    let polls = rig.fake.calls(Op::ReceiveMessage);
    assert_eq!(polls[0].entries, 1, "the first long poll brought it");
    assert_eq!(rig.metric("telemetry_collector_messages_expired_total"), 0.0);
    assert_eq!(rig.metric("telemetry_collector_messages_received_total"), 1.0);
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

/// With a short timeout, half of it is not enough: the lane gives a message up once less than
/// the delete margin (the delete interval, 1 s) is left, and the keeper looks once a tick
/// (0.75 s here). Here the second message's lease would be 0.95 s from its end when its lane is
/// free again, 50 ms before the tick that extends it at half; the keeper must have extended it
/// already.
#[tokio::test(start_paused = true)]
async fn a_message_waiting_for_its_lane_is_not_given_up_as_expiring_while_the_keeper_can_still_extend_it() {
    let rig = Rig::start(&[
        ("DATA_STREAM_CONCURRENCY", "1"),
        ("QUEUE_RECEIVERS", "1"),
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "3"),
    ])
    .await;
    // Times from the start, when the keeper's ticks (every 0.75 s) begin.
    let start = tokio::time::Instant::now();
    rig.fake.set_latency(Op::PutRecords, Duration::from_millis(2050));
    tokio::time::sleep(Duration::from_millis(900)).await;
    let first = rig.send(1, 1);
    rig.wait_for_call(Op::PutRecords, "the first message's call").await;
    // Received by the long poll sent at 0.9 s: its lease runs to 3.9 s, is due an extension
    // from 2.4 s (the tick at 3.0 s), and is expiring from 2.9 s; the lane is free at 2.95 s.
    tokio::time::sleep_until(start + Duration::from_millis(1100)).await;
    let second = rig.send(2, 1);
    rig.wait_until_queue_empty().await;

    assert_eq!(rig.metric("telemetry_collector_messages_expired_total"), 0.0);
    assert_eq!(rig.metric("telemetry_collector_messages_received_total"), 2.0);
    exactly_once_in_order(&rig, &[first, second]);
    rig.stop().await;
}
