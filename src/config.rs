//! Configuration: every setting read once at start from the environment, typed, range-checked.
//!
//! [`SETTINGS`] is the one list of variables with their defaults and meaning; the table in
//! `docs/configuration.md` is written from it (a test checks that they agree). A bad value stops
//! the program with one line naming the variable, the value and what is allowed. AWS endpoint, region and
//! credentials are not here: the SDK reads its own standard variables (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};

pub(crate) use crate::aws::QueueRef;
use crate::pipeline::deleter::DeleterSettings;
use crate::pipeline::sink::SinkSettings;
use crate::pipeline::source::SourceSettings;
use crate::pipeline::visibility::VisibilitySettings;
use crate::pipeline::{self, InFlightLimits};
use crate::retry::RetryPolicy;
use crate::shard_supervisor::{Policy, SupervisorSettings};
use telemetry_format::event::PartitionKey;
use telemetry_format::submission::TimeBounds;

/// One environment variable the collector reads.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub allowed: &'static str,
    pub about: &'static str,
}

const fn setting(name: &'static str, default: &'static str, allowed: &'static str, about: &'static str) -> Setting {
    Setting {
        name,
        default,
        allowed,
        about,
    }
}

pub(crate) const SUBMISSIONS_QUEUE_NAME: Setting = setting(
    "SUBMISSIONS_QUEUE_NAME",
    "submissions",
    "an SQS queue name",
    "Queue to consume; resolved to its URL with GetQueueUrl.",
);
pub(crate) const SUBMISSIONS_QUEUE_URL: Setting = setting(
    "SUBMISSIONS_QUEUE_URL",
    "",
    "a queue URL",
    "Queue URL; when set, used as is instead of SUBMISSIONS_QUEUE_NAME.",
);
pub(crate) const EVENTS_DATA_STREAM_NAME: Setting = setting(
    "EVENTS_DATA_STREAM_NAME",
    "events",
    "a Kinesis stream name",
    "Stream that receives one record per event.",
);
pub(crate) const DATA_STREAM_PARTITION_KEY: Setting = setting(
    "DATA_STREAM_PARTITION_KEY",
    "submission_id",
    "`submission_id` or `device_id`",
    "Which id is the partition key; either keeps a submission's events on one shard.",
);
pub(crate) const QUEUE_WAIT_TIME_SEC: Setting = setting(
    "QUEUE_WAIT_TIME_SEC",
    "20",
    "0-20",
    "Long-poll wait of each ReceiveMessage call.",
);
pub(crate) const QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST: Setting = setting(
    "QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST",
    "10",
    "1-10",
    "Messages asked for per ReceiveMessage call.",
);
pub(crate) const QUEUE_VISIBILITY_TIMEOUT_SEC: Setting = setting(
    "QUEUE_VISIBILITY_TIMEOUT_SEC",
    "60",
    "1-43200, above both flush and delete intervals",
    "Visibility timeout set on receive and by each extension; messages still being published are extended at half of it.",
);
pub(crate) const QUEUE_VISIBILITY_MAX_TOTAL_SEC: Setting = setting(
    "QUEUE_VISIBILITY_MAX_TOTAL_SEC",
    "3600",
    "QUEUE_VISIBILITY_TIMEOUT_SEC-43200",
    "Longest a message is kept hidden in total: while its events are still being published, its visibility is extended (at half the timeout) up to this many seconds from receipt.",
);
pub const QUEUE_RECEIVERS: Setting = setting(
    "QUEUE_RECEIVERS",
    "48",
    "1-64",
    "Concurrent long-poll loops. Each brings at most 10 messages per round trip, so this many keep receiving ahead of the sink at up to ~80 ms of network round-trip time; on an empty queue each costs one ReceiveMessage call per QUEUE_WAIT_TIME_SEC.",
);
pub(crate) const QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC: Setting = setting(
    "QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC",
    "0.1",
    "0.01-300 (decimals allowed)",
    "Longest a confirmed receipt waits before a DeleteMessageBatch call. A finished message keeps its slot of MAX_IN_FLIGHT_MESSAGES until its delete is answered, and is delivered again if the replica dies before; longer intervals make fewer calls when traffic is light.",
);
pub(crate) const QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE: Setting = setting(
    "QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE",
    "10",
    "1-10",
    "Receipts per DeleteMessageBatch call.",
);
pub(crate) const QUEUE_DELETE_CONCURRENCY: Setting = setting(
    "QUEUE_DELETE_CONCURRENCY",
    "64",
    "1-256",
    "DeleteMessageBatch calls in flight at once, so that deleting keeps up whatever the round-trip time.",
);
pub(crate) const QUEUE_VISIBILITY_CONCURRENCY: Setting = setting(
    "QUEUE_VISIBILITY_CONCURRENCY",
    "8",
    "1-256",
    "ChangeMessageVisibilityBatch calls (extensions) in flight at once.",
);
pub(crate) const DATA_STREAM_FLUSH_INTERVAL_SEC: Setting = setting(
    "DATA_STREAM_FLUSH_INTERVAL_SEC",
    "1",
    "0.01-300 (decimals allowed)",
    "Longest an event waits in a lane's buffer while the lane is free to send it: the bound on DATA_STREAM_LINGER_MS.",
);
pub(crate) const DATA_STREAM_LINGER_MS: Setting = setting(
    "DATA_STREAM_LINGER_MS",
    "0",
    "0-300000, at most DATA_STREAM_FLUSH_INTERVAL_SEC",
    "How long a lane with no PutRecords call in flight waits for more events before it sends. 0: at once; what arrives while a call is in flight goes in the next call. After a call that left at least 3/4 full, the lane waits for a full call for up to half that call's duration (never past DATA_STREAM_FLUSH_INTERVAL_SEC), whatever this setting.",
);
pub(crate) const DATA_STREAM_MAX_BUFFER_SIZE: Setting = setting(
    "DATA_STREAM_MAX_BUFFER_SIZE",
    "500",
    "1-500",
    "Records per PutRecords call (the call is sent as soon as this many are buffered).",
);
pub(crate) const DATA_STREAM_MAX_REQUEST_BYTES: Setting = setting(
    "DATA_STREAM_MAX_REQUEST_BYTES",
    "5242880",
    "1048576-10485760",
    "Bytes (data + partition keys) per PutRecords call: 5 MiB suits emulators and older endpoints, AWS takes 10 MiB.",
);
pub(crate) const DATA_STREAM_MAX_RECORD_BYTES: Setting = setting(
    "DATA_STREAM_MAX_RECORD_BYTES",
    "1048576",
    "1024-10485760, at most DATA_STREAM_MAX_REQUEST_BYTES",
    "Largest record (data + partition key) the stream accepts; a submission with a larger event is dropped as `record_too_large`.",
);
pub const DATA_STREAM_CONCURRENCY: Setting = setting(
    "DATA_STREAM_CONCURRENCY",
    "8",
    "1-64",
    "PutRecords calls in flight at once. Events are spread over this many sender lanes by partition key, so one submission's events always share a lane and stay in order.",
);
pub(crate) const MAX_IN_FLIGHT_MESSAGES: Setting = setting(
    "MAX_IN_FLIGHT_MESSAGES",
    "2000",
    "1-100000, at least QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST",
    "Messages received and not yet finished: a message counts until its delete is answered (or it is given up); receiving waits at the cap.",
);
pub(crate) const MAX_IN_FLIGHT_BYTES: Setting = setting(
    "MAX_IN_FLIGHT_BYTES",
    "16777216",
    "1048576-2147483648",
    "Memory for messages in flight, twice over: up to this many bytes of raw bodies received and not yet decoded (each receive reserves 32 KiB per message it asks for before its call, then its answer's Content-Length when the answer's headers arrive, before the body is read; it asks for no more of the queue's MaximumMessageSize than this holds), and up to this many bytes of what decoding and the records take (40 per body byte is reserved before a body is decoded, then what its records take: data + partition key + 64 per record, held until they are published). A message that does not fit waits, and receiving with it; a message larger than the cap goes through alone. Memory stays under about twice this plus 35 MiB.",
);
pub(crate) const DEAD_LETTER_QUEUE_URL: Setting = setting(
    "DEAD_LETTER_QUEUE_URL",
    "",
    "a queue URL, or unset (off)",
    "When set, each invalid submission's raw body is sent there (attributes `rejection_reason`, `rejection_detail`, `source_message_id`) before the original is deleted; if that send fails, the original stays in the queue.",
);
pub const HTTP_LISTEN_ADDRESS: Setting = setting(
    "HTTP_LISTEN_ADDRESS",
    "0.0.0.0:8080",
    "IP:PORT",
    "Address of the HTTP server for `/healthz`, `/readyz` and `/metrics`.",
);
pub(crate) const RETRY_INITIAL_BACKOFF_MS: Setting = setting(
    "RETRY_INITIAL_BACKOFF_MS",
    "100",
    "1-60000",
    "First delay before retrying a failed AWS call or failed records; doubles per attempt, with jitter.",
);
pub(crate) const RETRY_MAX_BACKOFF_MS: Setting = setting(
    "RETRY_MAX_BACKOFF_MS",
    "10000",
    "1-600000, at least RETRY_INITIAL_BACKOFF_MS",
    "Cap of the retry delay.",
);
pub(crate) const AWS_CALL_TIMEOUT_SEC: Setting = setting(
    "AWS_CALL_TIMEOUT_SEC",
    "10",
    "0.1-300 (decimals allowed)",
    "Longest one attempt of any SQS or Kinesis call may take (ReceiveMessage: its long-poll wait plus this). A call still unanswered then is a failed call: its connection is dropped and it is retried with backoff on a new one.",
);
pub(crate) const STALL_TIMEOUT_SEC: Setting = setting(
    "STALL_TIMEOUT_SEC",
    "120",
    "1-3600, above 2 x (longest wait + AWS_CALL_TIMEOUT_SEC) + RETRY_MAX_BACKOFF_MS, where the longest wait is the largest of QUEUE_WAIT_TIME_SEC, DATA_STREAM_FLUSH_INTERVAL_SEC and QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC",
    "`/healthz` answers 503 when a pipeline stage that has work has made no progress (no call finished, however it ended) for this long, so that a liveness probe replaces a stuck replica. A stage that waits on its own interval (a long poll, a lane's flush interval, the deleter's interval) is not stalled, so the least value leaves room for the longest of them. Unset, it is 120 s or that least value plus 10 s, whichever is longer.",
);
/// Kept above the least `STALL_TIMEOUT_SEC` when it is not set, so that other settings alone
/// never make the default invalid.
const STALL_TIMEOUT_ROOM: Duration = Duration::from_secs(10);

