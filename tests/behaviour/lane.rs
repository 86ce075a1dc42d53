//! A sink lane: its batching, its resends after a partial failure, and its search for a record
//! the stream refuses.

use std::time::Duration;

use crate::rig::{AwsError, Op, Rig, exactly_once_in_order, in_order_subsequence};

const ONE_LANE: (&str, &str) = ("DATA_STREAM_CONCURRENCY", "1");

#[tokio::test(start_paused = true)]
async fn a_lane_sends_a_full_batch_at_once_and_the_rest_when_the_flush_interval_ends() {
    let rig = Rig::start(&[ONE_LANE]).await;
    let sent = rig.send(1, 600);
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let entries: Vec<usize> = calls.iter().map(|c| c.entries).collect();
    assert_eq!(entries, [500, 100], "records per PutRecords call");
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
        "the last 100 records waited for the flush interval (1 s), not more: {waited:?}"
    );
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn records_that_fail_are_sent_again_with_the_later_events_of_their_submission_in_order() {
    let rig = Rig::start(&[ONE_LANE]).await;
    // The first five records of the first call (events 0-4 of the first submission) fail.
    rig.fake.fail_records("ProvisionedThroughputExceededException", 5);
    let sent: Vec<_> = (1..=3).map(|n| rig.send(n, 20)).collect();
    rig.wait_until_queue_empty().await;

    let written = rig.stream_events();
    let first = &written[&sent[0].submission_id];
    let expected: Vec<u64> = (5..20).chain(0..20).collect();
    assert_eq!(
        first, &expected,
        "events 5-19 were written, then 0-19 sent again in order"
    );
    assert!(in_order_subsequence(first, 20));
    exactly_once_in_order(&rig, &sent[1..]);
    assert_eq!(
        rig.metric("telemetry_collector_records_retried_total{error_code=\"ProvisionedThroughputExceededException\"}"),
        5.0
    );
    assert_eq!(
        rig.metric("telemetry_collector_records_retried_total{error_code=\"resend_after_failure\"}"),
        15.0
    );
    assert_eq!(
        rig.metric("telemetry_collector_put_records_calls_total{outcome=\"partial\"}"),
        1.0
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_record_the_stream_refuses_sends_its_submission_to_the_dead_letter_queue_and_the_others_through() {
    let rig = Rig::start(&[ONE_LANE, ("DEAD_LETTER_QUEUE_URL", "{dead_letter}")]).await;
    let sent: Vec<_> = (1..=3).map(|n| rig.send(n, 5)).collect();
    let refused_id = sent[1].submission_id.clone();
    rig.fake
        .refuse_records(move |data| String::from_utf8_lossy(data).contains(&refused_id));
    rig.wait_until_queue_empty().await;

    exactly_once_in_order(&rig, &[sent[0].clone(), sent[2].clone()]);
    assert!(
        !rig.stream_events().contains_key(&sent[1].submission_id),
        "no event of the refused submission is on the stream"
    );
    let dead_letters = rig.fake.bodies(&rig.dead_letter);
    assert_eq!(
        dead_letters.len(),
        1,
        "the refused submission is on the dead-letter queue"
    );
    assert_eq!(dead_letters[0], telemetry_fleet::generate::valid(2, 5, 0, false).0);
    assert_eq!(rig.metric("telemetry_collector_submissions_refused_total"), 1.0);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refusal_naming_no_record_halves_the_calls_until_one_passes_and_then_they_grow_back() {
    let rig = Rig::start(&[ONE_LANE]).await;
    rig.fake.fail_calls(
        Op::PutRecords,
        1,
        AwsError::new(400, "InvalidArgumentException", "Records size exceeds 5 MB limit"),
    );
    let sent = rig.send(1, 1000);
    rig.wait_until_queue_empty().await;

    let entries: Vec<usize> = rig.fake.calls(Op::PutRecords).iter().map(|c| c.entries).collect();
    assert_eq!(entries, [500, 250, 500, 250], "records per PutRecords call");
    exactly_once_in_order(&rig, &[sent]);
    assert_eq!(
        rig.metric("telemetry_collector_submissions_refused_total"),
        0.0,
        "nothing dropped"
    );
    rig.stop().await;
}
