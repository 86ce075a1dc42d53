//! The shard tally: what the sink lanes have written to each shard, from the ShardId of each
//! successful PutRecords result, exported per shard. It is one replica's share: summed by shard
//! across replicas (Prometheus `sum by (shard)`), it shows a hot shard, i.e. a skewed partition
//! key. The collector decides nothing from it; the shard supervisor (`supervise` mode) sizes
//! the stream from CloudWatch, which sees every replica's writes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use prometheus_client::registry::Registry;

use crate::metrics::kit::{ShardLabels, add};

/// Records and bytes written to one shard since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ShardTotals {
    pub records: u64,
    pub bytes: u64,
}

/// What the sink lanes have written, per shard; shared by the lanes and the shard supervisor.
/// It also keeps the per-shard counters.
pub(crate) struct ShardTally {
    totals: Mutex<HashMap<String, ShardTotals>>,
    records: Family<ShardLabels, Counter>,
    bytes: Family<ShardLabels, Counter>,
}

impl ShardTally {
    pub fn new(records: Family<ShardLabels, Counter>, bytes: Family<ShardLabels, Counter>) -> ShardTally {
        ShardTally {
            totals: Mutex::new(HashMap::new()),
            records,
            bytes,
        }
    }

    /// Adds one PutRecords response's successful records, given as (shard id, record bytes);
    /// takes the lock once per response.
    pub(crate) fn add_response<'a>(&self, written: impl IntoIterator<Item = (&'a str, usize)>) {
        let mut per_shard: Vec<(&str, ShardTotals)> = Vec::new();
        for (shard, bytes) in written {
            // A response names few distinct shards: a short scan beats hashing.
            let i = match per_shard.iter().position(|(s, _)| *s == shard) {
                Some(i) => i,
                None => {
                    per_shard.push((shard, ShardTotals::default()));
                    per_shard.len() - 1
                }
            };
            per_shard[i].1.records += 1;
            per_shard[i].1.bytes += bytes as u64;
        }
        if per_shard.is_empty() {
            return;
        }
        {
            let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
            for (shard, add) in &per_shard {
                match totals.get_mut(*shard) {
                    Some(t) => {
                        t.records += add.records;
                        t.bytes += add.bytes;
                    }
                    None => {
                        totals.insert((*shard).to_owned(), *add);
                    }
                }
            }
        }
        for (shard, add) in per_shard {
            let label = [("shard", shard.to_owned())];
            self.records.get_or_create(&label).inc_by(add.records);
            self.bytes.get_or_create(&label).inc_by(add.bytes);
        }
    }

    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> HashMap<String, ShardTotals> {
        self.totals.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Drops a shard's totals and series, unless records arrived since `seen` was read.
    #[cfg(test)]
    pub(crate) fn forget_if_unchanged(&self, shard: &str, seen: ShardTotals) -> bool {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        if totals.get(shard) != Some(&seen) {
            return false;
        }
        totals.remove(shard);
        let label = [("shard", shard.to_owned())];
        self.records.remove(&label);
        self.bytes.remove(&label);
        true
    }
}

/// The per-shard counters.
#[derive(Clone)]
pub struct ShardTallyMetrics {
    pub shard_records_published: Family<ShardLabels, Counter>,
    pub shard_bytes_published: Family<ShardLabels, Counter>,
}

impl ShardTallyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        ShardTallyMetrics {
            shard_records_published: add(
                registry,
                "shard_records_published",
                "Records this replica wrote to each shard (successful PutRecords results, resends included), by shard",
                Family::default(),
            ),
            shard_bytes_published: add(
                registry,
                "shard_published_bytes",
                "Bytes (data + partition key) this replica wrote to each shard, by shard",
                Family::default(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_adds_per_shard_once_per_response_and_forgets_only_unchanged_shards() {
        let (records, bytes) = (Family::default(), Family::default());
        let tally = ShardTally::new(records.clone(), bytes.clone());
        tally.add_response([("s-1", 100), ("s-2", 50), ("s-1", 20)]);
        tally.add_response([("s-2", 5)]);
        let totals = tally.snapshot();
        assert_eq!(totals["s-1"], ShardTotals { records: 2, bytes: 120 });
        assert_eq!(totals["s-2"], ShardTotals { records: 2, bytes: 55 });
        let label = [("shard", "s-1".to_owned())];
        assert_eq!(bytes.get_or_create(&label).get(), 120);
        assert_eq!(records.get_or_create(&label).get(), 2);
        tally.add_response([("s-1", 1)]);
        assert!(!tally.forget_if_unchanged("s-1", totals["s-1"]));
        assert!(tally.forget_if_unchanged("s-2", totals["s-2"]));
        assert!(!tally.snapshot().contains_key("s-2"));
    }
}
