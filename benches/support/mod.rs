//! Shared by the end-to-end benchmarks: the fake endpoint, the collector binary as a child
//! process, and what `/proc` tells about a process.

// Each benchmark uses its own part of this module.
#![allow(dead_code)]

pub mod fake_aws;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use telemetry_fleet::generate::{Fleet, FleetSettings, Outcome};

use fake_aws::PooledMessage;

/// A setting of the benchmark from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Message bodies from the sensor-fleet generator, with the events each must become.
pub fn fleet_pool(messages: usize, seed: u64, invalid_share: f64) -> Vec<PooledMessage> {
    let mut fleet = Fleet::new(
        seed,
        FleetSettings {
            invalid_share,
            ..FleetSettings::default()
        },
    );
    // `time_created` lies near this moment: a run must start within the plausibility window
    // (26 h ahead, no limit behind but 2000-01-01), which it does.
    let now = Utc::now().naive_utc();
    (0..messages.max(1))
        .map(|_| {
            let generated = fleet.next(now);
            match &generated.outcome {
                Outcome::Valid(expected) => {
                    let id = uuid::Uuid::parse_str(&expected.submission_id).expect("a valid submission's id");
                    PooledMessage::new(&generated.body, expected.events.len() as u64).with_submission_id(id.as_u128())
                }
                Outcome::Invalid(_) => PooledMessage::new(&generated.body, 0),
            }
        })
        .collect()
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The release-built `telemetry-collector` binary, running against the fake endpoint.
pub struct CollectorProcess {
    child: Child,
    pub log: PathBuf,
}

impl CollectorProcess {
    /// Starts the collector with the SDK's standard variables pointing at `endpoint`. Collector
    /// settings (`MAX_IN_FLIGHT_MESSAGES`, ...) set in the benchmark's environment are passed on.
    /// `COLLECTOR_BIN` runs another build instead of this one's, to compare two versions.
    pub fn start(endpoint: &str, name: &str) -> CollectorProcess {
        CollectorProcess::start_with(endpoint, name, &[])
    }

    /// [`CollectorProcess::start`] with `settings` added to the collector's environment (the
    /// endpoint, credentials and HTTP address are set after them and win).
    pub fn start_with(endpoint: &str, name: &str, settings: &[(String, String)]) -> CollectorProcess {
        let binary = std::env::var_os("COLLECTOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_telemetry-collector")));
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-collector.log"));
        let out = std::fs::File::create(&log).expect("collector log file");
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(&binary)
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HTTP_LISTEN_ADDRESS", format!("127.0.0.1:{http_port}"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("collector log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        CollectorProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }

    pub fn rss_bytes(&self) -> u64 {
        status_bytes(self.pid(), "VmRSS:").unwrap_or(0)
    }

    /// The peak resident set size so far.
    pub fn peak_rss_bytes(&self) -> u64 {
        status_bytes(self.pid(), "VmHWM:").unwrap_or(0)
    }

    /// Panics (pointing at the log) if the collector has exited.
    pub fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the collector exited ({status}); see {}", self.log.display());
        }
    }

    /// Waits (checking every `poll`) until the fake has served the collector its first
    /// message, and returns when that was; panics if the collector exits or nothing is served
    /// within 60 s.
    pub fn wait_until_served(&mut self, state: &fake_aws::FakeState, poll: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(at) = state.first_served_at.get() {
                return *at;
            }
            self.check_running();
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the collector received nothing within 60 s; see {}",
                self.log.display()
            );
            std::thread::sleep(poll);
        }
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
