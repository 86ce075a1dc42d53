//! Every metric the collector reports, in one place, so that what an operator can see is
//! listed once (the metrics table of `docs/observability.md` follows this file).
//!
//! Metrics live in a Prometheus registry; the periodic summary log line reads the same counters.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;

type Labels = [(&'static str, &'static str); 1];
/// A shard id label (`shard`): bounded by the shards of one stream.
pub type ShardLabels = [(&'static str, String); 1];
/// A gauge holding a fraction (utilisation: 1.0 = the shard's write limit).
pub type Ratio = Gauge<f64, AtomicU64>;
/// `version` and `commit` of the running binary.
type BuildLabels = [(&'static str, &'static str); 2];

/// The crate version, as `--version` prints it and `collector_build_info` labels it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (`build.rs`): `GIT_COMMIT` at build time, else
/// `git rev-parse`, else `unknown`.
pub const COMMIT: &str = env!("COLLECTOR_GIT_COMMIT");

/// Every metric, one section per stage (and per part beside the pipeline).
pub struct Metrics {
    pub registry: Registry,
    pub build_info: Family<BuildLabels, Gauge>,
    pub source: SourceMetrics,
    pub sink: SinkMetrics,
    pub deleter: DeleterMetrics,
    pub visibility: VisibilityMetrics,
    pub dead_letter: DeadLetterMetrics,
    pub breaker: BreakerMetrics,
    pub http: HttpMetrics,
    pub shards: ShardMetrics,
}

/// The receivers: what came from the queue and how it was judged.
pub struct SourceMetrics {
    pub receive_calls: Counter,
    pub receive_errors: Counter,
    pub messages_received: Counter,
    pub submissions_valid: Counter,
    pub submissions_invalid: Family<Labels, Counter>,
    pub messages_in_flight: Gauge,
    pub bytes_in_flight: Gauge,
}

impl SourceMetrics {
    pub fn invalid(&self, reason: &'static str) {
        self.submissions_invalid.get_or_create(&[("reason", reason)]).inc();
    }

    fn register(registry: &mut Registry) -> Self {
        SourceMetrics {
            receive_calls: add(
                registry,
                "receive_calls",
                "ReceiveMessage calls made",
                Counter::default(),
            ),
            receive_errors: add(
                registry,
                "receive_errors",
                "ReceiveMessage calls that failed",
                Counter::default(),
            ),
            messages_received: add(
                registry,
                "messages_received",
                "SQS messages received",
                Counter::default(),
            ),
            submissions_valid: add(
                registry,
                "submissions_valid",
                "Submissions that passed validation",
                Counter::default(),
            ),
            submissions_invalid: add(
                registry,
                "submissions_invalid",
                "Submissions dropped, by rejection reason",
                Family::default(),
            ),
            messages_in_flight: add(
                registry,
                "messages_in_flight",
                "Messages received and not yet finished",
                Gauge::default(),
            ),
            bytes_in_flight: add(
                registry,
                "bytes_in_flight",
                "Record bytes (data + partition key) of the messages in flight",
                Gauge::default(),
            ),
        }
    }
}

/// The Kinesis lanes: what was published, retried or refused.
pub struct SinkMetrics {
    pub events_published: Counter,
    pub put_records_calls: Family<Labels, Counter>,
    pub put_records_duration: Histogram,
    pub records_retried: Family<Labels, Counter>,
    pub event_latency: Histogram,
    pub submissions_refused: Family<Labels, Counter>,
    pub events_in_flight: Gauge,
}

impl SinkMetrics {
    pub fn refused(&self, reason: &'static str) {
        self.submissions_refused.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn records_retried(&self, code: &str, n: u64) {
        self.records_retried
            .get_or_create(&[("error_code", error_code_label(code))])
            .inc_by(n);
    }

    pub fn put_records_call(&self, outcome: &'static str) {
        self.put_records_calls.get_or_create(&[("outcome", outcome)]).inc();
    }

    fn register(registry: &mut Registry) -> Self {
        SinkMetrics {
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
                Family::default(),
            ),
            put_records_duration: add(
                registry,
                "put_records_duration_seconds",
                "PutRecords call latency",
                seconds_histogram(),
            ),
            records_retried: add(
                registry,
                "records_retried",
                "Records sent again, by error code (`resend_after_failure` for the in-order suffix, `call_failed` for whole-call failures)",
                Family::default(),
            ),
            event_latency: add(
                registry,
                "event_latency_seconds",
                "From the ReceiveMessage call to the event's successful PutRecords result",
                seconds_histogram(),
            ),
            submissions_refused: add(
                registry,
                "submissions_refused",
                "Valid submissions dropped because the stream refused one of their records for good (too large, invalid), by reason",
                Family::default(),
            ),
            events_in_flight: add(
                registry,
                "events_in_flight",
                "Events buffered or being sent",
                Gauge::default(),
            ),
        }
    }
}

/// The deleter.
pub struct DeleterMetrics {
    pub deletes: Family<Labels, Counter>,
    pub deletes_retried: Counter,
    pub messages_awaiting_delete: Gauge,
}

impl DeleterMetrics {
    pub fn deleted(&self, outcome: &'static str, n: u64) {
        self.deletes.get_or_create(&[("outcome", outcome)]).inc_by(n);
    }

    fn register(registry: &mut Registry) -> Self {
        DeleterMetrics {
            deletes: add(
                registry,
                "deletes",
                "Message deletions by outcome (ok, failed)",
                Family::default(),
            ),
            deletes_retried: add(
                registry,
                "deletes_retried",
                "Delete entries sent again: after a whole DeleteMessageBatch call failed or timed out, or an entry failed through no fault of the sender",
                Counter::default(),
            ),
            messages_awaiting_delete: add(
                registry,
                "messages_awaiting_delete",
                "Finished messages handed to the deleter whose delete is not answered yet (the deleter's backlog)",
                Gauge::default(),
            ),
        }
    }
}

/// The visibility keeper: extensions, expiries, give-backs.
pub struct VisibilityMetrics {
    pub visibility_extensions: Family<Labels, Counter>,
    pub messages_abandoned: Counter,
    /// Exported as `collector_messages_released`, the name dashboards and alerts already use.
    pub messages_given_back: Family<Labels, Counter>,
}

impl VisibilityMetrics {
    fn register(registry: &mut Registry) -> Self {
        VisibilityMetrics {
            visibility_extensions: add(
                registry,
                "visibility_extensions",
                "Visibility timeout extensions of in-flight messages, by outcome (ok, failed)",
                Family::default(),
            ),
            messages_abandoned: add(
                registry,
                "messages_abandoned",
                "Messages whose receipt expired before their events were published; SQS delivers them again",
                Counter::default(),
            ),
            messages_given_back: add(
                registry,
                "messages_released",
                "Messages given back to the queue at shutdown (visibility set to 0) before any of their events was sent, by outcome (ok, failed)",
                Family::default(),
            ),
        }
    }
}

/// Dead-lettering of invalid bodies.
pub struct DeadLetterMetrics {
    pub dead_letters: Family<Labels, Counter>,
}

impl DeadLetterMetrics {
    fn register(registry: &mut Registry) -> Self {
        DeadLetterMetrics {
            dead_letters: add(
                registry,
                "dead_letters",
                "Invalid submissions forwarded to the dead-letter queue, by outcome (ok, failed)",
                Family::default(),
            ),
        }
    }
}

/// The Kinesis circuit breaker.
pub struct BreakerMetrics {
    pub breaker_open: Gauge,
    pub kinesis_probes: Family<Labels, Counter>,
}

impl BreakerMetrics {
    fn register(registry: &mut Registry) -> Self {
        BreakerMetrics {
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
                Family::default(),
            ),
        }
    }
}

/// The HTTP endpoints.
pub struct HttpMetrics {
    pub ready: Gauge,
    pub http_connections_open: Gauge,
    pub http_connections_refused: Counter,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        HttpMetrics {
            ready: add(
                registry,
                "ready",
                "1 when the queue and stream are resolved and the breaker is closed (what /readyz answers)",
                Gauge::default(),
            ),
            http_connections_open: add(
                registry,
                "http_connections_open",
                "HTTP connections open (cap 256, see docs/observability.md)",
                Gauge::default(),
            ),
            http_connections_refused: add(
                registry,
                "http_connections_refused",
                "HTTP connections closed at once because the cap of open connections was reached",
                Counter::default(),
            ),
        }
    }
}

