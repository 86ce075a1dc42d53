//! The sensor-fleet simulator's library side, kept apart from the collector's pipeline: what
//! sensors send ([`generate`]), the record of what was sent ([`manifest`]), and the check of a
//! stream's contents against that record ([`verify`]). The `sensor-fleet` and `stream-reader`
//! binaries and the integration tests use these; the collector never does.

pub mod generate;
pub mod manifest;
pub mod rng;
pub mod verify;
