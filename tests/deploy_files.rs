//! The deployment files agree with the code: every metric the alerting rules and the dashboard
//! use is one `/metrics` exports, under the name a scrape shows (counters with `_total`,
//! histograms as `_bucket`/`_sum`/`_count`); and the IAM policy grants exactly the actions the
//! code's AWS calls need. Plain file reads: no emulator needed.

use std::collections::BTreeSet;
use std::path::Path;

use telemetry_collector::metrics::Metrics;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The metrics with a series in every family: those whose labels are known start at 0
/// already; the ones labelled by what the stream and the supervisor find get one here.
fn sampled_metrics() -> Metrics {
    let m = Metrics::new();
    let shard = || [("shard", "shardId-000000000000".to_owned())];
    drop(m.shard_records_published.get_or_create(&shard()));
    drop(m.shard_bytes_published.get_or_create(&shard()));
    drop(m.shard_utilisation.get_or_create(&shard()));
    drop(m.stream_utilisation.get_or_create(&[("stat", "mean")]));
    drop(
        m.shard_supervisor_decisions
            .get_or_create(&[("decision", "within_band")]),
    );
    m
}

/// The sample names a scrape of `/metrics` can show, from the `# TYPE` lines of the exposition
/// (a family with no labelled child yet has no sample line, but always its TYPE line).
fn exported_sample_names() -> BTreeSet<String> {
    let text = sampled_metrics().encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" => &[""],
            "info" => &["_info"],
            other => panic!("metric kind {other} of {name} not handled by this test"),
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// Every `collector_…` identifier in `text`.
fn collector_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(found) = text[i..].find("collector_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        // Part of a longer identifier (say `telemetry_collector_x`): not a metric reference.
        if start == 0 || !is_ident(bytes[start - 1]) {
            names.insert(text[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

fn assert_all_exported(file: &str, used: &BTreeSet<String>) {
    let exported = exported_sample_names();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "{file} uses metrics /metrics does not export: {unknown:?}\nexported: {exported:?}"
    );
}

#[test]
fn the_exposition_names_counters_with_total_and_histograms_with_buckets() {
    let exported = exported_sample_names();
    for name in [
        "collector_messages_received_total",
        "collector_event_latency_seconds_bucket",
        "collector_messages_awaiting_delete",
        "collector_build_info",
    ] {
        assert!(exported.contains(name), "{name} in {exported:?}");
    }
    assert!(!exported.contains("collector_messages_received"));
    // Failures are exported at 0 from the start, so that `increase()` sees the first one.
    let fresh = Metrics::new().encode();
    for series in [
        "collector_deletes_total{outcome=\"failed\"} 0",
        "collector_submissions_refused_total{reason=\"record_too_large\"} 0",
        "collector_messages_abandoned_total 0",
    ] {
        assert!(fresh.lines().any(|l| l == series), "{series}");
    }
}

#[test]
fn every_metric_the_alerting_rules_use_is_exported() {
    let rules = read("deploy/prometheus/alerts.yaml");
    let used = collector_names(&rules);
    assert_all_exported("deploy/prometheus/alerts.yaml", &used);
    // The conditions an operator must hear about each have a rule.
    for needed in [
        "collector_messages_received_total",
        "collector_breaker_open",
        "collector_submissions_invalid_total",
        "collector_messages_abandoned_total",
        "collector_messages_awaiting_delete",
        "collector_submissions_refused_total",
        "collector_deletes_total",
        "collector_ready",
    ] {
        assert!(used.contains(needed), "no alerting rule uses {needed}");
    }
}

#[test]
fn every_metric_the_dashboard_uses_is_exported_and_every_metric_is_on_it() {
    let text = read("deploy/grafana/collector.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let used = collector_names(&text);
    assert_all_exported("deploy/grafana/collector.json", &used);
    // Each exported family appears on the dashboard under one of its sample names.
    let families: BTreeSet<String> = sampled_metrics()
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = families
        .iter()
        .filter(|family| !used.iter().any(|u| u.starts_with(family.as_str())))
        .collect();
    assert!(missing.is_empty(), "metrics not on the dashboard: {missing:?}");
}

#[test]
fn the_name_scanner_finds_references_and_skips_longer_identifiers() {
    let names = collector_names("rate(collector_a_total[5m]) telemetry_collector_x collector_b{x=\"1\"}");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["collector_a_total", "collector_b"]
    );
}
