//! What the tests check on the stream and in the queue, shared by every integration test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use telemetry_format::event::event_id;

use super::submissions::{self, Expected};
use super::{StreamRecord, TestEnv, wait_until};

/// Finds 0..n as an in-order subsequence of `indices`.
pub fn has_in_order_subsequence(indices: &[u64], n: usize) -> bool {
    let mut next = 0u64;
    for &i in indices {
        if i == next {
            next += 1;
        }
    }
    next as usize >= n
}

/// Checks the stream against the expected submissions. With `exactly_once`, every event must
/// appear once; otherwise duplicates are allowed but must be identical apart from
/// `time_processed`, and each submission's events must contain `0..n` in order on its shard.
pub fn verify(records: &[StreamRecord], expected: &[Expected], exactly_once: bool) {
    let by_id: HashMap<&str, &Expected> = expected.iter().map(|e| (e.submission_id.as_str(), e)).collect();
    let mut per_submission: BTreeMap<&str, Vec<&StreamRecord>> = BTreeMap::new();
    for r in records {
        let id = r.submission_id();
        assert!(
            by_id.contains_key(id),
            "unexpected submission on the stream: {}",
            r.event
        );
        per_submission.entry(id).or_default().push(r);
    }
    let mut total = 0;
    for e in expected {
        let n = e.events.len();
        total += n;
        let found = per_submission
            .get(e.submission_id.as_str())
            .cloned()
            .unwrap_or_default();
        if n == 0 {
            assert!(
                found.is_empty(),
                "submission {} has no events but records were published",
                e.submission_id
            );
            continue;
        }
        let shards: HashSet<&str> = found.iter().map(|r| r.shard_id.as_str()).collect();
        assert_eq!(shards.len(), 1, "events of {} span shards {shards:?}", e.submission_id);
        let indices: Vec<u64> = found.iter().map(|r| r.event_index()).collect();
        if exactly_once {
            assert_eq!(
                indices,
                (0..n as u64).collect::<Vec<_>>(),
                "events of {} not exactly once in order",
                e.submission_id
            );
        } else {
            assert!(
                has_in_order_subsequence(&indices, n),
                "events of {} lack 0..{n} in order: {indices:?}",
                e.submission_id
            );
        }
        for r in found {
            let i = r.event_index() as usize;
            assert!(i < n, "event_index {i} out of range for {}", e.submission_id);
            let sid = uuid::Uuid::parse_str(&e.submission_id).unwrap();
            let (kind, data) = &e.events[i];
            let mut want = json!({
                "event_id": event_id(sid, i).to_string(),
                "type": kind,
                "device_id": e.device_id,
                "submission_id": e.submission_id,
                "time_created": e.time_created,
                "event_index": i,
                "event_count": n,
                "type_specific_data": data,
            });
            let tp = r.event["time_processed"].as_str().expect("time_processed is a string");
            assert!(
                tp.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(tp).is_ok(),
                "time_processed {tp}"
            );
            want["time_processed"] = Value::String(tp.to_owned());
            assert_eq!(r.event, want, "record differs from the specification");
            assert_eq!(r.partition_key, e.submission_id, "partition key");
        }
    }
    if exactly_once {
        assert_eq!(records.len(), total, "records on the stream");
    }
}

pub async fn wait_for_queue_empty(env: &TestEnv, timeout: Duration) {
    wait_until("queue empty", timeout, || async { env.queue_total().await == 0 }).await;
}

pub async fn wait_for_events(env: &TestEnv, expected: &[Expected], timeout: Duration) {
    let want: usize = expected.iter().map(|e| e.events.len()).sum();
    wait_until(&format!("{want} distinct events on the stream"), timeout, || async {
        let distinct: HashSet<(String, u64)> = env
            .read_stream()
            .await
            .iter()
            .map(|r| (r.submission_id().to_owned(), r.event_index()))
            .collect();
        distinct.len() >= want
    })
    .await;
}

/// 200 mixed submissions plus three special ones.
pub fn mixed_submissions(salt: u64, count: u64) -> (Vec<String>, Vec<Expected>) {
    let mut bodies = Vec::new();
    let mut expected = Vec::new();
    let mut add = |(body, e): (String, Expected)| {
        bodies.push(body);
        expected.push(e);
    };
    add(submissions::valid(salt, 400, 150, false)); // 550 events: spans PutRecords calls
    add(submissions::valid(salt + 1, 2, 3, true)); // network_connection listed first
    add(submissions::valid(salt + 2, 0, 0, false)); // zero events
    for n in 3..count {
        add(submissions::valid(
            salt + n,
            (n % 5) as usize,
            (n % 4) as usize,
            n % 3 == 0,
        ));
    }
    (bodies, expected)
}