/// The shard supervisor: per-shard writes, utilisation, decisions.
pub struct ShardMetrics {
    pub shard_records_published: Family<ShardLabels, Counter>,
    pub shard_bytes_published: Family<ShardLabels, Counter>,
    pub shard_utilisation: Family<ShardLabels, Ratio>,
    pub stream_utilisation: Family<Labels, Ratio>,
    pub stream_open_shards: Gauge,
    pub shard_supervisor_decisions: Family<Labels, Counter>,
    pub shard_resize_calls: Family<Labels, Counter>,
}

impl ShardMetrics {
    fn register(registry: &mut Registry) -> Self {
        ShardMetrics {
            shard_records_published: add(
                registry,
                "shard_records_published",
                "Records written to each shard (successful PutRecords results, resends included), by shard",
                Family::default(),
            ),
            shard_bytes_published: add(
                registry,
                "shard_bytes_published",
                "Bytes (data + partition key) written to each shard, by shard",
                Family::default(),
            ),
            shard_utilisation: add(
                registry,
                "shard_utilisation_ratio",
                "Each shard's write utilisation over the last supervisor interval: the larger of records/s / 1000 and bytes/s / 1 MiB",
                Family::default(),
            ),
            stream_utilisation: add(
                registry,
                "stream_utilisation_ratio",
                "The stream's write utilisation over the last supervisor interval: `hottest` shard, and `mean` over the open shards",
                Family::default(),
            ),
            stream_open_shards: add(
                registry,
                "stream_open_shards",
                "Open shards of the stream (DescribeStreamSummary), read by the shard supervisor",
                Gauge::default(),
            ),
            shard_supervisor_decisions: add(
                registry,
                "shard_supervisor_decisions",
                "Shard supervisor decisions, one per interval, by decision",
                Family::default(),
            ),
            shard_resize_calls: add(
                registry,
                "shard_resize_calls",
                "UpdateShardCount calls made by the shard supervisor, by outcome (ok, failed)",
                Family::default(),
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("collector");
        let build_info: Family<BuildLabels, Gauge> = add(
            &mut registry,
            "build_info",
            "Always 1; the labels name the running build (crate version, commit)",
            Family::default(),
        );
        build_info
            .get_or_create(&[("version", VERSION), ("commit", COMMIT)])
            .set(1);
        let metrics = Metrics {
            build_info,
            source: SourceMetrics::register(&mut registry),
            sink: SinkMetrics::register(&mut registry),
            deleter: DeleterMetrics::register(&mut registry),
            visibility: VisibilityMetrics::register(&mut registry),
            dead_letter: DeadLetterMetrics::register(&mut registry),
            breaker: BreakerMetrics::register(&mut registry),
            http: HttpMetrics::register(&mut registry),
            shards: ShardMetrics::register(&mut registry),
            registry,
        };
        metrics.start_known_series_at_zero();
        metrics
    }

    /// Creates every series whose labels are known in advance, at 0. A series that first
    /// appears already at 1 shows no `increase()` in Prometheus, so an alert on the first failed
    /// delete would never fire; and a series present from the start says "none yet", not
    /// "unknown".
    fn start_known_series_at_zero(&self) {
        for reason in telemetry_format::submission::Rejection::LABELS {
            drop(self.source.submissions_invalid.get_or_create(&[("reason", reason)]));
        }
        for reason in ["record_too_large", "record_invalid"] {
            drop(self.sink.submissions_refused.get_or_create(&[("reason", reason)]));
        }
        for outcome in ["ok", "partial", "error", "refused"] {
            drop(self.sink.put_records_calls.get_or_create(&[("outcome", outcome)]));
        }
        for code in [
            "ProvisionedThroughputExceededException",
            "InternalFailure",
            "KMSThrottlingException",
            "resend_after_failure",
            "call_failed",
            "other",
        ] {
            drop(self.sink.records_retried.get_or_create(&[("error_code", code)]));
        }
        for outcome in ["ok", "failed", "retried"] {
            drop(
                self.visibility
                    .visibility_extensions
                    .get_or_create(&[("outcome", outcome)]),
            );
        }
        for family in [
            &self.dead_letter.dead_letters,
            &self.visibility.messages_given_back,
            &self.deleter.deletes,
            &self.breaker.kinesis_probes,
            &self.shards.shard_resize_calls,
        ] {
            for outcome in ["ok", "failed"] {
                drop(family.get_or_create(&[("outcome", outcome)]));
            }
        }
    }

    /// The Prometheus / OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub fn outcome(family: &Family<Labels, Counter>, outcome: &'static str, n: u64) {
        family.get_or_create(&[("outcome", outcome)]).inc_by(n);
    }

    /// Totals for the periodic summary line.
    pub fn snapshot(&self) -> Snapshot {
        let invalid = telemetry_format::submission::Rejection::LABELS
            .iter()
            .map(|r| count(&self.source.submissions_invalid, ("reason", r)))
            .sum();
        Snapshot {
            messages_received: self.source.messages_received.get(),
            submissions_valid: self.source.submissions_valid.get(),
            submissions_invalid: invalid,
            events_published: self.sink.events_published.get(),
            deletes_ok: count(&self.deleter.deletes, ("outcome", "ok")),
            deletes_failed: count(&self.deleter.deletes, ("outcome", "failed")),
            messages_in_flight: self.source.messages_in_flight.get(),
            events_in_flight: self.sink.events_in_flight.get(),
        }
    }
}

/// Seconds: 5 ms to ~40 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Registers `metric` and returns the handle the collector updates.
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
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
        m.source.messages_received.inc_by(3);
        m.source.invalid("not_json");
        m.source.invalid("invalid_ipv4");
        m.deleter.deleted("ok", 2);
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
        m.deleter.deleted("failed", 1);
        m.sink.records_retried("SomethingNew", 4);
        assert_eq!(m.snapshot().deletes_failed, 1);
        assert_eq!(count(&m.sink.records_retried, ("error_code", "other")), 4);
    }

    #[test]
    fn build_info_names_the_version_and_commit_with_value_one() {
        let text = Metrics::new().encode();
        let expected = format!("collector_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1");
        assert!(text.lines().any(|l| l == expected), "{expected} in:\n{text}");
        assert!(!COMMIT.is_empty());
    }
}
