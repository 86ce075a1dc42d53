//! Resize calls per day: the shard supervisor's pure policy (`shard_supervisor::policy`) fed a
//! simulated diurnal day, minute by minute, with a fast clock.
//!
//! Traffic follows a sine between `DAY_LOW` and `DAY_HIGH` (20% and 180%) of the starting
//! stream's capacity (`DAY_SHARDS` shards, 4: 1,000 records/s each), lowest at midnight, with
//! ±`DAY_NOISE` (5%) of noise per minute (seeded, `DAY_SEED`). The stream is simulated: a
//! minute writes at most its shards' capacity, what does not fit waits (the queue holds it) and
//! is written later, and CloudWatch gets what was written (`IncomingRecords`, `IncomingBytes`)
//! and what was refused (`WriteProvisionedThroughputExceeded`), each minute's point visible
//! `SHARD_SUPERVISOR_METRICS_DELAY_SEC` after it. An UpdateShardCount call leaves the stream
//! UPDATING for `DAY_RESHARD_MINUTES` (5) and then changes its count; Kinesis refuses calls
//! beyond 10 in any 24 hours of the stream's, whoever makes them.
//!
//! Two ways of deciding, with the supervisor's default settings (every 60 s a 5-minute window
//! ending 180 s ago, band 30–80%, 1–16 shards, cooldown 3,600 s, autoscale on):
//!
//! - `fleet`: one supervisor reading the stream's own figures (the `supervise` mode);
//! - `per-replica`: `DAY_REPLICAS` (3) supervisors, each seeing the 1/N of the writes its
//!   replica made, as the supervisor inside each collector did before.
//!
//! `cargo bench --bench supervisor_day` prints, per way and per simulated day (`DAY_DAYS`, 2:
//! the first starts from `DAY_SHARDS`, the next from where the first ended), the resize calls
//! (made, accepted, refused: by Kinesis's daily limit or because another call is under way),
//! the minutes the traffic was above the band and the minutes records were refused
//! (throttled), the largest backlog and the one left at the day's end (millions of records
//! waiting in the queue), the shard-hours and the shard counts, then the shard count hour by
//! hour on the last day. No timing is asserted.

use std::time::{Duration, Instant};

use telemetry_collector::shard_supervisor::policy::{
    DAILY_RESIZE_CALLS, Decider, Decision, Minute, Policy, StreamMode, StreamState, StreamStatus, observe,
};

const MINUTE: Duration = Duration::from_secs(60);
const DAY_MINUTES: usize = 24 * 60;
/// Bytes per record: the records limit is reached long before the bytes limit.
const RECORD_BYTES: f64 = 300.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift64*), uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Settings {
    start_shards: u32,
    low: f64,
    high: f64,
    noise: f64,
    seed: u64,
    replicas: u32,
    reshard_minutes: usize,
    days: usize,
    delay_minutes: usize,
    policy: Policy,
}

/// Records offered per minute, minute by minute, for the whole run: the same for both ways.
fn traffic(s: &Settings) -> Vec<f64> {
    let capacity = f64::from(s.start_shards) * 1000.0 * 60.0;
    let mut rng = Rng(s.seed.max(1));
    (0..s.days * DAY_MINUTES)
        .map(|m| {
            let phase = (m % DAY_MINUTES) as f64 / DAY_MINUTES as f64 * std::f64::consts::TAU;
            // Lowest at midnight, highest at noon.
            let share = s.low + (s.high - s.low) * (1.0 - phase.cos()) / 2.0;
            let noise = 1.0 + s.noise * (2.0 * rng.next() - 1.0);
            capacity * share * noise
        })
        .collect()
}

#[derive(Default, Clone)]
struct DayFigures {
    calls: u32,
    accepted: u32,
    refused: u32,
    minutes_above_band: u32,
    minutes_throttled: u32,
    peak_backlog_records: f64,
    end_backlog_records: f64,
    shard_minutes: f64,
    min_shards: u32,
    max_shards: u32,
    hourly_shards: Vec<u32>,
}

