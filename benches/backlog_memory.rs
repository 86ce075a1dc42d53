//! The collector's memory while a large backlog waits: the in-flight caps, not the backlog,
//! must decide how much it holds.
//!
//! `cargo bench --bench backlog_memory` gives the real binary (release build) a fake queue of
//! `BACKLOG_MESSAGES` sensor-fleet submissions, and samples the collector's RSS through two
//! phases: first the fake stream answers PutRecords only after `BACKLOG_PUT_DELAY_MS`, so the
//! collector's caps fill and stay full; then it answers at once, so the collector works through
//! the backlog as fast as it can. It prints the peak RSS (`VmHWM`) and the most messages seen
//! in flight (served and not yet deleted).
//!
//! Environment: `BACKLOG_MESSAGES` (default 1000000), `BACKLOG_POOL` (distinct submissions,
//! default 2000), `BACKLOG_PUT_DELAY_MS` (default 500), `BACKLOG_SLOW_SECONDS` (default 20),
//! `BACKLOG_FAST_SECONDS` (default 20). Collector settings in the environment are passed on;
//! `COLLECTOR_BIN` runs another build of the collector; `BACKLOG_TRACE=1` prints the fake's
//! counters every half second.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::fake_aws::{FakeAws, FakeState, events_of_first};
use support::{CollectorProcess, env_or, fleet_pool, mib};

const SAMPLE: Duration = Duration::from_millis(50);

/// What the samples of one phase showed.
#[derive(Default)]
struct Phase {
    peak_rss: u64,
    max_in_flight: u64,
    samples: u64,
}

fn sample_for(collector: &mut CollectorProcess, state: &FakeState, how_long: Duration) -> Phase {
    let mut phase = Phase::default();
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        collector.check_running();
        phase.peak_rss = phase.peak_rss.max(collector.rss_bytes());
        let in_flight = state.messages_served.load(Ordering::SeqCst) - state.messages_deleted.load(Ordering::SeqCst);
        phase.max_in_flight = phase.max_in_flight.max(in_flight);
        phase.samples += 1;
        if std::env::var_os("BACKLOG_TRACE").is_some() && phase.samples % 10 == 0 {
            eprintln!(
                "trace: served {} deleted {} acked {} receive {} put {} put waiting {} started {} answered {}",
                state.messages_served.load(Ordering::SeqCst),
                state.messages_deleted.load(Ordering::SeqCst),
                state.records_acknowledged.load(Ordering::SeqCst),
                state.receive_calls.load(Ordering::SeqCst),
                state.put_records_calls.load(Ordering::SeqCst),
                state.put_records_waiting.load(Ordering::SeqCst),
                state.requests_started.load(Ordering::SeqCst),
                state.requests_answered.load(Ordering::SeqCst)
            );
        }
        std::thread::sleep(SAMPLE);
    }
    phase
}

fn main() {
    let backlog: u64 = env_or("BACKLOG_MESSAGES", 1_000_000);
    let pool_size: usize = env_or("BACKLOG_POOL", 2000);
    let put_delay = Duration::from_millis(env_or("BACKLOG_PUT_DELAY_MS", 500));
    let slow = Duration::from_secs(env_or("BACKLOG_SLOW_SECONDS", 20));
    let fast = Duration::from_secs(env_or("BACKLOG_FAST_SECONDS", 20));

    let pool = fleet_pool(pool_size, 11, 0.05);
    let backlog_events = events_of_first(&pool, backlog);
    let fake = FakeAws::start(FakeState::new(pool, backlog, put_delay));
    let state = fake.state.clone();
    println!(
        "backlog_memory: {backlog} messages waiting ({backlog_events} events); PutRecords delayed {} ms for {} s, then instant for {} s",
        put_delay.as_millis(),
        slow.as_secs(),
        fast.as_secs()
    );

    let mut collector = CollectorProcess::start(&fake.endpoint, "backlog_memory");
    collector.wait_until_served(&state, SAMPLE);
    let slow_phase = sample_for(&mut collector, &state, slow);
    let acknowledged_slow = state.records_acknowledged.load(Ordering::SeqCst);
    state.put_records_delay_us.store(0, Ordering::SeqCst);
    let fast_started = Instant::now();
    let fast_phase = sample_for(&mut collector, &state, fast);
    let fast_seconds = fast_started.elapsed().as_secs_f64();
    // The kernel's RSS counters lag a little: the highest sample can pass VmHWM.
    let hwm = collector
        .peak_rss_bytes()
        .max(slow_phase.peak_rss)
        .max(fast_phase.peak_rss);
    let final_rss = collector.rss_bytes();
    collector.stop(Duration::from_secs(10));

    let served = state.messages_served.load(Ordering::SeqCst);
    let acknowledged = state.records_acknowledged.load(Ordering::SeqCst);
    println!("\nbacklog_memory summary");
    println!(
        "  slow stream: peak RSS MiB {:.1}, most messages in flight {}, events acknowledged {acknowledged_slow} ({:.0} events/s)",
        mib(slow_phase.peak_rss),
        slow_phase.max_in_flight,
        acknowledged_slow as f64 / slow.as_secs_f64().max(1e-9)
    );
    println!(
        "  fast stream: peak RSS MiB {:.1}, most messages in flight {}, events acknowledged {} ({:.0} events/s)",
        mib(fast_phase.peak_rss),
        fast_phase.max_in_flight,
        acknowledged - acknowledged_slow,
        (acknowledged - acknowledged_slow) as f64 / fast_seconds
    );
    println!(
        "  backlog left               {} of {backlog} messages",
        backlog - served
    );
    println!(
        "  messages deleted           {}",
        state.messages_deleted.load(Ordering::SeqCst)
    );
    println!(
        "  collector peak RSS MiB     {:.1}  (VmHWM or the highest sample, over the whole run)",
        mib(hwm)
    );
    println!("  collector RSS at end MiB   {:.1}", mib(final_rss));
    println!(
        "  calls                      ReceiveMessage {}, PutRecords {} ({} unanswered at the end), DeleteMessageBatch {}, visibility changes {}",
        state.receive_calls.load(Ordering::SeqCst),
        state.put_records_calls.load(Ordering::SeqCst),
        state.put_records_waiting.load(Ordering::SeqCst),
        state.delete_calls.load(Ordering::SeqCst),
        state.visibility_changes.load(Ordering::SeqCst)
    );
    let bad = state.bad_requests.load(Ordering::SeqCst);
    if bad > 0 {
        eprintln!(
            "{bad} bad requests (first: {:?})",
            state.first_bad_request.lock().unwrap()
        );
        std::process::exit(1);
    }
}
