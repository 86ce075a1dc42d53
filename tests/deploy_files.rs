//! The deployment files agree with the code: every metric the alerting rules and the dashboard
//! use is one `/metrics` exports, under the name a scrape shows (counters with `_total`,
//! histograms as `_bucket`/`_sum`/`_count`); and each IAM policy grants exactly the actions its
//! mode's AWS calls need: the collector's, and the shard supervisor's (`supervise`). Plain file
//! reads: no emulator needed.

use std::collections::BTreeSet;
use std::path::Path;

use telemetry_collector::metrics::Metrics;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The metrics with a series in every family: those whose labels are known start at 0
/// already; the ones labelled by the shards the stream has get one here.
fn sampled_metrics() -> Metrics {
    let m = Metrics::new();
    let shard = || [("shard", "shardId-000000000000".to_owned())];
    drop(m.shards.shard_records_published.get_or_create(&shard()));
    drop(m.shards.shard_bytes_published.get_or_create(&shard()));
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

/// Every `telemetry_collector_…` identifier in `text`.
fn collector_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(found) = text[i..].find("telemetry_collector_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        // Part of a longer identifier (say `my_telemetry_collector_x`): not a metric reference.
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
        "telemetry_collector_messages_received_total",
        "telemetry_collector_event_latency_seconds_bucket",
        "telemetry_collector_messages_awaiting_delete",
        "telemetry_collector_build_info",
    ] {
        assert!(exported.contains(name), "{name} in {exported:?}");
    }
    assert!(!exported.contains("telemetry_collector_messages_received"));
    // Failures are exported at 0 from the start, so that `increase()` sees the first one.
    let fresh = Metrics::new().encode();
    for series in [
        "telemetry_collector_deletes_total{outcome=\"failed\"} 0",
        "telemetry_collector_deletes_total{outcome=\"expired\"} 0",
        "telemetry_collector_submissions_refused_total{reason=\"record_too_large\"} 0",
        "telemetry_collector_messages_expired_total 0",
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
        "telemetry_collector_messages_received_total",
        "telemetry_collector_breaker_open",
        "telemetry_collector_submissions_invalid_total",
        "telemetry_collector_messages_expired_total",
        "telemetry_collector_messages_awaiting_delete",
        "telemetry_collector_submissions_refused_total",
        "telemetry_collector_deletes_total",
        "telemetry_collector_ready",
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
        // The process's standard figures (`process_*`) are found by their plain names.
        .filter(|family| !used.iter().any(|u| u.starts_with(family.as_str())) && !text.contains(family.as_str()))
        .collect();
    assert!(missing.is_empty(), "metrics not on the dashboard: {missing:?}");
}

/// The alerts of the rule file: (name, its lines), by `- alert:` line.
fn alert_rules(rules: &str) -> Vec<(String, Vec<String>)> {
    let mut alerts: Vec<(String, Vec<String>)> = Vec::new();
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), Vec::new()));
        } else if trimmed.starts_with("- ") && !trimmed.starts_with("- alert:") && line.len() - trimmed.len() <= 4 {
            // A rule group: ends the alert before it.
            alerts.push((String::new(), Vec::new()));
        } else if let Some((_, lines)) = alerts.last_mut() {
            lines.push(trimmed.to_owned());
        }
    }
    alerts.retain(|(name, _)| !name.is_empty());
    alerts
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, other punctuation dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_waits_with_for_and_names_a_runbook_section_that_exists() {
    let rules = read("deploy/prometheus/alerts.yaml");
    let alerts = alert_rules(&rules);
    assert!(alerts.len() >= 18, "alerts found: {alerts:?}");
    let operations = read("docs/operations.md");
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(github_anchor)
        .collect();
    let mut problems = Vec::new();
    for (name, lines) in &alerts {
        if !lines.iter().any(|l| l.starts_with("for: ")) {
            problems.push(format!("{name}: no `for:`"));
        }
        let runbooks: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("runbook_url: "))
            .map(str::trim)
            .collect();
        match runbooks.as_slice() {
            [url] => match url.split_once('#') {
                Some(("docs/operations.md", anchor)) if anchors.contains(anchor) => {
                    // The section is the alert's own.
                    if anchor != github_anchor(name) {
                        problems.push(format!("{name}: runbook {url} is not its own section"));
                    }
                }
                _ => problems.push(format!("{name}: runbook_url {url} is no heading of docs/operations.md")),
            },
            _ => problems.push(format!("{name}: {} runbook_url annotations", runbooks.len())),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn no_rule_or_panel_selects_a_job_by_name() {
    // The metric prefix is unique: a job name would tie them to one scrape configuration.
    for file in ["deploy/prometheus/alerts.yaml", "deploy/grafana/collector.json"] {
        let text = read(file);
        for pattern in ["job=\\\"", "job=\"", "job=~\"telemetry"] {
            assert!(!text.contains(pattern), "{file} selects a job: {pattern}");
        }
    }
}

#[test]
fn anchors_follow_github_rules() {
    assert_eq!(github_anchor("CollectorBreakerOpen"), "collectorbreakeropen");
    assert_eq!(github_anchor("Alerts: runbooks"), "alerts-runbooks");
    assert_eq!(
        github_anchor("Redrive policy: `maxReceiveCount` well above what a healthy message can see"),
        "redrive-policy-maxreceivecount-well-above-what-a-healthy-message-can-see"
    );
}

#[test]
fn the_name_scanner_finds_references_and_skips_longer_identifiers() {
    let names = collector_names(
        "rate(telemetry_collector_a_total[5m]) my_telemetry_collector_x telemetry_collector_b{x=\"1\"}",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["telemetry_collector_a_total", "telemetry_collector_b"]
    );
}

/// The SDK operations of SQS and Kinesis (the clients' method names) and the IAM action each
/// needs: the batch calls are authorised as their single-entry actions.
const SQS_OPERATIONS: &[(&str, &str)] = &[
    ("add_permission", "sqs:AddPermission"),
    ("cancel_message_move_task", "sqs:CancelMessageMoveTask"),
    ("change_message_visibility", "sqs:ChangeMessageVisibility"),
    ("change_message_visibility_batch", "sqs:ChangeMessageVisibility"),
    ("create_queue", "sqs:CreateQueue"),
    ("delete_message", "sqs:DeleteMessage"),
    ("delete_message_batch", "sqs:DeleteMessage"),
    ("delete_queue", "sqs:DeleteQueue"),
    ("get_queue_attributes", "sqs:GetQueueAttributes"),
    ("get_queue_url", "sqs:GetQueueUrl"),
    ("list_dead_letter_source_queues", "sqs:ListDeadLetterSourceQueues"),
    ("list_message_move_tasks", "sqs:ListMessageMoveTasks"),
    ("list_queue_tags", "sqs:ListQueueTags"),
    ("list_queues", "sqs:ListQueues"),
    ("purge_queue", "sqs:PurgeQueue"),
    ("receive_message", "sqs:ReceiveMessage"),
    ("remove_permission", "sqs:RemovePermission"),
    ("send_message", "sqs:SendMessage"),
    ("send_message_batch", "sqs:SendMessage"),
    ("set_queue_attributes", "sqs:SetQueueAttributes"),
    ("start_message_move_task", "sqs:StartMessageMoveTask"),
    ("tag_queue", "sqs:TagQueue"),
    ("untag_queue", "sqs:UntagQueue"),
];
const KINESIS_OPERATIONS: &[&str] = &[
    "add_tags_to_stream",
    "create_stream",
    "decrease_stream_retention_period",
    "delete_stream",
    "deregister_stream_consumer",
    "describe_limits",
    "describe_stream",
    "describe_stream_consumer",
    "describe_stream_summary",
    "disable_enhanced_monitoring",
    "enable_enhanced_monitoring",
    "get_records",
    "get_shard_iterator",
    "increase_stream_retention_period",
    "list_shards",
    "list_stream_consumers",
    "list_streams",
    "list_tags_for_stream",
    "merge_shards",
    "put_record",
    "put_records",
    "register_stream_consumer",
    "remove_tags_from_stream",
    "split_shard",
    "start_stream_encryption",
    "stop_stream_encryption",
    "subscribe_to_shard",
    "update_shard_count",
    "update_stream_mode",
];

/// `put_records` -> `kinesis:PutRecords`.
fn kinesis_action(operation: &str) -> String {
    let pascal: String = operation
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("kinesis:{pascal}")
}

/// CloudWatch's operations (the SDK's method names) and their IAM actions.
const CLOUDWATCH_OPERATIONS: &[(&str, &str)] = &[
    ("get_metric_data", "cloudwatch:GetMetricData"),
    ("get_metric_statistics", "cloudwatch:GetMetricStatistics"),
    ("list_metrics", "cloudwatch:ListMetrics"),
    ("put_metric_data", "cloudwatch:PutMetricData"),
];

/// The binary's source files: `src/` (the tools are a crate of their own, `crates/fleet`).
fn daemon_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read src/").flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path.display().to_string(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(ROOT).join("src"), &mut out);
    assert!(out.len() > 5, "found the sources");
    out
}

/// Where the shard supervisor's code is: everything else is the collector's.
const SUPERVISOR_SOURCES: &str = "src/shard_supervisor/";

/// The IAM actions of every SQS, Kinesis and CloudWatch call in the collector's source
/// (`supervisor` false) or the shard supervisor's, with where each is.
fn actions_the_code_calls(supervisor: bool) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut actions = std::collections::BTreeMap::<String, Vec<String>>::new();
    let operations = SQS_OPERATIONS
        .iter()
        .chain(CLOUDWATCH_OPERATIONS)
        .map(|(op, action)| (*op, (*action).to_owned()))
        .chain(KINESIS_OPERATIONS.iter().map(|op| (*op, kinesis_action(op))));
    let prefix = Path::new(ROOT).join(SUPERVISOR_SOURCES).display().to_string();
    let sources: Vec<_> = daemon_sources()
        .into_iter()
        .filter(|(path, _)| path.starts_with(&prefix) == supervisor)
        .collect();
    for (op, action) in operations {
        let call = format!(".{op}()");
        for (path, text) in &sources {
            if text.contains(&call) {
                actions.entry(action.clone()).or_default().push(path.clone());
            }
        }
    }
    actions
}

