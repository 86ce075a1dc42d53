//! The stream's traffic as CloudWatch has it: `AWS/Kinesis` `IncomingRecords`, `IncomingBytes`
//! and `WriteProvisionedThroughputExceeded` for the `StreamName` dimension, Sum per 1-minute
//! period, with one GetMetricData call (its pages followed). What every collector replica wrote
//! is there, whatever the number of replicas.
//!
//! With enhanced monitoring on (shard-level `IncomingRecords` and `IncomingBytes`), the same
//! call also reads each open shard's, so that a hot shard (a skewed partition key) is seen.
//!
//! A minute CloudWatch has no point for stays `None`: [`super::policy::observe`] makes the
//! window incomplete, never zero traffic.

use std::collections::HashMap;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};

use super::CallError;
use super::policy::{Minute, PERIOD, utilisation};

pub(crate) const NAMESPACE: &str = "AWS/Kinesis";
pub(crate) const INCOMING_RECORDS: &str = "IncomingRecords";
pub(crate) const INCOMING_BYTES: &str = "IncomingBytes";
pub(crate) const THROTTLED: &str = "WriteProvisionedThroughputExceeded";
/// Shards whose own metrics are read at most: two queries each, within GetMetricData's 500.
pub(crate) const MAX_SHARDS_READ: usize = 200;

/// The window's periods: `minutes` whole minutes ending at the last whole minute at least
/// `delay_secs` before `now_secs` (seconds since the epoch); the start of the first, and of the
/// one after the last.
pub(crate) fn window(now_secs: i64, delay_secs: i64, minutes: u32) -> (i64, i64) {
    let period = PERIOD.as_secs() as i64;
    let end = (now_secs - delay_secs).div_euclid(period) * period;
    (end - i64::from(minutes) * period, end)
}

fn query(id: String, metric: &str, dimensions: Vec<Dimension>) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(NAMESPACE)
                        .metric_name(metric)
                        .set_dimensions(Some(dimensions))
                        .build(),
                )
                .period(PERIOD.as_secs() as i32)
                .stat("Sum")
                .build(),
        )
        .return_data(true)
        .build()
}

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// The figures of each minute of `[start, end)` (seconds since the epoch, whole minutes);
/// `shards` are the open shards whose own metrics to read (empty: none).
pub(crate) async fn read(
    client: &Client,
    stream: &str,
    (start, end): (i64, i64),
    shards: &[String],
) -> Result<Vec<Minute>, CallError> {
    let stream_dim = || vec![dimension("StreamName", stream)];
    let mut queries = vec![
        query("records".to_owned(), INCOMING_RECORDS, stream_dim()),
        query("bytes".to_owned(), INCOMING_BYTES, stream_dim()),
        query("throttled".to_owned(), THROTTLED, stream_dim()),
    ];
    let shards = &shards[..shards.len().min(MAX_SHARDS_READ)];
    for (i, shard) in shards.iter().enumerate() {
        let dims = || vec![dimension("StreamName", stream), dimension("ShardId", shard)];
        queries.push(query(format!("shard_records_{i}"), INCOMING_RECORDS, dims()));
        queries.push(query(format!("shard_bytes_{i}"), INCOMING_BYTES, dims()));
    }

    // Query id -> (period start -> value).
    let mut points: HashMap<String, HashMap<i64, f64>> = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let output = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(DateTime::from_secs(start))
            .end_time(DateTime::from_secs(end))
            .scan_by(ScanBy::TimestampAscending)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(CallError::from_sdk)?;
        for result in output.metric_data_results() {
            let series = points.entry(result.id().unwrap_or_default().to_owned()).or_default();
            for (at, value) in result.timestamps().iter().zip(result.values()) {
                series.insert(at.secs(), *value);
            }
        }
        match output.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }

    let get = |id: &str, at: i64| points.get(id).and_then(|series| series.get(&at)).copied();
    let period = PERIOD.as_secs() as i64;
    let minutes = (start..end)
        .step_by(period as usize)
        .map(|at| Minute {
            records: get("records", at),
            bytes: get("bytes", at),
            throttled: get("throttled", at),
            hottest_shard: (0..shards.len())
                .filter_map(|i| {
                    let records = get(&format!("shard_records_{i}"), at)?;
                    let bytes = get(&format!("shard_bytes_{i}"), at)?;
                    Some(utilisation(records, bytes, 1))
                })
                .reduce(f64::max),
        })
        .collect();
    Ok(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_whole_minutes_ending_before_the_delay() {
        // 12:03:25 with a 60 s delay: the window ends at 12:02:00.
        let now = 12 * 3600 + 3 * 60 + 25;
        assert_eq!(window(now, 60, 5), (12 * 3600 - 3 * 60, 12 * 3600 + 2 * 60));
        assert_eq!(window(now, 0, 1), (12 * 3600 + 2 * 60, 12 * 3600 + 3 * 60));
    }
}
