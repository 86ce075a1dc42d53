//! What every section of metrics is made with: the label shapes, registration, and counting by
//! outcome. The stages use this module, never [`super::Metrics`], so that each stage depends
//! on its own section only.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// One label (`outcome`, `reason`, `error_code`, `stat`, ...) with a value from a fixed set.
pub(crate) type Labels = [(&'static str, &'static str); 1];
/// A shard id label (`shard`): bounded by the shards of one stream.
pub(crate) type ShardLabels = [(&'static str, String); 1];
/// A gauge holding a fraction (utilisation: 1.0 = the shard's write limit).
pub(crate) type Ratio = Gauge<f64, AtomicU64>;
/// A counter family by one label.
pub(crate) type Counters = Family<Labels, Counter>;

/// How long each kind of AWS call takes, by `call` (the API's name): one family, registered
/// once, of which each stage takes the series of the calls it makes.
pub(crate) type CallDurations = Family<Labels, Histogram, fn() -> Histogram>;

/// The calls [`CallDurations`] times; each series exists from the start.
pub(crate) const CALLS: [&str; 5] = [
    "ReceiveMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibilityBatch",
    "PutRecords",
    "SendMessage",
];

/// Registers the call-duration family with a series per call of [`CALLS`].
pub(crate) fn register_call_durations(registry: &mut Registry) -> CallDurations {
    let family: CallDurations = add(
        registry,
        "aws_call_duration_seconds",
        "Duration of each AWS call attempt, by call: ReceiveMessage (its long poll included), DeleteMessageBatch, ChangeMessageVisibilityBatch, PutRecords, SendMessage (to the dead-letter queue); a timed-out attempt counts its full timeout",
        Family::new_with_constructor(seconds_histogram),
    );
    for call in CALLS {
        drop(family.get_or_create(&[("call", call)]));
    }
    family
}

/// The series of `call` (one of [`CALLS`]).
pub(crate) fn call_duration(family: &CallDurations, call: &'static str) -> Histogram {
    family.get_or_create(&[("call", call)]).clone()
}

/// Awaits `call`, recording how long it took in `histogram`.
pub(crate) async fn timed<F: Future>(histogram: &Histogram, call: F) -> F::Output {
    let started = Instant::now();
    let output = call.await;
    histogram.observe(started.elapsed().as_secs_f64());
    output
}

/// Registers `metric` and returns the handle the collector updates.
pub(crate) fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Seconds: 5 ms to ~40 s, doubling.
pub(crate) fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Ages of data, which can wait in a queue or on a sensor: 10 ms to ~3 days, doubling.
pub(crate) fn age_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 25))
}

/// Counts `n` under `outcome`.
pub(crate) fn outcome(family: &Counters, outcome: &'static str, n: u64) {
    family.get_or_create(&[("outcome", outcome)]).inc_by(n);
}

/// Creates the series of `family` for each of `values` of the label `key`, at 0. A series that
/// first appears already at 1 shows no `increase()` in Prometheus, so an alert on the first
/// failure would never fire; and a series present from the start says "none yet", not
/// "unknown".
pub(crate) fn start_at_zero(family: &Counters, key: &'static str, values: &[&'static str]) {
    for value in values {
        drop(family.get_or_create(&[(key, value)]));
    }
}

/// Reads one counter of a family. The family's lock guard must be gone before the next
/// `get_or_create` on the same family (which may take the write lock), so it never outlives
/// this call.
pub(crate) fn count(family: &Counters, label: (&'static str, &'static str)) -> u64 {
    family.get_or_create(&[label]).get()
}

/// The Prometheus / OpenMetrics text exposition of every metric of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}
