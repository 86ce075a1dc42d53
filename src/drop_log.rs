//! Info lines for dropped submissions that a flood of broken ones cannot turn into a flood of
//! log lines: per reason, the first [`LINES_PER_INTERVAL`] drops of an [`INTERVAL`] get a line
//! each, the rest one line with their count when the interval ends (reported at the next drop
//! or the next `throughput` line, whichever comes first). The per-message debug line and the
//! metric by reason are not limited.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use telemetry_format::submission::Rejection;

/// Info lines per reason per interval.
pub const LINES_PER_INTERVAL: u32 = 5;
/// The interval a reason's line budget covers, counted from its first drop.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// One reason's interval.
#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Drops that went without a line during one reason's interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    pub reason_label: &'static str,
    pub count: u64,
}

/// Per-reason line budgets. Pure: the caller passes the time, so tests control the clock.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    lines_per_interval: u32,
    interval: Duration,
    /// By label: a bounded set (`Rejection::LABELS`), reported in a stable order.
    windows: BTreeMap<&'static str, Window>,
}

impl RateLimiter {
    pub fn new(lines_per_interval: u32, interval: Duration) -> RateLimiter {
        RateLimiter {
            lines_per_interval,
            interval,
            windows: BTreeMap::new(),
        }
    }

    /// Whether a drop with this reason gets a line of its own; if not, it is counted.
    pub(crate) fn admit(&mut self, reason_label: &'static str, now: Instant) -> bool {
        let window = self.windows.entry(reason_label).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        if window.logged < self.lines_per_interval {
            window.logged += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// Ends the intervals that are over; returns those that suppressed lines.
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<Suppressed> {
        let mut ended = Vec::new();
        let interval = self.interval;
        self.windows.retain(|label, window| {
            if now.saturating_duration_since(window.started) < interval {
                return true;
            }
            if window.suppressed > 0 {
                ended.push(Suppressed {
                    reason_label: label,
                    count: window.suppressed,
                });
            }
            false
        });
        ended
    }
}

static LIMITER: LazyLock<Mutex<RateLimiter>> =
    LazyLock::new(|| Mutex::new(RateLimiter::new(LINES_PER_INTERVAL, INTERVAL)));

/// Logs one dropped submission: always at debug, at info within its reason's budget. Neither
/// line carries the body, which holds sensor data; the debug line carries `body_sample` when
/// given (`LOG_INVALID_BODY_SAMPLES`).
pub(crate) fn dropped(message_id: &str, rejection: &Rejection, body_bytes: usize, body_sample: Option<&str>) {
    dropped_with(&LIMITER, Instant::now(), message_id, rejection, body_bytes, body_sample);
}

/// Reports the intervals that ended without a drop since; called with each `throughput` line.
pub(crate) fn flush() {
    flush_with(&LIMITER, Instant::now());
}

fn dropped_with(
    limiter: &Mutex<RateLimiter>,
    now: Instant,
    message_id: &str,
    rejection: &Rejection,
    body_bytes: usize,
    body_sample: Option<&str>,
) {
    let label = rejection.label();
    let (ended, admitted) = {
        // A panic elsewhere while holding the lock leaves counts that are still good to use.
        let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        (limiter.flush(now), limiter.admit(label, now))
    };
    report(ended);
    if admitted {
        tracing::info!(
            message_id,
            reason = %rejection,
            reason_label = label,
            body_bytes,
            "invalid submission dropped"
        );
    }
    match body_sample {
        Some(body_prefix) => tracing::debug!(
            message_id,
            reason = %rejection,
            reason_label = label,
            body_bytes,
            body_prefix,
            "dropped invalid submission"
        ),
        None => tracing::debug!(
            message_id,
            reason = %rejection,
            reason_label = label,
            body_bytes,
            "dropped invalid submission"
        ),
    }
}

fn flush_with(limiter: &Mutex<RateLimiter>, now: Instant) {
    let ended = limiter.lock().unwrap_or_else(PoisonError::into_inner).flush(now);
    report(ended);
}

fn report(ended: Vec<Suppressed>) {
    for s in ended {
        tracing::info!(
            reason_label = s.reason_label,
            suppressed = s.count,
            interval_s = INTERVAL.as_secs(),
            "invalid submission log lines suppressed"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_gets_its_budget_then_one_count_when_the_interval_ends() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(5, 10 * SECOND);
        let admitted = (0..100)
            .filter(|i| limiter.admit("not_json", t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(admitted, 5);
        assert_eq!(limiter.flush(t0 + 9 * SECOND), vec![], "the interval is not over");
        assert_eq!(
            limiter.flush(t0 + 10 * SECOND),
            vec![Suppressed {
                reason_label: "not_json",
                count: 95
            }]
        );
        assert_eq!(limiter.flush(t0 + 20 * SECOND), vec![], "reported once");
        assert!(
            limiter.admit("not_json", t0 + 21 * SECOND),
            "a new interval, a new budget"
        );
    }

    #[test]
    fn reasons_have_budgets_of_their_own() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(2, 10 * SECOND);
        let mut admitted = Vec::new();
        for (i, label) in ["a", "b", "a", "b", "a", "b", "a"].into_iter().enumerate() {
            admitted.push(limiter.admit(label, t0 + Duration::from_millis(i as u64)));
        }
        assert_eq!(admitted, [true, true, true, true, false, false, false]);
        // b's interval began a millisecond after a's.
        assert_eq!(
            limiter.flush(t0 + 10 * SECOND),
            vec![Suppressed {
                reason_label: "a",
                count: 2
            }]
        );
        assert!(!limiter.admit("b", t0 + 10 * SECOND));
        assert_eq!(
            limiter.flush(t0 + 11 * SECOND),
            vec![Suppressed {
                reason_label: "b",
                count: 2
            }]
        );
    }

    #[test]
    fn intervals_that_end_together_report_in_label_order() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(0, 10 * SECOND);
        limiter.admit("b", t0);
        limiter.admit("a", t0);
        limiter.admit("b", t0);
        assert_eq!(
            limiter.flush(t0 + 10 * SECOND),
            vec![
                Suppressed {
                    reason_label: "a",
                    count: 1
                },
                Suppressed {
                    reason_label: "b",
                    count: 2
                }
            ]
        );
    }

    #[test]
    fn an_interval_within_its_budget_reports_nothing() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(5, 10 * SECOND);
        for i in 0..5 {
            assert!(limiter.admit("invalid_uuid", t0 + i * SECOND));
        }
        assert_eq!(limiter.flush(t0 + 60 * SECOND), vec![]);
    }

    #[test]
    fn an_interval_runs_from_its_first_drop() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 10 * SECOND);
        assert!(limiter.admit("a", t0));
        assert!(!limiter.admit("a", t0 + 9 * SECOND));
        assert!(limiter.admit("b", t0 + 9 * SECOND));
        // a's interval is over, b's (from 9 s) is not.
        assert_eq!(
            limiter.flush(t0 + 10 * SECOND),
            vec![Suppressed {
                reason_label: "a",
                count: 1
            }]
        );
        assert!(!limiter.admit("b", t0 + 18 * SECOND));
        assert!(limiter.admit("a", t0 + 18 * SECOND));
    }

