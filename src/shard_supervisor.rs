//! Shard capacity supervisor: is the stream's shard count right for what is written to it?
//!
//! The sink lanes add each PutRecords response's successful records and bytes (data + partition
//! key, as Kinesis counts them) to a [`ShardTally`], by the shard id the response names. Every
//! `SHARD_SUPERVISOR_INTERVAL_SEC` the supervisor turns the tally's growth into rates, computes
//! each shard's utilisation against the per-shard write limits (1,000 records/s, 1 MiB/s),
//! exports it, and asks [`Decider`] whether the stream has been above or below the target band
//! for `SHARD_SUPERVISOR_WINDOWS` intervals in a row. If so it logs a recommendation, once per
//! episode, and, only when `SHARD_AUTOSCALE_ENABLED` is set and the stream is provisioned and
//! not already resizing, calls UpdateShardCount (uniform scaling) within the configured bounds
//! and cooldown.
//!
//! What is measured is what *this* collector wrote. With several replicas each sees its share
//! only: the stream carries at least what a replica sees, so "above the band" is sound
//! evidence, while "below the band" may not be. Resizing should be enabled in one replica only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::{ScalingType, StreamMode as SdkStreamMode, StreamStatus};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::kit::{Counters, Labels, Ratio, ShardLabels, add, outcome, start_at_zero};
use crate::pipeline::shard_tally::{ShardTally, ShardTotals};
use crate::retry::{RetryEpisode, RetryPolicy};

/// Records per second one shard takes.
pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// Bytes (data + partition key) per second one shard takes.
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// Intervals without a record after which a shard's series may be dropped, when there are more
/// of them than open shards (a shard closed by a resize takes no more records), so that the
/// label set stays about that of the current shards.
const FORGET_IDLE_SHARD_AFTER: u32 = 10;

// ---------------------------------------------------------------------------------------------
// The decision, without AWS: rates in, a decision out.

/// Write rates of one shard over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardRate {
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
}

impl ShardRate {
    /// The share of the shard's write capacity used: whichever limit is nearer.
    pub fn utilisation(&self) -> f64 {
        (self.records_per_sec / SHARD_RECORDS_PER_SEC).max(self.bytes_per_sec / SHARD_BYTES_PER_SEC)
    }
}

/// Each shard's rate between two tally snapshots `elapsed` apart.
pub fn rates(
    before: &HashMap<String, ShardTotals>,
    after: &HashMap<String, ShardTotals>,
    elapsed: Duration,
) -> HashMap<String, ShardRate> {
    let secs = elapsed.as_secs_f64().max(1e-3);
    after
        .iter()
        .map(|(shard, now)| {
            let then = before.get(shard).copied().unwrap_or_default();
            let rate = ShardRate {
                records_per_sec: now.records.saturating_sub(then.records) as f64 / secs,
                bytes_per_sec: now.bytes.saturating_sub(then.bytes) as f64 / secs,
            };
            (shard.clone(), rate)
        })
        .collect()
}

/// The stream's utilisation over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamUtilisation {
    /// The busiest shard's.
    pub hottest: f64,
    /// What was written, over the capacity of the open shards: open shards that took nothing
    /// count as 0, closed shards add what they took and no capacity.
    pub mean: f64,
}

/// `per_shard` holds every shard the tally still has, closed ones included; `open_shards` is
/// the stream's count.
pub fn stream_utilisation(per_shard: &[f64], open_shards: u32) -> StreamUtilisation {
    let hottest = per_shard.iter().copied().fold(0.0, f64::max);
    // Divide by the open shards only. A parent closed by a split stays in the tally (at 0) for
    // FORGET_IDLE_SHARD_AFTER intervals, and a parent that took records before it closed
    // carried load the open shards now carry: counting either as capacity under-reads the
    // mean (by a third after a 1-to-2 split), and `Policy::target` needs open shards × mean
    // to be the load written.
    let shards = open_shards.max(1);
    StreamUtilisation {
        hottest,
        mean: per_shard.iter().sum::<f64>() / f64::from(shards),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    Provisioned,
    /// Kinesis sizes the stream itself: never resized here.
    OnDemand,
}

/// What DescribeStreamSummary says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub mode: StreamMode,
    /// A resize (or other update) is under way: nothing to decide until it ends.
    pub updating: bool,
    pub open_shards: u32,
}

