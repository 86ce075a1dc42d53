//! Latency from send to stream: for every event, the time from the SendMessageBatch call that
//! carried its submission (the manifest's `sent_at`) to the record's arrival on the stream
//! (Kinesis' `ApproximateArrivalTimestamp`), summarised as percentiles.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::manifest::ManifestEntry;

/// One record read from the stream: which event it is and when the stream took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub event_id: String,
    pub submission_id: String,
    pub arrived_at: DateTime<Utc>,
}

/// Send-to-arrival latency of the events of a manifest; also printed as one JSON line.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct LatencyReport {
    /// Events measured: the first arrival of each `event_id` of a submission with a send time.
    pub events: usize,
    /// Later arrivals of an event already measured (redeliveries), left out.
    pub duplicates: usize,
    /// Records of submissions the manifest does not list, or lists without a send time.
    pub unmatched: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// The coarsest step every arrival time is a multiple of: 0.001 (microseconds or finer),
    /// 1 (the stream stamps whole milliseconds) or 1000 (whole seconds). Latencies are no finer.
    pub arrival_resolution_ms: f64,
}

/// Measures every event in `arrivals` (in stream order) against its submission's send time.
pub fn latency(manifest: &[ManifestEntry], arrivals: &[Arrival]) -> LatencyReport {
    let sent: HashMap<&str, DateTime<Utc>> = manifest
        .iter()
        .filter_map(|e| Some((e.submission_id.as_deref()?, e.sent_time()?)))
        .collect();
    let mut report = LatencyReport::default();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut millis = Vec::with_capacity(arrivals.len());
    for arrival in arrivals {
        let Some(sent_at) = sent.get(arrival.submission_id.as_str()) else {
            report.unmatched += 1;
            continue;
        };
        if !seen.insert(&arrival.event_id) {
            report.duplicates += 1;
            continue;
        }
        millis.push((arrival.arrived_at - *sent_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
    }
    millis.sort_by(f64::total_cmp);
    report.events = millis.len();
    if let (Some(&min), Some(&max)) = (millis.first(), millis.last()) {
        report.min_ms = min;
        report.max_ms = max;
        report.p50_ms = percentile(&millis, 50.0);
        report.p90_ms = percentile(&millis, 90.0);
        report.p99_ms = percentile(&millis, 99.0);
        report.mean_ms = millis.iter().sum::<f64>() / millis.len() as f64;
    }
    report.arrival_resolution_ms = resolution_ms(arrivals.iter().map(|a| a.arrived_at));
    report
}

/// Nearest-rank percentile of ascending `sorted` (not empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The coarsest of 1 s, 1 ms and 1 µs that every time is a multiple of, in milliseconds.
/// Times are rounded to the microsecond first: the wire format is fractional seconds in a
/// double, so a whole millisecond can come back a few nanoseconds off.
fn resolution_ms(times: impl Iterator<Item = DateTime<Utc>>) -> f64 {
    let mut whole_seconds = true;
    let mut whole_millis = true;
    for t in times {
        let micros = (i64::from(t.timestamp_subsec_nanos()) + 500) / 1000;
        whole_seconds &= micros % 1_000_000 == 0;
        whole_millis &= micros % 1000 == 0;
    }
    if whole_seconds {
        1000.0
    } else if whole_millis {
        1.0
    } else {
        0.001
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "8be01974-0f15-4d4f-809f-257a6de4d3f9";

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_774_712_658_000_000 + micros).unwrap()
    }

    fn entry(id: &str, sent_at: Option<DateTime<Utc>>) -> ManifestEntry {
        ManifestEntry {
            submission_id: Some(id.into()),
            device_id: "31980191-fa99-4768-8a7b-0e81397ca6ef".into(),
            valid: true,
            event_count: 100,
            reason: None,
            sent_at: sent_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        }
    }

    fn arrival(event: usize, submission: &str, micros: i64) -> Arrival {
        Arrival {
            event_id: format!("e{event}"),
            submission_id: submission.into(),
            arrived_at: at(micros),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_over_first_arrivals() {
        // Events 1..=100 arrive 1..=100 ms after the send.
        let mut arrivals: Vec<Arrival> = (1..=100).map(|i| arrival(i, SUB, i as i64 * 1000)).collect();
        // A redelivery of event 1 much later, and a record of a submission not in the manifest.
        arrivals.push(arrival(1, SUB, 900_000));
        arrivals.push(arrival(7, "00000000-0f15-4d4f-809f-257a6de4d3f9", 5000));
        let r = latency(&[entry(SUB, Some(at(0)))], &arrivals);
        assert_eq!((r.events, r.duplicates, r.unmatched), (100, 1, 1));
        assert_eq!(
            (r.min_ms, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(r.mean_ms, 50.5);
        assert_eq!(r.arrival_resolution_ms, 1.0);
    }

    #[test]
    fn submissions_without_a_send_time_are_not_measured() {
        let r = latency(&[entry(SUB, None)], &[arrival(0, SUB, 1500)]);
        assert_eq!((r.events, r.unmatched), (0, 1));
        assert_eq!(r.p99_ms, 0.0);
    }

    #[test]
    fn resolution_is_the_coarsest_step_of_every_arrival() {
        let check = |micros: &[i64]| resolution_ms(micros.iter().map(|&m| at(m)));
        assert_eq!(check(&[0, 2_000_000]), 1000.0);
        assert_eq!(check(&[0, 2_000_000, 3_000]), 1.0);
        assert_eq!(check(&[0, 3_000, 3_001]), 0.001);
        // A millisecond stamp carried in a double comes back a few nanoseconds off.
        let off = DateTime::from_timestamp(1_774_712_658, 592_000_011).unwrap();
        assert_eq!(resolution_ms([off].into_iter()), 1.0);
    }
}