pub(crate) const TIME_CREATED_NOT_BEFORE: Setting = setting(
    "TIME_CREATED_NOT_BEFORE",
    "2000-01-01T00:00:00",
    "a date-time YYYY-MM-DDTHH:MM:SS",
    "Earliest plausible `time_created`.",
);
pub(crate) const TIME_CREATED_MAX_AHEAD_HOURS: Setting = setting(
    "TIME_CREATED_MAX_AHEAD_HOURS",
    "26",
    "0-8760",
    "How far `time_created` may lead backend UTC (device local time leads by up to 14 h).",
);
pub(crate) const SHUTDOWN_DRAIN_TIMEOUT_SEC: Setting = setting(
    "SHUTDOWN_DRAIN_TIMEOUT_SEC",
    "20",
    "1-3600",
    "On SIGTERM/SIGINT, how long to keep publishing and deleting what is in flight before exiting.",
);
pub(crate) const STATS_LOG_INTERVAL_SEC: Setting = setting(
    "STATS_LOG_INTERVAL_SEC",
    "30",
    "1-86400",
    "Period of the info log line that summarises throughput.",
);
pub(crate) const LOG_INVALID_BODY_SAMPLES: Setting = setting(
    "LOG_INVALID_BODY_SAMPLES",
    "false",
    "`true` or `false`",
    "When `true`, the debug line of each dropped invalid submission carries the first 64 characters of its body. Bodies hold sensor data (command lines can hold secrets): info lines never carry them, and debug lines only with this on.",
);
pub(crate) const SHARD_SUPERVISOR_INTERVAL_SEC: Setting = setting(
    "SHARD_SUPERVISOR_INTERVAL_SEC",
    "60",
    "1-3600",
    "Supervise mode: how often the shard supervisor reads the stream's state and its last SHARD_SUPERVISOR_WINDOWS minutes of CloudWatch metrics, exports the utilisation (the larger of records/s / 1000 and bytes/s / 1 MiB per open shard) and decides whether the shard count fits.",
);
pub(crate) const SHARD_SUPERVISOR_WINDOWS: Setting = setting(
    "SHARD_SUPERVISOR_WINDOWS",
    "5",
    "1-1440",
    "Supervise mode: consecutive 1-minute CloudWatch periods the stream's mean utilisation must all be above or all below the target band before a resize is recommended (or made). A window with any point missing decides nothing.",
);
pub(crate) const SHARD_SUPERVISOR_METRICS_DELAY_SEC: Setting = setting(
    "SHARD_SUPERVISOR_METRICS_DELAY_SEC",
    "180",
    "0-3600",
    "Supervise mode: how far behind now the window of minutes read from CloudWatch ends, so that Kinesis's metrics (delivered a minute or two late) are there; a point still missing is unknown, never zero traffic.",
);
pub(crate) const SHARD_UTILISATION_TARGET_LOW: Setting = setting(
    "SHARD_UTILISATION_TARGET_LOW",
    "30",
    "0-100 (percent, decimals allowed), below SHARD_UTILISATION_TARGET_HIGH",
    "Supervise mode: lower bound of the target band of mean shard utilisation; persistently below it (and no shard above the band, nothing throttled), fewer shards are recommended.",
);
pub(crate) const SHARD_UTILISATION_TARGET_HIGH: Setting = setting(
    "SHARD_UTILISATION_TARGET_HIGH",
    "80",
    "0.01-100 (percent, decimals allowed)",
    "Supervise mode: upper bound of the target band; persistently above it, more shards are recommended. A recommendation aims at the middle of the band.",
);
pub(crate) const SHARD_AUTOSCALE_ENABLED: Setting = setting(
    "SHARD_AUTOSCALE_ENABLED",
    "false",
    "`true` or `false`",
    "Supervise mode: when `true`, the recommended shard count is applied with UpdateShardCount (uniform scaling) on provisioned ACTIVE streams, never on on-demand ones, at most 10 calls per 24 hours; it needs `kinesis:UpdateShardCount`. The collectors never resize.",
);
pub(crate) const SHARD_COUNT_MIN: Setting = setting(
    "SHARD_COUNT_MIN",
    "1",
    "1-10000",
    "Supervise mode: fewest shards the supervisor recommends or sets.",
);
pub(crate) const SHARD_COUNT_MAX: Setting = setting(
    "SHARD_COUNT_MAX",
    "16",
    "SHARD_COUNT_MIN-10000",
    "Supervise mode: most shards the supervisor recommends or sets.",
);
pub(crate) const SHARD_RESIZE_COOLDOWN_SEC: Setting = setting(
    "SHARD_RESIZE_COOLDOWN_SEC",
    "3600",
    "0-86400",
    "Supervise mode: least time between two UpdateShardCount calls (besides, AWS allows 10 per stream per rolling 24 hours, which the supervisor never exceeds).",
);

