//! The shard capacity supervisor against a real Kinesis emulator: with resizing enabled it
//! raises a busy provisioned stream's shard count within its bounds while every event still
//! arrives complete and in order; with resizing off it only recommends; an on-demand stream is
//! never resized.
//!
//! The emulator takes a few hundred records per second, far below a shard's 1,000 records/s,
//! so the tests drive the target band down (0%-0.1%, i.e. above 1 record/s is "too busy")
//! instead of changing the limits the utilisation is computed against.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails};
use serde_json::Value;
use support::checks::{verify, wait_for_events, wait_for_queue_empty};
use support::submissions::{self, Expected};
use support::{CollectorHarness, StreamRecord, TestEnv, free_port, http_get, sample, send_to, sigterm, wait_until};

/// Settings that make the emulator's trickle of records "above the band" within two seconds.
const BUSY_BAND: &[(&str, &str)] = &[
    ("SHARD_SUPERVISOR_INTERVAL_SEC", "1"),
    ("SHARD_SUPERVISOR_WINDOWS", "2"),
    // A lower bound of 0 never counts as "below": no scaling down when the load ends.
    ("SHARD_UTILISATION_TARGET_LOW", "0"),
    ("SHARD_UTILISATION_TARGET_HIGH", "0.1"),
];

/// The collector binary with the busy band and `settings`, serving its metrics on a port of its
/// own; its log is `<log_name>.log`.
fn spawn_supervised(env: &TestEnv, log_name: &str, settings: &[(&str, &str)]) -> (tokio::process::Child, SocketAddr) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut overrides = vec![("HTTP_LISTEN_ADDRESS", addr.as_str())];
    overrides.extend_from_slice(BUSY_BAND);
    overrides.extend_from_slice(settings);
    let collector = env.spawn_binary(&overrides, log_name);
    (collector, addr.parse().unwrap())
}

/// A stream of this test's own, with `shards` shards or on-demand, waited for until ACTIVE.
async fn create_stream(env: &TestEnv, label: &str, mode: Option<u32>) -> String {
    let name = format!("events-{label}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let request = env.kinesis.create_stream().stream_name(&name);
    let request = match mode {
        Some(shards) => request.shard_count(shards as i32),
        None => request.stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .unwrap(),
        ),
    };
    request.send().await.expect("CreateStream");
    wait_until("stream active", Duration::from_secs(60), || async {
        summary(env, &name).await.0 == "ACTIVE"
    })
    .await;
    name
}

/// (status, open shards) of a stream.
async fn summary(env: &TestEnv, stream: &str) -> (String, i32) {
    env.kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .ok()
        .and_then(|o| o.stream_description_summary)
        .map(|s| (s.stream_status.as_str().to_owned(), s.open_shard_count))
        .unwrap_or_default()
}

/// The stream read back with each record's shard replaced by the first shard of its lineage
/// (parent of parent ...). After a resize a submission's events can be on a parent shard and
/// one of its children; a consumer reads the parent first (ListShards order here), so "on one
/// shard, in order" becomes "on one lineage, in order".
async fn read_stream_by_lineage(env: &TestEnv) -> Vec<StreamRecord> {
    let shards = env.shards().await;
    let parent: HashMap<String, String> = shards
        .iter()
        .filter_map(|s| Some((s.shard_id.clone(), s.parent_shard_id.clone()?)))
        .collect();
    let root = |mut shard: String| {
        while let Some(p) = parent.get(&shard) {
            shard = p.clone();
        }
        shard
    };
    env.read_stream()
        .await
        .into_iter()
        .map(|r| StreamRecord {
            shard_id: root(r.shard_id),
            ..r
        })
        .collect()
}

