//! The `telemetry-collector` daemon: reads its configuration, sets up JSON logs, and runs the
//! pipeline until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use telemetry_collector::config::Config;
use telemetry_collector::metrics::Metrics;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
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
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stdout)
                .with_filter(env_filter.and(filter_fn(|meta| !is_sdk_trace(meta)))),
        )
        .init();
    runtime.block_on(async move {
        let http = match tokio::net::TcpListener::bind(config.http_listen_address).await {
            Ok(http) => http,
            Err(e) => {
                eprintln!(
                    "telemetry-collector: configuration error: HTTP_LISTEN_ADDRESS=\"{}\" cannot be listened on: {e}",
                    config.http_listen_address
                );
                return ExitCode::from(2);
            }
        };
        let sdk_config = tokio::select! {
            sdk_config = aws_config::load_from_env() => sdk_config,
            _ = shutdown.cancelled() => return ExitCode::SUCCESS,
        };
        match telemetry_collector::run(config, &sdk_config, Arc::new(Metrics::new()), shutdown, http).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "collector stopped because a stage failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// The AWS SDK's TRACE events, which no RUST_LOG setting lets through: they print whole HTTP
/// responses and operation outputs, i.e. receipt handles (which let anyone delete the message)
/// and the sensors' data.
fn is_sdk_trace(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == tracing::Level::TRACE && meta.target().starts_with("aws_")
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

    /// Cancels `shutdown` on the first SIGTERM or SIGINT.
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
    }
}
