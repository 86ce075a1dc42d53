//! The collector's per-shard tally against a real Kinesis emulator: each replica exports what
//! it wrote to each shard (for the dashboard's fleet-wide per-shard view), and decides nothing
//! from it: even with every shard supervisor setting at its most eager, a busy stream keeps its
//! shard count. Resizing is the shard supervisor's (`supervise` mode, tests/supervise.rs).

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::checks::{verify, wait_for_events, wait_for_queue_empty};
use support::submissions::{self, Expected};
use support::{CollectorHarness, TestEnv, create_stream_with, free_port, http_get, sample, sigterm, stream_summary};

/// A stream of this test's own, with `shards` shards, waited for until ACTIVE.
async fn create_stream(env: &TestEnv, label: &str, shards: u32) -> String {
    let name = format!("events-{label}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    create_stream_with(&env.kinesis, &name, Some(shards)).await;
    name
}

/// (status, open shards) of a stream.
async fn summary(env: &TestEnv, stream: &str) -> (String, i32) {
    stream_summary(&env.kinesis, stream).await
}

async fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or(0.0)
}

/// Sum of a per-shard family's samples.
fn sum_over_shards(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{shard=")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn load(salt: u64, count: u64) -> (Vec<String>, Vec<Expected>) {
    (0..count)
        .map(|n| submissions::valid(salt + n, 3 + (n % 4) as usize, 2, n % 2 == 0))
        .unzip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_is_tallied_and_the_collector_never_resizes_a_busy_stream() {
    let base = TestEnv::new("tally").await;
    let stream = create_stream(&base, "tally", 1).await;
    let env = base.retarget(&base.queue_url, &stream);
    let addr = format!("127.0.0.1:{}", free_port());
    // What made the collector resize a busy stream before the supervisor was its own mode.
    let mut collector = env.spawn_binary(
        &[
            ("HTTP_LISTEN_ADDRESS", addr.as_str()),
            ("SHARD_SUPERVISOR_INTERVAL_SEC", "1"),
            ("SHARD_SUPERVISOR_WINDOWS", "1"),
            ("SHARD_UTILISATION_TARGET_LOW", "0"),
            ("SHARD_UTILISATION_TARGET_HIGH", "0.1"),
            ("SHARD_AUTOSCALE_ENABLED", "true"),
            ("SHARD_COUNT_MAX", "4"),
            ("SHARD_RESIZE_COOLDOWN_SEC", "0"),
        ],
        "shard-tally",
    );
    let addr: SocketAddr = addr.parse().unwrap();

    let (bodies, expected) = load(50_000, 150);
    for chunk in bodies.chunks(30) {
        env.send(chunk).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(60)).await;

    let text = scrape(addr).await;
    let events: usize = expected.iter().map(|e| e.events.len()).sum();
    assert_eq!(
        value(&text, "telemetry_collector_events_published_total"),
        events as f64
    );
    // Each shard's tally is what the shard holds (no failures, so no resends).
    let mut held: HashMap<String, f64> = HashMap::new();
    for r in env.read_stream().await {
        *held.entry(r.shard_id).or_default() += 1.0;
    }
    for (shard, records) in &held {
        let series = sample(
            &text,
            &format!("telemetry_collector_shard_records_published_total{{shard=\"{shard}\"}}"),
        );
        assert_eq!(series, Some(*records), "records tallied for {shard}:\n{text}");
    }
    assert_eq!(
        sum_over_shards(&text, "telemetry_collector_shard_records_published_total"),
        events as f64
    );
    // Each record's bytes include its 36-character partition key.
    assert!(sum_over_shards(&text, "telemetry_collector_shard_published_bytes_total") > events as f64 * 36.0);
    // Nothing of the supervisor is left in the collector.
    assert!(!text.contains("shard_supervisor") && !text.contains("resize"), "{text}");

    sigterm(&collector);
    assert!(collector.wait().await.expect("exit").success());
    assert_eq!(summary(&env, &env.stream_name).await, ("ACTIVE".to_owned(), 1));
    verify(&env.read_stream().await, &expected, true);
}
