//! `sensor-fleet`: a fleet of simulated sensors sending submissions to the SQS queue.
//!
//! A producer generates submissions from a seed at the configured rate and hands batches of up
//! to 10 to a few concurrent SendMessageBatch senders; what was accepted by SQS is tallied, shown
//! as progress on stderr, and written to the manifest that `stream-reader verify` checks the
//! stream against. The summary goes to stdout as one JSON line.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use chrono::{DateTime, Utc};
use telemetry_fleet::generate::{Fleet, FleetSettings, Generated, InvalidClass, Outcome};
use telemetry_fleet::manifest::ManifestEntry;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "\
sensor-fleet: simulated sensors sending submissions to the SQS queue

USAGE:
  sensor-fleet [send] [OPTIONS]    send submissions (the default command)
  sensor-fleet create-queue        create the queue if it does not exist, print its URL
  sensor-fleet queue-depth         print {\"visible\":N,\"in_flight\":M} for the queue

OPTIONS (send):
  --devices N          sensors in the fleet                          [default: 100]
  --rate R             submissions per second, 0 = as fast as SQS takes them [default: 50]
  --count N            stop after N submissions
  --duration SECS      stop after SECS seconds (without --count or --duration: until Ctrl-C)
  --invalid-share F    share of invalid submissions, 0 to 1           [default: 0.05]
  --max-events N       cap of events in one submission                [default: 500]
  --seed N             seed of the run; the same seed sends the same submissions [default: from the clock]
  --senders N          concurrent SendMessageBatch calls              [default: 4]
  --manifest PATH      write one JSON line per sent submission
  --progress SECS      progress line on stderr every SECS, 0 = none  [default: 1]
  --create-queue       create the queue first if it does not exist

QUEUE (every command):
  --queue-url URL      or SUBMISSIONS_QUEUE_URL
  --queue-name NAME    or SUBMISSIONS_QUEUE_NAME                      [default: submissions]

AWS endpoint, region and credentials come from the SDK's standard variables
(AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
";

/// SQS takes at most 10 entries per SendMessageBatch, and at most 256 KiB of bodies in one call
/// on older endpoints and emulators.
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;
/// Attempts at an entry SQS refused, or at a call that failed after the SDK's own retries.
const SEND_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
enum FleetError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {detail}")]
    Aws { what: String, detail: String },
    #[error("manifest {path}: {source}")]
    Manifest { path: PathBuf, source: std::io::Error },
}

impl From<lexopt::Error> for FleetError {
    fn from(e: lexopt::Error) -> Self {
        FleetError::Usage(e.to_string())
    }
}

fn aws_error(what: impl Into<String>, e: impl std::error::Error) -> FleetError {
    FleetError::Aws {
        what: what.into(),
        detail: DisplayErrorContext(e).to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Send,
    CreateQueue,
    QueueDepth,
}

#[derive(Debug, Clone)]
struct Args {
    command: Command,
    queue_url: Option<String>,
    queue_name: String,
    create_queue: bool,
    fleet: FleetSettings,
    rate: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    seed: Option<u64>,
    senders: usize,
    manifest: Option<PathBuf>,
    progress: Duration,
}

fn parse_args() -> Result<Option<Args>, FleetError> {
    use lexopt::prelude::*;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut args = Args {
        command: Command::Send,
        queue_url: env("SUBMISSIONS_QUEUE_URL"),
        queue_name: env("SUBMISSIONS_QUEUE_NAME").unwrap_or_else(|| "submissions".to_owned()),
        create_queue: false,
        fleet: FleetSettings::default(),
        rate: 50.0,
        count: None,
        duration: None,
        seed: None,
        senders: 4,
        manifest: None,
        progress: Duration::from_secs(1),
    };
    let mut command_seen = false;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("devices") => args.fleet.devices = parser.value()?.parse()?,
            Long("rate") => args.rate = parser.value()?.parse()?,
            Long("count") => args.count = Some(parser.value()?.parse()?),
            Long("duration") => args.duration = Some(Duration::from_secs_f64(parser.value()?.parse()?)),
            Long("invalid-share") => args.fleet.invalid_share = parser.value()?.parse()?,
            Long("max-events") => args.fleet.max_events = parser.value()?.parse()?,
            Long("seed") => args.seed = Some(parser.value()?.parse()?),
            Long("senders") => args.senders = parser.value()?.parse()?,
            Long("manifest") => args.manifest = Some(parser.value()?.into()),
            Long("progress") => args.progress = Duration::from_secs_f64(parser.value()?.parse()?),
            Long("create-queue") => args.create_queue = true,
            Long("queue-url") => args.queue_url = Some(parser.value()?.string()?),
            Long("queue-name") => args.queue_name = parser.value()?.string()?,
            Value(word) if !command_seen => {
                command_seen = true;
                args.command = match word.string()?.as_str() {
                    "send" => Command::Send,
                    "create-queue" => Command::CreateQueue,
                    "queue-depth" => Command::QueueDepth,
                    other => return Err(FleetError::Usage(format!("unknown command `{other}`"))),
                };
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !(0.0..=1.0).contains(&args.fleet.invalid_share) {
        return Err(FleetError::Usage("--invalid-share must be from 0 to 1".into()));
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(FleetError::Usage("--rate must be 0 or more".into()));
    }
    if args.fleet.devices == 0 || args.senders == 0 {
        return Err(FleetError::Usage("--devices and --senders must be at least 1".into()));
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    telemetry_fleet::tool_main("sensor-fleet", USAGE, parse_args(), |args| async move {
        match run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sensor-fleet: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(args: Args) -> Result<(), FleetError> {
    let sdk = aws_config::load_from_env().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let create = args.create_queue || args.command == Command::CreateQueue;
    let queue_url = resolve_queue(&sqs, &args, create).await?;
    match args.command {
        Command::CreateQueue => {
            println!("{queue_url}");
            Ok(())
        }
        Command::QueueDepth => {
            let (visible, in_flight) = queue_depth(&sqs, &queue_url).await?;
            println!("{}", serde_json::json!({"visible": visible, "in_flight": in_flight}));
            Ok(())
        }
        Command::Send => send(args, sqs, queue_url).await,
    }
}

async fn resolve_queue(sqs: &aws_sdk_sqs::Client, args: &Args, create: bool) -> Result<String, FleetError> {
    if let Some(url) = &args.queue_url {
        return Ok(url.clone());
    }
    let url = if create {
        sqs.create_queue()
            .queue_name(&args.queue_name)
            .send()
            .await
            .map_err(|e| aws_error(format!("CreateQueue {}", args.queue_name), e))?
            .queue_url
    } else {
        sqs.get_queue_url()
            .queue_name(&args.queue_name)
            .send()
            .await
            .map_err(|e| aws_error(format!("GetQueueUrl {}", args.queue_name), e))?
            .queue_url
    };
    url.ok_or_else(|| FleetError::Aws {
        what: format!("queue {}", args.queue_name),
        detail: "no URL in the answer".into(),
    })
}

async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<(u64, u64), FleetError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| aws_error("GetQueueAttributes", e))?;
    let attrs = out.attributes.unwrap_or_default();
    let get = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// What a sender reports back for one batch: each accepted submission with the time the call
/// that SQS accepted it from was made.
struct Sent {
    accepted: Vec<(Generated, DateTime<Utc>)>,
    failed: usize,
}

/// Running totals of what SQS accepted.
#[derive(Default)]
struct Tally {
    valid: u64,
    invalid: u64,
    events: u64,
    failed: u64,
    by_reason: [u64; InvalidClass::ALL.len()],
}

impl Tally {
    fn add(&mut self, g: &Generated) {
        match &g.outcome {
            Outcome::Valid(e) => {
                self.valid += 1;
                self.events += e.events.len() as u64;
            }
            Outcome::Invalid(class) => {
                self.invalid += 1;
                if let Some(i) = InvalidClass::ALL.iter().position(|c| c == class) {
                    self.by_reason[i] += 1;
                }
            }
        }
    }

    fn sent(&self) -> u64 {
        self.valid + self.invalid
    }
}

async fn send(args: Args, sqs: aws_sdk_sqs::Client, queue_url: String) -> Result<(), FleetError> {
    let seed = args
        .seed
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64);
    let mut manifest = match &args.manifest {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path).map_err(
            |source| FleetError::Manifest {
                path: path.clone(),
                source,
            },
        )?)),
        None => None,
    };
    eprintln!(
        "sensor-fleet: seed={seed} devices={} rate={}/s invalid_share={} queue={queue_url}",
        args.fleet.devices, args.rate, args.fleet.invalid_share
    );

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("sensor-fleet: interrupted; finishing the sends in flight");
            }
            stop.cancel();
        }
    });

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Sent>();
    let started = Instant::now();
    tokio::spawn(produce(
        args.clone(),
        seed,
        sqs.clone(),
        queue_url.clone(),
        done_tx,
        stop.clone(),
    ));

    let mut tally = Tally::default();
    let mut ticker = tokio::time::interval(if args.progress.is_zero() {
        Duration::from_secs(3600)
    } else {
        args.progress
    });
    ticker.tick().await;
    loop {
        tokio::select! {
            sent = done_rx.recv() => {
                let Some(sent) = sent else { break };
                tally.failed += sent.failed as u64;
                for (g, sent_at) in &sent.accepted {
                    tally.add(g);
                    if let (Some(out), Some(path)) = (manifest.as_mut(), args.manifest.as_ref()) {
                        let line = serde_json::to_string(&ManifestEntry::sent(g, *sent_at)).unwrap_or_default();
                        writeln!(out, "{line}").map_err(|source| FleetError::Manifest { path: path.clone(), source })?;
                    }
                }
            }
            _ = ticker.tick(), if !args.progress.is_zero() => {
                let depth = queue_depth(&sqs, &queue_url).await.ok();
                eprintln!("{}", progress_line(&tally, started.elapsed(), depth));
            }
        }
    }
    if let (Some(mut out), Some(path)) = (manifest, args.manifest.as_ref()) {
        out.flush().map_err(|source| FleetError::Manifest {
            path: path.clone(),
            source,
        })?;
    }
    let elapsed = started.elapsed();
    eprintln!("{}", progress_line(&tally, elapsed, None));
    let by_reason: serde_json::Map<String, serde_json::Value> = InvalidClass::ALL
        .iter()
        .zip(tally.by_reason)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.label().to_owned(), n.into()))
        .collect();
    let summary = serde_json::json!({
        "seed": seed,
        "sent": tally.sent(),
        "valid": tally.valid,
        "invalid": tally.invalid,
        "events": tally.events,
        "failed": tally.failed,
        "elapsed_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "rate": (tally.sent() as f64 / elapsed.as_secs_f64().max(0.001) * 10.0).round() / 10.0,
        "invalid_by_reason": by_reason,
    });
    eprintln!(
        "sensor-fleet: done: sent {} submissions ({} valid with {} events, {} invalid), {} failed, in {:.1} s",
        tally.sent(),
        tally.valid,
        tally.events,
        tally.invalid,
        tally.failed,
        elapsed.as_secs_f64()
    );
    println!("{summary}");
    Ok(())
}