/// Every setting, in the order of the table in `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[
    SUBMISSIONS_QUEUE_NAME,
    SUBMISSIONS_QUEUE_URL,
    EVENTS_DATA_STREAM_NAME,
    DATA_STREAM_PARTITION_KEY,
    QUEUE_WAIT_TIME_SEC,
    QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST,
    QUEUE_VISIBILITY_TIMEOUT_SEC,
    QUEUE_VISIBILITY_MAX_TOTAL_SEC,
    QUEUE_RECEIVERS,
    QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC,
    QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE,
    QUEUE_DELETE_CONCURRENCY,
    QUEUE_VISIBILITY_CONCURRENCY,
    DATA_STREAM_FLUSH_INTERVAL_SEC,
    DATA_STREAM_LINGER_MS,
    DATA_STREAM_MAX_BUFFER_SIZE,
    DATA_STREAM_MAX_REQUEST_BYTES,
    DATA_STREAM_MAX_RECORD_BYTES,
    DATA_STREAM_CONCURRENCY,
    MAX_IN_FLIGHT_MESSAGES,
    MAX_IN_FLIGHT_BYTES,
    DEAD_LETTER_QUEUE_URL,
    HTTP_LISTEN_ADDRESS,
    RETRY_INITIAL_BACKOFF_MS,
    RETRY_MAX_BACKOFF_MS,
    AWS_CALL_TIMEOUT_SEC,
    STALL_TIMEOUT_SEC,
    TIME_CREATED_NOT_BEFORE,
    TIME_CREATED_MAX_AHEAD_HOURS,
    SHUTDOWN_DRAIN_TIMEOUT_SEC,
    STATS_LOG_INTERVAL_SEC,
    LOG_INVALID_BODY_SAMPLES,
    SHARD_SUPERVISOR_INTERVAL_SEC,
    SHARD_SUPERVISOR_WINDOWS,
    SHARD_SUPERVISOR_METRICS_DELAY_SEC,
    SHARD_UTILISATION_TARGET_LOW,
    SHARD_UTILISATION_TARGET_HIGH,
    SHARD_AUTOSCALE_ENABLED,
    SHARD_COUNT_MIN,
    SHARD_COUNT_MAX,
    SHARD_RESIZE_COOLDOWN_SEC,
];

