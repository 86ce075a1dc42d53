//! telemetry-collector: moves sensor telemetry from an SQS queue to a Kinesis stream.
//!
//! [`run`] is the daemon: resolve the queue and the stream, spawn the [`pipeline`] and what runs
//! beside it, then drain at shutdown. The data's path is the pipeline's stages, one module
//! each; the pure code between them, decoding and validating submissions and building events,
//! is the `telemetry-format` crate.
//!
//! Around the pipeline: [`aws`] builds the clients (every call with a timeout) and holds the
//! calls and limits shared by several stages, [`retry`] paces every retry, [`liveness`] tells
//! `/healthz` whether every stage that has work makes progress, [`http_server`] answers
//! `/healthz`, `/readyz` and `/metrics`, [`metrics`] gathers every stage's metrics, [`drop_log`] keeps
//! drop logs readable. The sink lanes tally what they write to each shard (metrics only).
//!
//! [`shard_supervisor`] is the other mode of the same binary (`telemetry-collector supervise`):
//! one replica beside the fleet that sizes the stream from its CloudWatch metrics.
//!
//! What is `pub` is what something outside the library uses: `main` (configuration, [`run`],
//! the check, the credentials probe, the supervisor), the integration tests and benchmarks (the
//! HTTP server and liveness started alone, the metrics sections a test reads, the supervisor's
//! pure policy driven by a simulated clock), and their settings types. Everything else is
//! `pub(crate)`: the stages' internals are not an interface.

mod answer_reader;
pub mod aws;
pub mod check;
pub mod config;
pub mod credentials;
pub mod drop_log;
pub mod http_server;
pub mod liveness;
pub mod metrics;
pub mod pipeline;
pub mod retry;
pub mod shard_supervisor;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::aws::Clients;
use crate::config::Config;
use crate::http_server::Readiness;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::pipeline::breaker::{self, Breaker};
use crate::pipeline::shard_tally::ShardTally;
use crate::pipeline::stages::Stages;

pub use crate::pipeline::stages::RunError;

/// Runs the collector until `shutdown` is cancelled, then drains what is in flight for at most
/// the configured drain timeout. The HTTP endpoints are served on `http` throughout.
///
/// A stage that ends or panics before shutdown is an error: the others drain, and the caller
/// exits non-zero so that the orchestrator replaces the replica.
pub async fn run(
    config: Config,
    sdk_config: &aws_config::SdkConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    http: TcpListener,
) -> Result<(), RunError> {
    let retry = config.retry;
    let shared = pipeline::Shared {
        clients: Clients::new(sdk_config, config.call_timeout),
        breaker: Arc::new(Breaker::new(metrics.breaker.clone())),
        liveness: Arc::new(Liveness::new(config.stall_timeout)),
        shard_tally: Arc::new(ShardTally::new(
            metrics.shards.shard_records_published.clone(),
            metrics.shards.shard_bytes_published.clone(),
        )),
        metrics,
        shutdown,
        retry,
    };
    let readiness = Arc::new(Readiness::new(shared.breaker.clone(), shared.liveness.clone()));
    let mut services = Stages::default();
    services.spawn(
        "HTTP server",
        http_server::serve(
            http,
            readiness.clone(),
            shared.metrics.http.clone(),
            shared.metrics.registry.clone(),
        ),
    );

    // Resolve: not ready until both exist; until then keep asking, with backoff, without
    // restarting.
    let (sqs, kinesis) = (&shared.clients.sqs, &shared.clients.kinesis);
    let Some(queue_url) = aws::resolve_queue_url(sqs, &config.queue, retry, &shared.shutdown).await else {
        return Ok(());
    };
    readiness.queue_resolved.store(true, Ordering::Release);
    let stream = &config.stream_name;
    // The queue's largest body is asked for while the stream is awaited: one round trip less
    // before the first receive. Shutdown need not wait for its answer.
    let max_body_bytes = async {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => aws::SQS_MAX_MESSAGE_BYTES,
            bytes = aws::queue_max_message_bytes(sqs, &queue_url) => bytes,
        }
    };
    let (found, max_body_bytes) = tokio::join!(
        aws::wait_for_stream(
            kinesis,
            stream,
            retry,
            &shared.metrics.breaker.kinesis_probes,
            &shared.shutdown,
        ),
        max_body_bytes
    );
    if found.is_none() {
        return Ok(());
    }
    readiness.stream_resolved.store(true, Ordering::Release);
    tracing::info!(queue_url, stream, "collector started");

    // Spawn the pipeline, and what runs beside it.
    let mut stages = pipeline::spawn(&config.pipeline, stream, &queue_url, max_body_bytes, &shared);
    spawn_beside_the_pipeline(&mut services, &config, &shared);

    // Run until shutdown or until a stage fails; then drain.
    let failure = supervise(&mut stages, &mut services, &shared.shutdown).await;
    readiness.stopping.store(true, Ordering::Release);
    drain(stages, config.drain_timeout, &shared.metrics).await;
    failure.map_or(Ok(()), Err)
}