/// The configured band, persistence, bounds and cooldown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Target band of mean utilisation, as fractions (0.3 = 30%).
    pub band_low: f64,
    pub band_high: f64,
    /// Consecutive intervals outside the band before acting.
    pub windows: u32,
    pub min_shards: u32,
    pub max_shards: u32,
    pub cooldown: Duration,
    /// Call UpdateShardCount; otherwise only recommend.
    pub autoscale: bool,
}

impl Policy {
    /// The shard count that brings the mean utilisation to the middle of the band, within the
    /// bounds and within what one UpdateShardCount call may do (at most double, at least half
    /// the current count). Never moves against `direction`.
    pub fn target(&self, direction: Direction, current: u32, mean: f64) -> u32 {
        let current = current.max(1);
        let middle = (self.band_low + self.band_high) / 2.0;
        let ideal = (current as f64 * mean / middle).ceil();
        let ideal = if ideal.is_finite() {
            ideal.clamp(1.0, 1e6) as u32
        } else {
            current
        };
        match direction {
            Direction::Up => ideal.min(current.saturating_mul(2)).min(self.max_shards).max(current),
            Direction::Down => ideal.max(current.div_ceil(2)).max(self.min_shards).min(current),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Above the band: more shards.
    Up,
    /// Below the band: fewer shards.
    Down,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// A shard count to move to, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    pub direction: Direction,
    pub current: u32,
    pub target: u32,
    pub utilisation: StreamUtilisation,
    /// Intervals in a row outside the band.
    pub windows: u32,
}

/// Why a recommendation is not applied now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Held {
    AutoscaleDisabled,
    /// Already at SHARD_COUNT_MAX (up) or SHARD_COUNT_MIN (down).
    AtBound,
    Cooldown {
        remaining: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    WithinBand,
    /// Outside the band for fewer intervals than required.
    OutsideBand {
        direction: Direction,
        windows: u32,
    },
    /// Persistently outside the band, not acted on; `first` once per episode (to log it).
    Recommend {
        recommendation: Recommendation,
        held: Held,
        first: bool,
    },
    /// Call UpdateShardCount with the recommendation's target.
    Resize(Recommendation),
    OnDemand,
    Updating,
}

impl Decision {
    /// The `decision` label of `collector_shard_supervisor_decisions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::WithinBand => "within_band",
            Decision::OutsideBand { .. } => "outside_band",
            Decision::Recommend { recommendation: r, .. } => match r.direction {
                Direction::Up => "recommend_up",
                Direction::Down => "recommend_down",
            },
            Decision::Resize(r) => match r.direction {
                Direction::Up => "resize_up",
                Direction::Down => "resize_down",
            },
            Decision::OnDemand => "on_demand",
            Decision::Updating => "updating",
        }
    }
}

/// The supervisor's memory between intervals: the current streak outside the band, whether its
/// recommendation was logged, and when the last resize was asked for.
#[derive(Debug)]
pub struct Decider {
    policy: Policy,
    streak: Option<(Direction, u32)>,
    recommended: bool,
    last_resize: Option<Instant>,
}

impl Decider {
    pub fn new(policy: Policy) -> Decider {
        Decider {
            policy,
            streak: None,
            recommended: false,
            last_resize: None,
        }
    }

