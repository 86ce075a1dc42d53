//! The sensor-fleet simulator's library side, kept apart from the collector's pipeline: what
//! sensors send ([`generate`]), the record of what was sent ([`manifest`]), and the check of a
//! stream's contents against that record ([`verify`]) with the time each event took to get there
//! ([`latency`]). The `sensor-fleet` and `stream-reader`
//! binaries and the integration tests use these; the collector never does.

pub mod generate;
pub mod latency;
pub mod manifest;
pub mod rng;
pub mod verify;

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

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