fn progress_line(t: &Tally, elapsed: Duration, depth: Option<(u64, u64)>) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let queue = match depth {
        Some((visible, in_flight)) => format!(" queue_visible={visible} queue_in_flight={in_flight}"),
        None => String::new(),
    };
    format!(
        "sensor-fleet: t={:.0}s sent={} valid={} invalid={} events={} failed={} rate={:.1}/s{queue}",
        elapsed.as_secs_f64(),
        t.sent(),
        t.valid,
        t.invalid,
        t.events,
        t.failed,
        t.sent() as f64 / secs
    )
}

/// Generates submissions at the configured rate until the count or duration is reached or the
/// run is interrupted. Generation is sequential, so a seed always yields the same submissions in
/// the same order, whatever the senders' timing.
async fn produce(
    args: Args,
    seed: u64,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    done: mpsc::UnboundedSender<Sent>,
    stop: CancellationToken,
) {
    // A permit per batch in flight: when every sender is busy, generation waits, so a rate
    // above what SQS takes is not buffered without bound.
    let senders = Arc::new(Semaphore::new(args.senders));
    let mut fleet = Fleet::new(seed, args.fleet);
    // Batches of up to 10, at least ten times a second when the rate allows, so that the rate
    // is steady rather than a burst per second.
    let batch = if args.rate == 0.0 {
        BATCH_ENTRIES
    } else {
        ((args.rate / 10.0).ceil() as usize).clamp(1, BATCH_ENTRIES)
    };
    let period = if args.rate == 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(batch as f64 / args.rate)
    };
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut produced = 0u64;
    let mut due = started;
    loop {
        let remaining = args.count.map_or(batch as u64, |c| c.saturating_sub(produced));
        if remaining == 0 || stop.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = (batch as u64).min(remaining) as usize;
        let now = Utc::now().naive_utc();
        let submissions: Vec<Generated> = (0..n).map(|_| fleet.next(now)).collect();
        produced += n as u64;
        let permit = tokio::select! {
            permit = senders.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        tokio::spawn({
            let (sqs, queue_url, done) = (sqs.clone(), queue_url.clone(), done.clone());
            async move {
                for chunk in split_by_bytes(submissions) {
                    let sent = send_batch(&sqs, &queue_url, chunk).await;
                    if done.send(sent).is_err() {
                        break;
                    }
                }
                drop(permit);
            }
        });
        // When the senders fall behind, do not make up for lost time in one burst.
        due = (due + period).max(Instant::now() - Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.cancelled() => break,
        }
    }
}