    /// One interval's verdict.
    pub fn decide(&mut self, utilisation: StreamUtilisation, stream: StreamState, now: Instant) -> Decision {
        if stream.mode == StreamMode::OnDemand {
            self.end_episode();
            return Decision::OnDemand;
        }
        if stream.updating {
            // Rates measured while shards split or merge say little about the new count.
            self.end_episode();
            return Decision::Updating;
        }
        let p = &self.policy;
        let direction = if utilisation.mean > p.band_high {
            Direction::Up
        } else if utilisation.mean < p.band_low && utilisation.hottest <= p.band_high {
            // Not while one shard is already hot: fewer shards would make it hotter.
            Direction::Down
        } else {
            self.end_episode();
            return Decision::WithinBand;
        };
        let windows = match self.streak {
            Some((d, n)) if d == direction => n + 1,
            _ => {
                self.recommended = false;
                1
            }
        };
        self.streak = Some((direction, windows));
        if windows < p.windows {
            return Decision::OutsideBand { direction, windows };
        }
        let current = stream.open_shards.max(1);
        let recommendation = Recommendation {
            direction,
            current,
            target: p.target(direction, current, utilisation.mean),
            utilisation,
            windows,
        };
        let held = if recommendation.target == current {
            Some(Held::AtBound)
        } else if !p.autoscale {
            Some(Held::AutoscaleDisabled)
        } else {
            self.last_resize
                .map(|at| (at + p.cooldown).saturating_duration_since(now))
                .filter(|remaining| !remaining.is_zero())
                .map(|remaining| Held::Cooldown { remaining })
        };
        match held {
            Some(held) => {
                let first = !self.recommended;
                self.recommended = true;
                Decision::Recommend {
                    recommendation,
                    held,
                    first,
                }
            }
            None => Decision::Resize(recommendation),
        }
    }

    /// An UpdateShardCount call was made (whatever its outcome): the cooldown starts, and the
    /// band is judged afresh.
    pub fn resize_called(&mut self, now: Instant) {
        self.last_resize = Some(now);
        self.end_episode();
    }

    fn end_episode(&mut self) {
        self.streak = None;
        self.recommended = false;
    }
}

// ---------------------------------------------------------------------------------------------
// The running supervisor.

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("DescribeStreamSummary failed: {0}")]
    Describe(String),
}

/// The shard supervisor's settings: its section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSettings {
    /// One measurement and decision per interval (`SHARD_SUPERVISOR_INTERVAL_SEC`).
    pub interval: Duration,
    pub policy: Policy,
}

/// Runs until `shutdown`: one measurement and decision per interval. `retry` paces nothing
/// here (the next try is the next interval); it words the failure logs.
pub async fn run(
    client: Client,
    stream_name: String,
    settings: SupervisorSettings,
    retry: RetryPolicy,
    tally: Arc<ShardTally>,
    metrics: ShardMetrics,
    shutdown: CancellationToken,
) {
    let mut decider = Decider::new(settings.policy);
    let mut describe_episode =
        RetryEpisode::new(format!("DescribeStreamSummary {stream_name} (shard supervisor)"), retry);
    let mut window = Window::new(&tally);
    let mut mode_seen = None;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let utilisations = window.close(&tally, &metrics, now);
        let stream = tokio::select! {
            stream = describe(&client, &stream_name) => stream,
            _ = shutdown.cancelled() => return,
        };
        let stream = match stream {
            Ok(stream) => {
                describe_episode.succeeded();
                stream
            }
            Err(error) => {
                // The next interval tries again; the failure is logged once per episode.
                describe_episode.failed(&error);
                count_decision(&metrics, "stream_unknown");
                continue;
            }
        };
        metrics.stream_open_shards.set(stream.open_shards as i64);
        window.forget_closed_shards(&tally, &metrics, stream.open_shards);
        let utilisation = stream_utilisation(&utilisations, stream.open_shards);
        for (stat, value) in [("hottest", utilisation.hottest), ("mean", utilisation.mean)] {
            metrics.stream_utilisation.get_or_create(&[("stat", stat)]).set(value);
        }
        if mode_seen != Some(stream.mode) {
            if stream.mode == StreamMode::OnDemand {
                tracing::info!(
                    stream = stream_name,
                    "stream is on-demand; the shard supervisor reports utilisation and never resizes it"
                );
            }
            mode_seen = Some(stream.mode);
        }

        let decision = decider.decide(utilisation, stream, now);
        count_decision(&metrics, decision.label());
        match decision {
            Decision::Recommend {
                recommendation: r,
                held,
                first: true,
            } => log_recommendation(&stream_name, &settings.policy, &r, held),
            Decision::Resize(r) => {
                resize(&client, &stream_name, &r, &metrics).await;
                decider.resize_called(Instant::now());
            }
            Decision::OutsideBand { direction, windows } => tracing::debug!(
                direction = direction.as_str(),
                windows,
                mean_utilisation = utilisation.mean,
                "stream utilisation outside the target band"
            ),
            _ => {}
        }
    }
}

