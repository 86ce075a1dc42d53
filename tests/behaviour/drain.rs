//! Shutdown: no receive after the signal, what the drain gives back and finishes, and what it
//! leaves in the queue once its deadline has passed.

use std::time::Duration;

use telemetry_collector::metrics::Metrics;
use tokio::time::Instant;

use crate::rig::{AwsError, Op, Rig};

/// The visibility a message given back at shutdown gets: the long polls' 2 s grace and a second.
const GIVEN_BACK_FOR: Duration = Duration::from_secs(3);

/// A series of a collector already stopped (`Rig::stop` takes the rig), read from its
/// Prometheus text as `Rig::metric` does.
fn scraped(metrics: &Metrics, series: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} is not exported"))
}

/// One lane of four records per call, so that few messages are started; a visibility long
/// enough that a message not given back stays hidden until the test ends; a drain of `drain`.
async fn twenty_messages_on_a_stuck_lane(drain: &str, extra: &[(&str, &str)]) -> Rig {
    let mut settings = vec![
        ("DATA_STREAM_CONCURRENCY", "1"),
        ("DATA_STREAM_MAX_BUFFER_SIZE", "4"),
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "120"),
        ("SHUTDOWN_DRAIN_TIMEOUT_SEC", drain),
    ];
    settings.extend_from_slice(extra);
    Rig::start(&settings).await
}

/// Sends twenty messages to `rig` while PutRecords is black-holed, and stops it once all are
/// received and a call is under way; checks what its 5 s drain left.
async fn stop_with_put_records_black_holed(rig: Rig) {
    rig.fake.set_black_hole(Op::PutRecords, true);
    for n in 1..=20 {
        rig.send(n, 1);
    }
    rig.wait_until("every message received and a PutRecords call under way", |rig| {
        rig.metric("telemetry_collector_messages_received_total") == 20.0 && !rig.fake.calls(Op::PutRecords).is_empty()
    })
    .await;
    stop_past_the_deadline_and_check(rig, Duration::from_secs(5)).await;
}

