//! The collector's production lifecycle against a real SQS + Kinesis emulator: shutdown,
//! visibility heartbeat, backpressure, start-up and outages, HTTP endpoints, dead-letter
//! forwarding and logs. Faults come from the proxy in `support::fault_proxy`.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::checks::{mixed_submissions, verify, wait_for_events, wait_for_queue_empty};
use support::fault_proxy::FaultProxy;
use support::submissions::{self, Expected};
use support::{
    CollectorHarness, TestEnv, create_stream, free_port, http_get, metric, sample, send_to, sigterm, wait_until,
};

/// `count` valid submissions of 1 to 3 events each.
fn small_submissions(salt: u64, count: u64) -> (Vec<String>, Vec<Expected>) {
    (0..count)
        .map(|n| submissions::valid(salt + n, 1 + (n % 2) as usize, (n % 2) as usize, false))
        .unzip()
}

async fn wait_ready(addr: std::net::SocketAddr) {
    wait_until("/readyz answers 200", Duration::from_secs(60), || async {
        http_get(addr, "/readyz").await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_then_a_fresh_collector_leaves_no_loss_and_no_duplicates() {
    let env = TestEnv::new("sigterm").await;
    let (bodies, expected) = mixed_submissions(7_000, 120);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut first = env.spawn_binary(&[("HTTP_LISTEN_ADDRESS", &addr)], "sigterm-first");

    // A steady load: ten submissions every 100 ms.
    let (sqs, queue_url) = (env.sqs.clone(), env.queue_url.clone());
    let load = tokio::spawn(async move {
        for chunk in bodies.chunks(10) {
            send_to(&sqs, &queue_url, chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let addr: std::net::SocketAddr = addr.parse().unwrap();
    wait_until("the first collector publishes", Duration::from_secs(60), || async {
        let (_, text) = http_get(addr, "/metrics").await;
        sample(&text, "telemetry_collector_events_published_total").unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(
        !load.is_finished(),
        "the load ended before SIGTERM: the test proves nothing"
    );
    sigterm(&first);
    let status = tokio::time::timeout(Duration::from_secs(40), first.wait())
        .await
        .expect("the collector exits within its drain timeout")
        .expect("wait for the collector");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    load.await.expect("the load finishes");

    let second = env.start_collector(&env.endpoint.clone(), &[]).await;
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    second.stop().await;
    // Exactly once: nothing lost and not one duplicate event_id.
    verify(&env.read_stream().await, &expected, true);

    let log = std::fs::read_to_string(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigterm-first.log"))
        .expect("first collector's log");
    assert!(
        log.contains("stopped after draining"),
        "the drain did not finish:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_deadline_nothing_unpublished_is_deleted_and_unstarted_messages_are_given_back() {
    let env = TestEnv::new("deadline").await;
    let proxy = FaultProxy::start(&env.endpoint, 11).await;
    // Every PutRecords call fails from the start.
    proxy.faults.set_put_records_call_failure_rate(1.0);
    let (bodies, _) = small_submissions(11_000, 20);
    env.send(&bodies).await;
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("DATA_STREAM_CONCURRENCY", "1"),
                ("DATA_STREAM_MAX_BUFFER_SIZE", "4"),
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "120"),
                ("SHUTDOWN_DRAIN_TIMEOUT_SEC", "2"),
            ],
        )
        .await;
    let metrics = collector.metrics.clone();
    wait_until(
        "messages in flight, PutRecords failing",
        Duration::from_secs(60),
        || async {
            metrics.in_flight.messages_in_flight.get() >= 5
                && metric(
                    &metrics,
                    "telemetry_collector_put_records_calls_total{outcome=\"error\"}",
                ) >= 1
        },
    )
    .await;
    collector.stop().await;

    let received = metric(&metrics, "telemetry_collector_messages_received_total");
    let given_back = metric(
        &metrics,
        "telemetry_collector_messages_given_back_total{outcome=\"ok\"}",
    );
    assert!(given_back >= 1, "no message was given back");
    assert!(given_back < received, "the started messages must not be given back");
    assert_eq!(metric(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"), 0);
    assert!(env.read_stream().await.is_empty());
    // moto leaves a message out of both counts while a give-back's 3 s keep it hidden.
    wait_until("nothing unpublished is deleted", Duration::from_secs(15), || async {
        env.queue_total().await == 20
    })
    .await;
    // Given back means visible again within 3 s, not after the 120 s visibility timeout. Every
    // receipt was either given back or kept hidden because its message was started.
    let kept_hidden = received - given_back;
    wait_until("given-back messages visible again", Duration::from_secs(10), || async {
        env.queue_counts().await.0 >= 20 - kept_hidden
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinesis_outage_pauses_receiving_keeps_messages_hidden_and_loses_nothing() {
    let env = TestEnv::new("outage").await;
    let proxy = FaultProxy::start(&env.endpoint, 12).await;
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "4"),
                ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "300"),
                ("RETRY_MAX_BACKOFF_MS", "1000"),
            ],
        )
        .await;
    wait_ready(collector.http_addr).await;
    proxy.faults.set_kinesis_down(true);
    let (bodies, expected) = small_submissions(12_000, 40);
    env.send(&bodies).await;

    let metrics = collector.metrics.clone();
    wait_until("the circuit breaker opens", Duration::from_secs(60), || async {
        metrics.breaker.breaker_open.get() == 1
    })
    .await;
    assert_eq!(http_get(collector.http_addr, "/readyz").await.0, 503);
    let receives_before = metric(&metrics, "telemetry_collector_receive_calls_total");
    let puts_before = metric(
        &metrics,
        "telemetry_collector_put_records_calls_total{outcome=\"error\"}",
    );
    // The outage lasts four visibility timeouts.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let receives = metric(&metrics, "telemetry_collector_receive_calls_total") - receives_before;
    let puts = metric(
        &metrics,
        "telemetry_collector_put_records_calls_total{outcome=\"error\"}",
    ) - puts_before;
    // No hot loop: no polling while open; each lane retries at most every second once its
    // backoff (20 ms doubling, capped at 1 s) has grown.
    let lanes: u64 = telemetry_collector::config::DATA_STREAM_CONCURRENCY
        .default
        .parse()
        .expect("DATA_STREAM_CONCURRENCY default");
    assert!(
        receives <= 2,
        "{receives} ReceiveMessage calls while the breaker was open"
    );
    assert!(
        puts <= lanes * (16 + 7),
        "{puts} PutRecords calls from {lanes} lanes in 16 s of outage"
    );
    assert_eq!(metric(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"), 0);
    assert!(
        metric(
            &metrics,
            "telemetry_collector_visibility_extensions_total{outcome=\"ok\"}"
        ) >= 1
    );

    proxy.faults.set_kinesis_down(false);
    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    assert_eq!(metrics.breaker.breaker_open.get(), 0);
    collector.stop().await;

    // Every message was delivered once (ApproximateReceiveCount 1), none expired, and
    // every event is on the stream exactly once.
    assert_eq!(metric(&metrics, "telemetry_collector_messages_received_total"), 40);
    assert_eq!(metric(&metrics, "telemetry_collector_messages_expired_total"), 0);
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_and_bytes_stay_under_their_caps_while_kinesis_cannot_keep_up() {
    let env = TestEnv::new("caps").await;
    let proxy = FaultProxy::start(&env.endpoint, 13).await;
    // 90% of records fail: calls still write a little (the breaker stays closed), far too
    // little to keep up.
    proxy.faults.set_put_records_failure_rate(0.9);
    // 80 submissions of 60 events (about 22 KiB of records each): the byte cap binds at
    // about 47 messages, before the message cap.
    let (bodies, expected): (Vec<_>, Vec<_>) = (0..80).map(|n| submissions::valid(13_000 + n, 36, 24, false)).unzip();
    env.send(&bodies).await;
    const MAX_MESSAGES: i64 = 60;
    const MAX_BYTES: i64 = 1_048_576;
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("MAX_IN_FLIGHT_MESSAGES", "60"),
                ("MAX_IN_FLIGHT_BYTES", "1048576"),
                ("RETRY_MAX_BACKOFF_MS", "200"),
            ],
        )
        .await;
    let metrics = collector.metrics.clone();
    let (mut peak_messages, mut peak_bytes, mut samples) = (0, 0, 0);
    wait_until("the byte cap is reached", Duration::from_secs(60), || {
        let (messages, bytes) = (
            metrics.in_flight.messages_in_flight.get(),
            metrics.in_flight.bytes_in_flight.get(),
        );
        peak_messages = peak_messages.max(messages);
        peak_bytes = peak_bytes.max(bytes);
        samples += 1;
        async move { bytes > MAX_BYTES * 3 / 4 }
    })
    .await;
    // Keep watching for a while with the cap reached.
    for _ in 0..50 {
        peak_messages = peak_messages.max(metrics.in_flight.messages_in_flight.get());
        peak_bytes = peak_bytes.max(metrics.in_flight.bytes_in_flight.get());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 1);
    assert!(peak_messages <= MAX_MESSAGES, "{peak_messages} messages in flight");
    assert!(peak_bytes <= MAX_BYTES, "{peak_bytes} bytes in flight");
    let received = metric(&metrics, "telemetry_collector_messages_received_total");
    assert!(received < 80, "receiving did not pause: {received} received");

    proxy.faults.set_put_records_failure_rate(0.0);
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    // Resent suffixes make duplicates, never gaps or disorder.
    verify(&env.read_stream().await, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_it_waits_for_the_endpoint_queue_and_stream_then_works_without_restart() {
    let env = TestEnv::new("startup").await;
    let proxy = FaultProxy::start(&env.endpoint, 14).await;
    proxy.faults.set_offline(true);
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let (queue_name, stream_name) = (
        format!("late-queue-{}", &unique[..12]),
        format!("late-stream-{}", &unique[..12]),
    );
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("SUBMISSIONS_QUEUE_URL", ""),
                ("SUBMISSIONS_QUEUE_NAME", &queue_name),
                ("EVENTS_DATA_STREAM_NAME", &stream_name),
                ("RETRY_MAX_BACKOFF_MS", "300"),
            ],
        )
        .await;
    let addr = collector.http_addr;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);

    // Endpoint unreachable.
    wait_until("calls cut while offline", Duration::from_secs(30), || async {
        proxy.faults.calls_cut.load(std::sync::atomic::Ordering::Relaxed) >= 3
    })
    .await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!((status, body.trim()), (503, "not ready: queue not resolved yet"));

    // Reachable, queue still missing: still waiting.
    proxy.faults.set_offline(false);
    let cut = proxy.faults.calls_cut.load(std::sync::atomic::Ordering::Relaxed);
    let queue_url = env
        .sqs
        .create_queue()
        .queue_name(&queue_name)
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    wait_until("queue resolved, stream not yet", Duration::from_secs(30), || async {
        http_get(addr, "/readyz").await.1.trim() == "not ready: stream not resolved yet"
    })
    .await;
    wait_until("the stream is looked for", Duration::from_secs(30), || async {
        metric(
            &collector.metrics,
            "telemetry_collector_kinesis_probes_total{outcome=\"failed\"}",
        ) >= 2
    })
    .await;
    assert!(cut >= 3);

    create_stream(&env.kinesis, &stream_name).await;
    wait_ready(addr).await;

    let late = env.retarget(&queue_url, &stream_name);
    let (bodies, expected) = small_submissions(14_000, 20);
    late.send(&bodies).await;
    wait_for_queue_empty(&late, Duration::from_secs(60)).await;
    wait_for_events(&late, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    verify(&late.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_exactly_what_was_sent() {
    let env = TestEnv::new("metrics").await;
    let (mut bodies, expected) = mixed_submissions(15_000, 40);
    let invalid = submissions::invalid_of_every_class(15);
    bodies.extend(invalid.iter().map(|(_, body, _)| body.clone()));
    env.send(&bodies).await;
    let collector = env.start_collector(&env.endpoint.clone(), &[]).await;
    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    let events: usize = expected.iter().map(|e| e.events.len()).sum();
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    let addr = collector.http_addr;
    wait_until("all deletes counted", Duration::from_secs(30), || async {
        let (_, text) = http_get(addr, "/metrics").await;
        sample(&text, "telemetry_collector_deletes_total{outcome=\"ok\"}") == Some(bodies.len() as f64)
    })
    .await;

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"));
    assert_eq!(
        value("telemetry_collector_messages_received_total"),
        bodies.len() as f64
    );
    assert_eq!(
        value("telemetry_collector_submissions_valid_total"),
        expected.len() as f64
    );
    assert_eq!(value("telemetry_collector_events_published_total"), events as f64);
    assert_eq!(value("telemetry_collector_event_latency_seconds_count"), events as f64);
    for call in ["ReceiveMessage", "PutRecords", "DeleteMessageBatch"] {
        assert!(
            value(&format!(
                "telemetry_collector_aws_call_duration_seconds_count{{call=\"{call}\"}}"
            )) >= 1.0
        );
    }
    // Freshness: one observation per submission with events, when its last event is published.
    let with_events = expected.iter().filter(|e| !e.events.is_empty()).count() as f64;
    assert_eq!(
        value("telemetry_collector_submission_queue_to_stream_seconds_count"),
        with_events
    );
    assert_eq!(
        value("telemetry_collector_submission_sensor_to_stream_seconds_count"),
        with_events
    );
    assert_eq!(value("telemetry_collector_submission_sensor_clock_ahead_total"), 0.0);
    assert_eq!(value("telemetry_collector_messages_in_flight"), 0.0);
    assert_eq!(value("telemetry_collector_events_in_flight"), 0.0);
    assert_eq!(value("telemetry_collector_in_flight_bytes"), 0.0);
    assert_eq!(value("telemetry_collector_breaker_open"), 0.0);
    assert_eq!(value("telemetry_collector_ready"), 1.0);
    let mut by_reason: HashMap<&str, f64> = HashMap::new();
    for (label, _, _) in &invalid {
        *by_reason.entry(label).or_default() += 1.0;
    }
    for (label, count) in by_reason {
        assert_eq!(
            value(&format!(
                "telemetry_collector_submissions_invalid_total{{reason=\"{label}\"}}"
            )),
            count,
            "{label}"
        );
    }
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_go_to_the_dead_letter_queue_with_their_reason_before_deletion() {
    let env = TestEnv::new("dlq").await;
    let dlq_url = env
        .sqs
        .create_queue()
        .queue_name(format!("dlq-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    let invalid = submissions::invalid_of_every_class(16);
    let (mut bodies, expected) = small_submissions(16_000, 5);
    bodies.extend(invalid.iter().map(|(_, body, _)| body.clone()));
    env.send(&bodies).await;
    let collector = env
        .start_collector(&env.endpoint.clone(), &[("DEAD_LETTER_QUEUE_URL", &dlq_url)])
        .await;
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;

    let mut forwarded: HashMap<String, String> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while forwarded.len() < invalid.len() && std::time::Instant::now() < deadline {
        let out = env
            .sqs
            .receive_message()
            .queue_url(&dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("ReceiveMessage from the dead-letter queue");
        for m in out.messages.unwrap_or_default() {
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get("rejection_reason"))
                .and_then(|v| v.string_value.clone())
                .expect("rejection_reason attribute");
            forwarded.insert(m.body.unwrap_or_default(), reason);
        }
    }
    assert_eq!(forwarded.len(), invalid.len());
    for (label, body, _) in &invalid {
        assert_eq!(forwarded.get(body).map(String::as_str), Some(*label), "body of {label}");
    }
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_dead_letter_send_fails_the_invalid_original_is_not_deleted() {
    let env = TestEnv::new("dlqfail").await;
    let missing_dlq = format!("{}-no-such-dlq", env.queue_url);
    let invalid = submissions::invalid_of_every_class(17);
    let (mut bodies, expected) = small_submissions(17_000, 5);
    bodies.extend(invalid.iter().take(4).map(|(_, body, _)| body.clone()));
    env.send(&bodies).await;
    let collector = env
        .start_collector(&env.endpoint.clone(), &[("DEAD_LETTER_QUEUE_URL", &missing_dlq)])
        .await;
    let metrics = collector.metrics.clone();
    wait_until(
        "valid ones done, invalid ones not forwarded",
        Duration::from_secs(60),
        || async {
            metric(&metrics, "telemetry_collector_dead_letters_total{outcome=\"failed\"}") >= 4
                && metric(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}") >= 5
        },
    )
    .await;
    collector.stop().await;
    assert_eq!(
        metric(&metrics, "telemetry_collector_dead_letters_total{outcome=\"ok\"}"),
        0
    );
    assert_eq!(env.queue_total().await, 4, "the invalid originals stay in the queue");
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_one_json_object_per_line_cannot_be_forged_and_hold_no_secrets() {
    let env = TestEnv::new("logs").await;
    let proxy = FaultProxy::start(&env.endpoint, 18).await;
    let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    // Raw JSON bodies (accepted as is) whose `cmdl` carries a newline and quotes that spell a
    // log line: invalid (a raw control character in a string), so logged with a body prefix.
    let forged = "{\"cmdl\": \"x\n{\\\"level\\\":\\\"ERROR\\\",\\\"message\\\":\\\"forged\\\"}\"}".to_owned();
    // The valid ones carry a quote and a newline in every `cmdl` too, escaped as JSON needs.
    let (mut bodies, expected) = small_submissions(18_000, 5);
    bodies.push(forged);
    env.send(&bodies).await;

    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .env_clear()
        .envs(env.binary_env(&[("HTTP_LISTEN_ADDRESS", &addr)]))
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("RUST_LOG", "trace")
        // Body samples on, so that the one place a body can reach the log is checked too.
        .env("LOG_INVALID_BODY_SAMPLES", "true")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start telemetry-collector");
    // Read as it comes, or the pipe fills and the collector blocks on its next log line.
    let stdout = child.stdout.take().expect("stdout");
    let reader = tokio::spawn(async move {
        let mut log = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(stdout), &mut log)
            .await
            .expect("read the log");
        log
    });
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    sigterm(&child);
    assert!(child.wait().await.expect("exit").success());
    let log = reader.await.expect("log reader");

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    // RUST_LOG=trace took effect: whatever that level lets through holds no secret either.
    assert!(lines.iter().any(|l| l["level"] == "TRACE"), "no TRACE line");
    assert!(lines.iter().all(|l| l["message"] != "forged"), "a log line was forged");
    let dropped: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "dropped invalid submission")
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["level"], "DEBUG");
    assert!(dropped[0]["body_prefix"].as_str().unwrap().contains('\n'));
    assert!(!log.contains(&secret), "the secret key was logged");
    let handles = proxy.faults.receipt_handles.lock().unwrap().clone();
    assert!(handles.len() >= bodies.len());
    for handle in handles {
        assert!(!log.contains(&handle), "a receipt handle was logged");
    }
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_count_stays_one_for_messages_kept_hidden_past_their_timeout() {
    let env = TestEnv::new("receivecount").await;
    let proxy = FaultProxy::start(&env.endpoint, 19).await;
    let collector = env
        .start_collector(&proxy.endpoint, &[("QUEUE_VISIBILITY_TIMEOUT_SEC", "3")])
        .await;
    wait_ready(collector.http_addr).await;
    proxy.faults.set_kinesis_down(true);
    let (bodies, expected) = small_submissions(19_000, 5);
    env.send(&bodies).await;
    let metrics = collector.metrics.clone();
    wait_until("all received and extended twice", Duration::from_secs(60), || async {
        metric(&metrics, "telemetry_collector_messages_received_total") == 5
            && metric(
                &metrics,
                "telemetry_collector_visibility_extensions_total{outcome=\"ok\"}",
            ) >= 10
    })
    .await;
    // While the collector holds them, nobody else can see them, and SQS counts one receive.
    let (visible, hidden) = env.queue_counts().await;
    assert_eq!((visible, hidden), (0, 5));
    proxy.faults.set_kinesis_down(false);
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    collector.stop().await;
    assert_eq!(metric(&metrics, "telemetry_collector_messages_received_total"), 5);
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_visibility_extensions_are_counted_and_the_message_is_processed_again() {
    let env = TestEnv::new("refused").await;
    let proxy = FaultProxy::start(&env.endpoint, 20).await;
    let collector = env
        .start_collector(&proxy.endpoint, &[("QUEUE_VISIBILITY_TIMEOUT_SEC", "3")])
        .await;
    wait_ready(collector.http_addr).await;
    proxy.faults.set_kinesis_down(true);
    proxy.faults.set_visibility_failure_rate(1.0);
    let (bodies, expected) = small_submissions(20_000, 3);
    env.send(&bodies).await;
    let metrics = collector.metrics.clone();
    // SQS refuses every extension: each refusal is counted, the message is not asked for again,
    // and once its visibility runs out its receipt expires and SQS delivers it again.
    wait_until(
        "extensions refused, receipts expired and messages received again",
        Duration::from_secs(60),
        || async {
            metric(
                &metrics,
                "telemetry_collector_visibility_extensions_total{outcome=\"failed\"}",
            ) >= 1
                && metric(&metrics, "telemetry_collector_messages_expired_total") >= 1
        },
    )
    .await;
    assert_eq!(
        metric(
            &metrics,
            "telemetry_collector_visibility_extensions_total{outcome=\"ok\"}"
        ),
        0
    );
    proxy.faults.set_visibility_failure_rate(0.0);
    proxy.faults.set_kinesis_down(false);
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    assert!(metric(&metrics, "telemetry_collector_messages_received_total") > 3);
    verify(&env.read_stream().await, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_is_signalled_no_new_receive_starts() {
    let env = TestEnv::new("no-receive-after-stop").await;
    let proxy = FaultProxy::start(&env.endpoint, 12).await;
    // One lane with a channel of one record, stuck in a call that Kinesis never answers: every
    // receiver ends up waiting to hand its batch to the lane. At shutdown the lane gives the
    // unsent messages back, which lets every receiver finish its batch just after being told
    // to stop, with room to receive again: none of them may start another long poll.
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("QUEUE_RECEIVERS", "4"),
                ("DATA_STREAM_CONCURRENCY", "1"),
                ("DATA_STREAM_MAX_BUFFER_SIZE", "1"),
                ("AWS_CALL_TIMEOUT_SEC", "2"),
                ("SHUTDOWN_DRAIN_TIMEOUT_SEC", "3"),
                ("QUEUE_WAIT_TIME_SEC", "1"),
            ],
        )
        .await;
    wait_ready(collector.http_addr).await;
    proxy.faults.set_kinesis_black_hole(true);
    let (bodies, _) = small_submissions(21_000, 60);
    env.send(&bodies).await;
    let metrics = collector.metrics.clone();
    wait_until(
        "every receiver waiting for the lane",
        Duration::from_secs(60),
        || async {
            metric(&metrics, "telemetry_collector_receive_calls_total") >= 4
                && metric(&metrics, "telemetry_collector_messages_received_total") >= 8
        },
    )
    .await;
    let receives_before = proxy.faults.receive_calls.load(std::sync::atomic::Ordering::SeqCst);
    collector.stop().await;
    assert_eq!(
        proxy.faults.receive_calls.load(std::sync::atomic::Ordering::SeqCst),
        receives_before,
        "a receive started after shutdown was signalled"
    );
    // moto leaves a message out of both counts while a ChangeMessageVisibility keeps it hidden,
    // as the 3 s of a give-back do: wait for them to pass.
    wait_until("nothing unpublished is deleted", Duration::from_secs(15), || async {
        env.queue_total().await == 60
    })
    .await;
    assert_eq!(metric(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shutdown_signal_during_the_drain_exits_at_once_with_its_status() {
    let env = TestEnv::new("second-signal").await;
    let proxy = FaultProxy::start(&env.endpoint, 14).await;
    let addr = format!("127.0.0.1:{}", free_port());
    // A drain that would wait ten minutes for a stream that never answers.
    let mut collector = env.spawn_binary(
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_SQS", proxy.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_KINESIS", proxy.kinesis_endpoint.as_str()),
            ("HTTP_LISTEN_ADDRESS", addr.as_str()),
            ("SHUTDOWN_DRAIN_TIMEOUT_SEC", "600"),
            ("AWS_CALL_TIMEOUT_SEC", "300"),
        ],
        "second-signal",
    );
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    wait_ready(addr).await;
    proxy.faults.set_kinesis_black_hole(true);
    let (bodies, _) = small_submissions(22_000, 5);
    env.send(&bodies).await;
    wait_until("a PutRecords call is swallowed", Duration::from_secs(60), || async {
        proxy
            .faults
            .kinesis_calls_swallowed
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    })
    .await;
    sigterm(&collector);
    wait_until("the drain has begun", Duration::from_secs(60), || async {
        http_get(addr, "/readyz").await.1.contains("stopping")
    })
    .await;
    sigterm(&collector);
    // Far below the drain's ten minutes: only an exit on the second signal ends it in time.
    let status = tokio::time::timeout(Duration::from_secs(120), collector.wait())
        .await
        .expect("the collector exits on the second signal, without waiting for the drain")
        .expect("exit status");
    assert_eq!(status.code(), Some(143), "the shell's status for SIGTERM: {status:?}");
    let log = std::fs::read_to_string(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("second-signal.log"))
        .expect("the collector's log");
    assert!(
        log.contains("second shutdown signal during the drain"),
        "the exit is logged: {log}"
    );
    // Nothing unpublished was deleted.
    assert_eq!(env.queue_total().await, 5);
}
