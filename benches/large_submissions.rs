//! The collector's memory and fairness while it drains a backlog of large submissions mixed
//! with ordinary ones, with the settings of the shipped Kubernetes manifest.
//!
//! `cargo bench --bench large_submissions` reads the pipeline settings from
//! `deploy/kubernetes/collector.env` and gives them to the real binary (release build), pointed
//! at a fake SQS + Kinesis that answers at once. For each mix a fresh collector and fake drain a
//! backlog of `LARGE_MESSAGES` large submissions spread evenly among `LARGE_ORDINARY` ordinary
//! (sensor-fleet) ones:
//!
//! - `realistic`: 256 KiB base64 bodies of about 1,300 events with command lines of realistic
//!   length;
//! - `tiny`: plain-JSON bodies just under SQS's 1 MiB of the smallest valid events
//!   (`{"cmdl":"","user":""}`), about 47,600 each;
//! - `mixed`: half of each.
//!
//! It prints per mix the peak RSS (`VmHWM`), messages, events, drain time and events/s, and
//! checks from what the fake stream received that every event of every submission arrived, in
//! order (at least once). It also prints how long each large submission held its Kinesis lane
//! (from the PutRecords call carrying its first record arriving to the answer of the one
//! carrying its last) and how long messages took from being served by ReceiveMessage to being
//! deleted: ordinary ones, those of them on a lane while a tiny submission held it, and large
//! ones.
//!
//! Environment: `LARGE_MIX` (`realistic`, `tiny` or `mixed`; default all three, one after
//! another), `LARGE_MESSAGES` (default 240 realistic, 40 tiny, 80 mixed: each mix drains in
//! about a minute), `LARGE_ORDINARY` (default 3000),
//! `LARGE_PUT_DELAY_MS` (each PutRecords answered after this long, default 0),
//! `LARGE_TIMEOUT_SECONDS` (default 600). A collector setting set in the environment replaces
//! the manifest's; `COLLECTOR_BIN` runs another build of the collector.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use telemetry_fleet::rng::Rng;

use support::fake_aws::{FakeAws, FakeState, PooledMessage, SubmissionTrack};
use support::{CollectorProcess, env_or, fleet_pool, mib};

const SAMPLE: Duration = Duration::from_millis(50);
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/collector.env");
/// The manifest's variables that name AWS resources or this process's surroundings: the
/// benchmark points the collector at the fake instead.
const NOT_PASSED: &[&str] = &[
    "AWS_REGION",
    "SUBMISSIONS_QUEUE_URL",
    "DEAD_LETTER_QUEUE_URL",
    "HTTP_LISTEN_ADDRESS",
    "RUST_LOG",
];
/// A realistic body: 256 KiB of base64, i.e. this many bytes of JSON.
const REALISTIC_JSON_BYTES: usize = 256 * 1024 / 4 * 3;
/// A tiny-event body: plain JSON, just under SQS's 1 MiB.
const TINY_BODY_BYTES: usize = 1024 * 1024 - 512;
const TINY_ITEM: &str = r#"{"cmdl":"","user":""}"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ordinary,
    Realistic,
    Tiny,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mix {
    Realistic,
    Tiny,
    Mixed,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Realistic => "realistic",
            Mix::Tiny => "tiny",
            Mix::Mixed => "mixed",
        }
    }

    /// Large submissions by default: a tiny-event one takes the whole byte cap and about a
    /// second and a half to publish, so each mix drains in about a minute.
    fn default_large(self) -> usize {
        match self {
            Mix::Realistic => 240,
            Mix::Tiny => 40,
            Mix::Mixed => 80,
        }
    }

    /// The kind of the `n`th large submission.
    fn large_kind(self, n: usize) -> Kind {
        match self {
            Mix::Realistic => Kind::Realistic,
            Mix::Tiny => Kind::Tiny,
            Mix::Mixed if n.is_multiple_of(2) => Kind::Tiny,
            Mix::Mixed => Kind::Realistic,
        }
    }
}

/// The `VAR=value` lines of the ConfigMap's env file, in order.
fn manifest_settings() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(MANIFEST).unwrap_or_else(|e| panic!("cannot read {MANIFEST}: {e}"));
    let settings: Vec<(String, String)> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    assert!(!settings.is_empty(), "no VAR=value lines in {MANIFEST}");
    settings
}

