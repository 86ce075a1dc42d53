//! The in-flight caps: what is held at once while Kinesis cannot keep up, messages waiting
//! behind the byte cap, and what a receive asks for.

use std::time::Duration;

use tokio::time::Instant;

use crate::rig::{Op, Rig, STREAM, exactly_once_in_order};

/// The largest values the in-flight gauges took, as an operator scraping them would see.
#[derive(Debug, Default)]
struct Peaks {
    messages: f64,
    bytes: f64,
}

impl Peaks {
    fn sample(&mut self, rig: &Rig) {
        self.messages = self.messages.max(rig.metric("telemetry_collector_messages_in_flight"));
        self.bytes = self.bytes.max(rig.metric("telemetry_collector_in_flight_bytes"));
    }
}

/// Samples the gauges every 10 ms of virtual time for `how_long`.
async fn sample_for(rig: &Rig, peaks: &mut Peaks, how_long: Duration) {
    let until = Instant::now() + how_long;
    rig.wait_until("the sampling period ends", |rig| {
        peaks.sample(rig);
        Instant::now() >= until
    })
    .await;
}

/// Samples the gauges until every message is deleted.
async fn sample_until_queue_empty(rig: &Rig, peaks: &mut Peaks) {
    rig.wait_until("every message is deleted", |rig| {
        peaks.sample(rig);
        let counts = rig.fake.queue_counts(&rig.queue);
        counts.visible + counts.in_flight == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn while_kinesis_is_slow_messages_in_flight_never_exceed_their_cap_and_all_are_published_once_it_is_fast_again() {
    const CAP: f64 = 20.0;
    let rig = Rig::start(&[("MAX_IN_FLIGHT_MESSAGES", "20")]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(5));
    let sent: Vec<_> = (1..=100).map(|n| rig.send(n, 2)).collect();
    let mut peaks = Peaks::default();
    rig.wait_until("the message cap is reached", |rig| {
        peaks.sample(rig);
        peaks.messages >= CAP
    })
    .await;
    sample_for(&rig, &mut peaks, Duration::from_secs(10)).await;

    assert!(peaks.messages <= CAP, "{} messages in flight", peaks.messages);
    let received = rig.metric("telemetry_collector_messages_received_total");
    assert!(received < 100.0, "receiving did not pause: {received} received");
    rig.fake.clear_faults();
    sample_until_queue_empty(&rig, &mut peaks).await;
    assert!(peaks.messages <= CAP, "{} messages in flight", peaks.messages);
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn while_kinesis_is_slow_in_flight_bytes_stay_under_their_cap_and_all_are_published_once_it_is_fast_again() {
    const CAP: f64 = 1_048_576.0;
    let rig = Rig::start(&[("MAX_IN_FLIGHT_BYTES", "1048576")]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(5));
    // 60 events make about 29 KB of records: the byte cap binds at about 30 messages (the next
    // one's decoding is reserved too), long before the message cap (2000).
    let sent: Vec<_> = (1..=80).map(|n| rig.send(n, 60)).collect();
    let mut peaks = Peaks::default();
    rig.wait_until("the byte cap is nearly reached", |rig| {
        peaks.sample(rig);
        peaks.bytes > CAP * 0.75
    })
    .await;
    sample_for(&rig, &mut peaks, Duration::from_secs(10)).await;

    assert!(peaks.bytes <= CAP, "{} bytes in flight", peaks.bytes);
    rig.fake.clear_faults();
    sample_until_queue_empty(&rig, &mut peaks).await;
    assert!(peaks.bytes <= CAP, "{} bytes in flight", peaks.bytes);
    exactly_once_in_order(&rig, &sent);
    // What the gauge counts: per record its data and 64 bytes of bookkeeping, per message its
    // partition key once (its events share it).
    let records = rig.fake.records(STREAM);
    let keys: std::collections::HashSet<&str> = records.iter().map(|r| r.partition_key.as_str()).collect();
    let record_bytes: usize =
        records.iter().map(|r| r.data.len() + 64).sum::<usize>() + keys.iter().map(|k| k.len()).sum::<usize>();
    let per_message = record_bytes as f64 / sent.len() as f64;
    assert!(
        peaks.messages * per_message > CAP,
        "the cap held messages back: at most {} in flight, of {per_message} bytes each",
        peaks.messages
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_waiting_behind_a_full_byte_cap_keeps_every_message_hidden() {
    // One receive of four messages (the body budget holds four of the queue's largest
    // bodies): three so large that decoding each takes the whole byte cap, so they go through
    // one at a time, then a small one. Each waits for the calls of those before it, 8 s each,
    // several visibility timeouts in all.
    let rig = Rig::start(&[
        ("QUEUE_RECEIVERS", "1"),
        ("MAX_IN_FLIGHT_BYTES", "1048576"),
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
    ])
    .await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(8));
    let mut sent: Vec<_> = (1..=3).map(|n| rig.send(n, 400)).collect();
    sent.push(rig.send(4, 1));
    rig.wait_until("the batch is received", |rig| {
        rig.metric("telemetry_collector_messages_received_total") == 4.0
    })
    .await;
    let received_at = Instant::now();
    rig.wait_until("every message is deleted", |rig| {
        let counts = rig.fake.queue_counts(&rig.queue);
        assert_eq!(counts.visible, 0, "a message became visible while it waited");
        counts.in_flight == 0
    })
    .await;

    let took = received_at.elapsed();
    assert!(
        took >= Duration::from_secs(20),
        "the last one waited {took:?}, less than four visibility timeouts"
    );
    let deliveries: Vec<usize> = rig.fake.deliveries().iter().map(|c| c.entries).collect();
    assert_eq!(deliveries, [4], "one receive brought them all, and none came back");
    assert_eq!(rig.metric("telemetry_collector_messages_expired_total"), 0.0);
    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}"), 4.0);
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_receive_asks_for_no_more_messages_than_the_body_budget_holds_at_the_queues_largest_size() {
    // A budget of 1 MiB holds four bodies of the queue's MaximumMessageSize (256 KiB).
    let rig = Rig::start(&[("QUEUE_RECEIVERS", "1"), ("MAX_IN_FLIGHT_BYTES", "1048576")]).await;
    let sent: Vec<_> = (1..=10).map(|n| rig.send(n, 1)).collect();
    rig.wait_until_queue_empty().await;

    let answered: Vec<usize> = rig.fake.deliveries().iter().map(|c| c.entries).collect();
    assert_eq!(answered, [4, 4, 2], "messages per receive");
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_large_submission_gives_back_its_share_of_the_byte_cap_as_its_events_are_published() {
    // 3,000 events make about 1.4 MB of records, in buffers of at most 64 KiB: each buffer's
    // bytes go back to the cap with its last record, long before the message is finished.
    let rig = Rig::start(&[("MAX_IN_FLIGHT_BYTES", "16777216")]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(1));
    let sent = rig.send(1, 3000);
    let mut held_at_start = 0.0;
    rig.wait_until("the message holds its records' bytes", |rig| {
        held_at_start = rig.metric("telemetry_collector_in_flight_bytes");
        held_at_start > 1_000_000.0
    })
    .await;
    rig.wait_until("a third of its events are published", |rig| {
        rig.metric("telemetry_collector_events_published_total") >= 1000.0
    })
    .await;
    let published = rig.metric("telemetry_collector_events_published_total");
    let held = rig.metric("telemetry_collector_in_flight_bytes");
    assert!(
        published < 3000.0,
        "the message was finished before it could be looked at"
    );
    assert!(
        held < held_at_start * (1.0 - 0.8 * published / 3000.0),
        "{held} bytes still held of {held_at_start} with {published} of 3000 events published"
    );
    assert!(held > 0.0, "the unpublished events' bytes are still held");
    rig.wait_until_queue_empty().await;
    assert_eq!(rig.metric("telemetry_collector_in_flight_bytes"), 0.0);
    exactly_once_in_order(&rig, &[sent]);
    rig.stop().await;
}