/// One measuring interval: the tally as it stood when the interval began, and how many
/// intervals each shard has been idle.
struct Window {
    before: HashMap<String, ShardTotals>,
    before_at: Instant,
    idle: HashMap<String, u32>,
}

impl Window {
    fn new(tally: &ShardTally) -> Window {
        Window {
            before: tally.snapshot(),
            before_at: Instant::now(),
            idle: HashMap::new(),
        }
    }

    /// Ends the interval at `now`: exports each shard's utilisation and returns them all. The
    /// next interval starts from this snapshot, so nothing written meanwhile is missed.
    fn close(&mut self, tally: &ShardTally, metrics: &ShardMetrics, now: Instant) -> Vec<f64> {
        let after = tally.snapshot();
        let per_shard = rates(&self.before, &after, now - self.before_at);
        let mut utilisations = Vec::with_capacity(per_shard.len());
        for (shard, rate) in &per_shard {
            let u = rate.utilisation();
            utilisations.push(u);
            metrics
                .shard_utilisation
                .get_or_create(&[("shard", shard.clone())])
                .set(u);
            let quiet = self.idle.entry(shard.clone()).or_default();
            *quiet = if rate.records_per_sec > 0.0 { 0 } else { *quiet + 1 };
        }
        self.idle.retain(|shard, _| per_shard.contains_key(shard));
        self.before = after;
        self.before_at = now;
        utilisations
    }

    /// Drops the series of shards a resize closed (see [`shards_to_forget`]).
    fn forget_closed_shards(&mut self, tally: &ShardTally, metrics: &ShardMetrics, open_shards: u32) {
        for shard in shards_to_forget(&self.idle, open_shards) {
            if let Some(seen) = self.before.get(&shard)
                && tally.forget_if_unchanged(&shard, *seen)
            {
                metrics.shard_utilisation.remove(&[("shard", shard.clone())]);
                self.before.remove(&shard);
                self.idle.remove(&shard);
            }
        }
    }
}

/// The shards whose series to drop: while more shards have series than the stream has open
/// shards, the surplus is shards closed by a resize; the longest idle of them go, once idle
/// for [`FORGET_IDLE_SHARD_AFTER`] intervals. An open shard that takes nothing keeps its series
/// (at 0) as long as the count allows.
fn shards_to_forget(idle: &HashMap<String, u32>, open_shards: u32) -> Vec<String> {
    let surplus = idle.len().saturating_sub(open_shards as usize);
    let mut candidates: Vec<(&String, u32)> = idle
        .iter()
        .filter(|(_, quiet)| **quiet >= FORGET_IDLE_SHARD_AFTER)
        .map(|(shard, quiet)| (shard, *quiet))
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    candidates
        .into_iter()
        .take(surplus)
        .map(|(shard, _)| shard.clone())
        .collect()
}

fn count_decision(metrics: &ShardMetrics, decision: &'static str) {
    metrics
        .shard_supervisor_decisions
        .get_or_create(&[("decision", decision)])
        .inc();
}