/// The actions a policy file grants, by the resource they are granted on.
fn granted(path: &str) -> BTreeSet<(String, String)> {
    let policy: serde_json::Value = serde_json::from_str(&read(path)).expect("policy is JSON");
    let as_list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    };
    let mut out = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("Statement list") {
        assert_eq!(statement["Effect"], "Allow", "{path}");
        for action in as_list(&statement["Action"]) {
            for resource in as_list(&statement["Resource"]) {
                out.insert((action.clone(), resource));
            }
        }
    }
    out
}

/// Fails naming what `grants` has and the code does not call, and what it calls and lacks.
fn assert_exactly(
    policy: &str,
    grants: &BTreeSet<(String, String)>,
    called: &std::collections::BTreeMap<String, Vec<String>>,
) {
    let all: BTreeSet<String> = grants.iter().map(|(action, _)| action.clone()).collect();
    let needed: BTreeSet<String> = called.keys().cloned().collect();
    let unused: Vec<_> = all.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&all).map(|a| (a, &called[a])).collect();
    assert!(unused.is_empty(), "{policy}: granted but never called: {unused:?}");
    assert!(missing.is_empty(), "{policy}: called but not granted: {missing:?}");
}

#[test]
fn the_iam_policies_grant_exactly_the_actions_the_code_calls() {
    let called = actions_the_code_calls(false);
    // The scan finds what the pipeline is known to call.
    for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "kinesis:PutRecords"] {
        assert!(called.contains_key(action), "{action} in {called:?}");
    }
    // The collectors never resize.
    assert!(!called.contains_key("kinesis:UpdateShardCount"), "{called:?}");
    let base = granted("deploy/iam/collector-policy.json");
    assert_exactly("collector-policy.json", &base, &called);

    // The supervisor: the stream's state and size, and its metrics; nothing of the queue.
    let supervisor_called = actions_the_code_calls(true);
    for action in [
        "kinesis:UpdateShardCount",
        "kinesis:DescribeStreamSummary",
        "cloudwatch:GetMetricData",
    ] {
        assert!(
            supervisor_called.contains_key(action),
            "{action} in {supervisor_called:?}"
        );
    }
    let supervisor = granted("deploy/iam/supervisor-policy.json");
    assert_exactly("supervisor-policy.json", &supervisor, &supervisor_called);
    // GetMetricData takes no resource-level permissions.
    assert!(supervisor.contains(&("cloudwatch:GetMetricData".to_owned(), "*".to_owned())));

    // Each on its resource: the dead-letter queue only receives; the source queue never does.
    let on = |action: &str| -> BTreeSet<&str> {
        base.iter()
            .filter(|(a, _)| a == action)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    assert_eq!(
        on("sqs:SendMessage"),
        BTreeSet::from(["arn:aws:sqs:eu-west-1:111122223333:submissions-dlq"])
    );
    // `check` compares the two queues' MaximumMessageSize.
    assert_eq!(
        on("sqs:GetQueueAttributes"),
        BTreeSet::from([
            "arn:aws:sqs:eu-west-1:111122223333:submissions",
            "arn:aws:sqs:eu-west-1:111122223333:submissions-dlq"
        ])
    );
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
    ] {
        assert_eq!(
            on(action),
            BTreeSet::from(["arn:aws:sqs:eu-west-1:111122223333:submissions"]),
            "{action}"
        );
    }
}

