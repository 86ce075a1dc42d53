//! The sizing table of docs/operations.md: replicas, shards, SQS and Kinesis calls per second and
//! the monthly AWS cost of each part, for 10k, 100k and 1M events/s.
//!
//! What it measures itself: the submissions of the round-trip benchmark (sensor-fleet, at most
//! 12 events each, seed 1; `SIZING_SUBMISSIONS`, 12,000), decoded and exploded as the collector
//! does it, for the events per submission, the body bytes per message and the record bytes
//! (data + partition key) per event. What it takes from docs/performance.md (constants below,
//! each with its source): the events/s of one replica at 30 and 80 ms round trips (`round_trip`),
//! ReceiveMessage and DeleteMessageBatch calls per message and records per PutRecords call under
//! load (`ceiling`). Prices: the constants below, AWS's published us-east-1 prices as assumed on
//! the date in docs/operations.md. `cargo bench --bench sizing` prints the figures and the
//! table (Markdown). No timing is measured.

use chrono::Utc;
use telemetry_fleet::generate::{Fleet, FleetSettings};
use telemetry_format::event::{self, PartitionKey};
use telemetry_format::submission::{self, TimeBounds};

/// Events/s of one replica with 30 and 80 ms added to every call (`round_trip` with the current
/// defaults and code, 24,000 submissions: the means of 12 and 14 runs, which ranged
/// 9,353-15,473 and 10,426-14,709).
const REPLICA_EVENTS_PER_S: [(u32, f64); 2] = [(30, 13_598.0), (80, 13_581.0)];
/// `ceiling`: 3,484 ReceiveMessage and 3,452 DeleteMessageBatch calls for 34,519 messages, and
/// no visibility changes (every message done within its first visibility timeout).
const RECEIVES_PER_MESSAGE: f64 = 3_484.0 / 34_519.0;
const DELETES_PER_MESSAGE: f64 = 3_452.0 / 34_519.0;
const VISIBILITY_CHANGES_PER_MESSAGE: f64 = 0.0;
/// `ceiling`: 2,175-2,216 PutRecords calls for 1,000,002 records (451-460 records each): a
/// lane sends when it is free, and waits for a full call only after a nearly full one.
const RECORDS_PER_PUT: f64 = 455.0;
/// A replica's lanes (`DATA_STREAM_CONCURRENCY`, 8) each send at least every
/// `DATA_STREAM_FLUSH_INTERVAL_SEC` (1 s) while records come in.
const LANES: f64 = 8.0;
/// The middle of the default band (30–80%), where the supervisor aims.
const TARGET_UTILISATION: f64 = 0.55;
const SHARD_RECORDS_PER_S: f64 = 1000.0;
const SHARD_BYTES_PER_S: f64 = 1_048_576.0;

/// Prices, us-east-1 (see docs/operations.md for the date).
const HOURS_PER_MONTH: f64 = 730.0;
const SQS_PER_MILLION_REQUESTS: f64 = 0.40;
const SQS_CHUNK_BYTES: f64 = 65_536.0;
const KINESIS_SHARD_HOUR: f64 = 0.015;
const KINESIS_PER_MILLION_PUT_UNITS: f64 = 0.014;
const KINESIS_PUT_UNIT_BYTES: f64 = 25.0 * 1024.0;
const CLOUDWATCH_PER_THOUSAND_METRICS: f64 = 0.01;
/// The supervisor's GetMetricData: 3 metrics of the stream, once a minute (default interval).
const SUPERVISOR_METRICS_PER_MONTH: f64 = 3.0 * 60.0 * HOURS_PER_MONTH;
/// Fargate, Linux/x86: $0.04048 per vCPU-hour and $0.004445 per GB-hour; a task of 0.25 vCPU and
/// 0.5 GB, as deploy/ecs/task-definition.json.
const TASK_HOUR: f64 = 0.25 * 0.04048 + 0.5 * 0.004445;

struct Mix {
    events_per_message: f64,
    body_bytes_per_message: f64,
    record_bytes_per_event: f64,
    largest_record: usize,
}

