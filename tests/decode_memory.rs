//! Memory per message: decoding and exploding the largest bodies SQS can deliver (1 MiB), shaped
//! to make the most allocations per byte, stays within a fixed multiple of the body size. The
//! heap is measured by a counting global allocator, so this file holds one test only.

use telemetry_testkit::hostile;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use telemetry_format::event::{PartitionKey, format_time_processed, to_records};
use telemetry_format::submission::{TimeBounds, decode};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// At most this many heap bytes per body byte, records included: 40 MiB for a 1 MiB body. The
/// collector reserves this much of its byte cap before it decodes a body.
const MAX_HEAP_PER_BODY_BYTE: usize = telemetry_format::submission::DECODE_HEAP_PER_BODY_BYTE;

/// The heap that decoding `body` and building its records takes at its peak, beyond what was
/// allocated before.
fn peak_heap(body: &str) -> (usize, &'static str) {
    let now = Utc::now();
    let time_processed = format_time_processed(now);
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let outcome = decode(body, &TimeBounds::default(), now).and_then(|sub| {
        to_records(&sub, &time_processed, PartitionKey::SubmissionId, 1024 * 1024).map(|(_, records)| records.len())
    });
    let label = match &outcome {
        Ok(_) => "valid",
        Err(r) => r.label(),
    };
    drop(outcome);
    (PEAK.load(Ordering::Relaxed) - before, label)
}

/// A valid submission (no events) whose ignored `extra` field is an array of `item`, repeated to
/// fill a 1 MiB base64 body.
fn ignored_array_of(item: &str) -> String {
    let head = r#"{"submission_id":"0badc0de-0000-4000-8000-0000000000ff","device_id":"31980191-fa99-4768-8a7b-0e81397ca6ef","time_created":"2021-03-28T15:44:18.592840","events":{},"extra":["#;
    let room = hostile::MAX_BASE64_PAYLOAD - head.len() - "]}".len();
    let items = room / (item.len() + 1);
    let json = format!("{head}{}{item}]}}", format!("{item},").repeat(items - 1));
    STANDARD.encode(json)
}

#[test]
fn heap_per_message_stays_within_a_multiple_of_the_body_size() {
    let mut bodies: Vec<(String, String)> = hostile::catalogue()
        .into_iter()
        .filter(|c| c.body.len() > hostile::MAX_BODY_BYTES / 2)
        .map(|c| (c.name, c.body))
        .collect();
    for item in [
        "0",
        "[]",
        "{}",
        r#"{"":0}"#,
        r#"{"a":0,"b":0,"c":0,"d":0,"e":0}"#,
        r#""""#,
    ] {
        bodies.push((format!("1 MiB ignored array of {item}"), ignored_array_of(item)));
    }
    let mut worst = 0.0f64;
    for (name, body) in &bodies {
        let (peak, label) = peak_heap(body);
        let per_byte = peak as f64 / body.len() as f64;
        println!(
            "{name}: {label}, {} body bytes, peak heap {peak} bytes ({per_byte:.1} per body byte)",
            body.len()
        );
        worst = worst.max(per_byte);
        assert!(
            peak <= MAX_HEAP_PER_BODY_BYTE * body.len(),
            "{name}: {peak} heap bytes for a {}-byte body",
            body.len()
        );
    }
    println!("worst: {worst:.1} heap bytes per body byte");
}
