//! The metrics an operator scrapes count exactly what was sent.

use std::collections::HashMap;

use telemetry_fleet::generate;

use crate::rig::{Op, Rig, exactly_once_in_order};

#[tokio::test(start_paused = true)]
async fn the_metrics_count_exactly_what_was_sent() {
    let rig = Rig::start(&[]).await;
    // Valid submissions of 0 to 5 events, and one invalid submission of every class.
    let valid: Vec<_> = (0..=5).map(|n| rig.send(n + 1, n as usize)).collect();
    let invalid = generate::invalid_of_every_class(4);
    for (_, body, _) in &invalid {
        rig.fake.send(&rig.queue, body);
    }
    let total = (valid.len() + invalid.len()) as f64;
    rig.wait_until("every message deleted", |rig| {
        rig.metric("telemetry_collector_deletes_total{outcome=\"ok\"}") == total
    })
    .await;

    let events: usize = valid.iter().map(|s| s.events).sum();
    let with_events = valid.iter().filter(|s| s.events > 0).count() as f64;
    let exact = [
        ("telemetry_collector_messages_received_total", total),
        ("telemetry_collector_submissions_valid_total", valid.len() as f64),
        ("telemetry_collector_submissions_invalid_total", invalid.len() as f64),
        ("telemetry_collector_events_published_total", events as f64),
        ("telemetry_collector_event_latency_seconds_count", events as f64),
        (
            "telemetry_collector_submission_queue_to_stream_seconds_count",
            with_events,
        ),
        (
            "telemetry_collector_submission_sensor_to_stream_seconds_count",
            with_events,
        ),
        ("telemetry_collector_deletes_total{outcome=\"failed\"}", 0.0),
        ("telemetry_collector_deletes_total{outcome=\"expired\"}", 0.0),
        ("telemetry_collector_deletes_retried_total", 0.0),
        ("telemetry_collector_records_retried_total", 0.0),
        ("telemetry_collector_put_records_calls_made_smaller_total", 0.0),
        ("telemetry_collector_put_records_calls_total{outcome=\"error\"}", 0.0),
        ("telemetry_collector_receive_errors_total", 0.0),
        ("telemetry_collector_messages_in_flight", 0.0),
        ("telemetry_collector_events_in_flight", 0.0),
        ("telemetry_collector_in_flight_bytes", 0.0),
        ("telemetry_collector_messages_awaiting_delete", 0.0),
    ];
    for (series, value) in exact {
        assert_eq!(rig.metric(series), value, "{series}");
    }
    let puts = rig.fake.calls(Op::PutRecords).len() as f64;
    assert_eq!(
        rig.metric("telemetry_collector_put_records_calls_total{outcome=\"ok\"}"),
        puts
    );
    let mut by_reason: HashMap<&str, f64> = HashMap::new();
    for (reason, _, _) in &invalid {
        *by_reason.entry(reason).or_default() += 1.0;
    }
    for (reason, count) in by_reason {
        let series = format!("telemetry_collector_submissions_invalid_total{{reason=\"{reason}\"}}");
        assert_eq!(rig.metric(&series), count, "{series}");
    }
    exactly_once_in_order(&rig, &valid);
    rig.stop().await;
}