/// What runs beside the pipeline once the stream is found: the breaker's probe and the
/// throughput log.
fn spawn_beside_the_pipeline(services: &mut Stages, config: &Config, shared: &pipeline::Shared) {
    let (kinesis, stream, retry) = (&shared.clients.kinesis, &config.stream_name, shared.retry);
    services.spawn(
        "circuit breaker probe",
        breaker::probe(
            kinesis.clone(),
            stream.clone(),
            shared.breaker.clone(),
            retry,
            shared.metrics.breaker.clone(),
            shared.metrics.sink.events_in_flight.clone(),
            shared.shutdown.clone(),
        ),
    );
    services.spawn(
        "throughput log",
        log_stats(shared.metrics.clone(), config.stats_interval),
    );
}

/// Waits for shutdown, or for a stage to end before it; in the latter case logs it, starts the
/// shutdown and returns it.
async fn supervise(stages: &mut Stages, services: &mut Stages, shutdown: &CancellationToken) -> Option<RunError> {
    let stopped = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some(stopped) = stages.join_next() => Some(stopped),
        Some(stopped) = services.join_next() => Some(stopped),
    };
    // Some stages end by themselves at shutdown: only an end before it is a failure.
    let failure = stopped
        .filter(|(_, result)| !shutdown.is_cancelled() || result.as_ref().is_err_and(|e| e.is_panic()))
        .map(|(stage, result)| RunError::new(stage, result))?;
    tracing::error!(
        error = %failure,
        "a pipeline stage is gone; stopping so that the replica is replaced (exit status 1)"
    );
    shutdown.cancel();
    Some(failure)
}

/// Lets the stages finish what they hold for at most `timeout`: receivers stop, messages not
/// started are given back, the rest are published and deleted.
async fn drain(mut stages: Stages, timeout: Duration, metrics: &Metrics) {
    tracing::info!(
        drain_timeout_s = timeout.as_secs(),
        "stopping: no more receiving; giving back messages not started, finishing the rest"
    );
    let drained = tokio::time::timeout(timeout, async { while stages.join_next().await.is_some() {} }).await;
    let s = metrics.snapshot();
    match drained {
        Ok(()) => tracing::info!(events_published = s.events_published, "stopped after draining"),
        // Whatever is still unpublished keeps its message in the queue: nothing is lost, those
        // messages are delivered again after their visibility timeout.
        Err(_) => tracing::warn!(
            messages_in_flight = s.messages_in_flight,
            events_in_flight = s.events_in_flight,
            "drain timeout reached; unfinished messages stay in the queue and will be delivered again"
        ),
    }
}

/// Logs one summary line per interval: what moved since the last line, and what is in flight.
async fn log_stats(metrics: Arc<Metrics>, interval: Duration) {
    let mut last = metrics.snapshot();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = metrics.snapshot();
        // Drop counts whose interval ended in a quiet spell get their line here.
        drop_log::flush();
        tracing::info!(
            interval_s = interval.as_secs(),
            messages_received = now.messages_received - last.messages_received,
            submissions_valid = now.submissions_valid - last.submissions_valid,
            submissions_invalid = now.submissions_invalid - last.submissions_invalid,
            events_published = now.events_published - last.events_published,
            messages_deleted = now.deletes_ok - last.deletes_ok,
            deletes_failed = now.deletes_failed - last.deletes_failed,
            messages_in_flight = now.messages_in_flight,
            events_in_flight = now.events_in_flight,
            bytes_in_flight = metrics.in_flight.bytes_in_flight.get(),
            breaker_open = metrics.breaker.breaker_open.get() == 1,
            "throughput"
        );
        last = now;
    }
}
