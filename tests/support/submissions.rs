//! Submissions for tests: the simulator's generator, which writes documents as JSON text
//! independently of the collector's decoder, with the events each one must produce.

// Not every test file that includes `support` uses these.
#[allow(unused_imports)]
pub use telemetry_fleet::generate::{Expected, invalid_of_every_class, valid};
