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
//! the breaker at once, with that reason in `/readyz` and the log. Such a breaker closes only on
//! a successful PutRecords: DescribeStreamSummary answers while PutRecords is denied or its KMS
//! key is unusable, so an answer to the probe proves nothing. When the probe is answered, it
//! lets one receive through instead (a *trial*), whose records test PutRecords for real; the
//! breaker stays open, and `/readyz` not ready, until one of them is written.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, Semaphore};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::metrics::kit::{Counters, add, outcome, start_at_zero};
use crate::retry::RetryPolicy;

/// Consecutive PutRecords calls with nothing written before the breaker opens.
pub(crate) const OPEN_AFTER_FAILURES: u32 = 3;

pub struct Breaker {
    open: AtomicBool,
    failures_in_a_row: AtomicU32,
    /// Why it is open, when a specific error opened it.
    reason: Mutex<Option<String>>,
    changed: Notify,
    /// At most one permit: a receive allowed while open, to test PutRecords with real records.
    trial: Semaphore,
    metrics: BreakerMetrics,
}

impl Breaker {
    pub fn new(metrics: BreakerMetrics) -> Breaker {
        Breaker {
            open: AtomicBool::new(false),
            failures_in_a_row: AtomicU32::new(0),
            reason: Mutex::new(None),
            changed: Notify::new(),
            trial: Semaphore::new(0),
            metrics,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Why the breaker is open: the error that opened it, or repeated failures.
    pub(crate) fn reason(&self) -> Option<String> {
        if !self.is_open() {
            return None;
        }
        let specific = self.reason.lock().ok().and_then(|r| r.clone());
        Some(specific.unwrap_or_else(|| "PutRecords keeps failing".to_owned()))
    }

    /// A PutRecords call (or probe) reached Kinesis and something was written (or answered).
    pub(crate) fn succeeded(&self) {
        self.failures_in_a_row.store(0, Ordering::Release);
        if let Ok(mut reason) = self.reason.lock() {
            *reason = None;
        }
        if self.open.swap(false, Ordering::AcqRel) {
            // A trial not taken is no longer needed.
            while let Ok(permit) = self.trial.try_acquire() {
                permit.forget();
            }
            self.metrics.breaker_open.set(0);
            tracing::info!("Kinesis answers again; circuit breaker closed, receiving resumes");
            self.changed.notify_waiters();
        }
    }

    /// A PutRecords call failed whole, or none of its records was written.
    pub(crate) fn failed(&self) {
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
    pub(crate) fn open_because(&self, reason: String) {
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

    /// The probe's DescribeStreamSummary was answered. That closes a breaker opened by failures
    /// in a row (Kinesis was unreachable or failing, and answers again). A breaker opened by an
    /// error no record can get past stays open: the answer proves nothing about PutRecords, so
    /// one receive is let through to try it.
    pub(crate) fn probe_answered(&self) {
        let specific = self.reason.lock().map(|r| r.is_some()).unwrap_or(true);
        if !specific {
            self.succeeded();
        } else if self.is_open() && self.trial.available_permits() == 0 {
            self.trial.add_permits(1);
        }
    }

    /// Returns when receiving may go on: at once while closed; otherwise when the breaker
    /// closes or a trial receive is granted (taken by the first receiver that waits).
    pub(crate) async fn wait_may_receive(&self) {
        if !self.is_open() {
            return;
        }
        tokio::select! {
            _ = self.wait_closed() => {}
            permit = self.trial.acquire() => {
                if let Ok(permit) = permit {
                    permit.forget();
                    tracing::info!("circuit breaker open; one receive let through to try PutRecords");
                }
            }
        }
    }

    /// Returns at once while closed; otherwise waits until the breaker closes.
    pub(crate) async fn wait_closed(&self) {
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
/// sink's gauge, is 0), asks Kinesis about the stream with capped backoff; see
/// [`Breaker::probe_answered`] for what an answer does.
pub(crate) async fn probe(
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
                    breaker.probe_answered();
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

    #[tokio::test(start_paused = true)]
    async fn an_answered_probe_closes_a_breaker_opened_by_failures_in_a_row() {
        let breaker = Breaker::new(BreakerMetrics::register(&mut Registry::default()));
        for _ in 0..OPEN_AFTER_FAILURES {
            breaker.failed();
        }
        breaker.probe_answered();
        assert!(!breaker.is_open());
        breaker.wait_may_receive().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_probe_lets_one_receive_try_but_only_a_written_record_closes_a_permission_error() {
        let breaker = Arc::new(Breaker::new(BreakerMetrics::register(&mut Registry::default())));
        breaker.open_because("PutRecords fails with AccessDeniedException: no".into());
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                tokio::spawn(async move { breaker.wait_may_receive().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(receivers.iter().all(|r| !r.is_finished()));
        // DescribeStreamSummary answers: still open, still not ready, one receiver goes.
        breaker.probe_answered();
        assert!(breaker.is_open());
        assert!(breaker.reason().is_some_and(|r| r.contains("AccessDeniedException")));
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(receivers.iter().filter(|r| r.is_finished()).count(), 1);
        // The trial's PutRecords writes: closed, and every receiver goes.
        breaker.succeeded();
        for receiver in receivers {
            receiver.await.unwrap();
        }
        assert!(!breaker.is_open());
        assert_eq!(breaker.trial.available_permits(), 0);
    }
}
