//! `stream-reader`: reads the events stream from every shard, from its oldest record, and
//! prints the events (`tail`), checks them against a `sensor-fleet` manifest (`verify`), or
//! measures how long each event took from the fleet's send to the stream (`latency`).

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::types::{Record, ShardIteratorType, StreamStatus};
use telemetry_fleet::latency::{Arrival, LatencyReport, latency};
use telemetry_fleet::manifest::{self, ManifestError};
use telemetry_fleet::verify::{Report, StreamEvent, verify};
use tokio::time::Instant;

const USAGE: &str = "\
stream-reader: read the events stream from every shard

USAGE:
  stream-reader tail [--latest] [--poll SECS]
      print every event as a JSON line on stdout, from the oldest record (or, with --latest,
      from now on), and keep following new records until interrupted
  stream-reader verify --manifest PATH [--wait SECS]
      read the stream and check it against a sensor-fleet manifest; while events are missing,
      keep reading for up to SECS [default: 0]. Prints a summary and a final JSON line; exits
      with 1 when events are missing, out of order, malformed, or from invalid submissions
  stream-reader latency --manifest PATH
      read the stream and print, over every event of the manifest's submissions, the time from
      the fleet's SendMessageBatch call (the manifest's sent_at) to the record's arrival on the
      stream (ApproximateArrivalTimestamp): min, p50, p90, p99, max, mean, and a final JSON line
  stream-reader create-stream [--shards N]
      create the stream (if it does not exist) with N shards [default: 2] and wait until active

OPTIONS (every command):
  --stream NAME        or EVENTS_DATA_STREAM_NAME                    [default: events]

AWS endpoint, region and credentials come from the SDK's standard variables
(AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
";

/// Consecutive failed GetRecords calls on one shard before giving up.
const MAX_READ_FAILURES: u32 = 10;

#[derive(Debug, thiserror::Error)]
enum ReaderError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {detail}")]
    Aws { what: String, detail: String },
    #[error("manifest {path}: {source}")]
    Manifest { path: PathBuf, source: ManifestError },
    #[error("stream {0} did not become active within 60 s")]
    NotActive(String),
}

impl From<lexopt::Error> for ReaderError {
    fn from(e: lexopt::Error) -> Self {
        ReaderError::Usage(e.to_string())
    }
}

