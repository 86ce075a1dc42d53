//! Every metric the collector reports, in one place, so that what an operator can see is
//! listed once (the README's metrics table follows this file).
//!
//! Metrics live in a Prometheus registry; the periodic summary log line reads the same counters.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

pub struct Metrics {
    pub registry: Registry,
    pub messages_received: Counter,
    pub receive_errors: Counter,
    pub submissions_valid: Counter,
    pub submissions_invalid: Family<Labels, Counter>,
    pub events_published: Counter,
    pub put_records_calls: Family<Labels, Counter>,
    pub records_retried: Family<Labels, Counter>,
    pub messages_abandoned: Counter,
    pub deletes: Family<Labels, Counter>,
    pub messages_in_flight: Gauge,
    pub events_in_flight: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("collector"),
            messages_received: Counter::default(),
            receive_errors: Counter::default(),
            submissions_valid: Counter::default(),
            submissions_invalid: Family::default(),
            events_published: Counter::default(),
            put_records_calls: Family::default(),
            records_retried: Family::default(),
            messages_abandoned: Counter::default(),
            deletes: Family::default(),
            messages_in_flight: Gauge::default(),
            events_in_flight: Gauge::default(),
        };
        m.registry.register(
            "messages_received",
            "SQS messages received",
            m.messages_received.clone(),
        );
        m.registry.register(
            "receive_errors",
            "ReceiveMessage calls that failed",
            m.receive_errors.clone(),
        );
        m.registry.register(
            "submissions_valid",
            "Submissions that passed validation",
            m.submissions_valid.clone(),
        );
        m.registry.register(
            "submissions_invalid",
            "Submissions dropped, by rejection reason",
            m.submissions_invalid.clone(),
        );
        m.registry.register(
            "events_published",
            "Events confirmed written to the stream",
            m.events_published.clone(),
        );
        m.registry.register(
            "put_records_calls",
            "PutRecords calls by outcome (ok, partial, error)",
            m.put_records_calls.clone(),
        );
        m.registry.register(
            "records_retried",
            "Records sent again, by error code (or `resend_after_failure` for the in-order suffix)",
            m.records_retried.clone(),
        );
        m.registry.register(
            "messages_abandoned",
            "Messages whose receipt expired before their events were published; SQS delivers them again",
            m.messages_abandoned.clone(),
        );
        m.registry.register(
            "deletes",
            "Message deletions by outcome (ok, failed)",
            m.deletes.clone(),
        );
        m.registry.register(
            "messages_in_flight",
            "Messages received and not yet handed to the deleter",
            m.messages_in_flight.clone(),
        );
        m.registry.register(
            "events_in_flight",
            "Events buffered or being sent",
            m.events_in_flight.clone(),
        );
        m
    }

    pub fn invalid(&self, reason: &'static str) {
        self.submissions_invalid.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn put_records_call(&self, outcome: &'static str) {
        self.put_records_calls.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn records_retried(&self, code: &str, n: u64) {
        self.records_retried
            .get_or_create(&[("error_code", error_code_label(code))])
            .inc_by(n);
    }

    pub fn deleted(&self, outcome: &'static str, n: u64) {
        self.deletes.get_or_create(&[("outcome", outcome)]).inc_by(n);
    }

    /// Totals for the periodic summary line.
    pub fn snapshot(&self) -> Snapshot {
        let invalid = crate::submission::Rejection::LABELS
            .iter()
            .map(|r| count(&self.submissions_invalid, ("reason", r)))
            .sum();
        Snapshot {
            messages_received: self.messages_received.get(),
            submissions_valid: self.submissions_valid.get(),
            submissions_invalid: invalid,
            events_published: self.events_published.get(),
            deletes_ok: count(&self.deletes, ("outcome", "ok")),
            deletes_failed: count(&self.deletes, ("outcome", "failed")),
            messages_in_flight: self.messages_in_flight.get(),
            events_in_flight: self.events_in_flight.get(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Reads one counter of a family. The family's lock guard must be gone before the next
/// `get_or_create` on the same family (which may take the write lock), so it never outlives
/// this call.
fn count(family: &Family<Labels, Counter>, label: (&'static str, &'static str)) -> u64 {
    family.get_or_create(&[label]).get()
}

/// Error codes become label values; unknown codes are folded into `other` so a misbehaving
/// endpoint cannot grow the label set without bound.
fn error_code_label(code: &str) -> &'static str {
    match code {
        "ProvisionedThroughputExceededException" => "ProvisionedThroughputExceededException",
        "InternalFailure" => "InternalFailure",
        "KMSThrottlingException" => "KMSThrottlingException",
        "resend_after_failure" => "resend_after_failure",
        "call_failed" => "call_failed",
        _ => "other",
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub messages_received: u64,
    pub submissions_valid: u64,
    pub submissions_invalid: u64,
    pub events_published: u64,
    pub deletes_ok: u64,
    pub deletes_failed: u64,
    pub messages_in_flight: i64,
    pub events_in_flight: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_the_counters_and_new_labels_can_follow() {
        let m = Metrics::new();
        m.messages_received.inc_by(3);
        m.invalid("not_json");
        m.invalid("invalid_ipv4");
        m.deleted("ok", 2);
        let s = m.snapshot();
        assert_eq!(
            (
                s.messages_received,
                s.submissions_invalid,
                s.deletes_ok,
                s.deletes_failed
            ),
            (3, 2, 2, 0)
        );
        m.deleted("failed", 1);
        m.records_retried("SomethingNew", 4);
        assert_eq!(m.snapshot().deletes_failed, 1);
        assert_eq!(count(&m.records_retried, ("error_code", "other")), 4);
    }
}
