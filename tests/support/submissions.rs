//! Submissions for tests: the simulator's generator, which writes documents as JSON text
//! independently of the collector's decoder, with the events each one must produce.

pub use telemetry_collector::fleet::generate::{Expected, invalid_of_every_class, valid};
