//! Kinesis circuit breaker: when PutRecords keeps failing, stop taking more work from SQS.
//!
//! After [`OPEN_AFTER_FAILURES`] PutRecords calls in a row with nothing written, the breaker
//! opens and the receivers stop polling: messages wait in the queue, not in memory, and the
//! collector makes few AWS calls while Kinesis is down. The sink lanes keep retrying what they
//! hold with capped backoff; the first call that writes anything closes the breaker. When the
//! lanes hold nothing to retry with, [`probe`] asks Kinesis about the stream with backoff and
//! closes the breaker when it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use tokio::sync::Notify;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::retry::RetryPolicy;

/// Consecutive PutRecords calls with nothing written before the breaker opens.
pub const OPEN_AFTER_FAILURES: u32 = 3;

pub struct Breaker {
    open: AtomicBool,
    failures_in_a_row: AtomicU32,
    changed: Notify,
    metrics: Arc<Metrics>,
}

impl Breaker {
    pub fn new(metrics: Arc<Metrics>) -> Breaker {
        Breaker {
            open: AtomicBool::new(false),
            failures_in_a_row: AtomicU32::new(0),
            changed: Notify::new(),
            metrics,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// A PutRecords call (or probe) reached Kinesis and something was written (or answered).
    pub fn succeeded(&self) {
        self.failures_in_a_row.store(0, Ordering::Release);
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

/// While the breaker is open and no lane holds records to retry with, asks Kinesis about the
/// stream with capped backoff; an answer closes the breaker.
pub async fn probe(
    client: Client,
    stream_name: String,
    breaker: Arc<Breaker>,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
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
            if !breaker.is_open() || metrics.events_in_flight.get() > 0 {
                // Closed meanwhile, or the lanes' own retries are the probe.
                continue;
            }
            match client.describe_stream_summary().stream_name(&stream_name).send().await {
                Ok(_) => {
                    Metrics::outcome(&metrics.kinesis_probes, "ok", 1);
                    breaker.succeeded();
                }
                Err(e) => {
                    Metrics::outcome(&metrics.kinesis_probes, "failed", 1);
                    tracing::debug!(error = %DisplayErrorContext(&e), "breaker probe failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_after_failures_in_a_row_and_closes_on_success() {
        let metrics = Arc::new(Metrics::new());
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
}
