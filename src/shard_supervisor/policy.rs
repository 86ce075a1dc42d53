//! The decision, without AWS: one window of the stream's CloudWatch figures and its state in,
//! a decision out.
//!
//! A window is `SHARD_SUPERVISOR_WINDOWS` consecutive 1-minute periods. The stream is above the
//! band when every minute of the window is, below it when every minute is (and no shard was hot
//! and nothing was throttled); a minute without all its figures makes the window incomplete,
//! and an incomplete window is never acted on: a point CloudWatch has not delivered yet is
//! unknown, not zero traffic, so late metrics can never shrink a busy stream.
//!
//! [`Decider`] adds what one window cannot say: the cooldown since the last resize, the daily
//! budget of UpdateShardCount calls (Kinesis allows 10 per stream per rolling 24 hours; the
//! supervisor counts the calls it made and holds once they are spent), and whether a held
//! recommendation was already logged.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Records per second one shard takes.
pub(crate) const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// Bytes (data + partition key) per second one shard takes.
pub(crate) const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// The length of one CloudWatch period the supervisor reads.
pub(crate) const PERIOD: Duration = Duration::from_secs(60);
/// UpdateShardCount calls Kinesis allows per stream in any 24 hours.
pub const DAILY_RESIZE_CALLS: u32 = 10;
/// The rolling window of [`DAILY_RESIZE_CALLS`].
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

/// What CloudWatch holds for one minute of the stream; `None` where it has no point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Minute {
    /// `IncomingRecords`, Sum over the minute.
    pub records: Option<f64>,
    /// `IncomingBytes`, Sum over the minute.
    pub bytes: Option<f64>,
    /// `WriteProvisionedThroughputExceeded`, Sum over the minute: records throttled.
    pub throttled: Option<f64>,
    /// The busiest shard's utilisation in the minute, when shard-level metrics are read
    /// (enhanced monitoring); `None` otherwise.
    pub hottest_shard: Option<f64>,
}

/// A minute's (or a shard's) utilisation: the share of the write capacity used, whichever limit
/// is nearer, for `shards` shards.
pub(crate) fn utilisation(records: f64, bytes: f64, shards: u32) -> f64 {
    let secs = PERIOD.as_secs_f64();
    let shards = f64::from(shards.max(1));
    (records / secs / SHARD_RECORDS_PER_SEC).max(bytes / secs / SHARD_BYTES_PER_SEC) / shards
}

/// A complete window's figures, against the open shards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowUtilisation {
    /// The quietest and the busiest minute's mean utilisation over the open shards.
    pub lowest_mean: f64,
    pub highest_mean: f64,
    /// The busiest shard's utilisation in any minute: from the shard-level metrics when read,
    /// else the busiest minute's mean (all that is known).
    pub hottest: f64,
    /// Records throttled in the window.
    pub throttled: f64,
    pub minutes: u32,
}

/// What one read of CloudWatch gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    Complete(WindowUtilisation),
    /// Some minute of the window lacks a figure: `missing` minutes of `minutes`.
    Incomplete {
        missing: u32,
        minutes: u32,
    },
    /// CloudWatch could not be read.
    Unavailable,
}

