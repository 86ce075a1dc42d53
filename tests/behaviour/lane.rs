//! A sink lane: its batching, its resends after a partial failure, and its search for a record
//! the stream refuses.

use std::time::Duration;

use tokio::time::Instant;

use crate::rig::{AwsError, FakeAws, Op, Rig, exactly_once_in_order, in_order_subsequence};

const ONE_LANE: (&str, &str) = ("DATA_STREAM_CONCURRENCY", "1");

/// When the only submission's records were sent, from the moment it was put on the queue.
async fn first_call_delay(rig: &Rig) -> Duration {
    let sent_at = Instant::now();
    rig.wait_for_call(Op::PutRecords, "a PutRecords call").await;
    rig.fake.calls(Op::PutRecords)[0].at - sent_at
}

#[tokio::test(start_paused = true)]
async fn a_lane_with_no_call_in_flight_sends_at_once_with_the_default_settings() {
    let rig = Rig::start(&[]).await;
    let sent = rig.send(1, 3);
    let delay = first_call_delay(&rig).await;
    assert!(delay < Duration::from_millis(1), "sent {delay:?} after it was queued");
    rig.wait_until_queue_empty().await;
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_a_linger_a_lane_waits_that_long_for_more_records_before_it_sends() {
    let rig = Rig::start(&[ONE_LANE, ("DATA_STREAM_LINGER_MS", "50")]).await;
    let first = rig.send(1, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = rig.send(2, 1);
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let entries: Vec<usize> = calls.iter().map(|c| c.entries).collect();
    assert_eq!(entries, [2], "both submissions in one call");
    exactly_once_in_order(&rig, &[first, second]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_linger_is_the_wait_before_a_call_when_nothing_else_arrives() {
    let rig = Rig::start(&[("DATA_STREAM_LINGER_MS", "50")]).await;
    rig.send(1, 1);
    let delay = first_call_delay(&rig).await;
    assert!(
        delay >= Duration::from_millis(50) && delay < Duration::from_millis(60),
        "sent {delay:?} after it was queued"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn records_arriving_while_a_call_is_in_flight_go_together_in_the_next_call_up_to_the_record_limit() {
    let rig = Rig::start(&[ONE_LANE]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_millis(100));
    let mut sent = vec![rig.send(1, 1)];
    rig.wait_for_call(Op::PutRecords, "the first call").await;
    sent.extend((2..=4).map(|n| rig.send(n, 300)));
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let entries: Vec<usize> = calls.iter().map(|c| c.entries).collect();
    assert_eq!(entries, [1, 500, 400], "records per PutRecords call");
    assert_eq!(
        calls[1].at - calls[0].at,
        Duration::from_millis(100),
        "sent as the first call ended"
    );
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn under_a_steady_backlog_a_lane_whose_calls_leave_nearly_full_waits_for_full_ones() {
    let rig = Rig::start(&[ONE_LANE]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_millis(100));
    // 40 events every 10 ms: 400 arrive during each 100 ms call, 80% of a call.
    let mut sent = Vec::new();
    for n in 1..=150 {
        sent.push(rig.send(n, 40));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let entries: Vec<usize> = calls.iter().map(|c| c.entries).collect();
    let first_full = entries.iter().position(|&n| n == 500).expect("full calls");
    assert!(
        first_full <= 3,
        "full calls from the first nearly full one: {entries:?}"
    );
    let steady = &entries[first_full..entries.len() - 2];
    assert!(
        steady.len() >= 8 && steady.iter().all(|&n| n == 500),
        "every call of the backlog is full: {entries:?}"
    );
    for pair in calls[first_full..].windows(2) {
        assert!(
            pair[1].at - pair[0].at <= Duration::from_millis(150),
            "a call starts at most half a call after the previous one ended: {entries:?}"
        );
    }
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_full_call_a_lane_waits_at_most_half_that_call_for_more() {
    let (entries, delay) = call_after_a_call_of(500, Duration::from_millis(100), &[]).await;
    assert_eq!(entries, [1, 500, 1], "records per PutRecords call");
    assert_eq!(
        delay,
        Duration::from_millis(40),
        "sent half a call after the full call ended"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_call_far_from_full_a_lane_sends_what_arrived_at_once() {
    let (entries, delay) = call_after_a_call_of(300, Duration::from_millis(100), &[]).await;
    assert_eq!(entries, [1, 300, 1], "records per PutRecords call");
    assert!(delay < Duration::from_millis(1), "sent {delay:?} after it was queued");
}

#[tokio::test(start_paused = true)]
async fn the_flush_interval_bounds_the_wait_after_a_full_call() {
    // Half of a 2 s call would be 1 s; the flush interval, 0.5 s, is the longest an event waits.
    let flush = ("DATA_STREAM_FLUSH_INTERVAL_SEC", "0.5");
    let (entries, delay) = call_after_a_call_of(500, Duration::from_secs(2), &[flush]).await;
    assert_eq!(entries, [1, 500, 1], "records per PutRecords call");
    assert_eq!(
        delay,
        Duration::from_millis(500),
        "sent a flush interval after it was queued"
    );
}

/// One lane, calls that take `call`: a call of one record, a submission of `events` events sent
/// during it (so in the next call, whole), and a submission of one event 10 ms after that call
/// ended. Returns the records per call, and how long the last submission waited from being
/// queued to its call.
async fn call_after_a_call_of(events: usize, call: Duration, settings: &[(&str, &str)]) -> (Vec<usize>, Duration) {
    let rig = Rig::start(&[&[ONE_LANE], settings].concat()).await;
    rig.fake.set_latency(Op::PutRecords, call);
    let mut sent = vec![rig.send(1, 1)];
    rig.wait_for_call(Op::PutRecords, "the first call").await;
    let first_at = rig.fake.calls(Op::PutRecords)[0].at;
    sent.push(rig.send(2, events));
    tokio::time::sleep_until(first_at + 2 * call + Duration::from_millis(10)).await;
    sent.push(rig.send(3, 1));
    let queued_at = Instant::now();
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let entries: Vec<usize> = calls.iter().map(|c| c.entries).collect();
    assert_eq!(calls[1].at - first_at, call, "the second call starts as the first ends");
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
    (entries, calls[calls.len() - 1].at - queued_at)
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
    let rig = refused_to_the_dead_letter_queue(|fake, refused| fake.refuse_records(refused)).await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_record_refused_by_an_endpoint_that_names_none_is_found_by_halving_and_stops_only_its_submission() {
    let rig = refused_to_the_dead_letter_queue(|fake, refused| fake.refuse_records_naming_none(refused)).await;
    let entries: Vec<usize> = rig.fake.entries(Op::PutRecords);
    assert!(
        entries.contains(&1),
        "the refused record was sent alone before it was taken for the refused one: {entries:?}"
    );
    rig.stop().await;
}

/// Three submissions of five events, the second's records refused the way `refuse` sets: the
/// others are published once in order, the second is on the dead-letter queue.
async fn refused_to_the_dead_letter_queue(
    refuse: impl FnOnce(&FakeAws, Box<dyn Fn(&[u8]) -> bool + Send + Sync>),
) -> Rig {
    let rig = Rig::start(&[ONE_LANE, ("DEAD_LETTER_QUEUE_URL", "{dead_letter}")]).await;
    let sent: Vec<_> = (1..=3).map(|n| rig.send(n, 5)).collect();
    let refused_id = sent[1].submission_id.clone();
    refuse(
        &rig.fake,
        Box::new(move |data| String::from_utf8_lossy(data).contains(&refused_id)),
    );
    rig.wait_until_queue_empty().await;

    exactly_once_in_order(&rig, &[sent[0].clone(), sent[2].clone()]);
    assert!(
        !rig.stream_events().contains_key(&sent[1].submission_id),
        "no event of the refused submission is on the stream"
    );
    assert_eq!(
        rig.fake.bodies(&rig.dead_letter),
        [telemetry_fleet::generate::valid(2, 5, 0, false).0],
        "the refused submission is on the dead-letter queue"
    );
    assert_eq!(rig.metric("telemetry_collector_submissions_refused_total"), 1.0);
    rig
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

    let entries: Vec<usize> = rig.fake.entries(Op::PutRecords);
    assert_eq!(
        entries[1],
        entries[0] / 2,
        "the call after the refusal has half its records: {entries:?}"
    );
    assert!(entries[2] <= entries[1] * 2, "calls grow back by doubling: {entries:?}");
    assert!(
        entries.iter().skip(2).any(|&n| n > entries[1]),
        "calls grow back: {entries:?}"
    );
    exactly_once_in_order(&rig, &[sent]);
    assert_eq!(
        rig.metric("telemetry_collector_submissions_refused_total"),
        0.0,
        "nothing dropped"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_too_slow_for_full_calls_gets_half_calls_after_a_timeout_and_every_event_through() {
    // 30 ms a record: a full call (15 s) outlasts the 10 s call timeout, half of one (7.5 s)
    // does not. Sent again whole, the timed-out call would time out for ever.
    let rig = Rig::start(&[ONE_LANE]).await;
    rig.fake
        .set_latency_per_entry(Op::PutRecords, Duration::from_millis(30));
    let slow: Vec<_> = (1..=4).map(|n| rig.send(n, 300)).collect();
    rig.wait_until_queue_empty().await;

    let entries = rig.fake.entries(Op::PutRecords);
    let full = entries.iter().position(|&n| n == 500);
    let Some(full) = full else {
        panic!("a full call: {entries:?}")
    };
    assert!(
        entries[full + 1..].iter().all(|&n| n <= 250),
        "after the timeout, calls of at most half as many; answered in more than a quarter of the timeout, they do not grow: {entries:?}"
    );
    // The timed-out call's records were written before its answer was lost: those are the
    // only repeats, and each submission's events keep their order.
    let written = rig.stream_events();
    for sent in &slow {
        assert!(in_order_subsequence(&written[&sent.submission_id], 300));
    }
    assert_eq!(written.values().map(Vec::len).sum::<usize>(), 1200 + 500);
    assert_eq!(
        rig.metric("telemetry_collector_put_records_calls_made_smaller_total{reason=\"timed_out\"}"),
        1.0
    );

    // Answered within a quarter of the timeout again: calls double back to full ones (records
    // pile up during a second's call).
    rig.fake.clear_faults();
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(1));
    let calls_before = entries.len();
    let fast: Vec<_> = (5..=8).map(|n| rig.send(n, 300)).collect();
    rig.wait_until_queue_empty().await;
    let entries = rig.fake.entries(Op::PutRecords);
    assert_eq!(
        entries[calls_before..].iter().max(),
        Some(&500),
        "calls grow back to full: {:?}",
        &entries[calls_before..]
    );
    for sent in &fast {
        assert_eq!(rig.stream_events()[&sent.submission_id], (0..300).collect::<Vec<u64>>());
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn calls_made_smaller_grow_back_only_on_quick_answers_to_calls_that_filled_them() {
    let rig = Rig::start(&[ONE_LANE]).await;
    // A lost answer: the call of one record times out, and calls are made smaller (one
    // record); the resend fills that and is answered at once, so they may carry two.
    rig.fake.lose_answers(Op::PutRecords, 1);
    let mut sent = vec![rig.send(1, 1)];
    rig.wait_until_queue_empty().await;
    assert_eq!(rig.fake.entries(Op::PutRecords), [1, 1]);
    // A trickle, answered at once, in calls of one record: none fills two, so none grows them.
    for n in 2..=6 {
        sent.push(rig.send(n, 1));
        rig.wait_until_queue_empty().await;
    }
    let before_burst = rig.fake.entries(Op::PutRecords).len();
    assert_eq!(before_burst, 7);

    // A burst, each call taking 100 ms so that records wait: calls start at two records and
    // double as each fills and is answered within a quarter of the timeout.
    rig.fake.set_latency(Op::PutRecords, Duration::from_millis(100));
    sent.extend((7..=10).map(|n| rig.send(n, 300)));
    rig.wait_until_queue_empty().await;
    let burst = rig.fake.entries(Op::PutRecords)[before_burst..].to_vec();
    assert!(burst[0] <= 2, "the first call of the burst: {burst:?}");
    for pair in burst.windows(2) {
        assert!(pair[1] <= (pair[0] * 2).max(2), "calls at most double: {burst:?}");
    }
    assert_eq!(burst.iter().max(), Some(&500), "and grow back to full: {burst:?}");
    // Once and in order, but for the record whose answer was lost: it was written twice.
    let written = rig.stream_events();
    assert_eq!(written[&sent[0].submission_id], [0, 0]);
    for submission in &sent[1..] {
        let expected: Vec<u64> = (0..submission.events as u64).collect();
        assert_eq!(written[&submission.submission_id], expected);
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_dead_letter_queue_a_refused_submission_stays_in_the_queue_for_its_redrive_policy() {
    let rig = Rig::start(&[ONE_LANE]).await;
    let sent: Vec<_> = (1..=3).map(|n| rig.send(n, 5)).collect();
    let refused_id = sent[1].submission_id.clone();
    rig.fake
        .refuse_records(move |data| String::from_utf8_lossy(data).contains(&refused_id));
    rig.wait_until("the others are deleted", |rig| {
        rig.fake.queue_counts(&rig.queue).deleted == 2
    })
    .await;

    exactly_once_in_order(&rig, &[sent[0].clone(), sent[2].clone()]);
    assert_eq!(
        rig.fake.bodies(&rig.queue),
        [telemetry_fleet::generate::valid(2, 5, 0, false).0]
    );
    assert!(rig.fake.bodies(&rig.dead_letter).is_empty());
    assert_eq!(rig.metric("telemetry_collector_submissions_refused_total"), 1.0);
    rig.stop().await;
}