/// Splits a batch so that no call carries more than [`BATCH_BYTES`] of bodies.
fn split_by_bytes(batch: Vec<Generated>) -> Vec<Vec<Generated>> {
    let mut chunks: Vec<Vec<Generated>> = Vec::new();
    let mut bytes = 0;
    for g in batch {
        match chunks.last_mut() {
            Some(last) if bytes + g.body.len() <= BATCH_BYTES => {
                bytes += g.body.len();
                last.push(g);
            }
            _ => {
                bytes = g.body.len();
                chunks.push(vec![g]);
            }
        }
    }
    chunks
}

/// Sends one batch, retrying the entries SQS refused; reports what was accepted.
async fn send_batch(sqs: &aws_sdk_sqs::Client, queue_url: &str, batch: Vec<Generated>) -> Sent {
    let mut pending: Vec<Generated> = batch;
    let mut accepted = Vec::with_capacity(pending.len());
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=SEND_ATTEMPTS {
        let entries: Vec<SendMessageBatchRequestEntry> = pending
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&g.body)
                    .build()
                    .ok()
            })
            .collect();
        let sent_at = Utc::now();
        match sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let failed: Vec<usize> = out.failed.iter().filter_map(|f| f.id.parse().ok()).collect();
                if let Some(f) = out.failed.first() {
                    eprintln!(
                        "sensor-fleet: SQS refused {} of {} messages (first: {} {}); attempt {attempt} of {SEND_ATTEMPTS}",
                        out.failed.len(),
                        pending.len(),
                        f.code,
                        f.message.as_deref().unwrap_or("")
                    );
                }
                let (retry, ok): (Vec<_>, Vec<_>) =
                    pending.into_iter().enumerate().partition(|(i, _)| failed.contains(i));
                accepted.extend(ok.into_iter().map(|(_, g)| (g, sent_at)));
                pending = retry.into_iter().map(|(_, g)| g).collect();
            }
            Err(e) => eprintln!(
                "sensor-fleet: SendMessageBatch failed: {}; attempt {attempt} of {SEND_ATTEMPTS}",
                DisplayErrorContext(&e)
            ),
        }
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    Sent {
        failed: pending.len(),
        accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_split_under_the_byte_limit_in_order() {
        let mut fleet = Fleet::new(1, FleetSettings::default());
        let now = Utc::now().naive_utc();
        let mut batch: Vec<Generated> = (0..10).map(|_| fleet.next(now)).collect();
        for g in batch.iter_mut().step_by(3) {
            g.body = "x".repeat(100 * 1024);
        }
        let bodies: Vec<String> = batch.iter().map(|g| g.body.clone()).collect();
        let chunks = split_by_bytes(batch);
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(chunk.iter().map(|g| g.body.len()).sum::<usize>() <= BATCH_BYTES);
        }
        let after: Vec<String> = chunks.into_iter().flatten().map(|g| g.body).collect();
        assert_eq!(after, bodies);
    }
}
