//! The `telemetry-collector` daemon: reads its configuration, sets up JSON logs, and runs the
//! pipeline until SIGTERM or SIGINT. `--help` and `--version` print and exit; `check` asks the
//! endpoints about the queue and the stream and reports; `supervise` runs the shard supervisor
//! instead of the collector, and `supervise --check` asks about what the supervisor needs.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use telemetry_collector::config::{Config, HTTP_LISTEN_ADDRESS};
use telemetry_collector::credentials::PROBE_TIMEOUT;
use telemetry_collector::metrics::{COMMIT, Metrics, VERSION};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::subscriber::Interest;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, dynamic_filter_fn, filter_fn};
use tracing_subscriber::prelude::*;

const USAGE: &str = "\
telemetry-collector: consumes sensor submissions from SQS, validates them, and publishes each
event to Kinesis; deletes a message once all its events are published.

USAGE:
  telemetry-collector              run until SIGTERM or SIGINT (drains, then exits 0)
  telemetry-collector check        validate the configuration, then resolve the queue and the
                                   stream and report what matters (visibility timeout, redrive
                                   policy, stream status, mode and shards) and whether the
                                   permissions to receive, delete, change visibility, put records
                                   and send to the dead-letter queue are refused; exit 1 on a
                                   problem.
                                   Its probes change nothing: they receive, send, delete and
                                   publish nothing
  telemetry-collector healthcheck  ask this host's collector (HTTP_LISTEN_ADDRESS) for /healthz:
                                   exit 0 on 200, else 1 with the answer or the error on
                                   stderr; the container health check (the image has no curl)
  telemetry-collector supervise    run the shard supervisor instead of the collector, as one
                                   replica beside any number of collectors, until SIGTERM or
                                   SIGINT: sizes EVENTS_DATA_STREAM_NAME from its CloudWatch
                                   metrics (SHARD_* settings; resizes only with
                                   SHARD_AUTOSCALE_ENABLED=true)
  telemetry-collector supervise --check
                                   the supervisor's check: validate the configuration, then
                                   describe the stream (status, mode, shards) and make the
                                   supervisor's CloudWatch query over the window it would read
                                   now, reporting whether kinesis:DescribeStreamSummary or
                                   cloudwatch:GetMetricData is refused or fails; exit 1 on a
                                   problem. Both are reads: nothing changes
  telemetry-collector --help       print this and exit
  telemetry-collector --version    print the version and commit and exit

Configuration is read from environment variables only (docs/configuration.md); a bad
value stops the collector with one line naming it (exit 2), and so does a missing AWS
region or missing credentials. AWS endpoint, region and credentials come from the SDK's
standard variables (AWS_REGION, AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) or
an IAM role. Logs: JSON lines on stdout, level from RUST_LOG.
HTTP: /healthz, /readyz, /metrics on HTTP_LISTEN_ADDRESS (default 0.0.0.0:8080).
";

/// What the command line asks for.
enum Command {
    Run,
    Check,
    Healthcheck,
    Supervise,
    SuperviseCheck,
    Help,
    Version,
}

fn parse_args() -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut command = Command::Run;
    while let Some(arg) = parser.next()? {
        command = match arg {
            Short('h') | Long("help") => Command::Help,
            Short('V') | Long("version") => Command::Version,
            Value(word) if word == "check" => Command::Check,
            Value(word) if word == "healthcheck" => Command::Healthcheck,
            Value(word) if word == "supervise" => Command::Supervise,
            Long("check") if matches!(command, Command::Supervise) => Command::SuperviseCheck,
            _ => return Err(arg.unexpected()),
        };
    }
    Ok(command)
}

/// jemalloc: a record is made on one worker thread and often freed on the other, and glibc's
/// malloc pays for that with its arenas' locks; jemalloc's thread caches do not. Measured in
/// `docs/performance.md` (about a fifth less CPU per event at the ceiling).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: one arena (the collector has two worker threads,
/// and more arenas keep more memory), freed pages handed back to the system after 1 s rather
/// than 10 s (at 0.1 s, handing pages back and faulting them in again took 3-4% of the CPU
/// at the ceiling; at 10 s more is held than the pipeline's byte caps), and sizes above
/// 4 KiB not cached per thread. `_RJEM_MALLOC_CONF` in the environment overrides any of them.
#[unsafe(export_name = "_rjem_malloc_conf")]
static ALLOCATOR_SETTINGS: &[u8; 63] = b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache_max:4096\0";

