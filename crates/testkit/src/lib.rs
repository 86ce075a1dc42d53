//! What the collector's tests, benches and fuzz targets share.
//!
//! Always here, and pure: [`hostile`], a catalogue of inputs a hostile or broken sender could
//! put on the queue, each with the reason it must be rejected for; [`oracle`], the contract's
//! field rules written a second time, as plainly as possible, to check the decoder against.
//!
//! With the `emulator` feature (the default): [`env`], a queue and stream of a test's own on
//! the emulator that `script/test` starts, and [`fault_proxy`], the proxy that cuts, slows,
//! throttles and black-holes calls between a collector and the emulator.
//!
//! With the `fake-aws` feature: [`fake_aws`], an SQS + Kinesis in the test's own process
//! behind the real SDK clients, with fault switches, for tests on tokio's paused clock.

// Test tooling: a panic with a clear message is how it reports a broken environment.
#![allow(clippy::missing_panics_doc)]

#[cfg(feature = "emulator")]
pub mod env;
#[cfg(feature = "fake-aws")]
pub mod fake_aws;
#[cfg(feature = "emulator")]
pub mod fault_proxy;
pub mod hostile;
pub mod oracle;

#[cfg(feature = "emulator")]
pub use env::*;

/// A binary of another workspace crate (`sensor-fleet`, `stream-reader`), where Cargo puts it:
/// beside the directory of the running test's executable. Cargo gives a test the path of its
/// own crate's binaries only; `script/test` builds the fleet's first.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or(std::path::Path::new("."));
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p telemetry-fleet` first (script/test does)",
        path.display()
    );
    path
}
