//! The collector's ceiling: the real binary (release build) against a fake SQS + Kinesis that
//! answers at once, so that only the collector's own cost is measured.
//!
//! `cargo bench --bench ceiling` serves messages from a pool of sensor-fleet submissions until
//! `CEILING_EVENTS` events are served, and waits until every event is acknowledged and every
//! message deleted. The collector runs as a child process, so the fake's CPU is not counted in
//! the collector's figures (it is printed apart); CPU comes from `/proc/PID/stat`, the peak RSS
//! from `VmHWM` in `/proc/PID/status`.
//!
//! A run's CPU per event moves with the shared machine's pace (the fake's own CPU moves with
//! it), so the benchmark makes `CEILING_RUNS` runs, each with a fresh collector and fake, and
//! ends with the median and the range of each figure.
//!
//! Environment: `CEILING_EVENTS` (default 1000000), `CEILING_RUNS` (default 5), `CEILING_POOL`
//! (distinct submissions, default 2000), `CEILING_INVALID_SHARE` (default 0),
//! `CEILING_TIMEOUT_SEC` (default 600, per run).
//! Collector settings (`QUEUE_RECEIVERS`, `DATA_STREAM_CONCURRENCY`, ...) set in the environment
//! are passed on to it; `COLLECTOR_BIN` runs another build of the collector (to compare two).

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::fake_aws::{FakeAws, FakeState, PooledMessage, events_of_first, messages_for_events};
use support::{CollectorProcess, cpu_seconds, env_or, fleet_pool, mib};

const POLL: Duration = Duration::from_millis(10);

/// What one run measured.
struct RunFigures {
    events_per_second: f64,
    cpu_per_million_events: f64,
    peak_rss_mib: f64,
}

fn main() {
    let target_events: u64 = env_or("CEILING_EVENTS", 1_000_000);
    let runs: usize = env_or("CEILING_RUNS", 5).max(1);
    let pool_size: usize = env_or("CEILING_POOL", 2000);
    let invalid_share: f64 = env_or("CEILING_INVALID_SHARE", 0.0);
    let timeout = Duration::from_secs(env_or("CEILING_TIMEOUT_SEC", 600));

    let pool = fleet_pool(pool_size, 7, invalid_share);
    let figures: Vec<RunFigures> = (1..=runs)
        .map(|run| {
            println!("\nrun {run} of {runs}");
            measure(pool.clone(), target_events, timeout)
        })
        .collect();
    println!("\nceiling over {runs} runs: median (least - most)");
    print_spread("events/s", figures.iter().map(|f| f.events_per_second), 0);
    print_spread(
        "CPU s per million events",
        figures.iter().map(|f| f.cpu_per_million_events),
        2,
    );
    print_spread("collector peak RSS MiB", figures.iter().map(|f| f.peak_rss_mib), 1);
}

fn print_spread(name: &str, values: impl Iterator<Item = f64>, decimals: usize) {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    println!(
        "  {name:<25} {median:.decimals$}  ({:.decimals$} - {:.decimals$})",
        values[0],
        values[n - 1]
    );
}