fn main() -> ExitCode {
    let command = match parse_args() {
        Ok(command @ (Command::Run | Command::Check | Command::Supervise | Command::SuperviseCheck)) => command,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("telemetry-collector {VERSION} (commit {COMMIT})");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Healthcheck) => return healthcheck(),
        Err(e) => {
            eprintln!("telemetry-collector: {e} (see telemetry-collector --help)");
            return ExitCode::from(2);
        }
    };
    // The runtime and the signal handlers come first: a SIGTERM during start-up (say, while the
    // SDK looks for credentials or the queue cannot be reached yet) must stop the collector
    // cleanly, not kill it by the signal's default action.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("telemetry-collector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let signals = runtime.block_on(async { Signals::install() });
    runtime.spawn(signals.stop_on_first(shutdown.clone()));

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("telemetry-collector: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The region is looked up before the SDK is: without one, the SDK's default chain asks the
    // EC2 instance metadata service, which off EC2 means seconds of timeouts and screens of
    // warnings instead of one line saying what to set.
    let region = match runtime.block_on(async {
        tokio::select! {
            region = configured_region() => Some(region),
            _ = shutdown.cancelled() => None,
        }
    }) {
        None => return ExitCode::SUCCESS,
        Some(Some(region)) => region,
        Some(None) => {
            eprintln!(
                "telemetry-collector: no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION, or `region` in the AWS_PROFILE's section of ~/.aws/config)"
            );
            return ExitCode::from(2);
        }
    };
    let code = match command {
        Command::Check => runtime.block_on(check(config, region, shutdown, Checked::Collector)),
        Command::SuperviseCheck => runtime.block_on(check(config, region, shutdown, Checked::Supervisor)),
        Command::Supervise => {
            init_logs();
            runtime.block_on(supervise(config, region, shutdown))
        }
        _ => {
            init_logs();
            runtime.block_on(collect(config, region, shutdown))
        }
    };
    // The work is done (drained, or given up at the deadline): a blocking task still running,
    // such as a DNS lookup of a connection being opened, must not hold the exit. Dropping the
    // runtime would wait for it without bound, and the orchestrator would kill the process.
    runtime.shutdown_timeout(EXIT_GRACE);
    code
}

/// How long the exit waits for tasks still running once the collector has stopped.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `telemetry-collector healthcheck`: only `HTTP_LISTEN_ADDRESS` matters, so that a health
/// check never fails on another setting.
fn healthcheck() -> ExitCode {
    let raw = std::env::var(HTTP_LISTEN_ADDRESS.name).unwrap_or_else(|_| HTTP_LISTEN_ADDRESS.default.to_owned());
    let Ok(listen) = raw.trim().parse() else {
        eprintln!(
            "telemetry-collector: configuration error: HTTP_LISTEN_ADDRESS=\"{raw}\" is invalid: expected IP:PORT, e.g. 0.0.0.0:8080"
        );
        return ExitCode::from(2);
    };
    match telemetry_collector::http_server::healthcheck(listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetry-collector healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines on stdout, level from `RUST_LOG` (default `info`), never the SDK's TRACE events,
/// and none of the SDK's events while [`SDK_QUIET`] is set unless `RUST_LOG` names an SDK
/// target (`aws_...`): a start-up without credentials says so in one line.
fn init_logs() {
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let sdk_asked_for = rust_log.contains("aws_");
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Decided per event only for the SDK's call sites; the collector's own are always enabled.
    let quiet_sdk =
        dynamic_filter_fn(move |meta, _| sdk_asked_for || !(is_sdk(meta) && SDK_QUIET.load(Ordering::Relaxed)))
            .with_callsite_filter(|meta| {
                if is_sdk(meta) {
                    Interest::sometimes()
                } else {
                    Interest::always()
                }
            });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stdout)
                .with_filter(env_filter.and(filter_fn(|meta| !is_sdk_trace(meta))).and(quiet_sdk)),
        )
        .init();
}

/// Set while the SDK's configuration is loaded and its credentials probed: the default chain
/// tries every source in turn, and each one that is missing or fails (a profile file, the
/// container endpoint, instance metadata) may log a warning, screens of them, where one line
/// saying what to set is what helps. `RUST_LOG=info,aws_config=debug` shows them all.
static SDK_QUIET: AtomicBool = AtomicBool::new(false);

/// The daemon: the HTTP endpoints, the SDK, then the collector until shutdown.
async fn collect(config: Config, region: Region, shutdown: CancellationToken) -> ExitCode {
    let Some(http) = listen(&config).await else {
        return ExitCode::from(2);
    };
    let sdk_config = match sdk_config_unless_stopped(region, &shutdown).await {
        Ok(sdk_config) => sdk_config,
        Err(code) => return code,
    };
    match telemetry_collector::run(config, &sdk_config, Arc::new(Metrics::new()), shutdown, http).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "collector stopped because a stage failed");
            ExitCode::FAILURE
        }
    }
}

/// `telemetry-collector supervise`: the HTTP endpoints, the SDK, then the shard supervisor until
/// shutdown.
async fn supervise(config: Config, region: Region, shutdown: CancellationToken) -> ExitCode {
    use telemetry_collector::shard_supervisor::{self, Supervise};
    let Some(http) = listen(&config).await else {
        return ExitCode::from(2);
    };
    let sdk_config = match sdk_config_unless_stopped(region, &shutdown).await {
        Ok(sdk_config) => sdk_config,
        Err(code) => return code,
    };
    let settings = Supervise {
        stream_name: config.stream_name,
        settings: config.shard_supervisor,
        call_timeout: config.call_timeout,
    };
    shard_supervisor::run(settings, &sdk_config, shutdown, http).await;
    ExitCode::SUCCESS
}

