//! What a real network and a real deployment do to the daemon: black-holed connections, a
//! stage that dies, a batch that waits, a record the stream refuses, a message that arrives late
//! in a long poll, a signal during start-up. Against the emulator, through the fault proxy.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::checks::{verify, wait_for_events, wait_for_queue_empty};
use support::fault_proxy::FaultProxy;
use support::submissions::{self, Expected};
use support::{CollectorHarness, TestEnv, free_port, http_get, metric, sample, sigterm, wait_until};

/// Short call timeouts, so that a black hole costs seconds, not minutes.
const SHORT_TIMEOUTS: &[(&str, &str)] = &[
    ("AWS_CALL_TIMEOUT_SEC", "1"),
    ("QUEUE_WAIT_TIME_SEC", "1"),
    ("STALL_TIMEOUT_SEC", "30"),
];

fn small_submissions(salt: u64, count: u64) -> (Vec<String>, Vec<Expected>) {
    (0..count)
        .map(|n| submissions::valid(salt + n, 1 + (n % 3) as usize, (n % 2) as usize, n % 2 == 0))
        .unzip()
}

/// The collector binary talking to SQS and Kinesis through the proxy, each on connections of
/// its own (two proxy ports), as on AWS where they are different hosts.
struct Binary {
    child: tokio::process::Child,
    addr: SocketAddr,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    log_name: String,
}

impl Binary {
    fn start(env: &TestEnv, proxy: &FaultProxy, settings: &[(&str, &str)], log_name: &str) -> Binary {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let addr_text = addr.to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_SQS", proxy.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_KINESIS", proxy.kinesis_endpoint.as_str()),
            ("HTTP_LISTEN_ADDRESS", addr_text.as_str()),
        ];
        vars.extend_from_slice(SHORT_TIMEOUTS);
        vars.extend_from_slice(settings);
        Binary {
            child: env.spawn_binary(&vars, log_name),
            addr,
            log_name: log_name.to_owned(),
        }
    }

    async fn counter(&self, name: &str) -> u64 {
        let (_, text) = http_get(self.addr, "/metrics").await;
        sample(&text, name).unwrap_or(0.0) as u64
    }

    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fn log(&self) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.log", self.log_name)),
        )
        .unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    async fn stop(mut self) -> std::process::ExitStatus {
        sigterm(&self.child);
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the collector exits within its drain timeout")
            .expect("wait for the collector")
    }
}

async fn wait_healthy_and_ready(addr: SocketAddr) {
    wait_until("/readyz answers 200", Duration::from_secs(60), || async {
        http_get(addr, "/readyz").await.0 == 200
    })
    .await;
}