    /// Collects the JSON log lines written while `f` runs, at `level` and above.
    fn log_lines(level: tracing::Level, f: impl FnOnce()) -> Vec<Value> {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    }

    #[test]
    fn a_burst_of_drops_logs_a_bounded_number_of_info_lines_and_the_suppressed_count() {
        let limiter = Mutex::new(RateLimiter::new(LINES_PER_INTERVAL, INTERVAL));
        let t0 = Instant::now();
        let not_json = Rejection::NotJson("expected value".into());
        let bad_uuid = Rejection::InvalidUuid("device_id");
        let lines = log_lines(tracing::Level::INFO, || {
            for i in 0..200u64 {
                let rejection = if i % 4 == 0 { &bad_uuid } else { &not_json };
                let at = t0 + Duration::from_millis(i * 10);
                dropped_with(&limiter, at, &format!("m-{i}"), rejection, 7, Some("eyJhIjo"));
            }
            flush_with(&limiter, t0 + INTERVAL + SECOND);
        });
        let dropped = with_message(&lines, "invalid submission dropped");
        assert_eq!(dropped.len(), 2 * LINES_PER_INTERVAL as usize, "{lines:#?}");
        assert!(
            dropped
                .iter()
                .all(|l| l["level"] == "INFO" && l["body_bytes"] == 7 && l.get("body_prefix").is_none()),
            "no sensor data at info, even with samples on"
        );
        assert_eq!(dropped[0]["message_id"], "m-0");
        assert_eq!(dropped[0]["reason_label"], "invalid_uuid");
        assert_eq!(dropped[1]["message_id"], "m-1");
        assert_eq!(dropped[1]["reason"], "body is not JSON: expected value");
        let suppressed = with_message(&lines, "invalid submission log lines suppressed");
        let counts: Vec<(&str, u64)> = suppressed
            .iter()
            .map(|l| (l["reason_label"].as_str().unwrap(), l["suppressed"].as_u64().unwrap()))
            .collect();
        assert_eq!(counts, [("invalid_uuid", 45), ("not_json", 145)]);
        assert_eq!(lines.len(), dropped.len() + suppressed.len(), "no other line at info");
    }

