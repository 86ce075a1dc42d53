//! The `telemetry-collector` daemon: reads its configuration, sets up JSON logs, and runs the
//! pipeline until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use telemetry_collector::config::Config;
use telemetry_collector::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("telemetry-collector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
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
        let sdk_config = aws_config::load_from_env().await;
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        telemetry_collector::run(config, &sdk_config, Arc::new(Metrics::new()), shutdown, http).await;
        ExitCode::SUCCESS
    })
}

/// The AWS SDK's TRACE events, which no RUST_LOG setting lets through: they print whole HTTP
/// responses and operation outputs, i.e. receipt handles (which let anyone delete the message)
/// and the sensors' data.
fn is_sdk_trace(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == tracing::Level::TRACE && meta.target().starts_with("aws_")
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the collector with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
    shutdown.cancel();
}