/// The HTTP listener on HTTP_LISTEN_ADDRESS; `None` (the line printed) when it cannot be had.
async fn listen(config: &Config) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(config.http_listen_address).await {
        Ok(http) => Some(http),
        Err(e) => {
            eprintln!(
                "telemetry-collector: configuration error: HTTP_LISTEN_ADDRESS=\"{}\" cannot be listened on: {e}",
                config.http_listen_address
            );
            None
        }
    }
}

/// Whose check: `check` (the collector's) or `supervise --check`.
enum Checked {
    Collector,
    Supervisor,
}

/// `telemetry-collector check` and `supervise --check`: one line per finding on stdout, exit 1
/// when any is a failure.
async fn check(config: Config, region: Region, shutdown: CancellationToken, checked: Checked) -> ExitCode {
    use telemetry_collector::check::Verdict;
    let findings = tokio::select! {
        findings = async {
            let sdk_config = load_sdk_config(region).await?;
            Ok(match checked {
                Checked::Collector => telemetry_collector::check::run(&config, &sdk_config).await,
                Checked::Supervisor => telemetry_collector::shard_supervisor::check::run(&config, &sdk_config).await,
            })
        } => match findings {
            Ok(findings) => findings,
            Err(code) => return code,
        },
        _ = shutdown.cancelled() => return ExitCode::SUCCESS,
    };
    for finding in &findings {
        println!("{finding}");
    }
    let failed = findings.iter().filter(|f| f.verdict == Verdict::Fail).count();
    if failed == 0 {
        println!("check: ok");
        ExitCode::SUCCESS
    } else {
        println!("check: {failed} problem(s)");
        ExitCode::FAILURE
    }
}

/// [`load_sdk_config`], unless shutdown comes first (then exit 0: a signal during start-up is a
/// clean stop).
async fn sdk_config_unless_stopped(region: Region, shutdown: &CancellationToken) -> Result<SdkConfig, ExitCode> {
    tokio::select! {
        sdk_config = load_sdk_config(region) => sdk_config,
        _ = shutdown.cancelled() => Err(ExitCode::SUCCESS),
    }
}

/// The SDK's configuration with `region`, once its credentials are known to resolve: without
/// them every call would fail, and the collector would keep retrying with nothing to fix.
/// On failure prints the one line and gives the exit code (2, as for a bad setting).
async fn load_sdk_config(region: Region) -> Result<SdkConfig, ExitCode> {
    SDK_QUIET.store(true, Ordering::Relaxed);
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await;
    let probed = telemetry_collector::credentials::probe(&sdk_config, PROBE_TIMEOUT).await;
    SDK_QUIET.store(false, Ordering::Relaxed);
    match probed {
        Ok(()) => Ok(sdk_config),
        Err(e) => {
            eprintln!("telemetry-collector: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The region from `AWS_REGION` / `AWS_DEFAULT_REGION`, else from the profile files (`AWS_PROFILE`,
/// `AWS_CONFIG_FILE`): the SDK's region chain without its last link, instance metadata. So on a
/// bare EC2 instance set `AWS_REGION`; the deployment examples (`deploy/`) set it.
async fn configured_region() -> Option<Region> {
    RegionProviderChain::first_try(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        .region()
        .await
}

/// An event of the AWS SDK (aws-config, the service clients, smithy's runtime).
fn is_sdk(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("aws_")
}

/// The AWS SDK's TRACE events, which no RUST_LOG setting lets through: they print whole HTTP
/// responses and operation outputs, i.e. receipt handles (which let anyone delete the message)
/// and the sensors' data.
fn is_sdk_trace(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == tracing::Level::TRACE && is_sdk(meta)
}

/// The SIGTERM and SIGINT listeners; from their creation on, neither signal kills the process.
struct Signals {
    listeners: Option<(Signal, Signal)>,
}

impl Signals {
    fn install() -> Signals {
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Signals {
                listeners: Some((term, int)),
            },
            _ => {
                eprintln!("telemetry-collector: cannot listen for SIGTERM/SIGINT; stop the collector with SIGKILL");
                Signals { listeners: None }
            }
        }
    }

    /// Cancels `shutdown` on the first SIGTERM or SIGINT; on a second one, during the drain,
    /// exits at once with the shell's status for that signal (143, 130): an operator who
    /// signals twice does not want to wait for the drain. Messages not yet deleted come back
    /// after their visibility timeout and are published again, with the same event ids.
    async fn stop_on_first(self, shutdown: CancellationToken) {
        let Some((mut term, mut int)) = self.listeners else {
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        shutdown.cancel();
        let (name, status) = tokio::select! {
            _ = term.recv() => ("SIGTERM", 143),
            _ = int.recv() => ("SIGINT", 130),
        };
        tracing::warn!(
            signal = name,
            status,
            "second shutdown signal during the drain: exiting at once; messages not yet deleted come back after their visibility timeout"
        );
        std::process::exit(status);
    }
}