fn log_recommendation(stream_name: &str, policy: &Policy, r: &Recommendation, held: Held) {
    let reason = match held {
        Held::AutoscaleDisabled => "SHARD_AUTOSCALE_ENABLED is false".to_owned(),
        Held::AtBound => match r.direction {
            Direction::Up => "already at SHARD_COUNT_MAX".to_owned(),
            Direction::Down => "already at SHARD_COUNT_MIN".to_owned(),
        },
        Held::Cooldown { remaining } => {
            format!("SHARD_RESIZE_COOLDOWN_SEC: {} s left", remaining.as_secs())
        }
    };
    let (low, high) = (policy.band_low * 100.0, policy.band_high * 100.0);
    macro_rules! recommend {
        ($level:ident) => {
            tracing::$level!(
                stream = stream_name,
                direction = r.direction.as_str(),
                current_shards = r.current,
                recommended_shards = r.target,
                mean_utilisation_pct = r.utilisation.mean * 100.0,
                hottest_shard_utilisation_pct = r.utilisation.hottest * 100.0,
                band_pct = format!("{low}-{high}"),
                intervals = r.windows,
                not_applied_because = reason,
                "shard count recommendation"
            )
        };
    }
    // Too few shards means throttling soon; too many only costs money.
    match r.direction {
        Direction::Up => recommend!(warn),
        Direction::Down => recommend!(info),
    }
}

async fn resize(client: &Client, stream: &str, r: &Recommendation, metrics: &ShardMetrics) {
    let target = i32::try_from(r.target).unwrap_or(i32::MAX);
    let result = client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(target)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await;
    match result {
        Ok(_) => {
            outcome(&metrics.shard_resize_calls, "ok", 1);
            tracing::info!(
                stream,
                direction = r.direction.as_str(),
                current_shards = r.current,
                target_shards = r.target,
                mean_utilisation_pct = r.utilisation.mean * 100.0,
                hottest_shard_utilisation_pct = r.utilisation.hottest * 100.0,
                intervals = r.windows,
                "resizing the stream: UpdateShardCount accepted"
            );
        }
        Err(e) => {
            outcome(&metrics.shard_resize_calls, "failed", 1);
            tracing::warn!(
                stream,
                current_shards = r.current,
                target_shards = r.target,
                error = %DisplayErrorContext(e),
                "UpdateShardCount failed; tried again after the cooldown if still needed (check kinesis:UpdateShardCount and the account's shard limits)"
            );
        }
    }
}

async fn describe(client: &Client, stream: &str) -> Result<StreamState, SupervisorError> {
    let summary = crate::aws::describe_stream(client, stream)
        .await
        .map_err(SupervisorError::Describe)?;
    let mode = match summary.mode {
        Some(SdkStreamMode::OnDemand) => StreamMode::OnDemand,
        // Endpoints that predate on-demand streams do not say: those are provisioned.
        _ => StreamMode::Provisioned,
    };
    Ok(StreamState {
        mode,
        updating: summary.status == StreamStatus::Updating,
        open_shards: summary.open_shards,
    })
}

/// The shard supervisor's metrics: per-shard writes, utilisation, decisions.
#[derive(Clone)]
pub struct ShardMetrics {
    pub shard_records_published: Family<ShardLabels, Counter>,
    pub shard_bytes_published: Family<ShardLabels, Counter>,
    pub shard_utilisation: Family<ShardLabels, Ratio>,
    pub stream_utilisation: Family<Labels, Ratio>,
    pub stream_open_shards: Gauge,
    pub shard_supervisor_decisions: Counters,
    pub shard_resize_calls: Counters,
}