#[test]
fn kinesis_operations_map_to_their_iam_actions() {
    assert_eq!(kinesis_action("put_records"), "kinesis:PutRecords");
    assert_eq!(
        kinesis_action("describe_stream_summary"),
        "kinesis:DescribeStreamSummary"
    );
}

/// The documented metric names of `docs/observability.md`'s tables: the first cell of each row
/// that names a metric.
fn documented_metrics() -> BTreeSet<String> {
    read("docs/observability.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| {
            name.starts_with("telemetry_collector_")
                || name.starts_with("telemetry_shard_supervisor_")
                || name.starts_with("process_")
        })
        .map(str::to_owned)
        .collect()
}

/// Every metric family a scrape shows, by the name an operator queries (counters with `_total`),
/// of the collector and of the shard supervisor.
fn exported_families() -> BTreeSet<String> {
    let mut supervisor = prometheus_client::registry::Registry::with_prefix("telemetry_shard_supervisor");
    let metrics = telemetry_collector::shard_supervisor::SupervisorMetrics::register(&mut supervisor);
    // A family shows only once it has a series; this one gets its first from CloudWatch.
    drop(metrics.stream_utilisation.get_or_create(&[("stat", "hottest")]));
    let text = sampled_metrics().encode() + &telemetry_collector::metrics::kit::encode(&supervisor);
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            match (parts.next()?, parts.next()?) {
                (name, "counter") => Some(format!("{name}_total")),
                (name, _) => Some(name.to_owned()),
            }
        })
        .collect()
}

