//! What the network and SQS's at-least-once delivery do to the path from receive to delete.

use std::time::Duration;

use tokio::time::Instant;

use crate::rig::{AwsError, Op, Rig, exactly_once_in_order, in_order_subsequence};

#[tokio::test(start_paused = true)]
async fn a_message_delivered_twice_is_published_per_delivery_and_both_deletes_succeed() {
    let rig = Rig::start(&[]).await;
    rig.fake.deliver_twice(1);
    let sent = rig.send(1, 3);
    rig.wait_until_queue_empty().await;
    rig.wait_until("both deliveries deleted", |rig| {
        rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}") >= 2.0
    })
    .await;

    let written = &rig.stream_events()[&sent.submission_id];
    assert_eq!(written, &[0, 1, 2, 0, 1, 2]);
    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"failed\"}"), 0.0);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_receive_swallowed_by_the_network_times_out_and_receiving_goes_on() {
    let rig = Rig::start(&[("AWS_CALL_TIMEOUT_SEC", "5")]).await;
    rig.fake.set_black_hole(Op::ReceiveMessage, true);
    let sent = rig.send(1, 2);
    rig.wait_until("a receive timed out", |rig| {
        rig.metric("telemetry_collector_receive_errors_total") >= 1.0
    })
    .await;
    assert!(rig.stream_events().is_empty());
    rig.fake.set_black_hole(Op::ReceiveMessage, false);
    rig.wait_until_queue_empty().await;

    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_receive_whose_answer_stalls_mid_body_times_out_and_its_message_comes_back_once() {
    let rig = Rig::start(&[("AWS_CALL_TIMEOUT_SEC", "5"), ("QUEUE_VISIBILITY_TIMEOUT_SEC", "30")]).await;
    // SQS hands the message over and the answer's headers arrive; its body never does.
    rig.fake.stall_answer_bodies(Op::ReceiveMessage, 1);
    let sent = rig.send(1, 2);
    rig.wait_until("the stalled receive timed out", |rig| {
        rig.metric("telemetry_collector_receive_errors_total") >= 1.0
    })
    .await;
    assert!(rig.stream_events().is_empty());
    // Hidden by the stalled receive, the message comes back after its visibility timeout.
    rig.wait_until_queue_empty().await;

    exactly_once_in_order(&rig, &[sent]);
    assert!(
        rig.fake.deliveries().len() >= 2,
        "received again after the stall: {:?}",
        rig.fake.deliveries()
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_put_records_answer_lost_after_the_write_sends_only_that_calls_records_again_in_smaller_calls() {
    answer_never_completed(|rig| rig.fake.lose_answers(Op::PutRecords, 1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_put_records_answer_stalled_after_its_headers_sends_only_that_calls_records_again_in_smaller_calls() {
    answer_never_completed(|rig| rig.fake.stall_answer_bodies(Op::PutRecords, 1)).await;
}

/// A PutRecords call that took effect but whose answer `fault` keeps from completing.
async fn answer_never_completed(fault: impl FnOnce(&Rig)) {
    let rig = Rig::start(&[("AWS_CALL_TIMEOUT_SEC", "5"), ("DATA_STREAM_CONCURRENCY", "1")]).await;
    fault(&rig);
    let sent = rig.send(1, 3);
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let entries: Vec<usize> = calls.iter().map(|c| c.entries).collect();
    assert_eq!(
        entries,
        [3, 1, 2],
        "records per call: after the timeout half as many, doubling back as calls are answered at once"
    );
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(5),
        "resent after the call timeout"
    );
    assert_eq!(rig.stream_events()[&sent.submission_id], [0, 1, 2, 0, 1, 2]);
    assert_eq!(
        rig.metric("telemetry_collector_put_records_calls_made_smaller_total{reason=\"timed_out\"}"),
        1.0
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_receipt_that_expired_while_its_events_were_sent_brings_the_message_back_and_nothing_is_lost() {
    let rig = Rig::start(&[("DATA_STREAM_CONCURRENCY", "1")]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(10));
    let sent = rig.send(1, 3);
    rig.wait_for_call(Op::PutRecords, "the first PutRecords call").await;
    rig.fake.expire_receipts(&rig.queue);
    rig.wait_until_queue_empty().await;

    let written = &rig.stream_events()[&sent.submission_id];
    assert!(in_order_subsequence(written, 3), "in order: {written:?}");
    let deliveries = rig.fake.deliveries().len();
    assert_eq!(deliveries, 2);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_submission_is_deleted_unpublished_with_its_body_in_the_dead_letter_queue_when_one_is_set() {
    let with_dead_letter = Rig::start(&[("DEAD_LETTER_QUEUE_URL", "{dead_letter}")]).await;
    let without = Rig::start(&[]).await;
    for rig in [&with_dead_letter, &without] {
        rig.fake.send(&rig.queue, "this is not a submission");
        rig.wait_until_queue_empty().await;
        assert!(rig.stream_events().is_empty());
        assert_eq!(rig.metric("telemetry_collector_submissions_invalid_total"), 1.0);
    }
    assert_eq!(
        with_dead_letter.fake.bodies(&with_dead_letter.dead_letter),
        ["this is not a submission"]
    );
    assert!(without.fake.bodies(&without.dead_letter).is_empty());
    with_dead_letter.stop().await;
    without.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_submission_the_dead_letter_queue_does_not_take_stays_in_the_queue_and_is_forwarded_when_it_comes_back()
 {
    let rig = Rig::start(&[("DEAD_LETTER_QUEUE_URL", "{dead_letter}")]).await;
    // Every attempt of the first forward fails.
    rig.fake
        .fail_calls(Op::SendMessage, 3, crate::rig::AwsError::internal());
    rig.fake.send(&rig.queue, "this is not a submission");
    rig.wait_until_queue_empty().await;

    let deliveries = rig.fake.deliveries().len();
    assert_eq!(deliveries, 2, "kept after the failed forward, delivered again");
    assert_eq!(rig.fake.bodies(&rig.dead_letter), ["this is not a submission"]);
    assert_eq!(
        rig.metric("telemetry_collector_dead_letters_total{outcome=\"failed\"}"),
        1.0
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_receiver_backing_off_holds_no_room_another_receiver_could_receive_with() {
    // The in-flight cap holds one receive's batch. The receiver whose call failed backs off for
    // at least 30 s; the other receives meanwhile, with the room it gave up.
    let rig = Rig::start_with(
        &[
            ("QUEUE_RECEIVERS", "2"),
            ("MAX_IN_FLIGHT_MESSAGES", "10"),
            ("RETRY_INITIAL_BACKOFF_MS", "30000"),
            ("RETRY_MAX_BACKOFF_MS", "60000"),
        ],
        |fake, _| fake.fail_calls(Op::ReceiveMessage, 1, AwsError::internal()),
    )
    .await;
    rig.wait_until("a receive failed", |rig| {
        rig.metric("telemetry_collector_receive_errors_total") == 1.0
    })
    .await;
    let failed_at = Instant::now();
    let sent = [rig.send(1, 3)];
    rig.wait_until("the message is received", |rig| {
        rig.metric("telemetry_collector_messages_received_total") == 1.0
    })
    .await;

    let waited = failed_at.elapsed();
    assert!(
        waited < Duration::from_secs(30),
        "received {waited:?} after the failure: the backing-off receiver held the in-flight room"
    );
    rig.wait_until_queue_empty().await;
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}
