//! Kinesis circuit breaker: when PutRecords keeps failing, stop taking more work from SQS.
//!
//! After [`OPEN_AFTER_FAILURES`] PutRecords calls in a row with nothing written, the breaker
//! opens and the receivers stop polling: messages wait in the queue, not in memory, and the
//! collector makes few AWS calls while Kinesis is down. The sink lanes keep retrying what they
//! hold with capped backoff; the first call that writes anything closes the breaker. When the
//! lanes hold nothing to retry with, [`probe`] asks Kinesis about the stream with backoff and
//! closes the breaker when it answers.
//!
//! An error that no record can get past (access denied, KMS key disabled, stream deleted) opens
//! the breaker at once, with that reason in `/readyz` and the log.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::metrics::kit::{Counters, add, outcome, start_at_zero};
use crate::retry::RetryPolicy;

/// Consecutive PutRecords calls with nothing written before the breaker opens.
pub const OPEN_AFTER_FAILURES: u32 = 3;

pub struct Breaker {
    open: AtomicBool,
    failures_in_a_row: AtomicU32,
    /// Why it is open, when a specific error opened it.
    reason: Mutex<Option<String>>,
    changed: Notify,
    metrics: BreakerMetrics,
}

impl Breaker {
    pub fn new(metrics: BreakerMetrics) -> Breaker {
        Breaker {
            open: AtomicBool::new(false),
            failures_in_a_row: AtomicU32::new(0),
            reason: Mutex::new(None),
            changed: Notify::new(),
            metrics,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Why the breaker is open: the error that opened it, or repeated failures.
    pub fn reason(&self) -> Option<String> {
        if !self.is_open() {
            return None;
        }
        let specific = self.reason.lock().ok().and_then(|r| r.clone());
        Some(specific.unwrap_or_else(|| "PutRecords keeps failing".to_owned()))
    }

    /// A PutRecords call (or probe) reached Kinesis and something was written (or answered).
    pub fn succeeded(&self) {
        self.failures_in_a_row.store(0, Ordering::Release);
        if let Ok(mut reason) = self.reason.lock() {
            *reason = None;
        }
        if self.open.swap(false, Ordering::AcqRel) {
            self.metrics.breaker_open.set(0);
            tracing::info!("Kinesis answers again; circuit breaker closed, receiving resumes");
            self.changed.notify_waiters();
        }
    }

    /// A PutRecords call failed whole, or none of its records was written.
    pub fn failed(&self) {
        let failures = self.failures_in_a_row.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= OPEN_AFTER_FAILURES && !self.open.swap(true, Ordering::AcqRel) {
            self.metrics.breaker_open.set(1);
            tracing::warn!(
                failures_in_a_row = failures,
                "Kinesis keeps failing; circuit breaker open: receiving paused until it answers"
            );
            self.changed.notify_waiters();
        }
    }

    /// An error that no record can get past until an operator acts: opens at once. Logged when
    /// it opens the breaker or differs from the reason already given.
    pub fn open_because(&self, reason: String) {
        self.failures_in_a_row.fetch_add(1, Ordering::AcqRel);
        let changed = match self.reason.lock() {
            Ok(mut slot) if slot.as_deref() != Some(reason.as_str()) => {
                *slot = Some(reason.clone());
                true
            }
            _ => false,
        };
        let opened = !self.open.swap(true, Ordering::AcqRel);
        if opened {
            self.metrics.breaker_open.set(1);
            self.changed.notify_waiters();
        }
        if opened || changed {
            tracing::error!(
                reason,
                "Kinesis refuses every write; circuit breaker open: receiving paused until it is fixed"
            );
        }
    }

    /// Returns at once while closed; otherwise waits until the breaker closes.
    pub async fn wait_closed(&self) {
        loop {
            let changed = self.changed.notified();
            if !self.is_open() {
                return;
            }
            changed.await;
        }
    }

    async fn wait_open(&self) {
        loop {
            let changed = self.changed.notified();
            if self.is_open() {
                return;
            }
            changed.await;
        }
    }
}

/// While the breaker is open and no lane holds records to retry with (`events_in_flight`, the
/// sink's gauge, is 0), asks Kinesis about the stream with capped backoff; an answer closes the
/// breaker.
pub async fn probe(
    client: Client,
    stream_name: String,
    breaker: Arc<Breaker>,
    retry: RetryPolicy,
    metrics: BreakerMetrics,
    events_in_flight: Gauge,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = breaker.wait_open() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut delays = retry.delays();
        while breaker.is_open() {
            tokio::select! {
                _ = sleep(delays.next().unwrap_or(retry.max)) => {}
                _ = shutdown.cancelled() => return,
            }
            if !breaker.is_open() || events_in_flight.get() > 0 {
                // Closed meanwhile, or the lanes' own retries are the probe.
                continue;
            }
            match crate::aws::describe_stream(&client, &stream_name).await {
                Ok(_) => {
                    outcome(&metrics.kinesis_probes, "ok", 1);
                    breaker.succeeded();
                }
                Err(e) => {
                    outcome(&metrics.kinesis_probes, "failed", 1);
                    tracing::debug!(error = e, "breaker probe failed");
                }
            }
        }
    }
}

/// The Kinesis circuit breaker's metrics.
#[derive(Clone)]
pub struct BreakerMetrics {
    pub breaker_open: Gauge,
    pub kinesis_probes: Counters,
}

impl BreakerMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let section = BreakerMetrics {
            breaker_open: add(
                registry,
                "breaker_open",
                "1 while the Kinesis circuit breaker is open (receiving paused), else 0",
                Gauge::default(),
            ),
            kinesis_probes: add(
                registry,
                "kinesis_probes",
                "DescribeStreamSummary calls made to resolve the stream or probe it while the breaker is open, by outcome (ok, failed)",
                Counters::default(),
            ),
        };
        start_at_zero(&section.kinesis_probes, "outcome", &["ok", "failed"]);
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_after_failures_in_a_row_and_closes_on_success() {
        let metrics = BreakerMetrics::register(&mut Registry::default());
        let breaker = Arc::new(Breaker::new(metrics.clone()));
        breaker.failed();
        breaker.failed();
        breaker.succeeded();
        breaker.failed();
        breaker.failed();
        assert!(!breaker.is_open(), "a success in between resets the count");
        breaker.failed();
        assert!(breaker.is_open());
        assert_eq!(metrics.breaker_open.get(), 1);

        let waiter = tokio::spawn({
            let breaker = breaker.clone();
            async move { breaker.wait_closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        breaker.succeeded();
        waiter.await.unwrap();
        assert!(!breaker.is_open());
        assert_eq!(metrics.breaker_open.get(), 0);
    }

    #[test]
    fn a_permanent_error_opens_at_once_with_its_reason_until_a_success() {
        let breaker = Breaker::new(BreakerMetrics::register(&mut Registry::default()));
        assert_eq!(breaker.reason(), None);
        breaker.open_because("PutRecords fails with AccessDeniedException: no".into());
        assert!(breaker.is_open());
        assert_eq!(
            breaker.reason().as_deref(),
            Some("PutRecords fails with AccessDeniedException: no")
        );
        breaker.succeeded();
        assert_eq!(breaker.reason(), None);
        for _ in 0..OPEN_AFTER_FAILURES {
            breaker.failed();
        }
        assert_eq!(breaker.reason().as_deref(), Some("PutRecords keeps failing"));
    }
}
