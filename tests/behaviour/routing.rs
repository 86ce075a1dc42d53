//! Where a submission's events go: the partition key, and a submission with none.

use std::collections::{BTreeMap, BTreeSet};

use telemetry_fleet::generate;

use crate::rig::{Op, Rig, STREAM, exactly_once_in_order};

#[tokio::test(start_paused = true)]
async fn keyed_by_device_id_a_submissions_events_carry_its_device_id_in_order_and_a_devices_submissions_share_a_shard()
{
    let rig = Rig::start(&[("DATA_STREAM_PARTITION_KEY", "device_id")]).await;
    // The generator's device ids repeat every 50 submissions: two devices, five submissions.
    let numbers = [1, 51, 101, 2, 52];
    let sent: Vec<_> = numbers.iter().map(|&n| rig.send(n, 4)).collect();
    let device_of: BTreeMap<String, String> = numbers
        .iter()
        .map(|&n| {
            let (_, expected) = generate::valid(n, 4, 0, false);
            (expected.submission_id, expected.device_id)
        })
        .collect();
    rig.wait_until_queue_empty().await;

    exactly_once_in_order(&rig, &sent);
    let mut shards_of_device: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in rig.fake.records(STREAM) {
        let event = record.json();
        let device = &device_of[event["submission_id"].as_str().unwrap_or_default()];
        // Odd submissions spell the id in upper case; the key is the canonical lower case.
        assert_eq!(&record.partition_key, device, "the partition key is the device id");
        assert_eq!(event["device_id"], device.as_str());
        shards_of_device
            .entry(device.clone())
            .or_default()
            .insert(record.shard_id);
    }
    assert_eq!(shards_of_device.len(), 2, "two devices");
    for (device, shards) in shards_of_device {
        assert_eq!(shards.len(), 1, "device {device} on shards {shards:?}");
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_valid_submission_without_events_is_deleted_without_a_put_records_call() {
    let rig = Rig::start(&[]).await;
    rig.send(1, 0);
    rig.wait_until_queue_empty().await;

    assert!(rig.fake.calls(Op::PutRecords).is_empty());
    assert_eq!(rig.metric("telemetry_collector_submissions_valid_total"), 1.0);
    assert_eq!(rig.metric("telemetry_collector_submissions_invalid_total"), 0.0);
    assert_eq!(rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}"), 1.0);
    rig.stop().await;
}