/// A setting whose value is not allowed. Its `Display` is the one line printed at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is invalid: expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: String,
}

/// The whole configuration: one section per stage (each stage's own settings type), and what
/// the daemon around them uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub queue: QueueRef,
    pub stream_name: String,
    /// Receivers, sink lanes, deleter, visibility keeper, in-flight caps, dead letters.
    pub pipeline: pipeline::Settings,
    pub shard_supervisor: SupervisorSettings,
    /// The backoff of every retry (`RETRY_*_BACKOFF_MS`).
    pub retry: RetryPolicy,
    /// Longest one SQS or Kinesis call may take (`AWS_CALL_TIMEOUT_SEC`).
    pub call_timeout: Duration,
    /// Longest a stage with work may go without progress before `/healthz` fails.
    pub stall_timeout: Duration,
    pub drain_timeout: Duration,
    pub stats_interval: Duration,
    pub http_listen_address: SocketAddr,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        // envy lower-cases the variable names it collects.
        let vars: HashMap<String, String> = envy::from_env().unwrap_or_default();
        Config::from_vars(&vars)
    }

    /// Builds the configuration from variables keyed by lower-case name (as envy gives them),
    /// so that tests need not touch the process environment.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let env = Vars(vars);
        let queue = match env.raw(&SUBMISSIONS_QUEUE_URL) {
            url if !url.is_empty() => QueueRef::Url(url.to_owned()),
            _ => QueueRef::Name(env.name(&SUBMISSIONS_QUEUE_NAME, 80)?),
        };
        let retry_initial_ms: u64 = env.int(&RETRY_INITIAL_BACKOFF_MS, 1, 60_000)?;
        let retry = RetryPolicy {
            initial: Duration::from_millis(retry_initial_ms),
            max: Duration::from_millis(env.int(&RETRY_MAX_BACKOFF_MS, retry_initial_ms, 600_000)?),
        };
        let pipeline = pipeline_settings(&env)?;
        let call_timeout = env.seconds_in(&AWS_CALL_TIMEOUT_SEC, 0.1, 300.0)?;
        // A stage may wait on its own interval before it makes its call: the long poll, a lane's
        // flush interval, the deleter's interval.
        let longest_wait = pipeline
            .source
            .wait_time
            .max(pipeline.sink.flush_interval)
            .max(pipeline.deleter.interval);
        let stall_timeout = stall_timeout(&env, longest_wait, call_timeout, retry.max)?;
        Ok(Config {
            queue,
            stream_name: env.name(&EVENTS_DATA_STREAM_NAME, 128)?,
            pipeline,
            shard_supervisor: supervisor_settings(&env)?,
            retry,
            call_timeout,
            stall_timeout,
            drain_timeout: Duration::from_secs(env.int(&SHUTDOWN_DRAIN_TIMEOUT_SEC, 1, 3600)?),
            stats_interval: Duration::from_secs(env.int(&STATS_LOG_INTERVAL_SEC, 1, 86_400)?),
            http_listen_address: {
                let raw = env.raw(&HTTP_LISTEN_ADDRESS);
                raw.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| env.invalid(&HTTP_LISTEN_ADDRESS, raw, "IP:PORT, e.g. 0.0.0.0:8080"))?
            },
        })
    }
}

