//! Retry pacing shared by every AWS call site: capped exponential backoff with jitter, and one
//! warning per retry *episode* (first failure), not per attempt, so that an outage of minutes
//! is a handful of log lines. Recovery is logged once at info.

use std::fmt::Display;
use std::time::Duration;

use std::future::Future;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// How retries are paced (`RETRY_INITIAL_BACKOFF_MS`, `RETRY_MAX_BACKOFF_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delays of one retry episode: growing to the cap, with jitter, never ending.
    pub(crate) fn delays(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// The delays of one run of failures: growing to the cap, started afresh after a success.
pub(crate) struct Backoff {
    policy: RetryPolicy,
    delays: Option<ExponentialBackoff>,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Backoff {
        Backoff { policy, delays: None }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.delays
            .get_or_insert_with(|| self.policy.delays())
            .next()
            .unwrap_or(self.policy.max)
    }

    /// Starts the next run of failures from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.delays = None;
    }
}

/// The retry state of one activity ("PutRecords on lane 2", "ReceiveMessage").
pub(crate) struct RetryEpisode {
    what: String,
    backoff: Backoff,
    failures: u64,
}

impl RetryEpisode {
    pub fn new(what: impl Into<String>, policy: RetryPolicy) -> RetryEpisode {
        RetryEpisode {
            what: what.into(),
            backoff: Backoff::new(policy),
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub(crate) fn failed(&mut self, error: &dyn Display) -> Duration {
        self.failures += 1;
        let delay = self.backoff.next_delay();
        if self.failures == 1 {
            tracing::warn!(what = %self.what, error = %error, retry_in_ms = delay.as_millis() as u64,
                "call failed; retrying with backoff until it succeeds");
        } else {
            tracing::debug!(what = %self.what, error = %error, attempt = self.failures,
                retry_in_ms = delay.as_millis() as u64, "retrying");
        }
        delay
    }

    /// Records a success; ends the episode if one was running.
    pub(crate) fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(what = %self.what, failed_attempts = self.failures, "recovered");
        }
        self.failures = 0;
        self.backoff.reset();
    }

    /// Failures since the last success.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u64 {
        self.failures
    }
}

/// Calls `attempt` until it succeeds, with backoff; `None` if shutdown comes first.
pub(crate) async fn retry_until<T, F, Fut>(
    what: String,
    retry: RetryPolicy,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut episode = RetryEpisode::new(what, retry);
    loop {
        let result = tokio::select! {
            result = attempt() => result,
            _ = shutdown.cancelled() => return None,
        };
        match result {
            Ok(value) => {
                episode.succeeded();
                return Some(value);
            }
            Err(error) => {
                let delay = episode.failed(&error);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// Calls `attempt` up to `attempts` times, with backoff between, within one retry episode;
/// the last error if none succeeds. For calls whose failure loses nothing (the message comes
/// back), so that giving up after a few tries is safe.
pub(crate) async fn with_attempts<T, E, F, Fut>(
    episode: &mut RetryEpisode,
    attempts: u32,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt().await {
            Ok(value) => {
                episode.succeeded();
                return Ok(value);
            }
            Err(error) => {
                let delay = episode.failed(&error);
                if tried >= attempts {
                    return Err(error);
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_cap_and_reset_on_success() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
        };
        let mut episode = RetryEpisode::new("test", policy);
        let delays: Vec<_> = (0..8).map(|_| episode.failed(&"boom")).collect();
        // Jitter adds up to one more base delay.
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1600)));
        assert!(delays[7] >= Duration::from_millis(800));
        assert_eq!(episode.failures(), 8);
        episode.succeeded();
        assert_eq!(episode.failures(), 0);
        assert!(episode.failed(&"again") <= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn with_attempts_stops_at_the_first_success_or_after_the_last_attempt() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut episode = RetryEpisode::new("test", policy);
        let mut calls = 0;
        let result: Result<u32, String> = with_attempts(&mut episode, 3, || {
            calls += 1;
            let call = calls;
            async move {
                if call == 2 {
                    Ok(call)
                } else {
                    Err(format!("failure {call}"))
                }
            }
        })
        .await;
        assert_eq!(result, Ok(2));
        assert_eq!(episode.failures(), 0, "a success ends the episode");
        let mut calls = 0;
        let result: Result<u32, String> = with_attempts(&mut episode, 3, || {
            calls += 1;
            let call = calls;
            async move { Err(format!("failure {call}")) }
        })
        .await;
        assert_eq!(result, Err("failure 3".to_owned()));
        assert_eq!(calls, 3);
    }
}