    #[test]
    fn every_drop_still_has_its_debug_line() {
        let limiter = Mutex::new(RateLimiter::new(LINES_PER_INTERVAL, INTERVAL));
        let t0 = Instant::now();
        let lines = log_lines(tracing::Level::DEBUG, || {
            for i in 0..20 {
                dropped_with(&limiter, t0, &format!("m-{i}"), &Rejection::NotUtf8, 1, None);
            }
        });
        assert_eq!(with_message(&lines, "dropped invalid submission").len(), 20);
        assert_eq!(with_message(&lines, "invalid submission dropped").len(), 5);
    }

    #[test]
    fn the_body_sample_is_in_the_debug_line_only_when_asked_for() {
        let limiter = Mutex::new(RateLimiter::new(LINES_PER_INTERVAL, INTERVAL));
        let t0 = Instant::now();
        let lines = log_lines(tracing::Level::DEBUG, || {
            dropped_with(&limiter, t0, "m-0", &Rejection::NotUtf8, 40, None);
            dropped_with(&limiter, t0, "m-1", &Rejection::NotUtf8, 40, Some("secret"));
        });
        let debug = with_message(&lines, "dropped invalid submission");
        assert!(debug[0].get("body_prefix").is_none());
        assert_eq!(debug[1]["body_prefix"], "secret");
        assert!(
            with_message(&lines, "invalid submission dropped")
                .iter()
                .all(|l| l.get("body_prefix").is_none())
        );
    }

    #[test]
    fn a_later_drop_reports_the_interval_that_ended_before_its_own_line() {
        let limiter = Mutex::new(RateLimiter::new(1, INTERVAL));
        let t0 = Instant::now();
        let lines = log_lines(tracing::Level::INFO, || {
            for i in 0..3 {
                dropped_with(&limiter, t0, &format!("m-{i}"), &Rejection::NotUtf8, 1, None);
            }
            dropped_with(&limiter, t0 + INTERVAL, "m-3", &Rejection::NotUtf8, 1, None);
        });
        let messages: Vec<_> = lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
        assert_eq!(
            messages,
            [
                "invalid submission dropped",
                "invalid submission log lines suppressed",
                "invalid submission dropped"
            ]
        );
        assert_eq!(lines[1]["suppressed"], 2);
        assert_eq!(lines[2]["message_id"], "m-3");
    }
}