/// The pipeline's sections, and the rules that tie one stage's settings to another's.
fn pipeline_settings(env: &Vars) -> Result<pipeline::Settings, ConfigError> {
    let visibility_secs: u64 = env.int(&QUEUE_VISIBILITY_TIMEOUT_SEC, 1, 43_200)?;
    let visibility = VisibilitySettings {
        timeout: Duration::from_secs(visibility_secs),
        max_total: Duration::from_secs(env.int(&QUEUE_VISIBILITY_MAX_TOTAL_SEC, visibility_secs, 43_200)?),
        concurrency: env.int(&QUEUE_VISIBILITY_CONCURRENCY, 1, 256)?,
    };
    let deleter = DeleterSettings {
        batch_size: env.int(&QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE, 1, 10)?,
        interval: env.seconds(&QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC)?,
        concurrency: env.int(&QUEUE_DELETE_CONCURRENCY, 1, 256)?,
    };
    let max_request_bytes: usize = env.int(&DATA_STREAM_MAX_REQUEST_BYTES, 1_048_576, 10_485_760)?;
    let sink = SinkSettings {
        lanes: env.int(&DATA_STREAM_CONCURRENCY, 1, 64)?,
        max_records: env.int(&DATA_STREAM_MAX_BUFFER_SIZE, 1, 500)?,
        max_request_bytes,
        flush_interval: env.seconds(&DATA_STREAM_FLUSH_INTERVAL_SEC)?,
        linger: Duration::from_millis(env.int(&DATA_STREAM_LINGER_MS, 0, 300_000)?),
    };
    if sink.linger > sink.flush_interval {
        return Err(env.invalid(
            &DATA_STREAM_LINGER_MS,
            env.raw(&DATA_STREAM_LINGER_MS),
            "0-300000 and at most DATA_STREAM_FLUSH_INTERVAL_SEC",
        ));
    }
    // A receipt must still be valid when the message's events are flushed and its delete is
    // sent, or the message comes back and is published twice.
    if visibility.timeout <= sink.flush_interval.max(deleter.interval) {
        return Err(env.invalid(
            &QUEUE_VISIBILITY_TIMEOUT_SEC,
            &visibility_secs.to_string(),
            "a value above DATA_STREAM_FLUSH_INTERVAL_SEC and QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC",
        ));
    }
    let source = SourceSettings {
        receivers: env.int(&QUEUE_RECEIVERS, 1, 64)?,
        wait_time: Duration::from_secs(env.int(&QUEUE_WAIT_TIME_SEC, 0, 20)?),
        batch_size: env.int(&QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST, 1, 10)?,
        visibility_timeout: visibility.timeout,
        delete_margin: deleter.interval,
        time_bounds: time_bounds(env)?,
        partition_key: match env.raw(&DATA_STREAM_PARTITION_KEY) {
            "submission_id" => PartitionKey::SubmissionId,
            "device_id" => PartitionKey::DeviceId,
            other => return Err(env.invalid(&DATA_STREAM_PARTITION_KEY, other, "submission_id or device_id")),
        },
        max_record_bytes: env.int(&DATA_STREAM_MAX_RECORD_BYTES, 1024, max_request_bytes)?,
        log_body_samples: env.boolean(&LOG_INVALID_BODY_SAMPLES)?,
    };
    let in_flight = InFlightLimits {
        messages: env.int(&MAX_IN_FLIGHT_MESSAGES, source.batch_size as usize, 100_000)?,
        bytes: env.int(&MAX_IN_FLIGHT_BYTES, 1_048_576, 2_147_483_648)?,
    };
    let dead_letter_queue_url = match env.raw(&DEAD_LETTER_QUEUE_URL).trim() {
        "" => None,
        url if url.starts_with("http://") || url.starts_with("https://") => Some(url.to_owned()),
        other => return Err(env.invalid(&DEAD_LETTER_QUEUE_URL, other, "an http(s) queue URL, or unset")),
    };
    Ok(pipeline::Settings {
        source,
        sink,
        deleter,
        visibility,
        in_flight,
        dead_letter_queue_url,
    })
}

fn time_bounds(env: &Vars) -> Result<TimeBounds, ConfigError> {
    let raw = env.raw(&TIME_CREATED_NOT_BEFORE);
    let not_before = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
        .map_err(|_| env.invalid(&TIME_CREATED_NOT_BEFORE, raw, TIME_CREATED_NOT_BEFORE.allowed))?;
    let max_ahead_hours: i64 = env.int(&TIME_CREATED_MAX_AHEAD_HOURS, 0, 8760)?;
    Ok(TimeBounds {
        not_before,
        max_ahead: TimeDelta::hours(max_ahead_hours),
    })
}

/// `STALL_TIMEOUT_SEC`: a stage in a healthy retry loop finishes a call at least every
/// ((longest wait + call) x 2 + longest backoff); the timeout must be above that.
fn stall_timeout(
    env: &Vars,
    longest_wait: Duration,
    call_timeout: Duration,
    max_backoff: Duration,
) -> Result<Duration, ConfigError> {
    let least = (longest_wait + call_timeout) * 2 + max_backoff;
    if !env.is_set(&STALL_TIMEOUT_SEC) {
        // Unset: the default, or more when long calls and backoffs need more.
        let default = Duration::from_secs(STALL_TIMEOUT_SEC.default.parse().unwrap_or(120));
        return Ok(default.max(least + STALL_TIMEOUT_ROOM));
    }
    let secs: u64 = env.int(&STALL_TIMEOUT_SEC, 1, 3600)?;
    if Duration::from_secs(secs) <= least {
        return Err(env.invalid(
            &STALL_TIMEOUT_SEC,
            &secs.to_string(),
            &format!(
                "an integer from 1 to 3600 above 2 x (the longest of QUEUE_WAIT_TIME_SEC, DATA_STREAM_FLUSH_INTERVAL_SEC, QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC; plus AWS_CALL_TIMEOUT_SEC) + RETRY_MAX_BACKOFF_MS, here {:.1} s",
                least.as_secs_f64()
            ),
        ));
    }
    Ok(Duration::from_secs(secs))
}