#[test]
fn every_metric_exported_is_documented_and_every_documented_metric_is_exported() {
    let (documented, exported) = (documented_metrics(), exported_families());
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let unexported: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && unexported.is_empty(),
        "docs/observability.md lacks {undocumented:?}; it lists {unexported:?}, which are not exported"
    );
}

/// A container's `environment` list as (name, value) pairs.
fn ecs_environment(container: &serde_json::Value) -> Vec<(String, String)> {
    container["environment"]
        .as_array()
        .expect("environment list")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_ecs_supervisor_runs_supervise_alone_with_a_role_of_its_own() {
    let json = |path: &str| -> serde_json::Value { serde_json::from_str(&read(path)).expect("JSON") };
    let collector = json("deploy/ecs/task-definition.json");
    let supervisor = json("deploy/ecs/supervisor-task-definition.json");
    let service = json("deploy/ecs/supervisor-service.json");

    let containers = supervisor["containerDefinitions"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    // The image has no ENTRYPOINT: the command replaces its CMD, binary first, as the
    // collector's does.
    assert_eq!(
        container["command"],
        serde_json::json!(["telemetry-collector", "supervise"])
    );
    assert_eq!(
        collector["containerDefinitions"][0]["command"],
        serde_json::json!(["telemetry-collector"])
    );
    assert_eq!(
        container["healthCheck"]["command"],
        serde_json::json!(["CMD", "/usr/local/bin/telemetry-collector", "healthcheck"])
    );
    assert_eq!(
        container["healthCheck"]["command"],
        collector["containerDefinitions"][0]["healthCheck"]["command"]
    );
    // Its own role (deploy/iam/supervisor-policy.json), not the collector's.
    assert_ne!(supervisor["taskRoleArn"], collector["taskRoleArn"]);
    assert!(
        supervisor["taskRoleArn"]
            .as_str()
            .is_some_and(|r| r.ends_with(":role/telemetry-shard-supervisor")),
        "{}",
        supervisor["taskRoleArn"]
    );
    // Every variable it sets is one the program reads; the SHARD_* settings have their
    // documented defaults, as in the compose file and the ConfigMap.
    let known: BTreeSet<&str> = telemetry_collector::config::SETTINGS.iter().map(|s| s.name).collect();
    for (name, value) in ecs_environment(container) {
        assert!(
            known.contains(name.as_str()) || name.starts_with("AWS_") || name == "RUST_LOG",
            "{name} is not read by the program"
        );
        if name.starts_with("SHARD_") {
            let setting = telemetry_collector::config::SETTINGS
                .iter()
                .find(|s| s.name == name)
                .expect("setting");
            assert_eq!(value, setting.default, "{name}");
        }
    }
    assert!(
        ecs_environment(container)
            .iter()
            .any(|(n, v)| n == "EVENTS_DATA_STREAM_NAME" && v == "events")
    );

    // Exactly one task, and a rollout stops the old one before the new one starts.
    assert_eq!(service["taskDefinition"], supervisor["family"]);
    assert_eq!(service["desiredCount"], 1);
    assert_eq!(service["deploymentConfiguration"]["minimumHealthyPercent"], 0);
    assert_eq!(service["deploymentConfiguration"]["maximumPercent"], 100);
    assert_eq!(service["schedulingStrategy"], "REPLICA");
}
