//! A message in flight: received, and not yet deleted or given up. It is made of four parts:
//!
//! - its [`Receipt`], what deleting or extending it takes;
//! - an [`EventCounter`] of its events not yet confirmed published. The message goes to the
//!   deleter only when it reaches zero, i.e. every one of its events has a successful
//!   PutRecords result. That single rule is the no-loss guarantee: whatever fails, crashes or is
//!   given up before zero leaves the message in the queue, and SQS delivers it again when its
//!   visibility timeout ends;
//! - its [`VisibilityLease`]: until when SQS keeps it hidden, as far as the collector knows;
//! - its [`Capacity`]: its slot of the in-flight message cap and its share of the byte cap.
//!
//! Every message of a receive batch is made as soon as the batch arrives. Each outbound record
//! holds an `Arc` of its message, and so does the deleter until the delete is answered; when the
//! last one is dropped the message goes too, and with it its slot (backpressure on receiving).
//! The visibility keeper holds only a `Weak`, so it keeps a message hidden until its delete is
//! answered and then stops by itself.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::kit::{add, age_histogram, seconds_histogram};

/// What the deleter needs to delete one message. The handle is a credential for the message:
/// it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub message_id: String,
    pub handle: String,
}

impl Receipt {
    /// `text` with the receipt handle blanked out: AWS error messages can quote it.
    pub(crate) fn redact(&self, text: &str) -> String {
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
pub(crate) enum GiveUp {
    /// Its receipt expired: SQS may already have delivered it again. Logged and counted as
    /// expired.
    Expired = 1,
    /// Given back to the queue at shutdown before any of its events was sent.
    GivenBack = 2,
    /// The stream refused one of its records for good (too large, invalid): the rest of the
    /// submission is dropped from the lane; the message is deleted only once its body is in the
    /// dead-letter queue, otherwise it is left to come back.
    Refused = 3,
}

/// The events of a message not yet confirmed published.
pub(crate) struct EventCounter(AtomicUsize);

impl EventCounter {
    /// Counts one confirmation; true for the last one.
    fn confirm_one(&self) -> bool {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "more confirmations than events");
        before == 1
    }

    fn outstanding(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// How long SQS keeps a message hidden, as far as the collector knows: from when its visibility
/// timeout started, for a span the visibility keeper moves forward with each extension.
pub(crate) struct VisibilityLease {
    /// When the visibility timeout started (see `source::ReceiveTiming`).
    pub started: Instant,
    /// The lease runs until `started` + this, in milliseconds.
    length_ms: AtomicU64,
    /// Kept free at the end of the lease for the delete call.
    delete_margin: Duration,
}

impl VisibilityLease {
    pub fn new(started: Instant, timeout: Duration, delete_margin: Duration) -> VisibilityLease {
        VisibilityLease {
            started,
            length_ms: AtomicU64::new(timeout.as_millis() as u64),
            delete_margin,
        }
    }

    /// When the visibility ends.
    pub(crate) fn ends(&self) -> Instant {
        self.started + Duration::from_millis(self.length_ms.load(Ordering::Acquire))
    }

    /// Records an extension by `timeout` requested at `requested_at`; never shortens it.
    pub(crate) fn extended(&self, requested_at: Instant, timeout: Duration) {
        let until = requested_at.saturating_duration_since(self.started) + timeout;
        self.length_ms.fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// What is kept free at the end of the lease for the delete call.
    pub(crate) fn delete_margin(&self) -> Duration {
        self.delete_margin
    }

    /// True once too little is left to publish and still delete in time: by then SQS may
    /// deliver the message again, so publishing the rest would only make duplicates.
    pub(crate) fn expiring(&self, now: Instant) -> bool {
        now + self.delete_margin >= self.ends()
    }

    /// True once the visibility has ended by `at`: the receipt is no use any more.
    pub(crate) fn ended(&self, at: Instant) -> bool {
        at >= self.ends()
    }
}

/// A message's share of the in-flight caps: its slot of `MAX_IN_FLIGHT_MESSAGES` until it is
/// gone, and its record bytes of `MAX_IN_FLIGHT_BYTES` until its events are published.
pub(crate) struct Capacity {
    _slot: OwnedSemaphorePermit,
    /// Its share of the byte cap, while its events are being published.
    bytes: Mutex<Option<HeldBytes>>,
    metrics: InFlightMetrics,
}

/// A message's share of the byte cap and the bytes it stands for. A message larger than the
/// whole cap holds all of it, for more bytes than that.
struct HeldBytes {
    permit: OwnedSemaphorePermit,
    /// The permits it started with.
    initial: usize,
    /// What its records took when they were built, and what of that is not published yet.
    total: usize,
    remaining: usize,
}

impl Capacity {
    fn hold_bytes(&self, permit: OwnedSemaphorePermit, record_bytes: usize) {
        if let Ok(mut slot) = self.bytes.lock() {
            if let Some(before) = slot.take() {
                self.metrics.bytes_in_flight.dec_by(before.remaining as i64);
            }
            self.metrics.bytes_in_flight.inc_by(record_bytes as i64);
            *slot = Some(HeldBytes {
                initial: permit.num_permits(),
                permit,
                total: record_bytes,
                remaining: record_bytes,
            });
        }
    }

    /// One of its records is published and has left memory: gives back its part of the share
    /// at once, so that a large message makes room for others as it goes, not only at its end.
    fn release_part(&self, part: usize) {
        if let Ok(mut slot) = self.bytes.lock()
            && let Some(held) = slot.as_mut()
        {
            let part = part.min(held.remaining);
            held.remaining -= part;
            self.metrics.bytes_in_flight.dec_by(part as i64);
            // In proportion: what is left of the share stands for what is left of the records.
            let keep = (held.initial as u128 * held.remaining as u128 / held.total.max(1) as u128) as usize;
            if let Some(extra) = held.permit.num_permits().checked_sub(keep.max(1))
                && extra > 0
            {
                drop(held.permit.split(extra));
            }
        }
    }

    fn release_bytes(&self) {
        if let Ok(mut slot) = self.bytes.lock()
            && let Some(held) = slot.take()
        {
            self.metrics.bytes_in_flight.dec_by(held.remaining as i64);
        }
    }
}

/// One message in flight; see the module documentation.
pub(crate) struct InFlightMessage {
    receipt: Receipt,
    events: EventCounter,
    pub lease: VisibilityLease,
    capacity: Capacity,
    /// Set once any of its events is in a PutRecords call: from then on the message must be
    /// finished, not given back.
    started: AtomicBool,
    given_up: AtomicU8,
    /// Set once it is handed to the deleter: from then on, its delete decides whether it comes
    /// back.
    finished: AtomicBool,
    /// The raw body, kept only when dead-lettering is on, for a submission the stream refuses.
    body: OnceLock<String>,
    /// When SQS accepted it (`SentTimestamp`), if SQS said.
    sent_at: Option<SystemTime>,
    /// Its submission's `time_created` (the sensor's clock), once decoded.
    created_at: OnceLock<SystemTime>,
}

/// What a new message is made of. A message is made as soon as it is received, before its body
/// is decoded; [`InFlightMessage::publishing`] adds what decoding found.
pub(crate) struct NewMessage {
    pub receipt: Receipt,
    /// When its visibility timeout started.
    pub received_at: Instant,
    pub visibility_timeout: Duration,
    pub delete_margin: Duration,
    pub permit: OwnedSemaphorePermit,
    /// When SQS accepted it (`SentTimestamp`), if SQS said.
    pub sent_at: Option<SystemTime>,
}

impl InFlightMessage {
    pub fn new(new: NewMessage, metrics: InFlightMetrics) -> Arc<InFlightMessage> {
        metrics.messages_in_flight.inc();
        Arc::new(InFlightMessage {
            receipt: new.receipt,
            events: EventCounter(AtomicUsize::new(0)),
            lease: VisibilityLease::new(new.received_at, new.visibility_timeout, new.delete_margin),
            capacity: Capacity {
                _slot: new.permit,
                bytes: Mutex::new(None),
                metrics,
            },
            started: AtomicBool::new(false),
            given_up: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            body: OnceLock::new(),
            sent_at: new.sent_at,
            created_at: OnceLock::new(),
        })
    }

    /// Its submission's `time_created`, read as UTC: what the freshness from the sensor is
    /// measured from.
    pub(crate) fn created_at(&self, time_created: SystemTime) {
        let _ = self.created_at.set(time_created);
    }

    /// Its submission is valid with `event_count` events about to be queued: they are counted
    /// outstanding, and the message holds `bytes` of the byte cap, standing for `record_bytes`,
    /// until they are published. `body` is kept for the dead-letter queue when that is on.
    pub(crate) fn publishing(
        &self,
        event_count: usize,
        bytes: OwnedSemaphorePermit,
        record_bytes: usize,
        body: Option<String>,
    ) {
        self.events.0.store(event_count, Ordering::Release);
        self.capacity.hold_bytes(bytes, record_bytes);
        if let Some(body) = body {
            let _ = self.body.set(body);
        }
    }

    pub(crate) fn message_id(&self) -> &str {
        &self.receipt.message_id
    }

    pub(crate) fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The raw body, when dead-lettering is on.
    pub(crate) fn body(&self) -> Option<&str> {
        self.body.get().map(String::as_str)
    }

    /// Confirms one event published; true for the last one, when the message is finished and
    /// goes to the deleter. Its records have left memory then, so its bytes are released.
    #[must_use = "a finished message must go to the deleter"]
    ///
    /// `record_bytes` is what the published record took (as counted when the records were
    /// built): its part of the message's share of the byte cap goes back at once.
    /// `published_at` is when its call was answered, read once for all of the call's records.
    pub(crate) fn confirm_one(&self, record_bytes: usize, published_at: Instant) -> bool {
        self.capacity
            .metrics
            .event_latency
            .observe((published_at - self.lease.started).as_secs_f64());
        self.capacity.release_part(record_bytes);
        let last = self.events.confirm_one();
        if last {
            self.capacity.release_bytes();
            self.observe_freshness(SystemTime::now());
        }
        last
    }

    /// How old its submission is now that its last event is on the stream: since SQS accepted
    /// it (queue wait included), and since the sensor made it (by the sensor's clock; a clock
    /// ahead of ours gives a negative age, counted and clamped to 0).
    fn observe_freshness(&self, now: SystemTime) {
        let metrics = &self.capacity.metrics;
        if let Some(sent_at) = self.sent_at {
            let age = now.duration_since(sent_at).unwrap_or_default();
            metrics.queue_to_stream.observe(age.as_secs_f64());
        }
        if let Some(created_at) = self.created_at.get() {
            let age = match now.duration_since(*created_at) {
                Ok(age) => age,
                Err(_) => {
                    metrics.sensor_clock_ahead.inc();
                    Duration::ZERO
                }
            };
            metrics.sensor_to_stream.observe(age.as_secs_f64());
        }
    }

    /// Events not yet confirmed.
    pub(crate) fn outstanding(&self) -> usize {
        self.events.outstanding()
    }

    pub(crate) fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Marks the message as given up; true only for the first caller, so it is logged once.
    /// Its records are dropped, so its bytes are released.
    pub(crate) fn give_up(&self, why: GiveUp) -> bool {
        let first = self
            .given_up
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.capacity.release_bytes();
        }
        first
    }

    /// True once the message has been given up for any reason: its records are dropped.
    pub(crate) fn is_given_up(&self) -> bool {
        self.given_up.load(Ordering::Acquire) != 0
    }

    /// Marks the message as handed to the deleter.
    pub(crate) fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// True once the message has been handed to the deleter.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

impl Drop for InFlightMessage {
    fn drop(&mut self) {
        self.capacity.metrics.messages_in_flight.dec();
        self.capacity.release_bytes();
    }
}

/// What is in flight, and how long an event takes from receive to stream.
#[derive(Clone)]
pub struct InFlightMetrics {
    pub messages_in_flight: Gauge,
    pub bytes_in_flight: Gauge,
    pub event_latency: Histogram,
    pub queue_to_stream: Histogram,
    pub sensor_to_stream: Histogram,
    pub sensor_clock_ahead: Counter,
}

impl InFlightMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry) -> Self {
        InFlightMetrics {
            messages_in_flight: add(
                registry,
                "messages_in_flight",
                "Messages received and not yet finished",
                Gauge::default(),
            ),
            bytes_in_flight: add(
                registry,
                "in_flight_bytes",
                "Record bytes (data + partition key) of the messages in flight",
                Gauge::default(),
            ),
            event_latency: add(
                registry,
                "event_latency_seconds",
                "From the ReceiveMessage call to the event's successful PutRecords result",
                seconds_histogram(),
            ),
            queue_to_stream: add(
                registry,
                "submission_queue_to_stream_seconds",
                "Freshness: from when SQS accepted a submission (SentTimestamp) to the successful PutRecords result of its last event; queue wait included",
                age_histogram(),
            ),
            sensor_to_stream: add(
                registry,
                "submission_sensor_to_stream_seconds",
                "From a submission's time_created (the sensor's clock, read as UTC) to the successful PutRecords result of its last event; a clock ahead of the collector's counts as 0",
                age_histogram(),
            ),
            sensor_clock_ahead: add(
                registry,
                "submission_sensor_clock_ahead",
                "Submissions whose time_created was later than the collector's clock when their last event was published (sensor clock ahead)",
                Counter::default(),
            ),
        }
    }
}

/// A message of id `id` publishing `events` events, for the sink's unit tests.
#[cfg(test)]
pub(crate) fn test_message(id: &str, events: usize) -> Arc<InFlightMessage> {
    use tokio::sync::Semaphore;
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let receipt = Receipt {
        message_id: id.into(),
        handle: format!("handle-{id}"),
    };
    let entry = InFlightMessage::new(
        NewMessage {
            receipt,
            received_at: Instant::now(),
            visibility_timeout: Duration::from_secs(60),
            delete_margin: Duration::from_secs(1),
            permit,
            sent_at: None,
        },
        InFlightMetrics::register(&mut prometheus_client::registry::Registry::default()),
    );
    let bytes = Arc::new(Semaphore::new(0)).try_acquire_many_owned(0).unwrap();
    entry.publishing(events, bytes, 0, None);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn entry(events: usize, permits: &Arc<Semaphore>) -> Arc<InFlightMessage> {
        let permit = permits.clone().try_acquire_owned().unwrap();
        let receipt = Receipt {
            message_id: "m1".into(),
            handle: "h1-secret".into(),
        };
        let entry = InFlightMessage::new(
            NewMessage {
                receipt,
                received_at: Instant::now(),
                visibility_timeout: Duration::from_secs(10),
                delete_margin: Duration::from_secs(1),
                permit,
                sent_at: None,
            },
            InFlightMetrics::register(&mut prometheus_client::registry::Registry::default()),
        );
        entry.publishing(
            events,
            Arc::new(Semaphore::new(0)).try_acquire_many_owned(0).unwrap(),
            0,
            None,
        );
        entry
    }

    #[test]
    fn only_the_last_confirmation_finishes_the_message_and_it_frees_the_bytes_not_the_slot() {
        let permits = Arc::new(Semaphore::new(1));
        let bytes = Arc::new(Semaphore::new(100));
        let e = entry(3, &permits);
        e.publishing(
            e.outstanding(),
            bytes.clone().try_acquire_many_owned(100).unwrap(),
            100,
            None,
        );
        assert!(!e.confirm_one(25, Instant::now()));
        assert!(!e.confirm_one(25, Instant::now()));
        assert_eq!(e.outstanding(), 1);
        // Each published record gives back its part at once.
        assert_eq!(bytes.available_permits(), 50);
        assert_eq!(e.capacity.metrics.bytes_in_flight.get(), 50);
        assert!(e.confirm_one(50, Instant::now()));
        // Its records are gone, but the message counts against the cap until it is deleted.
        assert_eq!(bytes.available_permits(), 100);
        assert_eq!(e.capacity.metrics.bytes_in_flight.get(), 0);
        assert_eq!(permits.available_permits(), 0);
        drop(e);
        assert_eq!(permits.available_permits(), 1);
    }

    #[test]
    fn a_message_larger_than_the_cap_gives_the_cap_back_in_proportion_as_it_is_published() {
        let bytes = Arc::new(Semaphore::new(100));
        let e = entry(4, &Arc::new(Semaphore::new(1)));
        // 400 bytes of records on a 100-byte cap: it holds all of it.
        e.publishing(4, bytes.clone().try_acquire_many_owned(100).unwrap(), 400, None);
        assert!(!e.confirm_one(100, Instant::now()));
        assert_eq!(bytes.available_permits(), 25);
        assert!(!e.confirm_one(100, Instant::now()));
        assert!(!e.confirm_one(100, Instant::now()));
        assert_eq!(bytes.available_permits(), 75);
        assert!(e.confirm_one(100, Instant::now()));
        assert_eq!(bytes.available_permits(), 100);
        assert_eq!(e.capacity.metrics.bytes_in_flight.get(), 0);
    }

    #[test]
    fn dropping_an_unfinished_entry_releases_capacity() {
        let permits = Arc::new(Semaphore::new(1));
        let bytes = Arc::new(Semaphore::new(100));
        let e = entry(2, &permits);
        e.publishing(
            e.outstanding(),
            bytes.clone().try_acquire_many_owned(100).unwrap(),
            100,
            None,
        );
        assert_eq!(e.capacity.metrics.bytes_in_flight.get(), 100);
        assert_eq!(permits.available_permits(), 0);
        assert_eq!(bytes.available_permits(), 0);
        assert!(!e.confirm_one(10, Instant::now()));
        let metrics = e.capacity.metrics.clone();
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
        assert!(!e.give_up(GiveUp::GivenBack));
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
        let lease = &e.lease;
        let start = lease.started;
        // Visible for 10 s, of which the last second is kept for the delete.
        assert!(!lease.expiring(start + Duration::from_secs(8)));
        assert!(lease.expiring(start + Duration::from_secs(9)));
        assert!(!lease.ended(start + Duration::from_secs(9)));
        assert!(lease.ended(start + Duration::from_secs(10)));
        lease.extended(start + Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(lease.ends(), start + Duration::from_secs(15));
        assert!(!lease.expiring(start + Duration::from_secs(13)));
        // An older, shorter extension answered late does not shorten it.
        lease.extended(start + Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(lease.ends(), start + Duration::from_secs(15));
    }

    #[test]
    fn the_last_event_observes_the_ages_from_the_queue_and_from_the_sensor_clamping_a_clock_ahead() {
        let permits = Arc::new(Semaphore::new(2));
        let metrics = InFlightMetrics::register(&mut prometheus_client::registry::Registry::default());
        let now = SystemTime::now();
        let message = |sent_at| {
            InFlightMessage::new(
                NewMessage {
                    receipt: Receipt {
                        message_id: "m".into(),
                        handle: "h".into(),
                    },
                    received_at: Instant::now(),
                    visibility_timeout: Duration::from_secs(10),
                    delete_margin: Duration::from_secs(1),
                    permit: permits.clone().try_acquire_owned().unwrap(),
                    sent_at,
                },
                metrics.clone(),
            )
        };
        let sums = || {
            let text = {
                let mut registry = prometheus_client::registry::Registry::default();
                registry.register("q", "", metrics.queue_to_stream.clone());
                registry.register("s", "", metrics.sensor_to_stream.clone());
                crate::metrics::kit::encode(&registry)
            };
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap()
            };
            (value("q_sum"), value("q_count"), value("s_sum"), value("s_count"))
        };
        // Sent 30 s ago, made by a sensor 90 s ago: both ages seen once the last event is in.
        let old = message(Some(now - Duration::from_secs(30)));
        old.created_at(now - Duration::from_secs(90));
        old.publishing(
            2,
            Arc::new(Semaphore::new(0)).try_acquire_many_owned(0).unwrap(),
            0,
            None,
        );
        assert!(!old.confirm_one(0, Instant::now()));
        assert_eq!(sums().1, 0.0, "nothing before the last event");
        assert!(old.confirm_one(0, Instant::now()));
        let (q_sum, q_count, s_sum, s_count) = sums();
        assert!((30.0..60.0).contains(&q_sum) && q_count == 1.0, "{q_sum}");
        assert!((90.0..120.0).contains(&s_sum) && s_count == 1.0, "{s_sum}");
        // A sensor clock an hour ahead: counted, and its age taken as 0; no SentTimestamp, no
        // queue age.
        let ahead = message(None);
        ahead.created_at(now + Duration::from_secs(3600));
        ahead.publishing(
            1,
            Arc::new(Semaphore::new(0)).try_acquire_many_owned(0).unwrap(),
            0,
            None,
        );
        assert!(ahead.confirm_one(0, Instant::now()));
        let (q_sum_after, q_count_after, s_sum_after, s_count_after) = sums();
        assert_eq!((q_sum_after, q_count_after), (q_sum, 1.0));
        assert_eq!((s_sum_after, s_count_after), (s_sum, 2.0));
        assert_eq!(metrics.sensor_clock_ahead.get(), 1);
    }
}