fn aws_error(what: impl Into<String>, e: impl std::error::Error) -> ReaderError {
    ReaderError::Aws {
        what: what.into(),
        detail: DisplayErrorContext(e).to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Tail,
    Verify,
    Latency,
    CreateStream,
}

#[derive(Debug, Clone)]
struct Args {
    command: Command,
    stream: String,
    latest: bool,
    poll: Duration,
    manifest: Option<PathBuf>,
    wait: Duration,
    shards: i32,
}

fn parse_args() -> Result<Option<Args>, ReaderError> {
    use lexopt::prelude::*;
    let mut command = None;
    let mut args = Args {
        command: Command::Tail,
        stream: std::env::var("EVENTS_DATA_STREAM_NAME")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "events".to_owned()),
        latest: false,
        poll: Duration::from_secs(1),
        manifest: None,
        wait: Duration::ZERO,
        shards: 2,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("stream") => args.stream = parser.value()?.string()?,
            Long("latest") => args.latest = true,
            Long("poll") => args.poll = Duration::from_secs_f64(parser.value()?.parse()?),
            Long("manifest") => args.manifest = Some(parser.value()?.into()),
            Long("wait") => args.wait = Duration::from_secs_f64(parser.value()?.parse()?),
            Long("shards") => args.shards = parser.value()?.parse()?,
            Value(word) if command.is_none() => {
                command = Some(match word.string()?.as_str() {
                    "tail" => Command::Tail,
                    "verify" => Command::Verify,
                    "latency" => Command::Latency,
                    "create-stream" => Command::CreateStream,
                    other => return Err(ReaderError::Usage(format!("unknown command `{other}`"))),
                });
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    args.command = command
        .ok_or_else(|| ReaderError::Usage("a command is needed: tail, verify, latency or create-stream".into()))?;
    if matches!(args.command, Command::Verify | Command::Latency) && args.manifest.is_none() {
        return Err(ReaderError::Usage("verify and latency need --manifest PATH".into()));
    }
    if args.shards < 1 {
        return Err(ReaderError::Usage("--shards must be at least 1".into()));
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    telemetry_fleet::tool_main("stream-reader", USAGE, parse_args(), |args| async move {
        match run(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("stream-reader: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// Runs the command; `Ok(false)` is a verification that found problems.
async fn run(args: Args) -> Result<bool, ReaderError> {
    let sdk = aws_config::load_from_env().await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    match args.command {
        Command::CreateStream => create_stream(&kinesis, &args.stream, args.shards).await.map(|()| true),
        Command::Tail => tail(&kinesis, &args).await.map(|()| true),
        Command::Verify => {
            let entries = read_manifest(&args)?;
            let report = check(&kinesis, &args, &entries).await?;
            print_report(&report);
            Ok(report.ok)
        }
        Command::Latency => {
            let entries = read_manifest(&args)?;
            let report = measure_latency(&kinesis, &args, &entries).await?;
            print_latency(&report);
            Ok(true)
        }
    }
}

fn read_manifest(args: &Args) -> Result<Vec<manifest::ManifestEntry>, ReaderError> {
    let path = args.manifest.clone().unwrap_or_default();
    let file = std::fs::File::open(&path).map_err(|e| ReaderError::Manifest {
        path: path.clone(),
        source: e.into(),
    })?;
    manifest::read(BufReader::new(file)).map_err(|source| ReaderError::Manifest { path, source })
}

async fn create_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str, shards: i32) -> Result<(), ReaderError> {
    match kinesis
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
    {
        Ok(_) => eprintln!("stream-reader: creating stream {stream} with {shards} shards"),
        Err(e) if e.code() == Some("ResourceInUseException") => eprintln!("stream-reader: stream {stream} exists"),
        Err(e) => return Err(aws_error(format!("CreateStream {stream}"), e)),
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .ok()
            .and_then(|o| o.stream_description_summary)
            .map(|s| s.stream_status);
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ReaderError::NotActive(stream.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One shard's position in the stream.
struct ShardReader {
    shard_id: String,
    /// `None` once a closed shard has been read to its end.
    iterator: Option<String>,
    failures: u32,
}

/// Opens every shard of the stream, at its oldest record or (with `latest`) at its tip.
async fn open_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    latest: bool,
) -> Result<Vec<ShardReader>, ReaderError> {
    let mut shard_ids = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // ListShards takes either the stream name or a continuation token, not both.
        let request = match &next_token {
            Some(token) => kinesis.list_shards().next_token(token),
            None => kinesis.list_shards().stream_name(stream),
        };
        let out = request
            .send()
            .await
            .map_err(|e| aws_error(format!("ListShards {stream}"), e))?;
        shard_ids.extend(out.shards.unwrap_or_default().into_iter().map(|s| s.shard_id));
        next_token = out.next_token;
        if next_token.is_none() {
            break;
        }
    }
    let kind = if latest {
        ShardIteratorType::Latest
    } else {
        ShardIteratorType::TrimHorizon
    };
    let mut readers = Vec::with_capacity(shard_ids.len());
    for shard_id in shard_ids {
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard_id)
            .shard_iterator_type(kind.clone())
            .send()
            .await
            .map_err(|e| aws_error(format!("GetShardIterator {stream}/{shard_id}"), e))?
            .shard_iterator;
        readers.push(ShardReader {
            shard_id,
            iterator,
            failures: 0,
        });
    }
    Ok(readers)
}

impl ShardReader {
    /// One GetRecords call: the records in sequence order, and whether the shard is caught up
    /// (nothing more to read now).
    async fn poll(&mut self, kinesis: &aws_sdk_kinesis::Client) -> Result<(Vec<Record>, bool), ReaderError> {
        let Some(iterator) = self.iterator.take() else {
            return Ok((Vec::new(), true));
        };
        match kinesis
            .get_records()
            .shard_iterator(&iterator)
            .limit(10_000)
            .send()
            .await
        {
            Ok(out) => {
                self.failures = 0;
                self.iterator = out.next_shard_iterator;
                let caught_up = out.records.is_empty() && out.millis_behind_latest.unwrap_or(0) == 0;
                Ok((out.records, caught_up || self.iterator.is_none()))
            }
            Err(e) => {
                // Throttled or a passing fault: keep the iterator and try again on the next poll.
                self.iterator = Some(iterator);
                self.failures += 1;
                if self.failures >= MAX_READ_FAILURES {
                    return Err(aws_error(format!("GetRecords {}", self.shard_id), e));
                }
                eprintln!(
                    "stream-reader: GetRecords {} failed: {}; retrying",
                    self.shard_id,
                    DisplayErrorContext(&e)
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok((Vec::new(), false))
            }
        }
    }
}

/// Reads every shard until it is caught up, handing each record to `each` in order.
async fn read_until_caught_up(
    kinesis: &aws_sdk_kinesis::Client,
    readers: &mut [ShardReader],
    mut each: impl FnMut(&str, &Record),
) -> Result<(), ReaderError> {
    for reader in readers.iter_mut() {
        loop {
            let (records, caught_up) = reader.poll(kinesis).await?;
            for record in &records {
                each(&reader.shard_id, record);
            }
            if caught_up {
                break;
            }
        }
    }
    Ok(())
}

async fn tail(kinesis: &aws_sdk_kinesis::Client, args: &Args) -> Result<(), ReaderError> {
    let mut readers = open_shards(kinesis, &args.stream, args.latest).await?;
    eprintln!("stream-reader: following {} ({} shards)", args.stream, readers.len());
    loop {
        read_until_caught_up(kinesis, &mut readers, |_, record| {
            println!("{}", String::from_utf8_lossy(record.data.as_ref()));
        })
        .await?;
        tokio::time::sleep(args.poll).await;
    }
}

async fn check(
    kinesis: &aws_sdk_kinesis::Client,
    args: &Args,
    entries: &[manifest::ManifestEntry],
) -> Result<Report, ReaderError> {
    let mut readers = open_shards(kinesis, &args.stream, false).await?;
    let deadline = Instant::now() + args.wait;
    let mut events = Vec::new();
    let mut unparsed = 0;
    loop {
        read_until_caught_up(kinesis, &mut readers, |shard, record| {
            match StreamEvent::parse(shard, record.data.as_ref()) {
                Some(event) => events.push(event),
                None => unparsed += 1,
            }
        })
        .await?;
        let report = verify(entries, &events, unparsed);
        // Only missing events can still arrive; anything else is final.
        if report.events_missing == 0 || Instant::now() >= deadline {
            return Ok(report);
        }
        eprintln!(
            "stream-reader: {} of {} events found; reading again",
            report.events_found, report.events_expected
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_report(r: &Report) {
    println!(
        "submissions in manifest: {} valid, {} invalid",
        r.submissions_valid, r.submissions_invalid
    );
    println!("records read:            {}", r.records_read);
    println!("events expected:         {}", r.events_expected);
    println!("events found (unique):   {}", r.events_found);
    println!("events missing:          {}", r.events_missing);
    println!("duplicates:              {}", r.duplicates);
    println!("out-of-order submissions: {}", r.out_of_order);
    println!("events from invalid submissions: {}", r.invalid_published);
    println!("malformed records:       {}", r.malformed);
    println!("records of other submissions: {}", r.unexpected);
    println!("verdict:                 {}", if r.ok { "OK" } else { "FAILED" });
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}

/// Reads the whole stream once and measures each event of the manifest's submissions.
async fn measure_latency(
    kinesis: &aws_sdk_kinesis::Client,
    args: &Args,
    entries: &[manifest::ManifestEntry],
) -> Result<LatencyReport, ReaderError> {
    let mut readers = open_shards(kinesis, &args.stream, false).await?;
    let mut arrivals = Vec::new();
    let mut unmeasurable = 0;
    read_until_caught_up(kinesis, &mut readers, |shard, record| {
        let arrived_at = record
            .approximate_arrival_timestamp
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
        match (StreamEvent::parse(shard, record.data.as_ref()), arrived_at) {
            (Some(event), Some(arrived_at)) => arrivals.push(Arrival {
                event_id: event.event_id,
                submission_id: event.submission_id,
                arrived_at,
            }),
            _ => unmeasurable += 1,
        }
    })
    .await?;
    let mut report = latency(entries, &arrivals);
    report.unmatched += unmeasurable;
    Ok(report)
}

fn print_latency(r: &LatencyReport) {
    println!("events measured:         {}", r.events);
    println!("duplicates (left out):   {}", r.duplicates);
    println!("records not measured:    {}", r.unmatched);
    println!(
        "send to stream, ms:      min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
        r.min_ms, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms
    );
    println!("arrival time resolution: {} ms", r.arrival_resolution_ms);
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}