/// The binary's log lines (JSON objects) whose message is `message`.
fn log_lines(log_name: &str, message: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{log_name}.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
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
async fn a_busy_provisioned_stream_is_resized_within_its_bounds_and_loses_nothing() {
    let base = TestEnv::new("resize").await;
    let stream = create_stream(&base, "resize", Some(1)).await;
    let env = base.retarget(&base.queue_url, &stream);
    let (mut collector, addr) = spawn_supervised(
        &env,
        "shard-resize",
        &[
            ("SHARD_AUTOSCALE_ENABLED", "true"),
            ("SHARD_COUNT_MIN", "1"),
            // From 1 shard: doubled to 2, then 3 (the bound, not 4), then no more.
            ("SHARD_COUNT_MAX", "3"),
            ("SHARD_RESIZE_COOLDOWN_SEC", "0"),
        ],
    );

    // Traffic until the stream has been resized to its bound (at most 400 submissions).
    let expected = Arc::new(Mutex::new(Vec::new()));
    let (sqs, queue_url, sent) = (env.sqs.clone(), env.queue_url.clone(), expected.clone());
    let (kinesis, stream_name) = (env.kinesis.clone(), env.stream_name.clone());
    let traffic = tokio::spawn(async move {
        for round in 0..40u64 {
            let (bodies, batch) = load(50_000 + round * 10, 10);
            send_to(&sqs, &queue_url, &bodies).await;
            sent.lock().unwrap().extend(batch);
            let open = kinesis
                .describe_stream_summary()
                .stream_name(&stream_name)
                .send()
                .await
                .ok()
                .and_then(|o| o.stream_description_summary)
                .map_or(0, |s| s.open_shard_count);
            if open >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    wait_until(
        "the stream resized to 3 open shards",
        Duration::from_secs(180),
        || async { summary(&env, &env.stream_name).await == ("ACTIVE".to_owned(), 3) },
    )
    .await;
    traffic.await.expect("traffic task");
    let expected: Vec<Expected> = expected.lock().unwrap().clone();
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(60)).await;

    // What an operator scrapes: two accepted resizes and the open shard count (read at the
    // supervisor's next interval).
    wait_until(
        "the supervisor reads 3 open shards",
        Duration::from_secs(30),
        || async { value(&scrape(addr).await, "collector_stream_open_shards") == 3.0 },
    )
    .await;
    let text = scrape(addr).await;
    assert_eq!(
        value(&text, "collector_shard_resize_calls_total{outcome=\"ok\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "collector_shard_resize_calls_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "collector_shard_supervisor_decisions_total{decision=\"resize_up\"}"
        ),
        2.0
    );
    let events: usize = expected.iter().map(|e| e.events.len()).sum();
    assert_eq!(value(&text, "collector_events_published_total"), events as f64);
    // Each shard's tally is what the shard holds (no failures, so no resends); a shard closed
    // by the resize may have left the series once idle, an open one may not.
    let mut held: HashMap<String, f64> = HashMap::new();
    for r in env.read_stream().await {
        *held.entry(r.shard_id).or_default() += 1.0;
    }
    let shards = env.shards().await;
    let closed = |id: &str| {
        shards.iter().any(|s| {
            s.shard_id == id
                && s.sequence_number_range
                    .as_ref()
                    .is_some_and(|r| r.ending_sequence_number.is_some())
        })
    };
    let mut tallied = 0.0;
    for (shard, records) in &held {
        let series = sample(
            &text,
            &format!("collector_shard_records_published_total{{shard=\"{shard}\"}}"),
        );
        match series {
            Some(n) => {
                assert_eq!(n, *records, "records tallied for {shard}");
                tallied += n;
            }
            None => assert!(closed(shard), "open shard {shard} has no series:\n{text}"),
        }
    }
    assert!(tallied > 0.0, "no shard's tally is left to compare:\n{text}");
    // Each record's bytes include its 36-character partition key.
    assert!(sum_over_shards(&text, "collector_shard_bytes_published_total") > tallied * 36.0);

    sigterm(&collector);
    let status = tokio::time::timeout(Duration::from_secs(40), collector.wait())
        .await
        .expect("the collector exits within its drain timeout")
        .expect("wait for the collector");
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // The log says what was done, and why: 1 -> 2 (at most double), 2 -> 3 (the bound).
    let resizes: Vec<(u64, u64)> = log_lines("shard-resize", "resizing the stream: UpdateShardCount accepted")
        .iter()
        .map(|l| {
            (
                l["current_shards"].as_u64().unwrap(),
                l["target_shards"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(resizes, [(1, 2), (2, 3)]);
    assert_eq!(summary(&env, &env.stream_name).await, ("ACTIVE".to_owned(), 3));

    // Every event of every submission, exactly once, in order.
    verify(&read_stream_by_lineage(&env).await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resizing_off_a_busy_stream_only_gets_a_recommendation() {
    let base = TestEnv::new("recommend").await;
    let stream = create_stream(&base, "recommend", Some(1)).await;
    let env = base.retarget(&base.queue_url, &stream);
    let (mut collector, addr) = spawn_supervised(&env, "shard-recommend", &[]);

    let (sqs, queue_url) = (env.sqs.clone(), env.queue_url.clone());
    let (bodies, expected) = load(60_000, 150);
    let traffic = tokio::spawn(async move {
        for chunk in bodies.chunks(10) {
            send_to(&sqs, &queue_url, chunk).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    wait_until("a recommendation is logged", Duration::from_secs(120), || async {
        !log_lines("shard-recommend", "shard count recommendation").is_empty()
    })
    .await;
    traffic.await.expect("traffic task");
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(60)).await;

    let text = scrape(addr).await;
    assert!(
        value(
            &text,
            "collector_shard_supervisor_decisions_total{decision=\"recommend_up\"}"
        ) >= 1.0
    );
    assert_eq!(
        value(
            &text,
            "collector_shard_supervisor_decisions_total{decision=\"resize_up\"}"
        ),
        0.0
    );
    assert_eq!(value(&text, "collector_shard_resize_calls_total{outcome=\"ok\"}"), 0.0);
    assert_eq!(
        value(&text, "collector_shard_resize_calls_total{outcome=\"failed\"}"),
        0.0
    );
    sigterm(&collector);
    assert!(collector.wait().await.expect("exit").success());

    let recommendations = log_lines("shard-recommend", "shard count recommendation");
    let first = &recommendations[0];
    assert_eq!(first["level"], "WARN");
    assert_eq!(first["direction"], "up");
    assert_eq!(first["current_shards"], 1);
    assert_eq!(first["recommended_shards"], 2);
    assert_eq!(first["not_applied_because"], "SHARD_AUTOSCALE_ENABLED is false");
    assert_eq!(summary(&env, &env.stream_name).await, ("ACTIVE".to_owned(), 1));
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_stream_is_never_resized() {
    let base = TestEnv::new("ondemand").await;
    let stream = create_stream(&base, "ondemand", None).await;
    let env = base.retarget(&base.queue_url, &stream);
    let shards_before = summary(&env, &env.stream_name).await.1;
    let (mut collector, addr) = spawn_supervised(
        &env,
        "shard-ondemand",
        &[
            ("SHARD_AUTOSCALE_ENABLED", "true"),
            ("SHARD_COUNT_MAX", "100"),
            ("SHARD_RESIZE_COOLDOWN_SEC", "0"),
        ],
    );

    let (bodies, expected) = load(70_000, 60);
    env.send(&bodies).await;
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(60)).await;
    // Several intervals measured while the load ran and after it.
    wait_until("three on-demand decisions", Duration::from_secs(30), || async {
        value(
            &scrape(addr).await,
            "collector_shard_supervisor_decisions_total{decision=\"on_demand\"}",
        ) >= 3.0
    })
    .await;

    let text = scrape(addr).await;
    // Measured all the same.
    let events: usize = expected.iter().map(|e| e.events.len()).sum();
    assert_eq!(
        sum_over_shards(&text, "collector_shard_records_published_total"),
        events as f64
    );
    for decision in [
        "resize_up",
        "resize_down",
        "recommend_up",
        "recommend_down",
        "outside_band",
    ] {
        let name = format!("collector_shard_supervisor_decisions_total{{decision=\"{decision}\"}}");
        assert_eq!(value(&text, &name), 0.0, "{name}");
    }
    assert_eq!(value(&text, "collector_shard_resize_calls_total{outcome=\"ok\"}"), 0.0);
    assert_eq!(
        value(&text, "collector_shard_resize_calls_total{outcome=\"failed\"}"),
        0.0
    );
    sigterm(&collector);
    assert!(collector.wait().await.expect("exit").success());

    assert_eq!(
        log_lines(
            "shard-ondemand",
            "stream is on-demand; the shard supervisor reports utilisation and never resizes it"
        )
        .len(),
        1
    );
    assert_eq!(summary(&env, &env.stream_name).await.1, shards_before);
    verify(&env.read_stream().await, &expected, true);
}
