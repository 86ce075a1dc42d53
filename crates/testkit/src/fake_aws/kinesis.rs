//! The fake's streams: records written to shards, within Kinesis's request limits.

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{AwsError, World, take_one};

/// Kinesis's limits on a PutRecords call.
const MAX_RECORDS: usize = 500;
const MAX_DATA_BYTES: usize = 1_048_576;
const MAX_REQUEST_BYTES: usize = 5 * 1_048_576;

/// One record as written.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub shard_id: String,
    pub sequence_number: String,
    /// When it was written (tokio's clock): Kinesis's `ApproximateArrivalTimestamp`.
    pub arrived_at: Instant,
}

impl StoredRecord {
    /// The record's data as JSON (the collector writes one event per record).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap_or(Value::Null)
    }
}

pub(super) struct Stream {
    name: String,
    shards: usize,
    pub(super) records: Vec<StoredRecord>,
}

impl Stream {
    pub(super) fn new(name: &str, shards: usize) -> Stream {
        Stream {
            name: name.to_owned(),
            shards,
            records: Vec::new(),
        }
    }

    /// A stable shard per partition key (FNV-1a; Kinesis uses MD5 ranges, which no test here
    /// depends on).
    fn shard_of(&self, key: &str) -> String {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("shardId-{:012}", hash % self.shards as u64)
    }
}

fn stream<'w>(world: &'w World, request: &Value) -> Result<&'w Stream, AwsError> {
    let name = request["StreamName"].as_str().unwrap_or_default();
    world.streams.get(name).ok_or_else(AwsError::stream_not_found)
}

fn validation(message: String) -> AwsError {
    AwsError::new(
        400,
        "ValidationException",
        &format!("1 validation error detected: {message}"),
    )
}

pub(super) fn put_records(world: &mut World, request: &Value) -> Result<(Value, usize), AwsError> {
    stream(world, request)?;
    let entries = request["Records"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() || entries.len() > MAX_RECORDS {
        return Err(validation(format!(
            "Value at 'records' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORDS}"
        )));
    }
    let mut decoded = Vec::with_capacity(entries.len());
    let mut request_bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        let data = base64::engine::general_purpose::STANDARD
            .decode(entry["Data"].as_str().unwrap_or_default())
            .map_err(|e| AwsError::new(400, "SerializationException", &e.to_string()))?;
        let key = entry["PartitionKey"].as_str().unwrap_or_default().to_owned();
        let refused = world.faults.refused.as_ref().is_some_and(|refused| refused(&data));
        if refused && !world.faults.refusal_names_record {
            return Err(AwsError::new(
                400,
                "InvalidArgumentException",
                "Data object is too large",
            ));
        }
        if data.len() > MAX_DATA_BYTES || refused {
            return Err(validation(format!(
                "Value at 'records.{}.member.data' failed to satisfy constraint: Member must have length less than or equal to {MAX_DATA_BYTES}",
                i + 1
            )));
        }
        if key.is_empty() || key.chars().count() > 256 {
            return Err(validation(format!(
                "Value at 'records.{}.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and 256",
                i + 1
            )));
        }
        request_bytes += data.len() + key.len();
        decoded.push((data, key));
    }
    if request_bytes > MAX_REQUEST_BYTES {
        return Err(AwsError::new(
            400,
            "InvalidArgumentException",
            "Records size exceeds 5 MB limit",
        ));
    }
    let name = request["StreamName"].as_str().unwrap_or_default().to_owned();
    let mut results = Vec::with_capacity(decoded.len());
    let mut failed = 0;
    for (data, key) in decoded {
        if let Some(code) = take_one(&mut world.faults.record_failures) {
            failed += 1;
            results.push(json!({ "ErrorCode": code, "ErrorMessage": "injected failure" }));
            continue;
        }
        let sequence = world.next_id();
        let stream = world.streams.get_mut(&name).ok_or_else(AwsError::stream_not_found)?;
        let shard_id = stream.shard_of(&key);
        let sequence_number = format!("{sequence:056}");
        results.push(json!({ "SequenceNumber": sequence_number, "ShardId": shard_id }));
        stream.records.push(StoredRecord {
            data,
            partition_key: key,
            shard_id,
            sequence_number,
            arrived_at: Instant::now(),
        });
    }
    let n = results.len();
    Ok((json!({ "FailedRecordCount": failed, "Records": results }), n))
}

pub(super) fn describe_stream_summary(world: &World, request: &Value) -> Result<(Value, usize), AwsError> {
    let stream = stream(world, request)?;
    Ok((
        json!({ "StreamDescriptionSummary": {
            "StreamName": stream.name,
            "StreamARN": format!("arn:aws:kinesis:us-east-1:000000000000:stream/{}", stream.name),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": { "StreamMode": "PROVISIONED" },
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1_700_000_000.0,
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
            "OpenShardCount": stream.shards,
            "ConsumerCount": 0,
        }}),
        1,
    ))
}
