//! The process's own figures in Prometheus's standard form (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from `/proc` at each scrape, unprefixed
//! so that the usual dashboards and alerts find them. Where `/proc` is missing (not Linux) or a
//! file cannot be read, the figure is left out rather than reported wrong.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: Linux's USER_HZ, 100 on every
/// architecture it exposes to user space.
const USER_HZ: f64 = 100.0;

/// Reads this process's figures from `/proc` at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// One reading of the figures; each `None` when it could not be read.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessFigures {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// This process's figures now.
    pub(crate) fn read() -> ProcessFigures {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
        let ticks = stat.as_deref().and_then(stat_ticks);
        ProcessFigures {
            cpu_seconds: ticks.map(|(user, system, _)| (user + system) as f64 / USER_HZ),
            resident_bytes: status
                .as_deref()
                .and_then(|s| status_kib(s, "VmRSS:"))
                .map(|k| k * 1024),
            virtual_bytes: status
                .as_deref()
                .and_then(|s| status_kib(s, "VmSize:"))
                .map(|k| k * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64),
            max_fds: limits.as_deref().and_then(max_open_files),
            start_time_seconds: ticks
                .zip(boot_time)
                .map(|((_, _, start), boot)| boot as f64 + start as f64 / USER_HZ),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = ProcessFigures::read();
        if let Some(v) = figures.cpu_seconds {
            let counter = ConstCounter::new(v);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                figures.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                figures.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                figures.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                figures.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                figures.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let gauge = ConstGauge::new(v);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// User time, system time and start time (clock ticks after boot) from `/proc/<pid>/stat`.
fn stat_ticks(stat: &str) -> Option<(u64, u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself:
    // the fields after it are counted from its last closing one.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?))
}

/// A `kB` figure of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit on open files, from `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Boot time, seconds since the epoch, from `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long ago the process started.
    fn uptime(figures: &ProcessFigures) -> Option<Duration> {
        let start = figures.start_time_seconds?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Some(Duration::from_secs_f64((now - start).max(0.0)))
    }

    #[test]
    fn the_figures_are_parsed_from_procs_own_formats() {
        // A command name with a space and parentheses, as a process may name itself.
        let stat = "4242 (tele (x) y) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 123456 \
                    200000000 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_ticks(stat), Some((250, 75, 123456)));
        let status = "Name:\ttelemetry\nVmSize:\t  200000 kB\nVmRSS:\t   51234 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(51234));
        assert_eq!(status_kib(status, "VmSize:"), Some(200000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1764979200\nprocesses 10\n"),
            Some(1764979200)
        );
    }

    #[test]
    fn this_process_reports_every_figure_and_a_start_in_the_past() {
        let figures = ProcessFigures::read();
        assert!(figures.cpu_seconds.is_some_and(|v| v >= 0.0));
        assert!(figures.resident_bytes.is_some_and(|v| v > 0));
        assert!(figures.virtual_bytes.is_some_and(|v| v > 0));
        assert!(figures.open_fds.is_some_and(|v| v > 0));
        assert!(figures.max_fds.is_some_and(|v| v > 0));
        // Started before now, and not before the machine booted a long time ago.
        let uptime = uptime(&figures).expect("a start time");
        assert!(uptime < Duration::from_secs(30 * 24 * 3600), "{uptime:?}");
    }
}
