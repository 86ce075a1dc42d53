//! The ledger: one counter per received message of the events not yet confirmed published.
//!
//! A message's receipt goes to the deleter only when its counter reaches zero, i.e. every one
//! of its events has a successful PutRecords result. That single rule is the no-loss guarantee:
//! whatever fails, crashes or is abandoned before zero leaves the message in the queue, and SQS
//! delivers it again when its visibility timeout ends.
//!
//! Each outbound record holds an `Arc` of its message's entry; when the last one is dropped the
//! entry goes too, releasing the message's in-flight permit (backpressure on receiving).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::metrics::Metrics;

/// What the deleter needs to delete one message. The handle is a credential for the message:
/// it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    pub handle: String,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// The ledger entry of one message whose events are being published.
pub struct LedgerEntry {
    receipt: Receipt,
    outstanding: AtomicUsize,
    /// Receipts must not be used after this instant: the message may already be visible again.
    receipt_deadline: Instant,
    abandoned: AtomicBool,
    deleter: mpsc::UnboundedSender<Receipt>,
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl LedgerEntry {
    pub fn new(
        receipt: Receipt,
        event_count: usize,
        receipt_deadline: Instant,
        deleter: mpsc::UnboundedSender<Receipt>,
        metrics: Arc<Metrics>,
        permit: OwnedSemaphorePermit,
    ) -> Arc<LedgerEntry> {
        metrics.messages_in_flight.inc();
        Arc::new(LedgerEntry {
            receipt,
            outstanding: AtomicUsize::new(event_count),
            receipt_deadline,
            abandoned: AtomicBool::new(false),
            deleter,
            metrics,
            _permit: permit,
        })
    }

    pub fn message_id(&self) -> &str {
        &self.receipt.message_id
    }

    /// Confirms one event published. At zero the receipt is handed to the deleter.
    pub fn confirm_one(&self) {
        let before = self.outstanding.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "more confirmations than events");
        if before == 1 {
            // The deleter only ends after every entry is gone, so it is listening.
            let _ = self.deleter.send(self.receipt.clone());
        }
    }

    /// Events not yet confirmed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// True once the receipt can no longer be trusted: by then SQS may have delivered the
    /// message again, so publishing the rest would only make duplicates.
    pub fn receipt_expired(&self, now: Instant) -> bool {
        now >= self.receipt_deadline
    }

    /// Marks the message as given up; true only for the first caller, so it is logged once.
    pub fn abandon(&self) -> bool {
        !self.abandoned.swap(true, Ordering::AcqRel)
    }
}

impl Drop for LedgerEntry {
    fn drop(&mut self) {
        self.metrics.messages_in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn entry(events: usize, tx: mpsc::UnboundedSender<Receipt>, permits: &Arc<Semaphore>) -> Arc<LedgerEntry> {
        let permit = permits.clone().try_acquire_owned().unwrap();
        let receipt = Receipt {
            message_id: "m1".into(),
            handle: "h1".into(),
        };
        LedgerEntry::new(receipt, events, Instant::now(), tx, Arc::new(Metrics::new()), permit)
    }

    #[test]
    fn receipt_is_released_only_when_the_last_event_is_confirmed() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(1));
        let e = entry(3, tx, &permits);
        e.confirm_one();
        e.confirm_one();
        assert!(rx.try_recv().is_err());
        assert_eq!(e.outstanding(), 1);
        e.confirm_one();
        assert_eq!(rx.try_recv().unwrap().message_id, "m1");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn dropping_an_unfinished_entry_releases_capacity_but_not_the_receipt() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(1));
        let e = entry(2, tx, &permits);
        assert_eq!(permits.available_permits(), 0);
        e.confirm_one();
        drop(e);
        assert_eq!(permits.available_permits(), 1);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn abandon_reports_only_once_and_receipts_do_not_leak_into_debug() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let e = entry(1, tx, &Arc::new(Semaphore::new(1)));
        assert!(e.abandon());
        assert!(!e.abandon());
        assert!(e.receipt_expired(Instant::now()));
        assert!(!format!("{:?}", e.receipt).contains("h1"));
    }
}