fn measure(submissions: usize) -> Mix {
    let mut fleet = Fleet::new(
        1,
        FleetSettings {
            max_events: 12,
            ..FleetSettings::default()
        },
    );
    let now = Utc::now();
    let bounds = TimeBounds::default();
    let time_processed = event::format_time_processed(now);
    let (mut events, mut body_bytes, mut record_bytes, mut largest) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..submissions {
        let generated = fleet.next(now.naive_utc());
        body_bytes += generated.body.len();
        let Ok(sub) = submission::decode(&generated.body, &bounds, now) else {
            continue;
        };
        let (key, records) =
            event::to_records(&sub, &time_processed, PartitionKey::SubmissionId, 1 << 20).expect("records");
        events += records.len();
        for record in &records {
            record_bytes += record.len() + key.len();
            largest = largest.max(record.len() + key.len());
        }
    }
    Mix {
        events_per_message: events as f64 / submissions as f64,
        body_bytes_per_message: body_bytes as f64 / submissions as f64,
        record_bytes_per_event: record_bytes as f64 / events.max(1) as f64,
        largest_record: largest,
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn dollars(x: f64) -> String {
    if x < 100.0 {
        format!("${x:.2}")
    } else {
        format!("${}", thousands(x))
    }
}

fn main() {
    let submissions: usize = std::env::var("SIZING_SUBMISSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000);
    let mix = measure(submissions);
    println!(
        "mix: {submissions} sensor-fleet submissions (at most 12 events, seed 1): {:.2} events per message, \
         {:.0} body bytes per message, {:.0} record bytes (data + key) per event, largest record {} bytes",
        mix.events_per_message, mix.body_bytes_per_message, mix.record_bytes_per_event, mix.largest_record
    );
    let seconds_per_month = HOURS_PER_MONTH * 3600.0;
    let receive_billed = (10.0 * mix.body_bytes_per_message / SQS_CHUNK_BYTES).ceil().max(1.0);
    println!(
        "a full ReceiveMessage answer (10 messages) is {:.0} bytes: billed as {receive_billed} request(s)",
        10.0 * mix.body_bytes_per_message
    );
    let put_units_per_record = (mix.largest_record as f64 / KINESIS_PUT_UNIT_BYTES).ceil().max(1.0);
    println!();
    println!(
        "| events/s | round trip | replicas (+1 supervisor) | shards | messages/s | ReceiveMessage/s | DeleteMessageBatch/s | ChangeMessageVisibilityBatch/s | PutRecords/s | SQS $/month | Kinesis shards $/month | Kinesis PUT units $/month | CloudWatch $/month | compute $/month | total $/month |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for rate in [10_000.0, 100_000.0, 1_000_000.0] {
        for (rtt, per_replica) in REPLICA_EVENTS_PER_S {
            // At least 2, and one more than the load needs, so that one can restart.
            let replicas = ((rate / per_replica).ceil() + 1.0).max(2.0);
            let bytes_per_s = rate * mix.record_bytes_per_event;
            let shards = (rate / SHARD_RECORDS_PER_S)
                .max(bytes_per_s / SHARD_BYTES_PER_S)
                .div_euclid(TARGET_UTILISATION)
                + 1.0;
            let messages = rate / mix.events_per_message;
            let receives = messages * RECEIVES_PER_MESSAGE;
            let deletes = messages * DELETES_PER_MESSAGE;
            let visibility = messages * VISIBILITY_CHANGES_PER_MESSAGE;
            let puts = (rate / RECORDS_PER_PUT).max(replicas * LANES);
            let sqs =
                (receives * receive_billed + deletes + visibility) * seconds_per_month / 1e6 * SQS_PER_MILLION_REQUESTS;
            let shard_cost = shards * HOURS_PER_MONTH * KINESIS_SHARD_HOUR;
            let put_cost = rate * put_units_per_record * seconds_per_month / 1e6 * KINESIS_PER_MILLION_PUT_UNITS;
            let cloudwatch = SUPERVISOR_METRICS_PER_MONTH / 1000.0 * CLOUDWATCH_PER_THOUSAND_METRICS;
            let compute = (replicas + 1.0) * TASK_HOUR * HOURS_PER_MONTH;
            let total = sqs + shard_cost + put_cost + cloudwatch + compute;
            println!(
                "| {} | {rtt} ms | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(rate),
                thousands(replicas),
                thousands(shards),
                thousands(messages),
                thousands(receives),
                thousands(deletes),
                thousands(visibility),
                thousands(puts),
                dollars(sqs),
                dollars(shard_cost),
                dollars(put_cost),
                dollars(cloudwatch),
                dollars(compute),
                dollars(total),
            );
        }
    }
}