/// The manifest's settings to give the collector: those the environment sets are left to it.
fn collector_settings() -> (Vec<(String, String)>, Vec<String>) {
    let mut passed = Vec::new();
    let mut from_environment = Vec::new();
    for (key, value) in manifest_settings() {
        if NOT_PASSED.contains(&key.as_str()) {
            continue;
        }
        match std::env::var(&key) {
            Ok(own) => from_environment.push(format!("{key}={own}")),
            Err(_) => passed.push((key, value)),
        }
    }
    (passed, from_environment)
}

fn setting(settings: &[(String, String)], key: &str) -> Option<String> {
    std::env::var(key)
        .ok()
        .or_else(|| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
}

const COMMANDS: &[&str] = &[
    r#""C:\Program Files\Google\Chrome\Application\chrome.exe" --type=renderer --field-trial-handle=1868,i,{n},{n},262144 --lang=en-US --device-scale-factor=1 --num-raster-threads=4 --enable-main-frame-before-activation --renderer-client-id={n} --mojo-platform-channel-handle={n} /prefetch:1"#,
    r#"C:\Windows\system32\svchost.exe -k netsvcs -p -s Schedule"#,
    r#"powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File C:\ProgramData\Agent\scripts\collect-{n}.ps1 -OutputDirectory C:\ProgramData\Agent\out"#,
    r#"/usr/bin/python3 /opt/agent/bin/agent.py --config /etc/agent/agent.yaml --log-level info --pid-file /run/agent/{n}.pid"#,
    r#"/usr/lib/jvm/java-17-openjdk-amd64/bin/java -Xms512m -Xmx2g -XX:+UseG1GC -Djava.io.tmpdir=/var/tmp -jar /opt/app/service-{n}.jar --spring.profiles.active=prod"#,
    r#"/bin/sh -c cd /var/www/app && /usr/bin/php artisan schedule:run >> /dev/null 2>&1"#,
    r#""C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE" /recycle"#,
    r#"git -c core.quotepath=false -c color.ui=false fetch --prune --progress origin refs/heads/main:refs/remotes/origin/main"#,
    r#"node /usr/local/lib/node_modules/npm/bin/npm-cli.js run build -- --mode production --output-path dist/{n}"#,
    r#"C:\Windows\System32\RuntimeBroker.exe -Embedding"#,
    r#"docker run --rm -v /srv/data:/data -e TZ=UTC registry.internal/etl/job:{n} --date 2025-01-01 --workers 8"#,
    r#""C:\Program Files (x86)\Microsoft\Edge\Application\msedge.exe" --type=utility --utility-sub-type=network.mojom.NetworkService --lang=en-US --service-sandbox-type=none --mojo-platform-channel-handle={n} /prefetch:3"#,
];
const USERS: &[&str] = &[
    "john",
    "SYSTEM",
    "root",
    "alice",
    "NT AUTHORITY\\NETWORK SERVICE",
    "www-data",
    "svc-backup",
];

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn head(id: uuid::Uuid, device: uuid::Uuid, time_created: &str) -> String {
    format!(
        r#"{{"submission_id":"{}","device_id":"{}","time_created":"{time_created}","events":{{"#,
        id.hyphenated(),
        device.hyphenated()
    )
}

/// A 256 KiB (base64) submission of realistic events: process starts with their command lines
/// and some network connections. Returns the body and its events.
fn realistic_body(rng: &mut Rng, id: uuid::Uuid, device: uuid::Uuid, time_created: &str) -> (String, u64) {
    let head = head(id, device, time_created);
    let fixed = head.len() + r#""new_process":[],"network_connection":[]}}"#.len();
    let mut processes = String::new();
    let mut connections = String::new();
    let mut events = 0;
    loop {
        let item = if rng.chance(0.8) {
            let cmdl = rng
                .pick(COMMANDS)
                .replace("{n}", &rng.between(100, 999_999).to_string());
            format!(
                r#"{{"cmdl":{},"user":{}}}"#,
                json_str(&cmdl),
                json_str(rng.pick::<&str>(USERS))
            )
        } else {
            format!(
                r#"{{"source_ip":"10.{}.{}.{}","destination_ip":"{}.{}.{}.{}","destination_port":{}}}"#,
                rng.below(256),
                rng.below(256),
                rng.between(1, 254),
                rng.between(1, 223),
                rng.below(256),
                rng.below(256),
                rng.between(1, 254),
                rng.pick(&[443u16, 80, 53, 8443, 3389])
            )
        };
        let is_process = item.starts_with(r#"{"cmdl""#);
        if fixed + processes.len() + connections.len() + item.len() + 1 > REALISTIC_JSON_BYTES {
            break;
        }
        let list = if is_process { &mut processes } else { &mut connections };
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(&item);
        events += 1;
    }
    let json = format!(r#"{head}"new_process":[{processes}],"network_connection":[{connections}]}}}}"#);
    assert!(json.len() <= REALISTIC_JSON_BYTES, "a realistic body fits 256 KiB");
    (STANDARD.encode(json), events)
}

/// The smallest valid events, as many as a plain-JSON body just under 1 MiB holds.
fn tiny_body(id: uuid::Uuid, device: uuid::Uuid, time_created: &str) -> (String, u64) {
    let head = head(id, device, time_created);
    let open = r#""new_process":["#;
    let room = TINY_BODY_BYTES - head.len() - open.len() - "]}}".len();
    let events = (room + 1) / (TINY_ITEM.len() + 1);
    let mut body = String::with_capacity(TINY_BODY_BYTES);
    body.push_str(&head);
    body.push_str(open);
    for i in 0..events {
        if i > 0 {
            body.push(',');
        }
        body.push_str(TINY_ITEM);
    }
    body.push_str("]}}");
    assert!(body.len() <= TINY_BODY_BYTES, "a tiny-event body stays under 1 MiB");
    (body, events as u64)
}

struct Backlog {
    pool: Vec<PooledMessage>,
    kinds: Vec<Kind>,
}

/// `large` large submissions spread evenly among `ordinary` fleet ones, every one distinct.
fn backlog(mix: Mix, large: usize, ordinary: usize, seed: u64) -> Backlog {
    let mut fleet = fleet_pool(ordinary, seed, 0.0).into_iter();
    let mut rng = Rng::new(seed);
    let time_created = Utc::now().naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    let total = large + ordinary;
    let mut pool = Vec::with_capacity(total);
    let mut kinds = Vec::with_capacity(total);
    let mut made = 0;
    for position in 0..total {
        // Large at the positions where the running share of large ones steps up.
        let is_large = (position + 1) * large / total > position * large / total;
        if is_large {
            let kind = mix.large_kind(made);
            made += 1;
            let (id, device) = (rng.uuid(), rng.uuid());
            let (body, events) = match kind {
                Kind::Tiny => tiny_body(id, device, &time_created),
                _ => realistic_body(&mut rng, id, device, &time_created),
            };
            pool.push(PooledMessage::new(&body, events).with_submission_id(id.as_u128()));
            kinds.push(kind);
        } else {
            pool.push(fleet.next().expect("enough ordinary submissions"));
            kinds.push(Kind::Ordinary);
        }
    }
    Backlog { pool, kinds }
}

/// p50, p99 and max of `values` (nearest rank), in the values' unit; `None` when empty.
fn percentiles(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Some((rank(0.50), rank(0.99), values[values.len() - 1]))
}

fn show(p: Option<(f64, f64, f64)>, count: usize) -> String {
    match p {
        Some((p50, p99, max)) => format!("{p50:.0} / {p99:.0} / {max:.0} ({count})"),
        None => "- (0)".to_owned(),
    }
}

struct Row {
    mix: &'static str,
    large: usize,
    ordinary: usize,
    events: u64,
    events_per_large: String,
    drain_s: f64,
    peak_rss: u64,
    max_in_flight: u64,
    repeated: u64,
    hold_tiny: String,
    hold_realistic: String,
    latency_ordinary: String,
    latency_ordinary_held: String,
    latency_large: String,
}

fn run(mix: Mix, settings: &[(String, String)], lanes: u128) -> Row {
    let large: usize = env_or("LARGE_MESSAGES", mix.default_large());
    let ordinary: usize = env_or("LARGE_ORDINARY", 3000);
    let put_delay = Duration::from_millis(env_or("LARGE_PUT_DELAY_MS", 0));
    let timeout = Duration::from_secs(env_or("LARGE_TIMEOUT_SECONDS", 600));

    let Backlog { pool, kinds } = backlog(mix, large, ordinary, 41);
    let total = pool.len() as u64;
    let events: u64 = pool.iter().map(|m| m.events).sum();
    let mut per_large: Vec<u64> = pool
        .iter()
        .zip(&kinds)
        .filter(|(_, k)| **k != Kind::Ordinary)
        .map(|(m, _)| m.events)
        .collect();
    per_large.sort_unstable();
    per_large.dedup();
    let events_per_large = match (per_large.first(), per_large.last()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
        _ => "-".to_owned(),
    };
    let fake = FakeAws::start(FakeState::new(pool, total, put_delay).tracked());
    let state = fake.state.clone();
    println!(
        "\nlarge_submissions {}: {large} large ({events_per_large} events each) among {ordinary} ordinary messages, {events} events",
        mix.name()
    );

    let mut collector =
        CollectorProcess::start_with(&fake.endpoint, &format!("large_submissions-{}", mix.name()), settings);
    collector.wait_until_served(&state, SAMPLE);
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut max_in_flight = 0;
    while !state.all_done() {
        collector.check_running();
        if started.elapsed() > timeout {
            let tracking = state.tracking.as_ref().expect("tracked").lock().unwrap();
            let unfinished = tracking.submissions.iter().filter(|t| t.next < t.events).count();
            panic!(
                "{}: not drained within {} s: {} of {total} messages served, {} deleted, {} of {events} events acknowledged, {unfinished} submissions incomplete; see {}",
                mix.name(),
                timeout.as_secs(),
                state.messages_served.load(Ordering::SeqCst),
                state.messages_deleted.load(Ordering::SeqCst),
                state.records_acknowledged.load(Ordering::SeqCst),
                collector.log.display()
            );
        }
        peak_rss = peak_rss.max(collector.rss_bytes());
        let in_flight = state.messages_served.load(Ordering::SeqCst) - state.messages_deleted.load(Ordering::SeqCst);
        max_in_flight = max_in_flight.max(in_flight);
        std::thread::sleep(SAMPLE);
    }
    // The kernel's RSS counters lag a little: the highest sample can pass VmHWM.
    let peak_rss = collector.peak_rss_bytes().max(peak_rss);
    collector.stop(Duration::from_secs(10));

    let bad = state.bad_requests.load(Ordering::SeqCst);
    assert!(
        bad == 0,
        "{bad} bad requests (first: {:?})",
        state.first_bad_request.lock().unwrap()
    );
    let tracking = state.tracking.as_ref().expect("tracked").lock().unwrap();
    verify(
        mix,
        &tracking.submissions,
        tracking.unknown_records,
        tracking.unreadable_records,
    );
    assert!(
        tracking.deleted_us.iter().all(|&at| at > 0),
        "{}: a message was never deleted",
        mix.name()
    );

    let first_served = tracking.served_us.iter().copied().min().unwrap_or(0);
    let last_deleted = tracking.deleted_us.iter().copied().max().unwrap_or(0);
    let drain_s = (last_deleted - first_served) as f64 / 1e6;
    let kind_of = |t: &SubmissionTrack| kinds[t.pool_index];
    let holds = |kind: Kind| {
        let values: Vec<f64> = tracking
            .submissions
            .iter()
            .filter(|t| kind_of(t) == kind)
            .map(|t| (t.last_acked_us - t.first_sent_us) as f64 / 1e3)
            .collect();
        let count = values.len();
        show(percentiles(values), count)
    };
    // A tiny submission's lane and the time it held it.
    let tiny_holds: Vec<(u128, u64, u64)> = tracking
        .submissions
        .iter()
        .filter(|t| kind_of(t) == Kind::Tiny)
        .map(|t| (t.id % lanes, t.first_sent_us, t.last_acked_us))
        .collect();
    let latency_ms =
        |t: &SubmissionTrack| (tracking.deleted_us[t.pool_index] - tracking.served_us[t.pool_index]) as f64 / 1e3;
    let ordinary_tracks = || tracking.submissions.iter().filter(|t| kind_of(t) == Kind::Ordinary);
    let ordinary_latency: Vec<f64> = ordinary_tracks().map(latency_ms).collect();
    let held_latency: Vec<f64> = ordinary_tracks()
        .filter(|t| {
            let served = tracking.served_us[t.pool_index];
            let deleted = tracking.deleted_us[t.pool_index];
            tiny_holds
                .iter()
                .any(|&(lane, from, to)| lane == t.id % lanes && served < to && deleted > from)
        })
        .map(latency_ms)
        .collect();
    let large_latency: Vec<f64> = tracking
        .submissions
        .iter()
        .filter(|t| kind_of(t) != Kind::Ordinary)
        .map(latency_ms)
        .collect();
    let (n_ordinary, n_held, n_large) = (ordinary_latency.len(), held_latency.len(), large_latency.len());
    let row = Row {
        mix: mix.name(),
        large,
        ordinary,
        events,
        events_per_large,
        drain_s,
        peak_rss,
        max_in_flight,
        repeated: tracking.submissions.iter().map(|t| t.repeated).sum(),
        hold_tiny: holds(Kind::Tiny),
        hold_realistic: holds(Kind::Realistic),
        latency_ordinary: show(percentiles(ordinary_latency), n_ordinary),
        latency_ordinary_held: show(percentiles(held_latency), n_held),
        latency_large: show(percentiles(large_latency), n_large),
    };
    print_rows(std::slice::from_ref(&row));
    row
}

/// Every event of every submission arrived, in order, at least once; nothing else arrived.
fn verify(mix: Mix, tracks: &[SubmissionTrack], unknown: u64, unreadable: u64) {
    let incomplete: Vec<&SubmissionTrack> = tracks
        .iter()
        .filter(|t| t.next != t.events || t.skipped_ahead > 0)
        .collect();
    if !incomplete.is_empty() || unknown > 0 || unreadable > 0 {
        let examples: Vec<String> = incomplete
            .iter()
            .take(5)
            .map(|t| {
                format!(
                    "{} (message {}): events 0..{} of {} in order, {} out of order",
                    uuid::Uuid::from_u128(t.id),
                    t.pool_index,
                    t.next,
                    t.events,
                    t.skipped_ahead
                )
            })
            .collect();
        panic!(
            "{}: events lost or out of order: {} of {} submissions incomplete, {unknown} records of unknown submissions, {unreadable} unreadable records; e.g. {}",
            mix.name(),
            incomplete.len(),
            tracks.len(),
            examples.join("; ")
        );
    }
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<10} {:>6} {:>8} {:>9} {:>12} {:>8} {:>9} {:>12} {:>13} {:>9} {:>8}",
        "mix",
        "large",
        "ordinary",
        "events",
        "events/large",
        "drain s",
        "events/s",
        "peak RSS MiB",
        "max in flight",
        "repeated",
        "verified"
    );
    for r in rows {
        println!(
            "{:<10} {:>6} {:>8} {:>9} {:>12} {:>8.1} {:>9.0} {:>12.1} {:>13} {:>9} {:>8}",
            r.mix,
            r.large,
            r.ordinary,
            r.events,
            r.events_per_large,
            r.drain_s,
            r.events as f64 / r.drain_s.max(1e-9),
            mib(r.peak_rss),
            r.max_in_flight,
            r.repeated,
            "in order"
        );
    }
    println!("  ms: p50 / p99 / max (count)");
    println!(
        "{:<10} {:<28} {:<28} {:<28} {:<28} {:<28}",
        "mix",
        "lane hold, tiny",
        "lane hold, realistic",
        "latency, ordinary",
        "latency, ordinary held lane",
        "latency, large"
    );
    for r in rows {
        println!(
            "{:<10} {:<28} {:<28} {:<28} {:<28} {:<28}",
            r.mix, r.hold_tiny, r.hold_realistic, r.latency_ordinary, r.latency_ordinary_held, r.latency_large
        );
    }
}

fn main() {
    let mixes = match std::env::var("LARGE_MIX").as_deref() {
        Ok("realistic") => vec![Mix::Realistic],
        Ok("tiny") => vec![Mix::Tiny],
        Ok("mixed") => vec![Mix::Mixed],
        Ok(other) => panic!("LARGE_MIX={other:?}: realistic, tiny or mixed (unset: all three)"),
        Err(_) => vec![Mix::Realistic, Mix::Tiny, Mix::Mixed],
    };
    let (settings, from_environment) = collector_settings();
    let lanes: u128 = setting(&settings, "DATA_STREAM_CONCURRENCY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    println!(
        "large_submissions: collector settings from deploy/kubernetes/collector.env: {}",
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !from_environment.is_empty() {
        println!("  from the environment instead: {}", from_environment.join(" "));
    }
    let rows: Vec<Row> = mixes.into_iter().map(|mix| run(mix, &settings, lanes)).collect();
    println!("\nlarge_submissions summary");
    print_rows(&rows);
}
