//! The body budget: a receive reserves its answer's length when the headers arrive, so small
//! bodies from a queue that takes 1 MiB messages keep every receiver busy, and raw bodies
//! waiting to be decoded still stay within the budget.

use std::time::Duration;

use telemetry_fleet::generate;
use tokio::time::Instant;

use crate::rig::{Op, Rig, exactly_once_in_order};

#[tokio::test(start_paused = true)]
async fn small_bodies_from_a_queue_of_1_mib_messages_keep_every_receiver_asking_for_ten() {
    // The default budget (16 MiB) holds 16 bodies of 1 MiB: reserving that much per message
    // asked for would leave 16 messages in the air, whatever the bodies' real size.
    let latency = Duration::from_millis(500);
    let rig = Rig::start_with(&[], |fake, queue| fake.set_max_message_size(queue, 1_048_576)).await;
    rig.fake.set_latency(Op::ReceiveMessage, latency);
    let started = Instant::now();
    let sent: Vec<_> = (1..=200).map(|n| rig.send(n, 1)).collect();
    rig.wait_until("16 receivers brought 10 messages each", |rig| {
        rig.metric("telemetry_collector_messages_received_total") >= 160.0
    })
    .await;

    let took = started.elapsed();
    assert!(
        took < 2 * latency,
        "160 messages took {took:?}: more than one round trip of the receivers"
    );
    rig.wait_until_queue_empty().await;
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn while_decoding_waits_raw_bodies_received_stay_within_the_body_budget() {
    // Kinesis answers after an hour, so the first message's records hold the byte cap (1 MiB)
    // and no other message can be decoded: the rest wait as raw bodies, in the body budget
    // (also 1 MiB). Sixteen receivers, each with a ticket smaller than its answer, could bring
    // six times that.
    const EVENTS: usize = 1200;
    const BUDGET: usize = 1_048_576;
    let body_bytes = generate::valid(1, EVENTS, 0, false).0.len();
    let rig = Rig::start(&[("QUEUE_RECEIVERS", "16"), ("MAX_IN_FLIGHT_BYTES", "1048576")]).await;
    rig.fake.set_latency(Op::PutRecords, Duration::from_secs(3600));
    let sent: Vec<_> = (1..=14).map(|n| rig.send(n, EVENTS)).collect();
    rig.wait_until("the first message's records are sent", |rig| {
        !rig.fake.calls(Op::PutRecords).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;

    let received = rig.metric("telemetry_collector_messages_received_total") as usize;
    let waiting = received - 1;
    assert!(
        waiting * body_bytes <= BUDGET,
        "{waiting} bodies of {body_bytes} bytes wait to be decoded, more than the budget's {BUDGET} bytes"
    );
    assert!(
        waiting >= 2,
        "only {waiting} bodies wait: receiving stopped before the budget was used"
    );
    rig.fake.set_latency(Op::PutRecords, Duration::ZERO);
    rig.wait_until_queue_empty().await;
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}
