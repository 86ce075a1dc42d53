//! Memory is bounded by `MAX_IN_FLIGHT_BYTES` whatever the sizes of the submissions: a backlog
//! of large ones, which explode into many records, raises the real binary's resident memory by
//! at most twice the cap (bodies waiting, and what decoding and the records take), or one
//! message larger than the cap going through alone, plus room for the allocator; and every
//! event is still published in order. Alone in its file, so that
//! the process it measures is its own.

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::time::Duration;

use serde_json::json;
use support::checks::{verify, wait_for_events, wait_for_queue_empty};
use support::submissions::Expected;
use support::{CollectorHarness, TestEnv, free_port, http_get, sigterm, wait_until};
use telemetry_format::submission::DECODE_HEAP_PER_BODY_BYTE;

/// The byte cap the collector runs with.
const CAP: u64 = 2 * 1024 * 1024;
/// What the allocator may keep beyond the two budgets (arenas of the runtime's threads,
/// fragmentation).
const ALLOCATOR_ROOM: u64 = 10 * 1024 * 1024;

/// A submission of `events` of the smallest events there are (each becomes a record some
/// fifteen times its size), as raw JSON (which the contract accepts), and what it must produce.
fn large_submission(n: u64, events: usize) -> (String, Expected) {
    let submission_id = format!("7a3c0000-0000-4000-8000-{n:012x}");
    let device_id = "31980191-fa99-4768-8a7b-0e81397ca6ef";
    let items: Vec<serde_json::Value> = (0..events).map(|_| json!({"cmdl": "", "user": ""})).collect();
    let body = json!({
        "submission_id": submission_id,
        "device_id": device_id,
        "time_created": "2021-03-28T15:44:18.592840",
        "events": {"new_process": items},
    });
    let expected = Expected {
        submission_id: submission_id.clone(),
        device_id: device_id.to_owned(),
        time_created: "2021-03-28T15:44:18.592840".to_owned(),
        events: items.iter().map(|item| ("new_process", item.clone())).collect(),
    };
    (body.to_string(), expected)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_large_submissions_raises_memory_by_at_most_twice_the_byte_cap() {
    let env = TestEnv::new("memory-bound").await;
    let addr = format!("127.0.0.1:{}", free_port());
    let cap = CAP.to_string();
    let mut child = env.spawn_binary(
        &[
            ("HTTP_LISTEN_ADDRESS", addr.as_str()),
            ("MAX_IN_FLIGHT_BYTES", cap.as_str()),
            ("QUEUE_RECEIVERS", "16"),
            ("QUEUE_WAIT_TIME_SEC", "1"),
        ],
        "memory-bound",
    );
    let pid = child.id().expect("collector pid");
    let addr = addr.parse().expect("address");
    wait_until("/readyz answers 200", Duration::from_secs(60), || async {
        http_get(addr, "/readyz").await.0 == 200
    })
    .await;
    let baseline = status_kib(pid, "VmRSS:") * 1024;
    // About 230 KiB each, 10,500 events: almost 4 MiB of records apiece, 30 MiB in all.
    let (bodies, expected): (Vec<String>, Vec<Expected>) = (0..8).map(|n| large_submission(n, 10_500)).unzip();
    assert!(bodies.iter().all(|b| b.len() > 200 * 1024 && b.len() < 256 * 1024));
    for body in &bodies {
        env.send(std::slice::from_ref(body)).await;
    }
    wait_for_queue_empty(&env, Duration::from_secs(240)).await;
    wait_for_events(&env, &expected, Duration::from_secs(60)).await;
    let peak = status_kib(pid, "VmHWM:") * 1024;
    sigterm(&child);
    assert!(child.wait().await.expect("exit").success());
    let growth = peak.saturating_sub(baseline);
    println!(
        "baseline RSS {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB (cap {:.1} MiB)",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        CAP as f64 / 1048576.0
    );
    // A body larger than the cap allows for goes through alone, with what it takes.
    let alone = (DECODE_HEAP_PER_BODY_BYTE * bodies[0].len()) as u64;
    assert!(
        growth <= 2 * CAP + alone + ALLOCATOR_ROOM,
        "resident memory grew by {growth} bytes with a {CAP}-byte cap"
    );
    verify(&env.read_stream().await, &expected, false);
}