/// Sends `bodies` a few at a time while `during` runs, so that submissions keep arriving.
async fn send_while<F: std::future::Future<Output = ()>>(env: &TestEnv, bodies: &[String], during: F) {
    let sender = async {
        for chunk in bodies.chunks(5) {
            env.send(chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(sender, during);
}

/// The binary through the proxy, ready, with 30 submissions sent and publishing under way:
/// the state a network fault should meet. Returns what the stream must hold in the end so far.
async fn publishing(label: &str, salt: u64, visibility_timeout: &str) -> (TestEnv, FaultProxy, Binary, Vec<Expected>) {
    let env = TestEnv::new(label).await;
    let proxy = FaultProxy::start(&env.endpoint, salt).await;
    let collector = Binary::start(
        &env,
        &proxy,
        &[("QUEUE_VISIBILITY_TIMEOUT_SEC", visibility_timeout)],
        label,
    );
    wait_healthy_and_ready(collector.addr).await;
    let (before, expected) = small_submissions(salt * 1_000, 30);
    env.send(&before).await;
    wait_until("events published before the fault", Duration::from_secs(60), || async {
        collector.counter("telemetry_collector_events_published_total").await > 0
    })
    .await;
    (env, proxy, collector, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_kinesis_path_wedges_nothing_and_loses_nothing_once_it_heals() {
    let (env, proxy, collector, mut expected) = publishing("hole-kinesis", 31, "6").await;

    // Eight call timeouts of black hole, with submissions arriving all along.
    let (during, more) = small_submissions(31_100, 60);
    expected.extend(more);
    proxy.faults.set_kinesis_black_hole(true);
    send_while(&env, &during, tokio::time::sleep(Duration::from_secs(8))).await;
    assert!(
        proxy
            .faults
            .kinesis_calls_swallowed
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2,
        "the black hole swallowed no PutRecords call: the test proves nothing"
    );
    assert_eq!(
        http_get(collector.addr, "/readyz").await.0,
        503,
        "breaker open while Kinesis is gone"
    );
    assert_eq!(
        http_get(collector.addr, "/healthz").await.0,
        200,
        "an outage is not a stall"
    );
    proxy.faults.set_kinesis_black_hole(false);

    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    // The keeper's SQS path was healthy: no message came back, so each was received once. A
    // PutRecords call upstream when the hole began may have been written without its answer
    // arriving: its records are sent again, so duplicates are allowed, gaps and disorder not.
    assert_eq!(
        collector.counter("telemetry_collector_messages_received_total").await,
        expected.len() as u64
    );
    assert_eq!(collector.counter("telemetry_collector_messages_expired_total").await, 0);
    verify(&env.read_stream().await, &expected, false);
    let status = collector.stop().await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_sqs_path_is_survived_and_receiving_resumes_within_the_stated_bound() {
    let (env, proxy, collector, mut expected) = publishing("hole-sqs", 32, "20").await;

    // Every SQS call, receives, deletes and extensions alike, is swallowed for 8 s. The test
    // reaches the emulator directly, so it can keep sending.
    let (during, more) = small_submissions(32_100, 40);
    expected.extend(more);
    proxy.faults.set_sqs_black_hole(true);
    // Long polls already upstream when the hole began could still take the submissions sent
    // next (their answers are swallowed, the messages hidden for a visibility timeout), leaving
    // nothing to receive after it: send only once every receiver's next call has been swallowed.
    let receivers: u64 = telemetry_collector::config::QUEUE_RECEIVERS
        .default
        .parse()
        .expect("QUEUE_RECEIVERS default");
    wait_until(
        "every receiver's next call swallowed",
        Duration::from_secs(30),
        || async {
            proxy
                .faults
                .sqs_calls_swallowed
                .load(std::sync::atomic::Ordering::SeqCst)
                >= receivers
        },
    )
    .await;
    send_while(&env, &during, tokio::time::sleep(Duration::from_secs(8))).await;
    assert!(
        proxy
            .faults
            .sqs_calls_swallowed
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2,
        "the black hole swallowed no SQS call: the test proves nothing"
    );
    let received_before_healing = collector.counter("telemetry_collector_messages_received_total").await;
    proxy.faults.set_sqs_black_hole(false);
    let healed_at = Instant::now();
    // Receives that were in flight when the hole began may have taken messages whose answers
    // were swallowed: those come back after their visibility timeout. These are there at once.
    let (after, more) = small_submissions(32_200, 10);
    expected.extend(more);
    env.send(&after).await;

    // The bound: a receive that was swallowed times out after the long poll plus the call
    // timeout (1 + 1 s), then waits at most the longest backoff (0.5 s) before a new attempt on a
    // new connection; twice over, for a pooled connection that died in the hole, plus 5 s of
    // slack for a loaded machine.
    let bound = Duration::from_secs_f64(2.0 * (1.0 + 1.0) + 0.5 + 5.0);
    wait_until("receiving resumes after the black hole", bound, || async {
        collector.counter("telemetry_collector_messages_received_total").await > received_before_healing
    })
    .await;
    eprintln!("receiving resumed {:?} after the network healed", healed_at.elapsed());
    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    verify(&env.read_stream().await, &expected, false);
    let status = collector.stop().await;
    assert!(status.success(), "exit status {status}");
}

// Needs the test-only hooks of the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_panics_or_ends_stops_the_process_with_a_failure_naming_it() {
    let env = TestEnv::new("stage-fails").await;
    let proxy = FaultProxy::start(&env.endpoint, 33).await;
    for (fault, says) in [
        ("deleter:panic", "deleter panicked: fault injected into deleter"),
        (
            "sink lane 1:exit",
            "sink lane 1 stopped while the collector was running",
        ),
        ("visibility keeper:panic", "visibility keeper panicked"),
        ("receiver 0:exit", "receiver 0 stopped while the collector was running"),
    ] {
        let log_name = format!("stage-fails-{}", fault.replace([' ', ':'], "-"));
        let mut collector = Binary::start(&env, &proxy, &[("COLLECTOR_FAULT_STAGE", fault)], &log_name);
        let status = tokio::time::timeout(Duration::from_secs(60), collector.child.wait())
            .await
            .expect("the collector exits by itself when a stage is gone")
            .expect("wait for the collector");
        assert_eq!(status.code(), Some(1), "{fault}: exit status {status}");
        let log = collector.log();
        let line = log
            .lines()
            .find(|l| l.contains("a pipeline stage is gone"))
            .unwrap_or_else(|| panic!("{fault}: no log line says which stage is gone:\n{log}"));
        assert!(line.contains(says), "{fault}: {line}");
        assert!(
            line.starts_with('{') && line.contains("\"level\":\"ERROR\""),
            "{fault}: not one JSON error line: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_behind_a_full_byte_cap_keeps_every_message_hidden() {
    let env = TestEnv::new("batch-waits").await;
    let proxy = FaultProxy::start(&env.endpoint, 34).await;
    // Three submissions of ~400 KB of records each, then seven small ones: one receive batch
    // (the body budget, as large as the byte cap, has room for ten of the queue's largest
    // bodies). Each big one takes 40 bytes of the cap per body byte to be decoded, so they go
    // through the cap one or two at a time, and the small ones wait behind them in the batch;
    // then all of them wait for several visibility timeouts while Kinesis fails.
    let mut bodies = Vec::new();
    let mut expected = Vec::new();
    for n in 0..3 {
        let (body, e) = submissions::valid(34_000 + n, 600, 400, false);
        bodies.push(body);
        expected.push(e);
    }
    let (small, small_expected) = small_submissions(34_100, 7);
    bodies.extend(small);
    expected.extend(small_expected);
    env.send(&bodies).await;
    proxy.faults.set_put_records_call_failure_rate(1.0);
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("QUEUE_RECEIVERS", "1"),
                ("MAX_IN_FLIGHT_BYTES", "10485760"),
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "3"),
                ("RETRY_MAX_BACKOFF_MS", "200"),
            ],
        )
        .await;
    let metrics = collector.metrics.clone();
    wait_until(
        "the batch is received and PutRecords fails",
        Duration::from_secs(60),
        || async {
            metric(&metrics, "telemetry_collector_messages_received_total") == 10
                && metric(
                    &metrics,
                    "telemetry_collector_put_records_calls_total{outcome=\"error\"}",
                ) >= 1
        },
    )
    .await;
    // Three visibility timeouts: long enough for an untracked message to come back.
    let outage_until = Instant::now() + Duration::from_secs(9);
    wait_until("the outage lasts", Duration::from_secs(30), || async {
        Instant::now() >= outage_until
    })
    .await;
    assert_eq!(metric(&metrics, "telemetry_collector_events_published_total"), 0);
    proxy.faults.set_put_records_call_failure_rate(0.0);

    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    assert_eq!(
        metric(&metrics, "telemetry_collector_messages_received_total"),
        10,
        "a message of the batch was received twice"
    );
    assert!(
        metric(
            &metrics,
            "telemetry_collector_visibility_extensions_total{outcome=\"ok\"}"
        ) >= 7
    );
    verify(&env.read_stream().await, &expected, true);
}

/// A plain-JSON body whose one event makes a record just over Kinesis's 1 MiB record limit,
/// while the body itself stays within SQS's 1 MiB message limit.
fn poison_submission() -> (String, String) {
    let submission_id = "0badc0de-0000-4000-8000-000000000001";
    let envelope = |cmdl: &str| {
        json!({
            "submission_id": submission_id,
            "device_id": "31980191-fa99-4768-8a7b-0e81397ca6ef",
            "time_created": "2021-03-28T15:44:18.592840",
            "events": {"new_process": [{"cmdl": cmdl, "user": "u"}]}
        })
        .to_string()
    };
    let overhead = envelope("").len();
    let body = envelope(&"x".repeat(1_048_500 - overhead));
    assert_eq!(body.len(), 1_048_500);
    (body, submission_id.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_stream_refuses_keeps_its_submission_in_the_queue_and_stops_nothing_else() {
    let env = TestEnv::new("poison").await;
    let (poison, poison_id) = poison_submission();
    let (valid, expected) = small_submissions(35_000, 20);
    // The poison in the middle, so that it shares calls with valid records on both sides.
    env.send(&valid[..10]).await;
    // Alone: a batch of it and others would exceed SQS's 1 MiB per call.
    env.sqs
        .send_message()
        .queue_url(&env.queue_url)
        .message_body(poison)
        .send()
        .await
        .expect("SendMessage of the poison submission");
    env.send(&valid[10..]).await;
    let collector = env
        .start_collector(
            &env.endpoint.clone(),
            &[
                // Let it through decoding: the stream, not the collector, refuses it.
                ("DATA_STREAM_MAX_RECORD_BYTES", "2097152"),
                ("DATA_STREAM_CONCURRENCY", "1"),
                ("QUEUE_RECEIVERS", "1"),
            ],
        )
        .await;
    wait_for_events(&env, &expected, Duration::from_secs(120)).await;
    let metrics = collector.metrics.clone();
    wait_until("the poison submission refused", Duration::from_secs(60), || async {
        metric(
            &metrics,
            "telemetry_collector_submissions_refused_total{reason=\"record_too_large\"}",
        ) >= 1
    })
    .await;
    collector.stop().await;
    assert_eq!(metrics.breaker.breaker_open.get(), 0);
    // Without a dead-letter queue nothing valid is deleted unpublished: the poison stays in the
    // queue for its redrive policy, and everything else is published and deleted.
    assert_eq!(env.queue_total().await, 1, "the refused submission stays in the queue");
    let records = env.read_stream().await;
    assert!(records.iter().all(|r| r.submission_id() != poison_id));
    verify(&records, &expected, true);
}

/// What a refusal episode leaves: 200 valid submissions sent while every PutRecords call is
/// refused for six seconds, then the stream answers again; every valid event must be there.
async fn refusal_episode(label: &str, salt: u64, refuse: impl Fn(&FaultProxy, bool)) {
    let env = TestEnv::new(label).await;
    let proxy = FaultProxy::start(&env.endpoint, salt).await;
    let collector = env
        .start_collector(
            &proxy.endpoint,
            // Refused messages come back when their visibility ends: soon, for the test.
            &[("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"), ("QUEUE_WAIT_TIME_SEC", "1")],
        )
        .await;
    let (bodies, expected) = small_submissions(salt * 1_000, 200);
    let metrics = collector.metrics.clone();
    send_while(&env, &bodies, async {
        wait_until(
            "events published before the refusals",
            Duration::from_secs(60),
            || async { metric(&metrics, "telemetry_collector_events_published_total") > 0 },
        )
        .await;
        refuse(&proxy, true);
        let refused_from = proxy.faults.calls_failed.load(std::sync::atomic::Ordering::SeqCst);
        // The scenario itself, not a synchronisation: an episode of refusals lasts a while.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(proxy.faults.calls_failed.load(std::sync::atomic::Ordering::SeqCst) > refused_from);
        refuse(&proxy, false);
    })
    .await;
    wait_for_queue_empty(&env, Duration::from_secs(180)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    // Refused messages came back and were published in full: duplicates share their ids.
    verify(&env.read_stream().await, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_naming_no_record_deletes_nothing_unpublished() {
    refusal_episode("refused-call", 41, |proxy, on| {
        proxy.faults.set_put_records_error(on.then_some("ValidationException"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_naming_a_record_keeps_its_submission_until_it_is_published() {
    refusal_episode("refused-record", 42, |proxy, on| {
        proxy
            .faults
            .set_put_records_refusal_of_first_record(on.then_some("InvalidArgumentException"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_submission_is_deleted_only_once_it_is_in_the_dead_letter_queue() {
    let env = TestEnv::new("refused-dlq").await;
    let proxy = FaultProxy::start(&env.endpoint, 43).await;
    let dlq_url = env
        .sqs
        .create_queue()
        .queue_name(format!("{}-dlq", env.stream_name))
        .send()
        .await
        .expect("CreateQueue (dead-letter)")
        .queue_url
        .expect("queue URL");
    let (bodies, _) = small_submissions(43_000, 1);
    proxy
        .faults
        .set_put_records_refusal_of_first_record(Some("ValidationException"));
    env.send(&bodies).await;
    let collector = env
        .start_collector(&proxy.endpoint, &[("DEAD_LETTER_QUEUE_URL", &dlq_url)])
        .await;
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    let metrics = collector.metrics.clone();
    collector.stop().await;
    assert_eq!(
        metric(
            &metrics,
            "telemetry_collector_submissions_refused_total{reason=\"record_too_large\"}"
        ),
        1
    );
    let forwarded = env.retarget(&dlq_url, &env.stream_name).queue_total().await;
    assert_eq!(forwarded, 1, "the refused body is in the dead-letter queue");
    assert!(env.read_stream().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arriving_late_in_a_long_poll_is_not_expired_on_arrival() {
    let env = TestEnv::new("late-arrival").await;
    // A long poll twice as long as the visibility timeout: a message that arrives 6 s into it
    // would look expired on arrival if its receipt were timed from when the call was sent.
    let collector = env
        .start_collector(
            &env.endpoint.clone(),
            &[
                ("QUEUE_RECEIVERS", "1"),
                ("QUEUE_WAIT_TIME_SEC", "10"),
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
            ],
        )
        .await;
    let metrics = collector.metrics.clone();
    wait_until("the first long poll is waiting", Duration::from_secs(60), || async {
        metric(&metrics, "telemetry_collector_receive_calls_total") == 1
    })
    .await;
    // The scenario itself, not a synchronisation: the message must arrive late in the poll.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (bodies, expected) = small_submissions(36_000, 1);
    env.send(&bodies).await;
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    assert_eq!(metric(&metrics, "telemetry_collector_messages_expired_total"), 0);
    assert_eq!(metric(&metrics, "telemetry_collector_messages_received_total"), 1);
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_exits_cleanly() {
    let env = TestEnv::new("early-sigterm").await;
    let proxy = FaultProxy::start(&env.endpoint, 37).await;
    // The queue cannot be resolved: every SQS request is swallowed.
    proxy.faults.set_sqs_black_hole(true);
    let collector = Binary::start(&env, &proxy, &[], "early-sigterm");
    wait_until("the HTTP endpoints answer", Duration::from_secs(60), || async {
        http_get(collector.addr, "/healthz").await.0 == 200
    })
    .await;
    assert_eq!(http_get(collector.addr, "/readyz").await.0, 503);
    let status = collector.stop().await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_sqs_fails_through_no_fault_of_the_sender_are_retried_not_taken_for_refusals() {
    let env = TestEnv::new("internal-errors").await;
    let proxy = FaultProxy::start(&env.endpoint, 38).await;
    // Half of every delete's and extension's entries fail with SQS's own InternalError.
    proxy.faults.set_sqs_entry_internal_error_rate(0.5);
    let collector = env
        .start_collector(&proxy.endpoint, &[("QUEUE_VISIBILITY_TIMEOUT_SEC", "4")])
        .await;
    wait_healthy_and_ready(collector.http_addr).await;
    // Kinesis away for a while, so that messages need extending.
    proxy.faults.set_kinesis_down(true);
    let (bodies, expected) = small_submissions(38_000, 20);
    env.send(&bodies).await;
    let metrics = collector.metrics.clone();
    wait_until(
        "an extension failed internally and was asked again",
        Duration::from_secs(60),
        || async {
            metric(
                &metrics,
                "telemetry_collector_visibility_extensions_total{outcome=\"retried\"}",
            ) >= 1
        },
    )
    .await;
    proxy.faults.set_kinesis_down(false);
    wait_for_queue_empty(&env, Duration::from_secs(120)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    collector.stop().await;
    assert!(
        proxy
            .faults
            .entries_failed_internally
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    assert!(
        metric(&metrics, "telemetry_collector_deletes_retried_total") >= 1,
        "no delete was retried"
    );
    // Not one entry was taken for a refusal, and no delete was given up.
    assert_eq!(
        metric(
            &metrics,
            "telemetry_collector_visibility_extensions_total{outcome=\"failed\"}"
        ),
        0
    );
    assert_eq!(
        metric(&metrics, "telemetry_collector_deletes_total{outcome=\"failed\"}"),
        0
    );
    assert_eq!(
        metric(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"),
        20
    );
    verify(&env.read_stream().await, &expected, false);
}

// Needs the test-only hooks of the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_stuck_with_work_fails_liveness_naming_it() {
    let env = TestEnv::new("stuck").await;
    let proxy = FaultProxy::start(&env.endpoint, 39).await;
    // 2 x (1 s long poll + 1 s call timeout) + 0.5 s backoff = 4.5 s is the least allowed.
    let collector = Binary::start(
        &env,
        &proxy,
        &[
            ("COLLECTOR_FAULT_STAGE", "sink lane 0:hang"),
            ("STALL_TIMEOUT_SEC", "5"),
        ],
        "stuck",
    );
    wait_healthy_and_ready(collector.addr).await;
    wait_until("/healthz fails", Duration::from_secs(60), || async {
        http_get(collector.addr, "/healthz").await.0 == 503
    })
    .await;
    // Stuck for good: it still fails, and says why.
    let (status, body) = http_get(collector.addr, "/healthz").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("stalled: sink lane 0 has had work and made no progress for"),
        "{body}"
    );
    let log = collector.log();
    assert!(
        log.lines()
            .any(|l| l.contains("pipeline stage stalled") && l.contains("sink lane 0")),
        "no log line names the stalled stage:\n{log}"
    );
    // Still running: replacing it is the orchestrator's call, on the failed probe.
    let status = collector.stop().await;
    assert!(status.code().is_some(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_no_record_can_get_past_opens_the_breaker_with_its_reason_until_fixed() {
    let env = TestEnv::new("denied").await;
    let proxy = FaultProxy::start(&env.endpoint, 40).await;
    let collector = env.start_collector(&proxy.endpoint, &[]).await;
    wait_healthy_and_ready(collector.http_addr).await;
    proxy.faults.set_put_records_error(Some("AccessDeniedException"));
    let (bodies, expected) = small_submissions(40_000, 10);
    env.send(&bodies).await;
    wait_until("the breaker opens", Duration::from_secs(60), || async {
        http_get(collector.http_addr, "/readyz").await.0 == 503
    })
    .await;
    let (_, reason) = http_get(collector.http_addr, "/readyz").await;
    assert!(
        reason.starts_with("not ready: Kinesis circuit breaker open: PutRecords fails with AccessDeniedException"),
        "{reason}"
    );
    // Nothing is dropped for it: the records wait, and go once the permission is back.
    assert_eq!(
        metric(&collector.metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"),
        0
    );
    proxy.faults.set_put_records_error(None);
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    assert_eq!(http_get(collector.http_addr, "/readyz").await.0, 200);
    let metrics = collector.metrics.clone();
    collector.stop().await;
    assert_eq!(metrics.breaker.breaker_open.get(), 0);
    verify(&env.read_stream().await, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_describe_stream_does_not_make_a_collector_denied_put_records_ready() {
    let env = TestEnv::new("denied-probe").await;
    let proxy = FaultProxy::start(&env.endpoint, 44).await;
    proxy.faults.set_put_records_error(Some("AccessDeniedException"));
    // Short leases, so that the lanes soon give up their records and hold nothing: then the
    // probe, not the lanes, is what asks Kinesis.
    let collector = env
        .start_collector(
            &proxy.endpoint,
            &[
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "3"),
                ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "3"),
                ("QUEUE_WAIT_TIME_SEC", "1"),
                ("RETRY_MAX_BACKOFF_MS", "1000"),
            ],
        )
        .await;
    let (bodies, expected) = small_submissions(44_000, 3);
    env.send(&bodies).await;
    let metrics = collector.metrics.clone();
    wait_until(
        "DescribeStreamSummary answered twice while PutRecords is denied",
        Duration::from_secs(120),
        || async { metric(&metrics, "telemetry_collector_kinesis_probes_total{outcome=\"ok\"}") >= 3 },
    )
    .await;
    let (status, reason) = http_get(collector.http_addr, "/readyz").await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("AccessDeniedException"), "{reason}");
    assert_eq!(metrics.breaker.breaker_open.get(), 1);
    assert_eq!(metric(&metrics, "telemetry_collector_deletes_total{outcome=\"ok\"}"), 0);
    // Fixed: a trial receive writes, the breaker closes, everything is published.
    proxy.faults.set_put_records_error(None);
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    wait_for_events(&env, &expected, Duration::from_secs(30)).await;
    assert_eq!(http_get(collector.http_addr, "/readyz").await.0, 200);
    collector.stop().await;
    verify(&env.read_stream().await, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_body_near_the_size_limit_still_reaches_the_dead_letter_queue() {
    let env = TestEnv::new("dlq-large").await;
    // The proxy counts attributes against SQS's 1 MiB as SQS does (the emulator does not).
    let proxy = FaultProxy::start(&env.endpoint, 41).await;
    let dlq_url = env
        .sqs
        .create_queue()
        .queue_name(format!("dlq-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    // Not base64, not JSON: invalid, and 76 bytes short of the limit.
    let body = "!".repeat(1_048_500);
    env.sqs
        .send_message()
        .queue_url(&env.queue_url)
        .message_body(&body)
        .send()
        .await
        .expect("SendMessage");
    let collector = env
        .start_collector(&proxy.endpoint, &[("DEAD_LETTER_QUEUE_URL", &dlq_url)])
        .await;
    wait_for_queue_empty(&env, Duration::from_secs(60)).await;
    let metrics = collector.metrics.clone();
    collector.stop().await;
    assert_eq!(
        metric(&metrics, "telemetry_collector_dead_letters_total{outcome=\"ok\"}"),
        1
    );
    assert_eq!(
        metric(&metrics, "telemetry_collector_dead_letters_total{outcome=\"failed\"}"),
        0
    );
    assert_eq!(
        proxy.faults.messages_too_long.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let out = env
        .sqs
        .receive_message()
        .queue_url(&dlq_url)
        .wait_time_seconds(5)
        .message_attribute_names("All")
        .send()
        .await
        .expect("ReceiveMessage from the dead-letter queue");
    let message = out
        .messages
        .unwrap_or_default()
        .pop()
        .expect("the body in the dead-letter queue");
    assert_eq!(message.body.as_deref(), Some(body.as_str()));
    let attributes = message.message_attributes.unwrap_or_default();
    // Room for the reason only.
    assert_eq!(
        attributes
            .get("rejection_reason")
            .and_then(|v| v.string_value.as_deref()),
        Some("not_base64")
    );
    assert!(!attributes.contains_key("rejection_detail"));
}
