//! The stages' state machines, each claim a test: the whole collector runs in-process against
//! the test kit's in-process SQS + Kinesis (`fake_aws`), through the real SDK clients, on
//! tokio's paused clock. Minutes of flush intervals, backoff and visibility extensions pass in
//! milliseconds and the same way every run, with no emulator: plain `cargo test` runs these.
//!
//! Settings are the defaults unless a test says otherwise: a paused clock makes them cheap.
//! What only the real wire and an emulator can show stays in the emulator tests.

mod rig;

mod body_budget;
mod breaker;
mod caps;
mod deleter;
mod deleter_more;
mod drain;
mod lane;
mod metrics;
mod routing;
mod source;
mod throttling;
mod visibility;
mod visibility_more;