impl ShardMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let section = ShardMetrics {
            shard_records_published: add(
                registry,
                "shard_records_published",
                "Records written to each shard (successful PutRecords results, resends included), by shard",
                Family::default(),
            ),
            shard_bytes_published: add(
                registry,
                "shard_bytes_published",
                "Bytes (data + partition key) written to each shard, by shard",
                Family::default(),
            ),
            shard_utilisation: add(
                registry,
                "shard_utilisation_ratio",
                "Each shard's write utilisation over the last supervisor interval: the larger of records/s / 1000 and bytes/s / 1 MiB",
                Family::default(),
            ),
            stream_utilisation: add(
                registry,
                "stream_utilisation_ratio",
                "The stream's write utilisation over the last supervisor interval: `hottest` shard, and `mean` over the open shards",
                Family::default(),
            ),
            stream_open_shards: add(
                registry,
                "stream_open_shards",
                "Open shards of the stream (DescribeStreamSummary), read by the shard supervisor",
                Gauge::default(),
            ),
            shard_supervisor_decisions: add(
                registry,
                "shard_supervisor_decisions",
                "Shard supervisor decisions, one per interval, by decision",
                Family::default(),
            ),
            shard_resize_calls: add(
                registry,
                "shard_resize_calls",
                "UpdateShardCount calls made by the shard supervisor, by outcome (ok, failed)",
                Family::default(),
            ),
        };
        start_at_zero(&section.shard_resize_calls, "outcome", &["ok", "failed"]);
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            band_low: 0.3,
            band_high: 0.8,
            windows: 3,
            min_shards: 1,
            max_shards: 16,
            cooldown: Duration::from_secs(600),
            autoscale: true,
        }
    }

    fn provisioned(open_shards: u32) -> StreamState {
        StreamState {
            mode: StreamMode::Provisioned,
            updating: false,
            open_shards,
        }
    }

    fn at(mean: f64) -> StreamUtilisation {
        StreamUtilisation { hottest: mean, mean }
    }

    #[test]
    fn utilisation_is_the_nearer_of_the_two_limits() {
        let records_bound = ShardRate {
            records_per_sec: 500.0,
            bytes_per_sec: 100_000.0,
        };
        assert_eq!(records_bound.utilisation(), 0.5);
        let bytes_bound = ShardRate {
            records_per_sec: 100.0,
            bytes_per_sec: 786_432.0,
        };
        assert_eq!(bytes_bound.utilisation(), 0.75);
    }

    #[test]
    fn rates_are_the_growth_per_second_between_snapshots() {
        let t = |records, bytes| ShardTotals { records, bytes };
        let before = HashMap::from([("a".to_owned(), t(100, 10_000))]);
        let after = HashMap::from([("a".to_owned(), t(2_100, 1_058_576)), ("b".to_owned(), t(50, 500))]);
        let r = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(
            r["a"],
            ShardRate {
                records_per_sec: 1000.0,
                bytes_per_sec: 524_288.0
            }
        );
        assert_eq!(r["a"].utilisation(), 1.0);
        assert_eq!(r["b"].records_per_sec, 25.0);
    }

    #[test]
    fn the_mean_counts_idle_open_shards_and_the_hottest_is_the_maximum() {
        let u = stream_utilisation(&[0.9, 0.3], 4);
        assert_eq!(u.hottest, 0.9);
        assert!((u.mean - 0.3).abs() < 1e-9);
        assert_eq!(
            stream_utilisation(&[], 2),
            StreamUtilisation {
                hottest: 0.0,
                mean: 0.0
            }
        );
    }

    #[test]
    fn the_mean_divides_by_the_open_shards_only_after_a_split() {
        // 1 shard split into 2: the closed parent stays in the tally at 0 for
        // FORGET_IDLE_SHARD_AFTER intervals, and adds no capacity.
        let after_split = stream_utilisation(&[0.0, 0.6, 0.6], 2);
        assert!((after_split.mean - 0.6).abs() < 1e-9, "{after_split:?}");
        // The interval of the split: the parent took records before it closed; what it took
        // is load that the two open shards now carry.
        let during_split = stream_utilisation(&[0.5, 0.5, 0.5], 2);
        assert!((during_split.mean - 0.75).abs() < 1e-9, "{during_split:?}");
        // Open shards × mean is the load written, which `Policy::target` sizes from.
        assert!((2.0 * during_split.mean - 1.5).abs() < 1e-9);
    }

    #[test]
    fn only_the_surplus_of_long_idle_shards_is_forgotten() {
        let idle = HashMap::from([
            ("closed-a".to_owned(), 30),
            ("closed-b".to_owned(), 12),
            ("open-quiet".to_owned(), 11),
            ("open-busy".to_owned(), 0),
        ]);
        // Two open shards: two of the four go, the longest idle first.
        assert_eq!(shards_to_forget(&idle, 2), ["closed-a", "closed-b"]);
        assert_eq!(shards_to_forget(&idle, 3), ["closed-a"]);
        // No more series than open shards: an idle open shard keeps its series.
        assert!(shards_to_forget(&idle, 4).is_empty());
        // Only shards idle long enough, even when more should go.
        let recent = HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 0)]);
        assert!(shards_to_forget(&recent, 1).is_empty());
    }

    #[test]
    fn targets_aim_at_the_middle_of_the_band_within_aws_steps_and_bounds() {
        let p = policy(); // middle 55%
        // 4 shards at 110%: 8 shards bring it to 55%.
        assert_eq!(p.target(Direction::Up, 4, 1.1), 8);
        // At most double per call.
        assert_eq!(p.target(Direction::Up, 4, 5.0), 8);
        // Within SHARD_COUNT_MAX.
        assert_eq!(p.target(Direction::Up, 12, 1.0), 16);
        assert_eq!(p.target(Direction::Up, 16, 1.0), 16);
        // Rounds up: 3 shards at 90% need 4.91, so 5.
        assert_eq!(p.target(Direction::Up, 3, 0.9), 5);
        // Down: 8 shards at 20% need 2.9, so 3, but at most halve: 4.
        assert_eq!(p.target(Direction::Down, 8, 0.2), 4);
        assert_eq!(p.target(Direction::Down, 8, 0.25), 4);
        assert_eq!(p.target(Direction::Down, 10, 0.4), 8);
        // Never below SHARD_COUNT_MIN, never 0.
        let p2 = Policy { min_shards: 6, ..p };
        assert_eq!(p2.target(Direction::Down, 8, 0.0), 6);
        assert_eq!(p.target(Direction::Down, 1, 0.0), 1);
        // A stream already outside the bounds is never moved against the direction.
        assert_eq!(p.target(Direction::Up, 40, 1.0), 40);
        assert_eq!(p2.target(Direction::Down, 3, 0.1), 3);
    }

    #[test]
    fn a_resize_needs_the_configured_number_of_intervals_in_a_row() {
        let mut d = Decider::new(policy());
        let now = Instant::now();
        assert_eq!(
            d.decide(at(0.9), provisioned(2), now),
            Decision::OutsideBand {
                direction: Direction::Up,
                windows: 1
            }
        );
        assert!(matches!(
            d.decide(at(0.9), provisioned(2), now),
            Decision::OutsideBand { windows: 2, .. }
        ));
        // One interval back in the band starts the count again.
        assert_eq!(d.decide(at(0.5), provisioned(2), now), Decision::WithinBand);
        assert!(matches!(
            d.decide(at(0.9), provisioned(2), now),
            Decision::OutsideBand { windows: 1, .. }
        ));
        // So does a change of direction.
        assert!(matches!(
            d.decide(at(0.1), provisioned(2), now),
            Decision::OutsideBand {
                direction: Direction::Down,
                windows: 1
            }
        ));
        assert!(matches!(
            d.decide(at(0.9), provisioned(2), now),
            Decision::OutsideBand { windows: 1, .. }
        ));
        d.decide(at(0.9), provisioned(2), now);
        match d.decide(at(0.9), provisioned(2), now) {
            Decision::Resize(r) => {
                assert_eq!((r.direction, r.current, r.target, r.windows), (Direction::Up, 2, 4, 3));
            }
            other => panic!("expected a resize, got {other:?}"),
        }
    }

    #[test]
    fn after_a_resize_the_cooldown_holds_the_next_one_and_it_is_logged_once() {
        let mut d = Decider::new(Policy { windows: 1, ..policy() });
        let t0 = Instant::now();
        assert!(matches!(d.decide(at(0.95), provisioned(1), t0), Decision::Resize(_)));
        d.resize_called(t0);
        let t1 = t0 + Duration::from_secs(60);
        match d.decide(at(0.95), provisioned(2), t1) {
            Decision::Recommend {
                recommendation,
                held: Held::Cooldown { remaining },
                first: true,
            } => {
                assert_eq!(recommendation.target, 4);
                assert_eq!(remaining, Duration::from_secs(540));
            }
            other => panic!("expected a held recommendation, got {other:?}"),
        }
        // The same episode: counted again, not logged again.
        assert!(matches!(
            d.decide(at(0.95), provisioned(2), t1 + Duration::from_secs(60)),
            Decision::Recommend { first: false, .. }
        ));
        assert!(matches!(
            d.decide(at(0.95), provisioned(2), t0 + Duration::from_secs(600)),
            Decision::Resize(Recommendation { target: 4, .. })
        ));
    }

    #[test]
    fn with_autoscale_off_it_only_recommends_once_per_episode() {
        let mut d = Decider::new(Policy {
            autoscale: false,
            windows: 2,
            ..policy()
        });
        let now = Instant::now();
        let decisions: Vec<Decision> = (0..4).map(|_| d.decide(at(0.1), provisioned(8), now)).collect();
        assert!(matches!(decisions[0], Decision::OutsideBand { .. }));
        let firsts: Vec<bool> = decisions[1..]
            .iter()
            .map(|x| match x {
                Decision::Recommend {
                    held: Held::AutoscaleDisabled,
                    recommendation,
                    first,
                } => {
                    assert_eq!((recommendation.direction, recommendation.target), (Direction::Down, 4));
                    *first
                }
                other => panic!("expected a recommendation, got {other:?}"),
            })
            .collect();
        assert_eq!(firsts, [true, false, false]);
        assert_eq!(decisions[1].label(), "recommend_down");
        // Back in the band, then out again: a new episode, logged again.
        d.decide(at(0.5), provisioned(8), now);
        d.decide(at(0.1), provisioned(8), now);
        assert!(matches!(
            d.decide(at(0.1), provisioned(8), now),
            Decision::Recommend { first: true, .. }
        ));
    }

    #[test]
    fn on_demand_streams_are_never_resized() {
        let mut d = Decider::new(Policy {
            windows: 1,
            cooldown: Duration::ZERO,
            ..policy()
        });
        let on_demand = StreamState {
            mode: StreamMode::OnDemand,
            updating: false,
            open_shards: 4,
        };
        for mean in [5.0, 0.0, 0.95, 0.01] {
            assert_eq!(d.decide(at(mean), on_demand, Instant::now()), Decision::OnDemand);
        }
    }

    #[test]
    fn nothing_is_decided_while_the_stream_is_updating_and_the_count_restarts_after() {
        let mut d = Decider::new(Policy { windows: 2, ..policy() });
        let now = Instant::now();
        d.decide(at(0.9), provisioned(2), now);
        let updating = StreamState {
            updating: true,
            ..provisioned(2)
        };
        assert_eq!(d.decide(at(0.9), updating, now), Decision::Updating);
        assert!(matches!(
            d.decide(at(0.9), provisioned(4), now),
            Decision::OutsideBand { windows: 1, .. }
        ));
    }

    #[test]
    fn at_a_bound_it_recommends_without_resizing_and_one_hot_shard_blocks_scaling_down() {
        let mut d = Decider::new(Policy {
            windows: 1,
            max_shards: 4,
            ..policy()
        });
        let now = Instant::now();
        assert!(matches!(
            d.decide(at(0.9), provisioned(4), now),
            Decision::Recommend {
                held: Held::AtBound,
                ..
            }
        ));
        let skewed = StreamUtilisation {
            hottest: 0.85,
            mean: 0.2,
        };
        assert_eq!(d.decide(skewed, provisioned(4), now), Decision::WithinBand);
    }
}