/// The window's figures, or which minutes lack one. `minutes` are the window's periods, oldest
/// first; `open_shards` is the stream's count now (what the load is measured against).
pub fn observe(minutes: &[Minute], open_shards: u32) -> Observation {
    let count = minutes.len() as u32;
    let missing = minutes
        .iter()
        .filter(|m| m.records.is_none() || m.bytes.is_none() || m.throttled.is_none())
        .count() as u32;
    if missing > 0 || minutes.is_empty() {
        return Observation::Incomplete {
            missing: missing.max(u32::from(minutes.is_empty())),
            minutes: count,
        };
    }
    let means: Vec<f64> = minutes
        .iter()
        .map(|m| utilisation(m.records.unwrap_or(0.0), m.bytes.unwrap_or(0.0), open_shards))
        .collect();
    let highest_mean = means.iter().copied().fold(0.0, f64::max);
    let hottest = minutes
        .iter()
        .filter_map(|m| m.hottest_shard)
        .fold(highest_mean, f64::max);
    Observation::Complete(WindowUtilisation {
        lowest_mean: means.iter().copied().fold(f64::INFINITY, f64::min),
        highest_mean,
        hottest,
        throttled: minutes.iter().filter_map(|m| m.throttled).sum(),
        minutes: count,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    Provisioned,
    /// Kinesis sizes the stream itself: never resized here.
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Active,
    /// A resize (or other update) is under way: nothing to decide until it ends.
    Updating,
    /// Creating or deleting.
    Other,
}

/// What DescribeStreamSummary says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub mode: StreamMode,
    pub status: StreamStatus,
    pub open_shards: u32,
}

/// The configured band, window, bounds and cooldown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Target band of mean utilisation, as fractions (0.3 = 30%).
    pub band_low: f64,
    pub band_high: f64,
    /// Consecutive 1-minute periods outside the band before acting: the window.
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
    pub(crate) fn target(&self, direction: Direction, current: u32, mean: f64) -> u32 {
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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub utilisation: WindowUtilisation,
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
    /// [`DAILY_RESIZE_CALLS`] calls made in the last 24 hours; the oldest leaves the window in
    /// `remaining`.
    DailyBudgetSpent {
        remaining: Duration,
    },
}

impl Held {
    /// The reason as logged.
    pub(crate) fn reason(&self) -> String {
        match self {
            Held::AutoscaleDisabled => "SHARD_AUTOSCALE_ENABLED is false".to_owned(),
            Held::AtBound => "at SHARD_COUNT_MIN or SHARD_COUNT_MAX".to_owned(),
            Held::Cooldown { remaining } => {
                format!("SHARD_RESIZE_COOLDOWN_SEC: {} s left", remaining.as_secs())
            }
            Held::DailyBudgetSpent { remaining } => format!(
                "{DAILY_RESIZE_CALLS} UpdateShardCount calls in 24 hours already made: the next in {} s",
                remaining.as_secs()
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    WithinBand,
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
    /// Neither ACTIVE nor UPDATING.
    NotActive,
    /// The window lacks points: nothing is decided.
    MetricsIncomplete {
        missing: u32,
        minutes: u32,
    },
    /// CloudWatch could not be read: nothing is decided.
    MetricsUnavailable,
}

impl Decision {
    /// The `decision` label of `telemetry_shard_supervisor_decisions_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Decision::WithinBand => "within_band",
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
            Decision::NotActive => "not_active",
            Decision::MetricsIncomplete { .. } => "metrics_incomplete",
            Decision::MetricsUnavailable => "metrics_unavailable",
        }
    }

    /// Every label, for the series that start at 0.
    pub(crate) const LABELS: &[&'static str] = &[
        "within_band",
        "recommend_up",
        "recommend_down",
        "resize_up",
        "resize_down",
        "on_demand",
        "updating",
        "not_active",
        "metrics_incomplete",
        "metrics_unavailable",
        "stream_unknown",
    ];
}

/// The supervisor's memory between intervals: the current episode outside the band and whether
/// its recommendation was logged, and the UpdateShardCount calls it made in the last 24 hours.
#[derive(Debug)]
pub struct Decider {
    policy: Policy,
    episode: Option<Direction>,
    recommended: bool,
    /// When each of its calls was made, oldest first; none older than [`DAY`].
    calls: VecDeque<Instant>,
}

impl Decider {
    pub fn new(policy: Policy) -> Decider {
        Decider {
            policy,
            episode: None,
            recommended: false,
            calls: VecDeque::new(),
        }
    }

    /// One interval's verdict.
    pub fn decide(&mut self, observation: Observation, stream: StreamState, now: Instant) -> Decision {
        let window = match (stream.mode, stream.status, observation) {
            (StreamMode::OnDemand, _, _) => return self.no_episode(Decision::OnDemand),
            // Figures measured while shards split or merge say little about the new count.
            (_, StreamStatus::Updating, _) => return self.no_episode(Decision::Updating),
            (_, StreamStatus::Other, _) => return self.no_episode(Decision::NotActive),
            (_, _, Observation::Unavailable) => return self.no_episode(Decision::MetricsUnavailable),
            (_, _, Observation::Incomplete { missing, minutes }) => {
                return self.no_episode(Decision::MetricsIncomplete { missing, minutes });
            }
            (_, _, Observation::Complete(window)) => window,
        };
        let p = self.policy;
        let (direction, mean) = if window.lowest_mean > p.band_high {
            (Direction::Up, window.lowest_mean)
        } else if window.highest_mean < p.band_low && window.hottest <= p.band_high && window.throttled == 0.0 {
            // Not while one shard is hot or records are throttled: fewer shards would make it
            // worse. Sized for the busiest minute.
            (Direction::Down, window.highest_mean)
        } else {
            return self.no_episode(Decision::WithinBand);
        };
        if self.episode != Some(direction) {
            self.episode = Some(direction);
            self.recommended = false;
        }
        let current = stream.open_shards.max(1);
        let recommendation = Recommendation {
            direction,
            current,
            target: p.target(direction, current, mean),
            utilisation: window,
        };
        let held = if recommendation.target == current {
            Some(Held::AtBound)
        } else if !p.autoscale {
            Some(Held::AutoscaleDisabled)
        } else if let Some(remaining) = self.budget_refill(now) {
            Some(Held::DailyBudgetSpent { remaining })
        } else {
            self.calls
                .back()
                .map(|at| (*at + p.cooldown).saturating_duration_since(now))
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

    /// An UpdateShardCount call was made (whatever its outcome): it counts against the daily
    /// budget, the cooldown starts, and the band is judged afresh.
    pub fn resize_called(&mut self, now: Instant) {
        self.calls.push_back(now);
        self.episode = None;
        self.recommended = false;
    }

    /// Calls left in the rolling 24 hours.
    pub(crate) fn budget_remaining(&mut self, now: Instant) -> u32 {
        self.forget_old_calls(now);
        DAILY_RESIZE_CALLS.saturating_sub(self.calls.len() as u32)
    }

    /// `None` while calls are left, else when the oldest call leaves the 24 hours.
    fn budget_refill(&mut self, now: Instant) -> Option<Duration> {
        if self.budget_remaining(now) > 0 {
            return None;
        }
        self.calls
            .front()
            .map(|oldest| (*oldest + DAY).saturating_duration_since(now))
    }

    fn forget_old_calls(&mut self, now: Instant) {
        while self
            .calls
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= DAY)
        {
            self.calls.pop_front();
        }
    }

    fn no_episode(&mut self, decision: Decision) -> Decision {
        self.episode = None;
        self.recommended = false;
        decision
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
            status: StreamStatus::Active,
            open_shards,
        }
    }

    /// A complete window whose every minute is at `mean`.
    fn at(mean: f64) -> Observation {
        Observation::Complete(WindowUtilisation {
            lowest_mean: mean,
            highest_mean: mean,
            hottest: mean,
            throttled: 0.0,
            minutes: 3,
        })
    }

    /// A minute with `records` records of 100 bytes.
    fn minute(records: f64) -> Minute {
        Minute {
            records: Some(records),
            bytes: Some(records * 100.0),
            throttled: Some(0.0),
            hottest_shard: None,
        }
    }

    #[test]
    fn utilisation_is_the_nearer_of_the_two_limits_per_open_shard() {
        // 30,000 records in a minute: 500/s, half of one shard.
        assert_eq!(utilisation(30_000.0, 6_000_000.0, 1), 0.5);
        // 45 MiB in a minute: 0.75 MiB/s.
        assert_eq!(utilisation(6_000.0, 47_185_920.0, 1), 0.75);
        assert_eq!(utilisation(30_000.0, 0.0, 2), 0.25);
    }

    #[test]
    fn a_window_with_any_point_missing_is_incomplete_never_zero() {
        let mut minutes = vec![minute(60_000.0); 5];
        minutes[2].bytes = None;
        minutes[4].throttled = None;
        assert_eq!(observe(&minutes, 2), Observation::Incomplete { missing: 2, minutes: 5 });
        assert!(matches!(
            observe(&[], 2),
            Observation::Incomplete { missing: 1, minutes: 0 }
        ));
        // An incomplete window decides nothing, however quiet what is there.
        let mut d = Decider::new(policy());
        let mut quiet = vec![minute(0.0); 3];
        quiet[0].records = None;
        assert_eq!(
            d.decide(observe(&quiet, 8), provisioned(8), Instant::now()),
            Decision::MetricsIncomplete { missing: 1, minutes: 3 }
        );
        assert_eq!(
            d.decide(Observation::Unavailable, provisioned(8), Instant::now()),
            Decision::MetricsUnavailable
        );
    }

    #[test]
    fn a_complete_window_has_its_quietest_and_busiest_minutes_and_hottest_shard() {
        let mut minutes = vec![minute(30_000.0), minute(60_000.0), minute(45_000.0)];
        minutes[1].hottest_shard = Some(0.9);
        minutes[2].throttled = Some(12.0);
        match observe(&minutes, 2) {
            Observation::Complete(w) => {
                assert_eq!((w.lowest_mean, w.highest_mean), (0.25, 0.5));
                assert_eq!(w.hottest, 0.9);
                assert_eq!(w.throttled, 12.0);
                assert_eq!(w.minutes, 3);
            }
            other => panic!("expected a complete window, got {other:?}"),
        }
    }

    #[test]
    fn every_minute_must_be_outside_the_band() {
        let mut d = Decider::new(policy());
        let now = Instant::now();
        // One minute within the band: nothing.
        let mixed = [minute(54_000.0), minute(30_000.0), minute(54_000.0)];
        assert_eq!(d.decide(observe(&mixed, 1), provisioned(1), now), Decision::WithinBand);
        let busy = [minute(54_000.0); 3];
        match d.decide(observe(&busy, 1), provisioned(1), now) {
            Decision::Resize(r) => assert_eq!((r.direction, r.current, r.target), (Direction::Up, 1, 2)),
            other => panic!("expected a resize, got {other:?}"),
        }
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
    fn after_a_resize_the_cooldown_holds_the_next_one_and_it_is_logged_once() {
        let mut d = Decider::new(policy());
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
    fn at_most_ten_calls_in_any_24_hours_then_it_holds_until_the_oldest_leaves() {
        let mut d = Decider::new(Policy {
            cooldown: Duration::ZERO,
            max_shards: 10_000,
            ..policy()
        });
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        for call in 0..10u32 {
            let now = t0 + hour * call;
            assert_eq!(d.budget_remaining(now), 10 - call);
            assert!(
                matches!(d.decide(at(0.95), provisioned(1), now), Decision::Resize(_)),
                "call {call}"
            );
            d.resize_called(now);
        }
        let now = t0 + hour * 10;
        assert_eq!(d.budget_remaining(now), 0);
        match d.decide(at(0.95), provisioned(1), now) {
            Decision::Recommend {
                held: Held::DailyBudgetSpent { remaining },
                first: true,
                ..
            } => assert_eq!(remaining, hour * 14),
            other => panic!("expected the budget to hold, got {other:?}"),
        }
        // Down is held as well: the budget is the stream's, whatever the direction.
        assert!(matches!(
            d.decide(at(0.01), provisioned(8), now),
            Decision::Recommend {
                held: Held::DailyBudgetSpent { .. },
                ..
            }
        ));
        // 24 hours after the first call, one call is free again.
        let later = t0 + DAY;
        assert_eq!(d.budget_remaining(later), 1);
        assert!(matches!(d.decide(at(0.95), provisioned(1), later), Decision::Resize(_)));
    }

    #[test]
    fn with_autoscale_off_it_only_recommends_once_per_episode() {
        let mut d = Decider::new(Policy {
            autoscale: false,
            ..policy()
        });
        let now = Instant::now();
        let decisions: Vec<Decision> = (0..3).map(|_| d.decide(at(0.1), provisioned(8), now)).collect();
        let firsts: Vec<bool> = decisions
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
        assert_eq!(decisions[0].label(), "recommend_down");
        // Back in the band, then out again: a new episode, logged again.
        d.decide(at(0.5), provisioned(8), now);
        assert!(matches!(
            d.decide(at(0.1), provisioned(8), now),
            Decision::Recommend { first: true, .. }
        ));
    }

    #[test]
    fn on_demand_streams_are_never_resized() {
        let mut d = Decider::new(Policy {
            cooldown: Duration::ZERO,
            ..policy()
        });
        let on_demand = StreamState {
            mode: StreamMode::OnDemand,
            ..provisioned(4)
        };
        for mean in [5.0, 0.0, 0.95, 0.01] {
            assert_eq!(d.decide(at(mean), on_demand, Instant::now()), Decision::OnDemand);
        }
    }

    #[test]
    fn nothing_is_decided_unless_the_stream_is_active() {
        let mut d = Decider::new(policy());
        let now = Instant::now();
        for (status, decision) in [
            (StreamStatus::Updating, Decision::Updating),
            (StreamStatus::Other, Decision::NotActive),
        ] {
            let stream = StreamState {
                status,
                ..provisioned(2)
            };
            assert_eq!(d.decide(at(0.95), stream, now), decision);
            assert_eq!(d.decide(at(0.01), stream, now), decision);
        }
    }

    #[test]
    fn at_a_bound_it_recommends_and_a_hot_shard_or_throttling_blocks_scaling_down() {
        let mut d = Decider::new(Policy {
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
        let quiet = WindowUtilisation {
            lowest_mean: 0.1,
            highest_mean: 0.2,
            hottest: 0.2,
            throttled: 0.0,
            minutes: 3,
        };
        let skewed = WindowUtilisation { hottest: 0.85, ..quiet };
        assert_eq!(
            d.decide(Observation::Complete(skewed), provisioned(4), now),
            Decision::WithinBand
        );
        let throttled = WindowUtilisation {
            throttled: 5.0,
            ..quiet
        };
        assert_eq!(
            d.decide(Observation::Complete(throttled), provisioned(4), now),
            Decision::WithinBand
        );
        // Sized for the busiest minute: 4 shards at 20% need 1.45, so 2.
        match d.decide(Observation::Complete(quiet), provisioned(4), now) {
            Decision::Resize(r) => assert_eq!((r.direction, r.target), (Direction::Down, 2)),
            other => panic!("expected a resize, got {other:?}"),
        }
    }
}
