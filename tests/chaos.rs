//! Chaos soak: the guarantees of docs/contract.md under faults, in numbers.
//!
//! The `sensor-fleet` simulator sends submissions (a share of them invalid) straight to the
//! queue while the real collector binary drains them through the fault proxy. Meanwhile the
//! harness, at seeded random moments, kills the collector with SIGKILL (and restarts it), stops
//! it once with SIGTERM (and restarts it), cuts the Kinesis path and the SQS path for a while,
//! black-holes each path for a while (requests read and never answered, the connections they
//! touched dead for good, as when a NAT loses its state), adds latency to every call for a
//! while, and fails a share of PutRecords records with ProvisionedThroughputExceeded for a
//! while. At the end it lets the last collector drain the
//! queue, has `stream-reader` check the whole stream against the simulator's manifest, prints
//! the report, and requires: nothing lost, nothing out of order, nothing invalid published,
//! the queue empty.
//!
//! The defaults are the short run of the normal test suite. `script/chaos` runs the long one
//! with release builds; every parameter can be set from the environment (`CHAOS_*`, below).

// Needs the emulator that script/test starts: built with the `emulator-tests` feature.
#![cfg(feature = "emulator-tests")]

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::fault_proxy::{FaultProxy, Faults};
use support::{CollectorHarness, TestEnv, sigterm, tool_summary, wait_until};
use telemetry_fleet::rng::Rng;

/// The run's parameters: `CHAOS_*` environment variables, short-run defaults.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    submissions: u64,
    invalid_share: f64,
    max_events: u64,
    /// Submissions per second the fleet sends while the faults happen.
    rate: f64,
    kills: usize,
    sigterms: usize,
    kinesis_cut: Duration,
    sqs_cut: Duration,
    kinesis_black_hole: Duration,
    sqs_black_hole: Duration,
    /// The collector's `AWS_CALL_TIMEOUT_SEC`: how soon a swallowed call is given up.
    call_timeout_sec: f64,
    latency: Duration,
    latency_for: Duration,
    throttle_share: f64,
    throttle_for: Duration,
    visibility_timeout_sec: u64,
    max_in_flight_messages: u64,
    drain_timeout: Duration,
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        _ => default,
    }
}

fn seconds(name: &str, default: f64) -> Duration {
    Duration::from_secs_f64(var(name, default))
}

impl Plan {
    fn from_env() -> Plan {
        let clock_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let plan = Plan {
            seed: var("CHAOS_SEED", clock_seed),
            submissions: var("CHAOS_SUBMISSIONS", 2_000),
            invalid_share: var("CHAOS_INVALID_SHARE", 0.1),
            max_events: var("CHAOS_MAX_EVENTS", 12),
            rate: var("CHAOS_RATE", 20.0),
            kills: var("CHAOS_KILLS", 2),
            sigterms: var("CHAOS_SIGTERMS", 1),
            kinesis_cut: seconds("CHAOS_KINESIS_CUT_SEC", 3.0),
            sqs_cut: seconds("CHAOS_SQS_CUT_SEC", 3.0),
            kinesis_black_hole: seconds("CHAOS_KINESIS_BLACK_HOLE_SEC", 4.0),
            sqs_black_hole: seconds("CHAOS_SQS_BLACK_HOLE_SEC", 4.0),
            call_timeout_sec: var("CHAOS_CALL_TIMEOUT_SEC", 2.0),
            latency: Duration::from_millis(var("CHAOS_LATENCY_MS", 150)),
            latency_for: seconds("CHAOS_LATENCY_SEC", 3.0),
            throttle_share: var("CHAOS_THROTTLE_SHARE", 0.2),
            throttle_for: seconds("CHAOS_THROTTLE_SEC", 3.0),
            visibility_timeout_sec: var("CHAOS_VISIBILITY_TIMEOUT_SEC", 10),
            max_in_flight_messages: var("CHAOS_MAX_IN_FLIGHT_MESSAGES", 200),
            drain_timeout: seconds("CHAOS_DRAIN_TIMEOUT_SEC", 300.0),
        };
        // The faults are spread over the time the fleet sends.
        assert!(plan.rate > 0.0, "CHAOS_RATE must be above 0");
        plan
    }

