//! Every metric the collector reports: [`Metrics`] gathers one section per stage, each defined
//! and registered in the stage's own module (`SourceMetrics` in `pipeline/source.rs`, ...), so
//! that a stage's metrics sit beside the code that counts them; [`kit`] is what they are made
//! with. The metrics table of `docs/observability.md` lists them all.
//!
//! Metrics live in a Prometheus registry; the periodic summary log line reads the same counters.

pub mod kit;
pub mod process;

use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::http_server::HttpMetrics;
use crate::pipeline::breaker::BreakerMetrics;
use crate::pipeline::dead_letter::DeadLetterMetrics;
use crate::pipeline::deleter::DeleterMetrics;
use crate::pipeline::message::InFlightMetrics;
use crate::pipeline::shard_tally::ShardTallyMetrics;
use crate::pipeline::sink::SinkMetrics;
use crate::pipeline::source::SourceMetrics;
use crate::pipeline::visibility::VisibilityMetrics;
use kit::{CallDurations, add, count, encode, register_call_durations};

/// `version` and `commit` of the running binary.
type BuildLabels = [(&'static str, &'static str); 2];

/// The crate version, as `--version` prints it and `telemetry_collector_build_info` labels it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (`build.rs`): `GIT_COMMIT` at build time, else
/// `git rev-parse`, else `unknown`.
pub const COMMIT: &str = env!("COLLECTOR_GIT_COMMIT");

/// Every metric: one section per stage, each defined and registered by the stage's own module.
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub build_info: Family<BuildLabels, Gauge>,
    pub call_durations: CallDurations,
    pub source: SourceMetrics,
    pub in_flight: InFlightMetrics,
    pub sink: SinkMetrics,
    pub deleter: DeleterMetrics,
    pub visibility: VisibilityMetrics,
    pub dead_letter: DeadLetterMetrics,
    pub breaker: BreakerMetrics,
    pub http: HttpMetrics,
    pub shards: ShardTallyMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        // The process's standard figures keep their standard names; the collector's own carry
        // its prefix.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("telemetry_collector");
        let build_info: Family<BuildLabels, Gauge> = add(
            registry,
            "build_info",
            "Always 1; the labels name the running build (crate version, commit)",
            Family::default(),
        );
        build_info
            .get_or_create(&[("version", VERSION), ("commit", COMMIT)])
            .set(1);
        let calls = register_call_durations(registry);
        Metrics {
            build_info,
            source: SourceMetrics::register(registry, &calls),
            in_flight: InFlightMetrics::register(registry),
            sink: SinkMetrics::register(registry, &calls),
            deleter: DeleterMetrics::register(registry, &calls),
            visibility: VisibilityMetrics::register(registry, &calls),
            dead_letter: DeadLetterMetrics::register(registry, &calls),
            call_durations: calls,
            breaker: BreakerMetrics::register(registry),
            http: HttpMetrics::register(registry),
            shards: ShardTallyMetrics::register(registry),
            registry: Arc::new(root),
        }
    }

    /// The Prometheus / OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }

    /// Totals for the periodic summary line.
    pub(crate) fn snapshot(&self) -> Snapshot {
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
            messages_in_flight: self.in_flight.messages_in_flight.get(),
            events_in_flight: self.sink.events_in_flight.get(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
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
        let expected = format!("telemetry_collector_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1");
        assert!(text.lines().any(|l| l == expected), "{expected} in:\n{text}");
        // The process's standard figures keep their standard, unprefixed names.
        for standard in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
        ] {
            assert!(text.lines().any(|l| l.starts_with(standard)), "{standard} in:\n{text}");
        }
        assert!(!text.contains("telemetry_collector_process_"));
        assert!(!COMMIT.is_empty());
    }
}