/// Stops `rig` while none of its records can be written, and checks what the drain left: it
/// ended at its deadline, deleted and published nothing, gave back every message none of whose
/// records was in a PutRecords call, and left the started ones hidden.
async fn stop_past_the_deadline_and_check(rig: Rig, drain: Duration) {
    let (fake, queue, metrics) = (rig.fake.clone(), rig.queue.clone(), rig.metrics.clone());
    let stopping_at = Instant::now();
    rig.stop().await;

    let took = stopping_at.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_millis(100),
        "stopped {took:?} after the signal, with a drain of {drain:?}"
    );
    assert!(fake.records(crate::rig::STREAM).is_empty());
    assert!(fake.calls(Op::DeleteMessageBatch).is_empty(), "nothing deleted");
    // Every call retries the same records: the largest call holds every message started.
    let started = fake
        .entries(Op::PutRecords)
        .into_iter()
        .max()
        .expect("a PutRecords call");
    assert!((1..20).contains(&started), "{started} messages started");
    // A message is given back for 3 s, longer than the long polls' shutdown grace: none of
    // them receives it again, so receipts and messages are the same count.
    let received = scraped(&metrics, "telemetry_collector_messages_received_total");
    let given_back = scraped(
        &metrics,
        "telemetry_collector_messages_given_back_total{outcome=\"ok\"}",
    );
    assert_eq!(
        received - given_back,
        started as f64,
        "every receipt but the started messages' was given back"
    );
    // Given back with a visibility of 3 s: visible once this replica's last long polls are over.
    tokio::time::sleep(GIVEN_BACK_FOR).await;
    let counts = fake.queue_counts(&queue);
    assert_eq!(
        (counts.visible, counts.in_flight, counts.deleted),
        (20 - started, started, 0),
        "(visible, hidden, deleted) once stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_drain_deadline_with_put_records_failing_nothing_unpublished_is_deleted_and_unstarted_messages_are_given_back()
 {
    let rig = twenty_messages_on_a_stuck_lane("2", &[]).await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    for n in 1..=20 {
        rig.send(n, 1);
    }
    rig.wait_until("every message received and a PutRecords call failed", |rig| {
        rig.metric("telemetry_collector_messages_received_total") == 20.0
            && rig.metric("telemetry_collector_put_records_calls_total{outcome=\"error\"}") >= 1.0
    })
    .await;
    stop_past_the_deadline_and_check(rig, Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn past_the_drain_deadline_with_put_records_black_holed_nothing_unpublished_is_deleted_and_unstarted_messages_are_given_back()
 {
    // The call under way at shutdown times out within the drain; the lane then gives back what
    // it has not sent, and its retries of the rest time out until the deadline.
    let rig = twenty_messages_on_a_stuck_lane("5", &[("AWS_CALL_TIMEOUT_SEC", "2")]).await;
    stop_with_put_records_black_holed(rig).await;
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_is_signalled_no_new_receive_starts() {
    // One lane with room for one record, stuck in a call that is never answered: every
    // receiver waits to hand its batch over. During the drain the lane gives the unsent
    // messages back, which lets each receiver finish its batch with room to receive again.
    let rig = Rig::start(&[
        ("QUEUE_RECEIVERS", "4"),
        ("DATA_STREAM_CONCURRENCY", "1"),
        ("DATA_STREAM_MAX_BUFFER_SIZE", "1"),
        ("AWS_CALL_TIMEOUT_SEC", "2"),
        ("SHUTDOWN_DRAIN_TIMEOUT_SEC", "3"),
        ("QUEUE_WAIT_TIME_SEC", "1"),
    ])
    .await;
    rig.fake.set_black_hole(Op::PutRecords, true);
    for n in 1..=60 {
        rig.send(n, 1);
    }
    rig.wait_until("every receiver holds a full batch", |rig| {
        rig.metric("telemetry_collector_messages_received_total") == 40.0
    })
    .await;
    let (fake, queue) = (rig.fake.clone(), rig.queue.clone());
    let metrics = rig.metrics.clone();
    let receives_before = fake.calls(Op::ReceiveMessage).len();
    rig.stop().await;

    assert_eq!(
        fake.calls(Op::ReceiveMessage).len(),
        receives_before,
        "a receive started after shutdown was signalled"
    );
    assert_eq!(
        scraped(
            &metrics,
            "telemetry_collector_messages_given_back_total{outcome=\"ok\"}"
        ),
        39.0,
        "every message received but the one in the swallowed call was given back: the receivers were free again"
    );
    let counts = fake.queue_counts(&queue);
    assert_eq!(counts.visible + counts.in_flight, 60, "nothing unpublished is deleted");
}

#[tokio::test(start_paused = true)]
async fn a_receive_answered_during_the_shutdown_grace_has_its_messages_given_back_within_seconds() {
    let rig = Rig::start(&[("QUEUE_RECEIVERS", "1")]).await;
    // Set before the collector runs: every receive answers a second after it takes messages,
    // so the one under way at shutdown has taken its message but not yet answered.
    rig.fake.set_latency(Op::ReceiveMessage, Duration::from_secs(2));
    rig.wait_for_call(Op::ReceiveMessage, "the first long poll is waiting")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = rig.send(1, 2);
    let (fake, queue, metrics) = (rig.fake.clone(), rig.queue.clone(), rig.metrics.clone());
    rig.stop().await;

    assert_eq!(scraped(&metrics, "telemetry_collector_messages_received_total"), 1.0);
    let given_back: Vec<_> = fake
        .visibility_changes()
        .into_iter()
        .filter(|c| c.timeout == GIVEN_BACK_FOR)
        .map(|c| c.message_id)
        .collect();
    assert_eq!(given_back, [sent.message_id]);
    tokio::time::sleep(GIVEN_BACK_FOR).await;
    assert_eq!(
        fake.queue_counts(&queue).visible,
        1,
        "visible again within seconds, not after its visibility timeout"
    );
    assert!(fake.calls(Op::PutRecords).is_empty(), "nothing of it was sent");
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_finished_messages_are_deleted_without_waiting_for_the_delete_interval() {
    let rig = Rig::start(&[("QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC", "30")]).await;
    let sent = rig.send(1, 3);
    rig.wait_until("its events are published", |rig| {
        rig.metric("telemetry_collector_events_published_total") == 3.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        rig.fake.calls(Op::DeleteMessageBatch).is_empty(),
        "the deleter waits for a fuller batch while running"
    );
    let (fake, queue, metrics) = (rig.fake.clone(), rig.queue.clone(), rig.metrics.clone());
    let stopping_at = Instant::now();
    rig.stop().await;

    let deletes = fake.calls(Op::DeleteMessageBatch);
    assert_eq!(deletes.len(), 1);
    // The receivers' idle long polls get their shutdown grace (2 s) before the deleter's input
    // closes; far sooner than the 20 s of interval left.
    assert!(
        deletes[0].at - stopping_at <= Duration::from_secs(2),
        "deleted {:?} after the signal",
        deletes[0].at - stopping_at
    );
    assert_eq!(fake.queue_counts(&queue).deleted, 1);
    assert_eq!(
        scraped(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(fake.records(crate::rig::STREAM).len(), sent.events);
}

/// A receiver waiting for room in the byte cap watches for shutdown: while the started message
/// cannot be written, the messages of its batch that wait behind it are given back, not left
/// hidden for their whole visibility timeout.
#[tokio::test(start_paused = true)]
async fn past_the_drain_deadline_messages_waiting_for_the_byte_cap_are_given_back() {
    // One receive of four: three whose decoding takes the whole cap, so that only the first
    // goes through, and a small one behind them.
    let rig = Rig::start(&[
        ("QUEUE_RECEIVERS", "1"),
        ("MAX_IN_FLIGHT_BYTES", "1048576"),
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "120"),
        ("SHUTDOWN_DRAIN_TIMEOUT_SEC", "2"),
    ])
    .await;
    rig.fake.fail_calls(Op::PutRecords, usize::MAX, AwsError::internal());
    for n in 1..=3 {
        rig.send(n, 400);
    }
    rig.send(4, 1);
    rig.wait_until("the batch is received and a PutRecords call failed", |rig| {
        rig.metric("telemetry_collector_messages_received_total") == 4.0
            && rig.metric("telemetry_collector_put_records_calls_total{outcome=\"error\"}") >= 1.0
    })
    .await;
    let (fake, queue, metrics) = (rig.fake.clone(), rig.queue.clone(), rig.metrics.clone());
    rig.stop().await;

    assert_eq!(
        scraped(
            &metrics,
            "telemetry_collector_messages_given_back_total{outcome=\"ok\"}"
        ),
        3.0
    );
    tokio::time::sleep(GIVEN_BACK_FOR).await;
    let counts = fake.queue_counts(&queue);
    assert_eq!(
        (counts.visible, counts.in_flight),
        (3, 1),
        "(visible, hidden) once stopped"
    );
}

/// A lane sees shutdown while its call is under way: with a drain shorter than the call timeout
/// (both allowed), a lane in a call never answered still gives back what waits behind it.
#[tokio::test(start_paused = true)]
async fn past_a_drain_deadline_shorter_than_the_call_timeout_unstarted_messages_are_given_back() {
    // The default call timeout (10 s) outlasts the drain.
    let rig = twenty_messages_on_a_stuck_lane("5", &[]).await;
    stop_with_put_records_black_holed(rig).await;
}