/// One run: a fresh fake serving `target_events` events from `pool` and a fresh collector.
/// Exits the benchmark if the run does not complete cleanly.
fn measure(pool: Vec<PooledMessage>, target_events: u64, timeout: Duration) -> RunFigures {
    let pool_size = pool.len();
    let messages = messages_for_events(&pool, target_events);
    let expected_events = events_of_first(&pool, messages);
    let state = FakeState::new(pool, messages, Duration::ZERO);
    let fake = FakeAws::start(state);
    let state = fake.state.clone();
    println!(
        "ceiling: {messages} messages ({expected_events} events) from a pool of {pool_size} sensor-fleet submissions; fake endpoint {}",
        fake.endpoint
    );

    let own_pid = std::process::id();
    let mut collector = CollectorProcess::start(&fake.endpoint, "ceiling");
    println!("collector pid {} (to profile it: perf record -p PID)", collector.pid());
    let first_served_at = collector.wait_until_served(&state, POLL);
    let t0 = first_served_at;
    let collector_cpu0 = collector.cpu_seconds();
    let fake_cpu0 = cpu_seconds(own_pid).unwrap_or(f64::NAN);

    let (mut at_10, mut at_90) = (None, None);
    let mut peak_rss = 0;
    let mut last_report = Instant::now();
    while !state.all_done() {
        collector.check_running();
        let acknowledged = state.records_acknowledged.load(Ordering::SeqCst);
        if at_10.is_none() && acknowledged * 10 >= expected_events {
            at_10 = Some((Instant::now(), acknowledged));
        }
        if at_90.is_none() && acknowledged * 10 >= expected_events * 9 {
            at_90 = Some((Instant::now(), acknowledged));
        }
        peak_rss = peak_rss.max(collector.rss_bytes());
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  ... {:.0} s: {acknowledged} events acknowledged, {} messages deleted",
                t0.elapsed().as_secs_f64(),
                state.messages_deleted.load(Ordering::SeqCst)
            );
        }
        if t0.elapsed() > timeout {
            eprintln!(
                "timed out after {} s; see {}",
                timeout.as_secs(),
                collector.log.display()
            );
            break;
        }
        std::thread::sleep(POLL);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let collector_cpu = collector.cpu_seconds() - collector_cpu0;
    let fake_cpu = cpu_seconds(own_pid).unwrap_or(f64::NAN) - fake_cpu0;
    let hwm = collector.peak_rss_bytes().max(peak_rss);
    let log = collector.log.clone();
    collector.stop(Duration::from_secs(10));

    let acknowledged = state.records_acknowledged.load(Ordering::SeqCst);
    let deleted = state.messages_deleted.load(Ordering::SeqCst);
    let put_calls = state.put_records_calls.load(Ordering::SeqCst).max(1);
    let millions = acknowledged as f64 / 1e6;
    println!("\nceiling summary (collector as a child process; fake endpoint on one thread of this process)");
    println!("  messages deleted          {deleted} of {messages}");
    println!("  events acknowledged       {acknowledged} of {expected_events}");
    println!("  seconds                   {seconds:.2}  (first message served -> all acknowledged and deleted)");
    println!("  events/s                  {:.0}", acknowledged as f64 / seconds);
    if let (Some((t10, n10)), Some((t90, n90))) = (at_10, at_90) {
        let steady = (n90 - n10) as f64 / (t90 - t10).as_secs_f64().max(1e-9);
        println!("  events/s (10%..90%)       {steady:.0}  (without start-up and the last flush/delete intervals)");
    }
    println!(
        "  collector CPU s           {collector_cpu:.2}  ({:.2} cores busy)",
        collector_cpu / seconds
    );
    println!("  CPU s per million events  {:.2}", collector_cpu / millions);
    println!("  collector peak RSS MiB    {:.1}", mib(hwm));
    println!("  fake endpoint CPU s       {fake_cpu:.2}");
    println!(
        "  calls                     ReceiveMessage {}, PutRecords {} ({:.0} records each), DeleteMessageBatch {}, visibility changes {}",
        state.receive_calls.load(Ordering::SeqCst),
        put_calls,
        acknowledged as f64 / put_calls as f64,
        state.delete_calls.load(Ordering::SeqCst),
        state.visibility_changes.load(Ordering::SeqCst)
    );
    let bad = state.bad_requests.load(Ordering::SeqCst);
    let duplicates = state.duplicate_deletes.load(Ordering::SeqCst);
    if bad > 0 || duplicates > 0 || acknowledged != expected_events || deleted != messages {
        eprintln!(
            "run did not complete cleanly: {bad} bad requests (first: {:?}), {duplicates} repeated deletes; collector log: {}",
            state.first_bad_request.lock().unwrap(),
            log.display()
        );
        std::process::exit(1);
    }
    RunFigures {
        events_per_second: acknowledged as f64 / seconds,
        cpu_per_million_events: collector_cpu / millions,
        peak_rss_mib: mib(hwm),
    }
}