/// Runs the simulated days with `deciders` supervisors, each seeing `share` of the writes.
fn simulate(s: &Settings, offered: &[f64], deciders: u32, share: f64) -> Vec<DayFigures> {
    let t0 = Instant::now();
    let mut decider: Vec<Decider> = (0..deciders).map(|_| Decider::new(s.policy)).collect();
    let mut shards = s.start_shards;
    // (minute the update ends, new count), while UPDATING.
    let mut updating: Option<(usize, u32)> = None;
    // When Kinesis accepted a call: its 10-per-24-hours limit is the stream's.
    let mut stream_calls: Vec<usize> = Vec::new();
    let mut backlog = 0.0;
    let mut history: Vec<Minute> = Vec::with_capacity(offered.len());
    let mut days = vec![
        DayFigures {
            min_shards: u32::MAX,
            ..DayFigures::default()
        };
        s.days
    ];
    let band_high = s.policy.band_high;
    for (m, &offered_now) in offered.iter().enumerate() {
        if let Some((ends, target)) = updating
            && m >= ends
        {
            shards = target;
            updating = None;
        }
        let day = &mut days[m / DAY_MINUTES];
        // The minute's writes: what fits in the shards; the rest waits and is tried again.
        let capacity = f64::from(shards) * 1000.0 * 60.0;
        let demand = offered_now + backlog;
        let written = demand.min(capacity);
        let refused = demand - written;
        backlog = refused;
        history.push(Minute {
            records: Some(written),
            bytes: Some(written * RECORD_BYTES),
            throttled: Some(refused),
            hottest_shard: None,
        });
        if offered_now / capacity > band_high {
            day.minutes_above_band += 1;
        }
        if refused > 0.0 {
            day.minutes_throttled += 1;
        }
        day.peak_backlog_records = day.peak_backlog_records.max(backlog);
        day.end_backlog_records = backlog;
        day.shard_minutes += f64::from(shards);
        day.min_shards = day.min_shards.min(shards);
        day.max_shards = day.max_shards.max(shards);
        if m % 60 == 0 {
            day.hourly_shards.push(shards);
        }

        // Each supervisor decides at the end of the minute, on the window ending the delay ago.
        let now = t0 + MINUTE * (m as u32 + 1);
        let end = (m + 1).saturating_sub(s.delay_minutes);
        let windows = s.policy.windows as usize;
        for d in decider.iter_mut() {
            let state = StreamState {
                mode: StreamMode::Provisioned,
                status: if updating.is_some() {
                    StreamStatus::Updating
                } else {
                    StreamStatus::Active
                },
                open_shards: shards,
            };
            let observation = if end < windows {
                observe(&[], shards)
            } else {
                let seen: Vec<Minute> = history[end - windows..end]
                    .iter()
                    .map(|minute| Minute {
                        records: minute.records.map(|r| r * share),
                        bytes: minute.bytes.map(|b| b * share),
                        throttled: minute.throttled.map(|t| t * share),
                        hottest_shard: None,
                    })
                    .collect();
                observe(&seen, shards)
            };
            if let Decision::Resize(r) = d.decide(observation, state, now) {
                d.resize_called(now);
                day.calls += 1;
                stream_calls.retain(|at| m - at < DAY_MINUTES);
                if updating.is_some() {
                    // ResourceInUseException: another one's call is under way.
                    day.refused += 1;
                } else if stream_calls.len() as u32 >= DAILY_RESIZE_CALLS {
                    // LimitExceededException.
                    day.refused += 1;
                } else {
                    day.accepted += 1;
                    stream_calls.push(m);
                    updating = Some((m + 1 + s.reshard_minutes, r.target));
                }
            }
        }
    }
    days
}

fn print(way: &str, days: &[DayFigures]) {
    for (i, d) in days.iter().enumerate() {
        println!(
            "{way:<12} {:>3} {:>5} {:>8} {:>7} {:>11} {:>10} {:>13.1} {:>12.1} {:>11.1} {:>7}",
            i + 1,
            d.calls,
            d.accepted,
            d.refused,
            d.minutes_above_band,
            d.minutes_throttled,
            d.peak_backlog_records / 1e6,
            d.end_backlog_records / 1e6,
            d.shard_minutes / 60.0,
            format!("{}-{}", d.min_shards, d.max_shards),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let s = Settings {
        start_shards: env_or("DAY_SHARDS", 4),
        low: env_or("DAY_LOW", 0.2),
        high: env_or("DAY_HIGH", 1.8),
        noise: env_or("DAY_NOISE", 0.05),
        seed: env_or("DAY_SEED", 1),
        replicas: env_or("DAY_REPLICAS", 3),
        reshard_minutes: env_or("DAY_RESHARD_MINUTES", 5),
        days: env_or("DAY_DAYS", 2usize).max(1),
        // SHARD_SUPERVISOR_METRICS_DELAY_SEC 180; the interval, 60 s, is the simulation's step.
        delay_minutes: 3,
        policy: Policy {
            band_low: 0.3,
            band_high: 0.8,
            windows: 5,
            min_shards: 1,
            max_shards: 16,
            cooldown: Duration::from_secs(3600),
            autoscale: true,
        },
    };
    let offered = traffic(&s);
    println!(
        "Diurnal day: {}-{}% of {} shards ({} records/s), lowest at 00:00, +-{}% noise per minute (seed {}); \
         supervisor defaults: every 60 s, 5-minute window ending 180 s ago, band 30-80%, 1-16 shards, \
         cooldown 3600 s; a resize takes {} min; Kinesis refuses an 11th call in 24 h",
        s.low * 100.0,
        s.high * 100.0,
        s.start_shards,
        s.start_shards * 1000,
        s.noise * 100.0,
        s.seed,
        s.reshard_minutes
    );
    let fleet = simulate(&s, &offered, 1, 1.0);
    let per_replica = simulate(&s, &offered, s.replicas, 1.0 / f64::from(s.replicas));
    println!(
        "{:<12} {:>3} {:>5} {:>8} {:>7} {:>11} {:>10} {:>13} {:>12} {:>11} {:>7}",
        "way",
        "day",
        "calls",
        "accepted",
        "refused",
        "min > band",
        "min thrott",
        "peak backlog",
        "end backlog",
        "shard-hours",
        "shards"
    );
    print("fleet", &fleet);
    print(&format!("per-replica{}", s.replicas), &per_replica);
    println!("\nshards at each hour (00..23), last day:");
    for (way, days) in [("fleet", &fleet), ("per-replica", &per_replica)] {
        let last = days.last().expect("a day");
        let hours: Vec<String> = last.hourly_shards.iter().map(u32::to_string).collect();
        println!("{way:<12} {}", hours.join(" "));
    }
    let needed: Vec<String> = (0..24)
        .map(|h| {
            let offered_at = offered[(s.days - 1) * DAY_MINUTES + h * 60];
            format!("{:.1}", offered_at / 60.0 / 1000.0)
        })
        .collect();
    println!("{:<12} {}", "load/shard", needed.join(" "));
    println!(
        "(min > band: minutes the traffic was above 80% of the open shards; min thrott: minutes the stream \
         refused records; backlog: millions of records waiting to be written, the queue's growth; \
         load/shard: the traffic at the hour in shards' worth, 1,000 records/s each)"
    );
}
