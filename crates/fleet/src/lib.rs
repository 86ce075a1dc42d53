//! The fleet tools: the sensor-fleet simulator and the stream reader, for load, demos and
//! end-to-end checks. Never deployed beside the collector.
//!
//! The library is what sensors send ([`generate`]), the record of what was sent
//! ([`manifest`]), and the check of a stream's contents against that record ([`verify`]) with
//! the time each event took to get there ([`latency`]). The `sensor-fleet` and `stream-reader`
//! binaries (feature `tools`, the default) and the collector's tests, benches and fuzzing use
//! it; the collector itself never does.

pub mod generate;
pub mod latency;
pub mod manifest;
pub mod rng;
pub mod verify;

#[cfg(feature = "tools")]
use std::fmt::Display;
#[cfg(feature = "tools")]
use std::future::Future;
#[cfg(feature = "tools")]
use std::process::ExitCode;

#[cfg(feature = "tools")]
/// The shared `main` of the fleet tools: usage on `--help` (parsed as `Ok(None)`), one line and
/// exit code 2 on a usage error, then `run` on a multi-threaded runtime; its outcome is the exit
/// code.
pub fn tool_main<A, E, F>(name: &str, usage: &str, parsed: Result<Option<A>, E>, run: impl FnOnce(A) -> F) -> ExitCode
where
    E: Display,
    F: Future<Output = ExitCode>,
{
    let args = match parsed {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {e}\n(see {name} --help)");
            return ExitCode::from(2);
        }
    };
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
