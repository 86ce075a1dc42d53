//! The Kinesis lanes' metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::settle::{RETRY_CODES, error_code_label};
use crate::metrics::kit::{CallDurations, Counters, add, call_duration, start_at_zero};

/// The Kinesis lanes' metrics: what was published, retried, refused or expired.
#[derive(Clone)]
pub struct SinkMetrics {
    pub events_published: Counter,
    pub put_records_calls: Counters,
    pub put_records_duration: Histogram,
    pub put_records_calls_made_smaller: Counters,
    pub records_retried: Counters,
    pub submissions_refused: Counters,
    pub events_in_flight: Gauge,
    pub messages_expired: Counter,
}

impl SinkMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry, calls: &CallDurations) -> Self {
        let section = SinkMetrics {
            events_published: add(
                registry,
                "events_published",
                "Events confirmed written to the stream",
                Counter::default(),
            ),
            put_records_calls: add(
                registry,
                "put_records_calls",
                "PutRecords calls by outcome (ok, partial, error)",
                Counters::default(),
            ),
            put_records_duration: call_duration(calls, "PutRecords"),
            put_records_calls_made_smaller: add(
                registry,
                "put_records_calls_made_smaller",
                "Times a lane halved its PutRecords calls, by reason (timed_out, refused_naming_none); they grow back as calls that fill them are answered within a quarter of the call timeout",
                Counters::default(),
            ),
            records_retried: add(
                registry,
                "records_retried",
                "Records sent again, by error code (`resend_after_failure` for the in-order suffix, `call_failed` for whole-call failures)",
                Counters::default(),
            ),
            submissions_refused: add(
                registry,
                "submissions_refused",
                "Valid submissions dropped because the stream refused one of their records for good (too large, invalid), by reason",
                Counters::default(),
            ),
            events_in_flight: add(
                registry,
                "events_in_flight",
                "Events buffered or being sent",
                Gauge::default(),
            ),
            messages_expired: add(
                registry,
                "messages_expired",
                "Messages whose receipt expired before their events were published; SQS delivers them again",
                Counter::default(),
            ),
        };
        start_at_zero(
            &section.submissions_refused,
            "reason",
            &["record_too_large", "record_invalid"],
        );
        start_at_zero(
            &section.put_records_calls,
            "outcome",
            &["ok", "partial", "error", "refused"],
        );
        start_at_zero(&section.records_retried, "error_code", &RETRY_CODES);
        start_at_zero(
            &section.put_records_calls_made_smaller,
            "reason",
            &["timed_out", "refused_naming_none"],
        );
        section
    }

    pub(crate) fn put_records_call(&self, outcome: &'static str) {
        self.put_records_calls.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub(crate) fn calls_made_smaller(&self, reason: &'static str) {
        self.put_records_calls_made_smaller
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub(crate) fn records_retried(&self, code: &str, n: u64) {
        self.records_retried
            .get_or_create(&[("error_code", error_code_label(code))])
            .inc_by(n);
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.submissions_refused.get_or_create(&[("reason", reason)]).inc();
    }
}