fn supervisor_settings(env: &Vars) -> Result<SupervisorSettings, ConfigError> {
    let band_high = env.percent(&SHARD_UTILISATION_TARGET_HIGH, 0.01, 100.0)?;
    let band_low = env.percent(&SHARD_UTILISATION_TARGET_LOW, 0.0, 100.0)?;
    // The band must have room: a recommendation aims at its middle.
    if band_low >= band_high {
        let raw = env.raw(&SHARD_UTILISATION_TARGET_LOW);
        return Err(env.invalid(
            &SHARD_UTILISATION_TARGET_LOW,
            raw,
            "a percentage below SHARD_UTILISATION_TARGET_HIGH",
        ));
    }
    let min_shards: u32 = env.int(&SHARD_COUNT_MIN, 1, 10_000)?;
    Ok(SupervisorSettings {
        interval: Duration::from_secs(env.int(&SHARD_SUPERVISOR_INTERVAL_SEC, 1, 3600)?),
        metrics_delay: Duration::from_secs(env.int(&SHARD_SUPERVISOR_METRICS_DELAY_SEC, 0, 3600)?),
        policy: Policy {
            band_low: band_low / 100.0,
            band_high: band_high / 100.0,
            windows: env.int(&SHARD_SUPERVISOR_WINDOWS, 1, 1440)?,
            min_shards,
            max_shards: env.int(&SHARD_COUNT_MAX, min_shards, 10_000)?,
            cooldown: Duration::from_secs(env.int(&SHARD_RESIZE_COOLDOWN_SEC, 0, 86_400)?),
            autoscale: env.boolean(&SHARD_AUTOSCALE_ENABLED)?,
        },
    })
}

struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    /// True when the variable is set (to anything).
    fn is_set(&self, s: &Setting) -> bool {
        self.0.contains_key(&s.name.to_ascii_lowercase())
    }

    /// The value as set, or the setting's default when unset.
    fn raw(&self, s: &Setting) -> &str {
        self.0
            .get(&s.name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or(s.default)
    }

    fn invalid(&self, s: &Setting, value: &str, expected: &str) -> ConfigError {
        ConfigError {
            name: s.name,
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }

    fn int<T>(&self, s: &Setting, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let raw = self.raw(s);
        match raw.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(self.invalid(s, raw, &format!("an integer from {min} to {max}"))),
        }
    }

    /// A percentage with decimals, from `min` to `max`.
    fn percent(&self, s: &Setting, min: f64, max: f64) -> Result<f64, ConfigError> {
        let raw = self.raw(s);
        match raw.trim().parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(self.invalid(s, raw, &format!("a percentage from {min} to {max}"))),
        }
    }

    fn boolean(&self, s: &Setting) -> Result<bool, ConfigError> {
        let raw = self.raw(s);
        match raw.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.invalid(s, raw, "true or false")),
        }
    }

    /// Seconds with decimals, from 0.01 to 300.
    fn seconds(&self, s: &Setting) -> Result<Duration, ConfigError> {
        self.seconds_in(s, 0.01, 300.0)
    }

    /// Seconds with decimals, from `min` to `max`.
    fn seconds_in(&self, s: &Setting, min: f64, max: f64) -> Result<Duration, ConfigError> {
        let raw = self.raw(s);
        match raw.trim().parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Duration::from_secs_f64(v)),
            _ => Err(self.invalid(s, raw, &format!("a number of seconds from {min} to {max}"))),
        }
    }

    /// An AWS resource name: letters, digits, `-`, `_`, `.`, 1 to `max_len` characters.
    fn name(&self, s: &Setting, max_len: usize) -> Result<String, ConfigError> {
        let raw = self.raw(s);
        let ok = !raw.is_empty()
            && raw.len() <= max_len
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(raw.to_owned())
        } else {
            Err(self.invalid(s, raw, &format!("1 to {max_len} letters, digits, '-', '_' or '.'")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        Config::from_vars(&vars(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_need_no_variables() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.queue, QueueRef::Name("submissions".into()));
        assert_eq!(c.stream_name, "events");
        assert_eq!(c.pipeline.source.partition_key, PartitionKey::SubmissionId);
        assert_eq!(c.pipeline.source.wait_time, Duration::from_secs(20));
        assert_eq!(c.pipeline.source.batch_size, 10);
        assert_eq!(c.pipeline.sink.max_records, 500);
        assert_eq!(c.pipeline.sink.max_request_bytes, 5 * 1024 * 1024);
        assert_eq!(c.pipeline.source.max_record_bytes, 1024 * 1024);
        assert_eq!(c.pipeline.source.time_bounds, TimeBounds::default());
    }

    #[test]
    fn every_setting_default_parses() {
        let all: Vec<(&str, &str)> = SETTINGS.iter().map(|s| (s.name, s.default)).collect();
        assert_eq!(Config::from_vars(&vars(&all)), Config::from_vars(&HashMap::new()));
    }

    #[test]
    fn reads_values() {
        let c = Config::from_vars(&vars(&[
            ("SUBMISSIONS_QUEUE_URL", "http://127.0.0.1:4566/000000000000/q"),
            ("DATA_STREAM_PARTITION_KEY", "device_id"),
            ("QUEUE_WAIT_TIME_SEC", "0"),
            ("DATA_STREAM_FLUSH_INTERVAL_SEC", "0.25"),
            ("TIME_CREATED_MAX_AHEAD_HOURS", "1"),
        ]))
        .unwrap();
        assert_eq!(c.queue, QueueRef::Url("http://127.0.0.1:4566/000000000000/q".into()));
        assert_eq!(c.pipeline.source.partition_key, PartitionKey::DeviceId);
        assert_eq!(c.pipeline.source.wait_time, Duration::ZERO);
        assert_eq!(c.pipeline.sink.flush_interval, Duration::from_millis(250));
        assert_eq!(c.pipeline.source.time_bounds.max_ahead, TimeDelta::hours(1));
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_the_range() {
        assert_eq!(
            error(&[("QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST", "11")]),
            "QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST=\"11\" is invalid: expected an integer from 1 to 10"
        );
        assert_eq!(
            error(&[("QUEUE_WAIT_TIME_SEC", "21")]),
            "QUEUE_WAIT_TIME_SEC=\"21\" is invalid: expected an integer from 0 to 20"
        );
        assert_eq!(
            error(&[("DATA_STREAM_MAX_BUFFER_SIZE", "501")]),
            "DATA_STREAM_MAX_BUFFER_SIZE=\"501\" is invalid: expected an integer from 1 to 500"
        );
        assert_eq!(
            error(&[("QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE", "0")]),
            "QUEUE_MAX_RECEIPTS_TO_DELETE_AT_ONCE=\"0\" is invalid: expected an integer from 1 to 10"
        );
        assert_eq!(
            error(&[("DATA_STREAM_FLUSH_INTERVAL_SEC", "0")]),
            "DATA_STREAM_FLUSH_INTERVAL_SEC=\"0\" is invalid: expected a number of seconds from 0.01 to 300"
        );
        assert_eq!(
            error(&[("DATA_STREAM_LINGER_MS", "1500")]),
            "DATA_STREAM_LINGER_MS=\"1500\" is invalid: expected 0-300000 and at most DATA_STREAM_FLUSH_INTERVAL_SEC"
        );
        assert_eq!(
            Config::from_vars(&vars(&[
                ("DATA_STREAM_LINGER_MS", "1500"),
                ("DATA_STREAM_FLUSH_INTERVAL_SEC", "2")
            ]))
            .map(|c| c.pipeline.sink.linger),
            Ok(Duration::from_millis(1500))
        );
        assert!(
            error(&[("QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC", "-1")])
                .starts_with("QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC=")
        );
        assert!(error(&[("QUEUE_WAIT_TIME_SEC", "abc")]).starts_with("QUEUE_WAIT_TIME_SEC=\"abc\" is invalid"));
        assert!(error(&[("DATA_STREAM_PARTITION_KEY", "event_id")]).starts_with("DATA_STREAM_PARTITION_KEY="));
        assert!(error(&[("SUBMISSIONS_QUEUE_NAME", "bad name")]).starts_with("SUBMISSIONS_QUEUE_NAME="));
        assert!(error(&[("TIME_CREATED_NOT_BEFORE", "2000")]).starts_with("TIME_CREATED_NOT_BEFORE="));
        assert!(
            error(&[("RETRY_MAX_BACKOFF_MS", "10"), ("RETRY_INITIAL_BACKOFF_MS", "100")])
                .starts_with("RETRY_MAX_BACKOFF_MS=")
        );
        assert!(error(&[("MAX_IN_FLIGHT_MESSAGES", "5")]).starts_with("MAX_IN_FLIGHT_MESSAGES="));
        assert_eq!(
            error(&[("MAX_IN_FLIGHT_BYTES", "1000")]),
            "MAX_IN_FLIGHT_BYTES=\"1000\" is invalid: expected an integer from 1048576 to 2147483648"
        );
        assert_eq!(
            error(&[("HTTP_LISTEN_ADDRESS", "localhost")]),
            "HTTP_LISTEN_ADDRESS=\"localhost\" is invalid: expected IP:PORT, e.g. 0.0.0.0:8080"
        );
        assert!(error(&[("DEAD_LETTER_QUEUE_URL", "dlq")]).starts_with("DEAD_LETTER_QUEUE_URL="));
        assert_eq!(
            error(&[
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "60"),
                ("QUEUE_VISIBILITY_MAX_TOTAL_SEC", "30")
            ]),
            "QUEUE_VISIBILITY_MAX_TOTAL_SEC=\"30\" is invalid: expected an integer from 60 to 43200"
        );
    }

    #[test]
    fn shard_supervisor_settings_are_read_and_checked() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.shard_supervisor.interval, Duration::from_secs(60));
        assert!(!c.shard_supervisor.policy.autoscale, "resizing is opt-in");
        assert_eq!(
            (c.shard_supervisor.policy.band_low, c.shard_supervisor.policy.band_high),
            (0.3, 0.8)
        );
        let c = Config::from_vars(&vars(&[
            ("SHARD_UTILISATION_TARGET_LOW", "0.1"),
            ("SHARD_UTILISATION_TARGET_HIGH", "1"),
            ("SHARD_AUTOSCALE_ENABLED", "true"),
            ("SHARD_COUNT_MIN", "2"),
            ("SHARD_COUNT_MAX", "2"),
            ("SHARD_RESIZE_COOLDOWN_SEC", "0"),
        ]))
        .unwrap();
        assert!((c.shard_supervisor.policy.band_low - 0.001).abs() < 1e-12);
        assert_eq!(c.shard_supervisor.policy.band_high, 0.01);
        assert!(c.shard_supervisor.policy.autoscale);
        assert_eq!(
            (
                c.shard_supervisor.policy.min_shards,
                c.shard_supervisor.policy.max_shards
            ),
            (2, 2)
        );
        assert_eq!(c.shard_supervisor.policy.cooldown, Duration::ZERO);
        assert_eq!(
            error(&[("SHARD_UTILISATION_TARGET_HIGH", "150")]),
            "SHARD_UTILISATION_TARGET_HIGH=\"150\" is invalid: expected a percentage from 0.01 to 100"
        );
        assert_eq!(
            error(&[("SHARD_UTILISATION_TARGET_LOW", "80")]),
            "SHARD_UTILISATION_TARGET_LOW=\"80\" is invalid: expected a percentage below SHARD_UTILISATION_TARGET_HIGH"
        );
        assert_eq!(
            error(&[("SHARD_AUTOSCALE_ENABLED", "yes")]),
            "SHARD_AUTOSCALE_ENABLED=\"yes\" is invalid: expected true or false"
        );
        assert_eq!(
            error(&[("SHARD_COUNT_MIN", "8"), ("SHARD_COUNT_MAX", "4")]),
            "SHARD_COUNT_MAX=\"4\" is invalid: expected an integer from 8 to 10000"
        );
        assert!(error(&[("SHARD_SUPERVISOR_INTERVAL_SEC", "0")]).starts_with("SHARD_SUPERVISOR_INTERVAL_SEC="));
        assert!(error(&[("SHARD_SUPERVISOR_WINDOWS", "0")]).starts_with("SHARD_SUPERVISOR_WINDOWS="));
        assert!(error(&[("SHARD_RESIZE_COOLDOWN_SEC", "-1")]).starts_with("SHARD_RESIZE_COOLDOWN_SEC="));
    }

    #[test]
    fn call_and_stall_timeouts_are_read_and_the_stall_timeout_leaves_room_for_a_slow_call() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.call_timeout, Duration::from_secs(10));
        assert_eq!(c.stall_timeout, Duration::from_secs(120));
        assert_eq!(
            (c.pipeline.deleter.concurrency, c.pipeline.visibility.concurrency),
            (64, 8)
        );
        let c = Config::from_vars(&vars(&[("AWS_CALL_TIMEOUT_SEC", "0.5"), ("QUEUE_WAIT_TIME_SEC", "1")])).unwrap();
        assert_eq!(c.call_timeout, Duration::from_millis(500));
        assert_eq!(
            error(&[("AWS_CALL_TIMEOUT_SEC", "0")]),
            "AWS_CALL_TIMEOUT_SEC=\"0\" is invalid: expected a number of seconds from 0.1 to 300"
        );
        // Defaults: 2 x (20 + 10) + 10 = 70 s is the least.
        assert_eq!(
            error(&[("STALL_TIMEOUT_SEC", "70")]),
            "STALL_TIMEOUT_SEC=\"70\" is invalid: expected an integer from 1 to 3600 above 2 x (the longest of QUEUE_WAIT_TIME_SEC, DATA_STREAM_FLUSH_INTERVAL_SEC, QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC; plus AWS_CALL_TIMEOUT_SEC) + RETRY_MAX_BACKOFF_MS, here 70.0 s"
        );
        assert!(Config::from_vars(&vars(&[("STALL_TIMEOUT_SEC", "71")])).is_ok());
        // Unset, it grows with the settings that need it, rather than rejecting them.
        let c = Config::from_vars(&vars(&[("RETRY_MAX_BACKOFF_MS", "60000")])).unwrap();
        assert_eq!(c.stall_timeout, Duration::from_secs(2 * (20 + 10) + 60 + 10));
        assert!(error(&[("QUEUE_DELETE_CONCURRENCY", "0")]).starts_with("QUEUE_DELETE_CONCURRENCY="));
    }

    #[test]
    fn a_stage_waiting_on_its_own_interval_is_never_taken_for_a_stall() {
        // The deleter and a lane may legally wait up to 300 s before their call: the default
        // stall timeout grows past that wait plus the call, and a smaller explicit one is refused.
        for interval in [
            "QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC",
            "DATA_STREAM_FLUSH_INTERVAL_SEC",
        ] {
            let c = Config::from_vars(&vars(&[(interval, "300"), ("QUEUE_VISIBILITY_TIMEOUT_SEC", "900")])).unwrap();
            assert_eq!(
                c.stall_timeout,
                Duration::from_secs(2 * (300 + 10) + 10 + 10),
                "{interval}"
            );
            let refused = error(&[
                (interval, "300"),
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "900"),
                ("STALL_TIMEOUT_SEC", "600"),
            ]);
            assert!(refused.starts_with("STALL_TIMEOUT_SEC=\"600\" is invalid"), "{refused}");
        }
    }

    #[test]
    fn visibility_timeout_must_exceed_flush_and_delete_intervals() {
        let e = error(&[
            ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
            ("DATA_STREAM_FLUSH_INTERVAL_SEC", "5"),
        ]);
        assert!(
            e.starts_with("QUEUE_VISIBILITY_TIMEOUT_SEC=\"5\" is invalid: expected a value above"),
            "{e}"
        );
        let e = error(&[
            ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
            ("QUEUE_RECEIPTS_TO_DELETE_INTERVAL_SEC", "6"),
        ]);
        assert!(e.starts_with("QUEUE_VISIBILITY_TIMEOUT_SEC="), "{e}");
        assert!(
            Config::from_vars(&vars(&[
                ("QUEUE_VISIBILITY_TIMEOUT_SEC", "5"),
                ("DATA_STREAM_FLUSH_INTERVAL_SEC", "4.5")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn readme_documents_every_setting_with_its_default() {
        let readme = include_str!("../docs/configuration.md");
        for s in SETTINGS {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}`", s.name)))
                .unwrap_or_else(|| panic!("docs/configuration.md has no table row for {}", s.name));
            let default = if s.default.is_empty() {
                "(unset)".to_owned()
            } else {
                format!("`{}`", s.default)
            };
            assert!(
                row.contains(&default),
                "docs/configuration.md row for {} does not show default {default}",
                s.name
            );
        }
    }
}
