//! The ledger: one counter per received message of the events not yet confirmed published.
//!
//! A message's receipt goes to the deleter only when its counter reaches zero, i.e. every one
//! of its events has a successful PutRecords result. That single rule is the no-loss guarantee:
//! whatever fails, crashes or is abandoned before zero leaves the message in the queue, and SQS
//! delivers it again when its visibility timeout ends.
//!
//! Each outbound record holds an `Arc` of its message's entry; when the last one is dropped the
//! entry goes too, releasing the message's in-flight capacity (backpressure on receiving). The
//! visibility keeper holds only a `Weak`, so a finished message stops being extended by itself.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::metrics::Metrics;

/// What the deleter needs to delete one message. The handle is a credential for the message:
/// it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    pub handle: String,
}

impl Receipt {
    /// `text` with the receipt handle blanked out: AWS error messages can quote it.
    pub fn redact(&self, text: &str) -> String {
        if self.handle.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.handle, "<receipt handle>")
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// Why a message stopped being worked on before all its events were published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Its receipt expired: SQS may already have delivered it again.
    Expired = 1,
    /// Given back to the queue at shutdown before any of its events was sent.
    Released = 2,
}

/// The ledger entry of one message whose events are being published.
pub struct LedgerEntry {
    receipt: Receipt,
    outstanding: AtomicUsize,
    /// When the ReceiveMessage call was sent: the visibility timeout runs from (just after) it.
    pub received_at: Instant,
    /// The receipt is trusted until `received_at` + this, in milliseconds; the visibility
    /// keeper moves it forward when it extends the message's visibility.
    trusted_for_ms: AtomicU64,
    /// Kept free at the end of the visibility for the delete call.
    delete_margin: Duration,
    /// Set once any of its events is in a PutRecords call: from then on the message must be
    /// finished, not given back.
    started: AtomicBool,
    given_up: AtomicU8,
    deleter: mpsc::UnboundedSender<Receipt>,
    metrics: Arc<Metrics>,
    record_bytes: usize,
    _message_permit: OwnedSemaphorePermit,
    byte_permit: Mutex<Option<OwnedSemaphorePermit>>,
}

/// What a new entry is made of.
pub struct NewEntry {
    pub receipt: Receipt,
    pub event_count: usize,
    pub record_bytes: usize,
    pub received_at: Instant,
    pub visibility_timeout: Duration,
    pub delete_margin: Duration,
    pub deleter: mpsc::UnboundedSender<Receipt>,
    pub permit: OwnedSemaphorePermit,
}

impl LedgerEntry {
    pub fn new(new: NewEntry, metrics: Arc<Metrics>) -> Arc<LedgerEntry> {
        metrics.messages_in_flight.inc();
        Arc::new(LedgerEntry {
            receipt: new.receipt,
            outstanding: AtomicUsize::new(new.event_count),
            received_at: new.received_at,
            trusted_for_ms: AtomicU64::new(new.visibility_timeout.as_millis() as u64),
            delete_margin: new.delete_margin,
            started: AtomicBool::new(false),
            given_up: AtomicU8::new(0),
            deleter: new.deleter,
            metrics,
            record_bytes: new.record_bytes,
            _message_permit: new.permit,
            byte_permit: Mutex::new(None),
        })
    }

    pub fn message_id(&self) -> &str {
        &self.receipt.message_id
    }

    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// Holds the message's share of the in-flight byte cap until the entry is gone.
    pub fn hold_bytes(&self, permit: OwnedSemaphorePermit) {
        if let Ok(mut slot) = self.byte_permit.lock() {
            if slot.is_none() {
                self.metrics.bytes_in_flight.inc_by(self.record_bytes as i64);
            }
            *slot = Some(permit);
        }
    }

    /// Confirms one event published. At zero the receipt is handed to the deleter.
    pub fn confirm_one(&self) {
        self.metrics
            .event_latency
            .observe(self.received_at.elapsed().as_secs_f64());
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

    /// When the visibility, as far as this collector knows, ends.
    pub fn visible_until(&self) -> Instant {
        self.received_at + Duration::from_millis(self.trusted_for_ms.load(Ordering::Acquire))
    }

    /// Records a visibility extension of `timeout` requested at `requested_at`.
    pub fn extended(&self, requested_at: Instant, timeout: Duration) {
        let until = requested_at.saturating_duration_since(self.received_at) + timeout;
        self.trusted_for_ms
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// True once the receipt can no longer be trusted: by then SQS may have delivered the
    /// message again, so publishing the rest would only make duplicates.
    pub fn receipt_expired(&self, now: Instant) -> bool {
        now + self.delete_margin >= self.visible_until()
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Marks the message as given up; true only for the first caller, so it is logged once.
    pub fn give_up(&self, why: GiveUp) -> bool {
        self.given_up
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// True once the message has been given up for any reason: its records are dropped.
    pub fn is_given_up(&self) -> bool {
        self.given_up.load(Ordering::Acquire) != 0
    }
}

impl Drop for LedgerEntry {
    fn drop(&mut self) {
        self.metrics.messages_in_flight.dec();
        if self.byte_permit.get_mut().is_ok_and(|p| p.is_some()) {
            self.metrics.bytes_in_flight.dec_by(self.record_bytes as i64);
        }
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
            handle: "h1-secret".into(),
        };
        LedgerEntry::new(
            NewEntry {
                receipt,
                event_count: events,
                record_bytes: 100,
                received_at: Instant::now(),
                visibility_timeout: Duration::from_secs(10),
                delete_margin: Duration::from_secs(1),
                deleter: tx,
                permit,
            },
            Arc::new(Metrics::new()),
        )
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
        let bytes = Arc::new(Semaphore::new(100));
        let e = entry(2, tx, &permits);
        e.hold_bytes(bytes.clone().try_acquire_many_owned(100).unwrap());
        assert_eq!(e.metrics.bytes_in_flight.get(), 100);
        assert_eq!(permits.available_permits(), 0);
        assert_eq!(bytes.available_permits(), 0);
        e.confirm_one();
        let metrics = e.metrics.clone();
        drop(e);
        assert_eq!(permits.available_permits(), 1);
        assert_eq!(bytes.available_permits(), 100);
        assert_eq!(metrics.bytes_in_flight.get(), 0);
        assert_eq!(metrics.messages_in_flight.get(), 0);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn give_up_reports_only_once_and_receipts_do_not_leak_into_debug() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let e = entry(1, tx, &Arc::new(Semaphore::new(1)));
        assert!(!e.is_given_up());
        assert!(e.give_up(GiveUp::Expired));
        assert!(!e.give_up(GiveUp::Released));
        assert!(e.is_given_up());
        assert!(!format!("{:?}", e.receipt).contains("h1-secret"));
        assert_eq!(
            e.receipt.redact("handle h1-secret is invalid"),
            "handle <receipt handle> is invalid"
        );
    }

    #[test]
    fn extensions_move_the_receipt_deadline_forward_only() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let e = entry(1, tx, &Arc::new(Semaphore::new(1)));
        let start = e.received_at;
        // Visible for 10 s, of which the last second is kept for the delete.
        assert!(!e.receipt_expired(start + Duration::from_secs(8)));
        assert!(e.receipt_expired(start + Duration::from_secs(9)));
        e.extended(start + Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(e.visible_until(), start + Duration::from_secs(15));
        assert!(!e.receipt_expired(start + Duration::from_secs(13)));
        // An older, shorter extension answered late does not shorten it.
        e.extended(start + Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(e.visible_until(), start + Duration::from_secs(15));
    }
}
