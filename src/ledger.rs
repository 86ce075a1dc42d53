//! The ledger: one entry per received message, with a counter of the events not yet confirmed
//! published.
//!
//! A message goes to the deleter only when its counter reaches zero, i.e. every one of its
//! events has a successful PutRecords result. That single rule is the no-loss guarantee:
//! whatever fails, crashes or is abandoned before zero leaves the message in the queue, and SQS
//! delivers it again when its visibility timeout ends.
//!
//! Every message of a receive batch gets its entry as soon as the batch arrives. Each outbound
//! record holds an `Arc` of its message's entry, and so does the deleter until the delete is
//! answered; when the last one is dropped the entry goes too, releasing the message's in-flight
//! capacity (backpressure on receiving). The visibility keeper holds only a `Weak`, so it keeps
//! a message hidden until its delete is answered and then stops by itself.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

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
    /// The stream refused one of its records for good (too large, invalid): the rest of the
    /// submission is dropped and the message deleted.
    Refused = 3,
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
    metrics: Arc<Metrics>,
    record_bytes: usize,
    _message_permit: OwnedSemaphorePermit,
    byte_permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The raw body, kept only when dead-lettering is on, for a submission the stream refuses.
    body: Option<String>,
}

/// What a new entry is made of.
pub struct NewEntry {
    pub receipt: Receipt,
    pub event_count: usize,
    pub record_bytes: usize,
    pub received_at: Instant,
    pub visibility_timeout: Duration,
    pub delete_margin: Duration,
    pub permit: OwnedSemaphorePermit,
    pub body: Option<String>,
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
            metrics,
            record_bytes: new.record_bytes,
            _message_permit: new.permit,
            byte_permit: Mutex::new(None),
            body: new.body,
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

    /// The bytes it holds of the byte cap: its records, and its body when kept.
    pub fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    /// The raw body, when dead-lettering is on.
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    /// Confirms one event published; true for the last one, when the message is finished and
    /// goes to the deleter. Its records have left memory then, so its bytes are released.
    #[must_use = "a finished message must go to the deleter"]
    pub fn confirm_one(&self) -> bool {
        self.metrics
            .event_latency
            .observe(self.received_at.elapsed().as_secs_f64());
        let before = self.outstanding.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "more confirmations than events");
        if before == 1 {
            self.release_bytes();
        }
        before == 1
    }

    fn release_bytes(&self) {
        if let Ok(mut slot) = self.byte_permit.lock()
            && slot.take().is_some()
        {
            self.metrics.bytes_in_flight.dec_by(self.record_bytes as i64);
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

    /// True once the visibility has ended by `at`: the receipt is no use any more.
    pub fn receipt_lapsed(&self, at: Instant) -> bool {
        at >= self.visible_until()
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Marks the message as given up; true only for the first caller, so it is logged once.
    pub fn give_up(&self, why: GiveUp) -> bool {
        let first = self
            .given_up
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.release_bytes();
        }
        first
    }

    /// True once the message has been given up for any reason: its records are dropped.
    pub fn is_given_up(&self) -> bool {
        self.given_up.load(Ordering::Acquire) != 0
    }
}

impl Drop for LedgerEntry {
    fn drop(&mut self) {
        self.metrics.messages_in_flight.dec();
        self.release_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn entry(events: usize, permits: &Arc<Semaphore>) -> Arc<LedgerEntry> {
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
                permit,
                body: None,
            },
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn only_the_last_confirmation_finishes_the_message_and_it_frees_the_bytes_not_the_slot() {
        let permits = Arc::new(Semaphore::new(1));
        let bytes = Arc::new(Semaphore::new(100));
        let e = entry(3, &permits);
        e.hold_bytes(bytes.clone().try_acquire_many_owned(100).unwrap());
        assert!(!e.confirm_one());
        assert!(!e.confirm_one());
        assert_eq!(e.outstanding(), 1);
        assert_eq!(bytes.available_permits(), 0);
        assert!(e.confirm_one());
        // Its records are gone, but the message counts against the cap until it is deleted.
        assert_eq!(bytes.available_permits(), 100);
        assert_eq!(e.metrics.bytes_in_flight.get(), 0);
        assert_eq!(permits.available_permits(), 0);
        drop(e);
        assert_eq!(permits.available_permits(), 1);
    }

    #[test]
    fn dropping_an_unfinished_entry_releases_capacity() {
        let permits = Arc::new(Semaphore::new(1));
        let bytes = Arc::new(Semaphore::new(100));
        let e = entry(2, &permits);
        e.hold_bytes(bytes.clone().try_acquire_many_owned(100).unwrap());
        assert_eq!(e.metrics.bytes_in_flight.get(), 100);
        assert_eq!(permits.available_permits(), 0);
        assert_eq!(bytes.available_permits(), 0);
        assert!(!e.confirm_one());
        let metrics = e.metrics.clone();
        drop(e);
        assert_eq!(permits.available_permits(), 1);
        assert_eq!(bytes.available_permits(), 100);
        assert_eq!(metrics.bytes_in_flight.get(), 0);
        assert_eq!(metrics.messages_in_flight.get(), 0);
    }

    #[test]
    fn give_up_reports_only_once_and_receipts_do_not_leak_into_debug() {
        let e = entry(1, &Arc::new(Semaphore::new(1)));
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
        let e = entry(1, &Arc::new(Semaphore::new(1)));
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
