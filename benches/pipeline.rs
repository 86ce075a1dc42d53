//! Micro-benchmark of the collector's per-message CPU work, as `sqs_source` does it for every
//! message: take the clock, decode and validate the body, explode the submission into events
//! and serialise each event as its record.
//!
//! `cargo bench --bench pipeline` measures submissions of fixed sizes (from
//! `fleet::generate::valid`) and a realistic mix (from `fleet::generate::Fleet`), then prints a
//! summary: ns per event and events/s on one core. Before that it counts heap allocations per
//! event with a counting global allocator (a thread-local counter, so timings are barely
//! affected).
//!
//! Environment: `PIPELINE_SIZES` (events per submission, comma-separated, default
//! `1,5,20,100,400`), `PIPELINE_MIX` (submissions in the fleet mix, default 200; 0 leaves it
//! out). Criterion's own options follow `--`, e.g. `-- --warm-up-time 1 --measurement-time 2`.
//! `PIPELINE_PASSES=N` skips criterion and runs N passes over every case, for a profiler
//! (`perf record`, `valgrind --tool=callgrind` or `--tool=dhat`) to watch a fixed workload.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::PathBuf;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput};
use telemetry_fleet::generate::{Fleet, FleetSettings, Outcome, valid};
use telemetry_format::event::{self, PartitionKey};
use telemetry_format::submission::{self, TimeBounds};

/// Counts allocations made on the current thread; otherwise the system allocator.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static ALLOCATED_BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    let _ = ALLOCATED_BYTES.try_with(|n| n.set(n.get() + bytes as u64));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> (u64, u64) {
    (ALLOCATIONS.with(Cell::get), ALLOCATED_BYTES.with(Cell::get))
}

/// What the collector does with one message body; returns the number of records.
fn process(body: &str, bounds: &TimeBounds) -> usize {
    let now = Utc::now();
    let time_processed = event::format_time_processed(now);
    match submission::decode(body, bounds, now)
        .and_then(|sub| event::to_records(&sub, &time_processed, PartitionKey::SubmissionId, 1 << 20))
    {
        Ok((key, records)) => {
            black_box(&key);
            black_box(&records);
            records.len()
        }
        Err(rejection) => {
            black_box(&rejection);
            0
        }
    }
}

/// One benchmark case: message bodies and the events they hold.
struct Case {
    name: String,
    bodies: Vec<String>,
    events: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn cases() -> Vec<Case> {
    let sizes: Vec<usize> = std::env::var("PIPELINE_SIZES")
        .unwrap_or_else(|_| "1,5,20,100,400".to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .expect("PIPELINE_SIZES is a comma-separated list of integers")
        })
        .collect();
    let mut cases: Vec<Case> = sizes
        .iter()
        .map(|&n| {
            // Both event types, network connections first on even sizes.
            let processes = n / 2;
            let (body, _) = valid(7, processes, n - processes, n % 2 == 0);
            Case {
                name: format!("events/{n}"),
                bodies: vec![body],
                events: n as u64,
            }
        })
        .collect();
    let mix: usize = env_or("PIPELINE_MIX", 200);
    if mix > 0 {
        let mut fleet = Fleet::new(42, FleetSettings::default());
        let now = Utc::now().naive_utc();
        let generated: Vec<_> = (0..mix).map(|_| fleet.next(now)).collect();
        let events = generated
            .iter()
            .map(|g| match &g.outcome {
                Outcome::Valid(expected) => expected.events.len() as u64,
                Outcome::Invalid(_) => 0,
            })
            .sum();
        cases.push(Case {
            name: format!("fleet_mix/{mix}_messages"),
            bodies: generated.into_iter().map(|g| g.body).collect(),
            events,
        });
    }
    cases
}

fn run_case(case: &Case, bounds: &TimeBounds) -> u64 {
    case.bodies.iter().map(|b| process(b, bounds) as u64).sum()
}

/// Allocations per event of each case, measured over one pass (after a warm-up pass).
fn print_allocations(cases: &[Case], bounds: &TimeBounds) {
    println!("allocations per event (one pass, this thread):");
    for case in cases {
        let published = run_case(case, bounds);
        assert_eq!(
            published, case.events,
            "{}: every generated event is published",
            case.name
        );
        let (n0, b0) = allocations();
        run_case(case, bounds);
        let (n1, b1) = allocations();
        let events = case.events.max(1) as f64;
        println!(
            "  {:<28} {:>8.1} allocations/event {:>10.0} bytes allocated/event",
            case.name,
            (n1 - n0) as f64 / events,
            (b1 - b0) as f64 / events
        );
    }
}

/// Criterion's time per iteration of a case, from the estimates it writes: the slope of its
/// linear fit where it made one (the figure it prints as `time`), else the mean.
fn estimate_ns(group: &str, id: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("criterion").join(group).join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["mean"]["point_estimate"].as_f64())
}

fn main() {
    let bounds = TimeBounds::default();
    let cases = cases();
    print_allocations(&cases, &bounds);
    if let Ok(passes) = std::env::var("PIPELINE_PASSES") {
        let passes: u64 = passes.parse().expect("PIPELINE_PASSES is a number");
        let started = std::time::Instant::now();
        let events: u64 = (0..passes)
            .map(|_| cases.iter().map(|case| run_case(case, &bounds)).sum::<u64>())
            .sum();
        println!(
            "{passes} passes: {events} events in {:.3} s",
            started.elapsed().as_secs_f64()
        );
        return;
    }

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("decode_explode_serialize");
        for case in &cases {
            group.throughput(Throughput::Elements(case.events));
            group.bench_with_input(BenchmarkId::from_parameter(&case.name), case, |b, case| {
                b.iter(|| run_case(case, &bounds))
            });
        }
        group.finish();
    }
    criterion.final_summary();

    println!("\nsummary (one core):");
    println!(
        "  {:<28} {:>8} {:>14} {:>10} {:>14}",
        "case", "events", "ns/iteration", "ns/event", "events/s"
    );
    for case in &cases {
        // Criterion stores ids with `/` replaced by `_`.
        let id = case.name.replace('/', "_");
        match estimate_ns("decode_explode_serialize", &id) {
            Some(ns) => {
                let per_event = ns / case.events.max(1) as f64;
                println!(
                    "  {:<28} {:>8} {:>14.0} {:>10.0} {:>14.0}",
                    case.name,
                    case.events,
                    ns,
                    per_event,
                    1e9 / per_event
                );
            }
            None => println!("  {:<28} (no estimate written)", case.name),
        }
    }
}