    /// The faults in a seeded random order.
    fn faults(&self, rng: &mut Rng) -> Vec<Fault> {
        let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::Kill, self.kills)
            .chain(std::iter::repeat_n(Fault::Sigterm, self.sigterms))
            .collect();
        if !self.kinesis_cut.is_zero() {
            faults.push(Fault::KinesisCut);
        }
        if !self.sqs_cut.is_zero() {
            faults.push(Fault::SqsCut);
        }
        if !self.kinesis_black_hole.is_zero() {
            faults.push(Fault::KinesisBlackHole);
        }
        if !self.sqs_black_hole.is_zero() {
            faults.push(Fault::SqsBlackHole);
        }
        if !self.latency.is_zero() && !self.latency_for.is_zero() {
            faults.push(Fault::Latency);
        }
        if self.throttle_share > 0.0 && !self.throttle_for.is_zero() {
            faults.push(Fault::Throttle);
        }
        // Fisher-Yates.
        for i in (1..faults.len()).rev() {
            faults.swap(i, rng.below(i as u64 + 1) as usize);
        }
        faults
    }

    /// Seeded random pauses before each of `faults`, so that all of them, with their own
    /// durations, fit in the first 80% of the time the fleet sends: every fault then meets a
    /// collector with work to do.
    fn pauses(&self, faults: &[Fault], rng: &mut Rng) -> Vec<Duration> {
        let sending = self.submissions as f64 / self.rate;
        // A stop costs up to a second's pause before the restart.
        let busy: f64 = faults
            .iter()
            .map(|f| match f {
                Fault::Kill | Fault::Sigterm => 1.0,
                Fault::KinesisCut => self.kinesis_cut.as_secs_f64(),
                Fault::SqsCut => self.sqs_cut.as_secs_f64(),
                // The hole, and the call timeout it takes to notice.
                Fault::KinesisBlackHole => self.kinesis_black_hole.as_secs_f64() + self.call_timeout_sec,
                Fault::SqsBlackHole => self.sqs_black_hole.as_secs_f64() + self.call_timeout_sec,
                Fault::Latency => self.latency_for.as_secs_f64(),
                Fault::Throttle => self.throttle_for.as_secs_f64(),
            })
            .sum();
        let room = 0.8 * sending - busy;
        assert!(
            room > 0.0,
            "the fleet sends for {sending:.0} s, too short for {busy:.0} s of faults: \
             raise CHAOS_SUBMISSIONS or lower CHAOS_RATE"
        );
        let mut moments: Vec<f64> = faults.iter().map(|_| rng.unit() * room).collect();
        moments.sort_by(f64::total_cmp);
        let mut last = 0.0;
        moments
            .into_iter()
            .map(|m| {
                let pause = m - last;
                last = m;
                Duration::from_secs_f64(pause)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Sigterm,
    KinesisCut,
    SqsCut,
    KinesisBlackHole,
    SqsBlackHole,
    Latency,
    Throttle,
}

/// What the harness did, for the report.
#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    sigterms: usize,
    kinesis_cuts: usize,
    sqs_cuts: usize,
    kinesis_black_holes: usize,
    sqs_black_holes: usize,
    latency_phases: usize,
    throttle_phases: usize,
    /// Per stop: (what, seconds into the run, records published through the proxy, queue
    /// visible, queue in flight) at that moment.
    stops: Vec<(Fault, f64, u64, u64, u64)>,
}

/// The collector binary as it is restarted through the run.
struct Collector {
    child: tokio::process::Child,
    starts: usize,
    /// Records the proxy had forwarded when this instance started.
    published_at_start: u64,
}

fn published(faults: &Faults) -> u64 {
    faults.records_forwarded.load(Ordering::Relaxed)
}

impl Collector {
    fn start(env: &TestEnv, settings: &[(&str, &str)], faults: &Faults, starts: usize) -> Collector {
        let child = env.spawn_binary(settings, &format!("{}-collector-{starts}", env.stream_name));
        Collector {
            child,
            starts: starts + 1,
            published_at_start: published(faults),
        }
    }

    fn restart(self, env: &TestEnv, settings: &[(&str, &str)], faults: &Faults) -> Collector {
        Collector::start(env, settings, faults, self.starts)
    }
}

/// The run's progress (the plan, each fault, the queue every 5 s, the report): written to a file beside the
/// collector's logs, and to stderr too when `CHAOS_PROGRESS` is set (`script/chaos` sets it).
/// Kept off the test's own output otherwise, so that a failure's message leads what a short
/// excerpt of a CI log shows.
#[derive(Clone)]
struct Progress {
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
    echo: bool,
}

impl Progress {
    fn create(path: PathBuf) -> Progress {
        let file = std::fs::File::create(&path).expect("create the progress file");
        Progress {
            file: Arc::new(Mutex::new(file)),
            path,
            echo: std::env::var_os("CHAOS_PROGRESS").is_some(),
        }
    }

    fn line(&self, text: &str) {
        if let Ok(mut file) = self.file.lock() {
            let _ = writeln!(file, "chaos: {text}");
        }
        if self.echo {
            eprintln!("chaos: {text}");
        }
    }
}

fn run_seconds(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_loses_nothing_keeps_order_and_publishes_nothing_invalid() {
    let plan = Plan::from_env();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let progress = Progress::create(dir.join(format!("chaos-{}-{}-progress.log", plan.seed, std::process::id())));
    eprintln!(
        "chaos: CHAOS_SEED={} (progress in {})",
        plan.seed,
        progress.path.display()
    );
    // On a failure, the run's last progress lines follow the failure's message.
    let path = progress.path.clone();
    if let Err(failure) = tokio::spawn(soak(plan, progress)).await {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("chaos: the run's last progress lines:");
        for line in &lines[lines.len().saturating_sub(12)..] {
            eprintln!("{line}");
        }
        match failure.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("the soak's task failed: {error}"),
        }
    }
}

async fn soak(plan: Plan, progress: Progress) {
    let env = TestEnv::new("chaos").await;
    let proxy = FaultProxy::start_split(&env.endpoint, &env.kinesis_endpoint, plan.seed).await;
    let faults = proxy.faults.clone();
    let mut rng = Rng::new(plan.seed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    progress.line(&format!("seed={} plan={plan:?}", plan.seed));
    let emulators = if env.kinesis_endpoint == env.endpoint {
        env.endpoint.clone()
    } else {
        format!("SQS {}, Kinesis {}", env.endpoint, env.kinesis_endpoint)
    };
    progress.line(&format!(
        "queue {} stream {} at {emulators} (collector through {})",
        env.queue_url, env.stream_name, proxy.endpoint
    ));

    let visibility = plan.visibility_timeout_sec.to_string();
    let max_in_flight = plan.max_in_flight_messages.to_string();
    let call_timeout = plan.call_timeout_sec.to_string();
    let settings = [
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
        // Both services through the proxy, also when each has an emulator of its own; each on
        // a port of its own, so on connections of its own, as on AWS.
        ("AWS_ENDPOINT_URL_SQS", proxy.endpoint.as_str()),
        ("AWS_ENDPOINT_URL_KINESIS", proxy.kinesis_endpoint.as_str()),
        ("AWS_CALL_TIMEOUT_SEC", call_timeout.as_str()),
        // Short, so that what a killed collector held comes back soon.
        ("QUEUE_VISIBILITY_TIMEOUT_SEC", visibility.as_str()),
        // An emulator publishes a few hundred records/s: a smaller set in flight keeps each
        // message's wait for its turn well inside that short timeout.
        ("MAX_IN_FLIGHT_MESSAGES", max_in_flight.as_str()),
        ("RUST_LOG", "telemetry_collector=info"),
    ];
    let started = Instant::now();
    let mut collector = Collector::start(&env, &settings, &faults, 0);

    // The fleet talks to the emulator directly: the faults are on the collector's paths only.
    let manifest = dir.join(format!("{}.manifest.jsonl", env.stream_name));
    let fleet_log = std::fs::File::create(dir.join(format!("{}-fleet.log", env.stream_name))).unwrap();
    let fleet = tokio::process::Command::new(support::workspace_binary("sensor-fleet"))
        .env_clear()
        .envs(env.binary_env(&[]))
        .args(["--queue-url", &env.queue_url])
        .args(["--count", &plan.submissions.to_string()])
        .args(["--rate", &plan.rate.to_string()])
        .args(["--seed", &plan.seed.to_string()])
        .args(["--devices", "200"])
        .args(["--invalid-share", &plan.invalid_share.to_string()])
        .args(["--max-events", &plan.max_events.to_string()])
        .args(["--manifest", &manifest.to_string_lossy()])
        .args(["--progress", "5"])
        .stderr(fleet_log)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sensor-fleet");
    let fleet = tokio::spawn(fleet.wait_with_output());

    // The queue and the proxy's counts every 5 s while the run lasts.
    let monitor = tokio::spawn({
        let watch = env.retarget(&env.queue_url, &env.stream_name);
        let faults = faults.clone();
        let progress = progress.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let (visible, in_flight) = watch.queue_counts().await;
                progress.line(&format!(
                    "t={:.0}s records published={} failed={} calls cut={} queue {visible} visible + {in_flight} in flight",
                    started.elapsed().as_secs_f64(),
                    published(&faults),
                    faults.records_failed.load(Ordering::Relaxed),
                    faults.calls_cut.load(Ordering::Relaxed),
                ));
            }
        }
    });

    // Spread the faults over the time the fleet sends, with seeded random gaps.
    let plan_faults = plan.faults(&mut rng);
    let pauses = plan.pauses(&plan_faults, &mut rng);
    let mut tally = Tally::default();
    for (fault, pause) in plan_faults.into_iter().zip(pauses) {
        // Run time between faults, not a wait for a condition.
        tokio::time::sleep(pause).await;
        match fault {
            Fault::Kill | Fault::Sigterm => {
                // Not before the current collector has published and holds messages: a stop
                // of an idle or finished collector would prove nothing.
                wait_until(
                    &format!("collector publishing with messages in flight, to {fault:?} it"),
                    Duration::from_secs(120),
                    || async { published(&faults) > collector.published_at_start && env.queue_counts().await.1 > 0 },
                )
                .await;
                let (visible, in_flight) = env.queue_counts().await;
                tally
                    .stops
                    .push((fault, run_seconds(started), published(&faults), visible, in_flight));
                if fault == Fault::Kill {
                    collector.child.start_kill().expect("SIGKILL");
                    collector.child.wait().await.expect("wait for the killed collector");
                    tally.kills += 1;
                } else {
                    sigterm(&collector.child);
                    let status = tokio::time::timeout(Duration::from_secs(60), collector.child.wait())
                        .await
                        .expect("the collector exits after SIGTERM")
                        .expect("wait for the collector");
                    assert!(status.success(), "exit after SIGTERM: {status}");
                    tally.sigterms += 1;
                }
                progress.line(&format!(
                    "t={:.1}s {fault:?} (queue {visible} visible, {in_flight} in flight)",
                    run_seconds(started)
                ));
                tokio::time::sleep(Duration::from_millis(rng.below(1_000))).await;
                collector = collector.restart(&env, &settings, &faults);
            }
            Fault::KinesisCut | Fault::SqsCut => {
                let (duration, counter) = if fault == Fault::KinesisCut {
                    (plan.kinesis_cut, &faults.kinesis_calls_cut)
                } else {
                    (plan.sqs_cut, &faults.sqs_calls_cut)
                };
                let before = counter.load(Ordering::Relaxed);
                progress.line(&format!("t={:.1}s {fault:?} for {duration:?}", run_seconds(started)));
                let set = |down| {
                    if fault == Fault::KinesisCut {
                        faults.set_kinesis_down(down)
                    } else {
                        faults.set_sqs_down(down)
                    }
                };
                set(true);
                // The length of the outage, not a wait for a condition.
                tokio::time::sleep(duration).await;
                set(false);
                assert!(
                    counter.load(Ordering::Relaxed) > before,
                    "{fault:?}: the collector made no call during the cut"
                );
                if fault == Fault::KinesisCut {
                    tally.kinesis_cuts += 1;
                } else {
                    tally.sqs_cuts += 1;
                }
            }
            Fault::KinesisBlackHole | Fault::SqsBlackHole => {
                let kinesis = fault == Fault::KinesisBlackHole;
                let (duration, counter) = if kinesis {
                    (plan.kinesis_black_hole, &faults.kinesis_calls_swallowed)
                } else {
                    (plan.sqs_black_hole, &faults.sqs_calls_swallowed)
                };
                let set = |on| {
                    if kinesis {
                        faults.set_kinesis_black_hole(on)
                    } else {
                        faults.set_sqs_black_hole(on)
                    }
                };
                let before = counter.load(Ordering::Relaxed);
                progress.line(&format!("t={:.1}s {fault:?} for {duration:?}", run_seconds(started)));
                set(true);
                // The length of the outage, not a wait for a condition.
                tokio::time::sleep(duration).await;
                set(false);
                assert!(
                    counter.load(Ordering::Relaxed) > before,
                    "{fault:?}: the black hole swallowed no call"
                );
                if kinesis {
                    tally.kinesis_black_holes += 1;
                } else {
                    tally.sqs_black_holes += 1;
                }
            }
            Fault::Latency => {
                let before = faults.calls_delayed.load(Ordering::Relaxed);
                progress.line(&format!(
                    "t={:.1}s +{:?} per call for {:?}",
                    run_seconds(started),
                    plan.latency,
                    plan.latency_for
                ));
                faults.set_latency(plan.latency);
                tokio::time::sleep(plan.latency_for).await;
                faults.set_latency(Duration::ZERO);
                assert!(
                    faults.calls_delayed.load(Ordering::Relaxed) > before,
                    "no call was delayed"
                );
                tally.latency_phases += 1;
            }
            Fault::Throttle => {
                let before = faults.records_failed.load(Ordering::Relaxed);
                progress.line(&format!(
                    "t={:.1}s {}% of PutRecords records fail for {:?}",
                    run_seconds(started),
                    plan.throttle_share * 100.0,
                    plan.throttle_for
                ));
                faults.set_put_records_failure_rate(plan.throttle_share);
                tokio::time::sleep(plan.throttle_for).await;
                faults.set_put_records_failure_rate(0.0);
                assert!(
                    faults.records_failed.load(Ordering::Relaxed) > before,
                    "no PutRecords record failed during the throttling"
                );
                tally.throttle_phases += 1;
            }
        }
    }

    let fleet = fleet.await.expect("fleet task").expect("run sensor-fleet");
    assert!(fleet.status.success(), "sensor-fleet failed: {}", fleet.status);
    let sent = tool_summary("sensor-fleet", &fleet);
    assert_eq!(sent["sent"], plan.submissions, "{sent}");
    assert_eq!(sent["failed"], 0, "{sent}");
    progress.line(&format!("t={:.1}s fleet done: {sent}", run_seconds(started)));

    wait_until("queue drained", plan.drain_timeout, || async {
        env.queue_total().await == 0
    })
    .await;
    let drained_at = run_seconds(started);
    sigterm(&collector.child);
    let status = tokio::time::timeout(Duration::from_secs(60), collector.child.wait())
        .await
        .expect("the last collector exits after SIGTERM")
        .expect("wait for the last collector");
    assert!(status.success(), "last collector's exit: {status}");
    monitor.abort();

    let verified = tokio::process::Command::new(support::workspace_binary("stream-reader"))
        .env_clear()
        .envs(env.binary_env(&[]))
        .args(["verify", "--stream", &env.stream_name])
        .args(["--manifest", &manifest.to_string_lossy()])
        .args(["--wait", "30"])
        .output()
        .await
        .expect("run stream-reader");
    let report = tool_summary("stream-reader", &verified);
    let (visible, in_flight) = env.queue_counts().await;

    progress.line(&format!("chaos soak: seed {} on {emulators}", plan.seed));
    progress.line(&format!(
        "submissions sent:          {} ({} valid, {} invalid)",
        sent["sent"], sent["valid"], sent["invalid"]
    ));
    progress.line(&format!("events expected:           {}", report["events_expected"]));
    progress.line(&format!("records read:              {}", report["records_read"]));
    progress.line(&format!("events found (unique):     {}", report["events_found"]));
    progress.line(&format!("lost:                      {}", report["events_missing"]));
    progress.line(&format!("duplicates:                {}", report["duplicates"]));
    progress.line(&format!("order violations:          {}", report["out_of_order"]));
    progress.line(&format!("invalid published:         {}", report["invalid_published"]));
    progress.line(&format!(
        "malformed / unexpected:    {} / {}",
        report["malformed"], report["unexpected"]
    ));
    progress.line(&format!(
        "messages left in queue:    {visible} visible, {in_flight} in flight"
    ));
    progress.line(&format!(
        "SIGKILLs: {}  SIGTERMs: {}  collector starts: {}",
        tally.kills, tally.sigterms, collector.starts
    ));
    for (fault, at, published, visible, in_flight) in &tally.stops {
        progress.line(&format!(
            "  {fault:?} at {at} s: {published} records published so far, queue {visible} visible + {in_flight} in flight"
        ));
    }
    progress.line(&format!(
        "Kinesis cuts: {} x {:?} ({} calls cut)  SQS cuts: {} x {:?} ({} calls cut)",
        tally.kinesis_cuts,
        plan.kinesis_cut,
        faults.kinesis_calls_cut.load(Ordering::Relaxed),
        tally.sqs_cuts,
        plan.sqs_cut,
        faults.sqs_calls_cut.load(Ordering::Relaxed)
    ));
    progress.line(&format!(
        "Kinesis black holes: {} x {:?} ({} calls swallowed)  SQS black holes: {} x {:?} ({} calls swallowed)",
        tally.kinesis_black_holes,
        plan.kinesis_black_hole,
        faults.kinesis_calls_swallowed.load(Ordering::Relaxed),
        tally.sqs_black_holes,
        plan.sqs_black_hole,
        faults.sqs_calls_swallowed.load(Ordering::Relaxed)
    ));
    progress.line(&format!(
        "latency phases: {} x +{:?} for {:?} ({} calls delayed)",
        tally.latency_phases,
        plan.latency,
        plan.latency_for,
        faults.calls_delayed.load(Ordering::Relaxed)
    ));
    progress.line(&format!(
        "throttling phases: {} x {}% for {:?} ({} records failed with ProvisionedThroughputExceeded)",
        tally.throttle_phases,
        plan.throttle_share * 100.0,
        plan.throttle_for,
        faults.records_failed.load(Ordering::Relaxed)
    ));
    progress.line(&format!(
        "records published through the proxy: {}; queue drained at {drained_at} s, run {} s",
        published(&faults),
        run_seconds(started)
    ));
    progress.line(&format!("{report}"));

    assert_eq!(tally.kills, plan.kills, "SIGKILLs done");
    assert_eq!(tally.sigterms, plan.sigterms, "SIGTERMs done");
    assert_eq!(report["submissions_valid"], sent["valid"], "{report}");
    assert_eq!(report["submissions_invalid"], sent["invalid"], "{report}");
    assert_eq!(report["events_expected"], sent["events"], "{report}");
    assert_eq!(report["events_missing"], 0, "lost events: {report}");
    assert_eq!(report["events_found"], report["events_expected"], "{report}");
    assert_eq!(report["out_of_order"], 0, "order violations: {report}");
    assert_eq!(report["invalid_published"], 0, "invalid published: {report}");
    assert_eq!(report["malformed"], 0, "{report}");
    assert_eq!(report["unexpected"], 0, "{report}");
    assert!(verified.status.success(), "stream-reader verify: {report}");
    assert_eq!((visible, in_flight), (0, 0), "messages left in the queue");
}
