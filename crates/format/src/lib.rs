//! The collector's contract in code (docs/contract.md): what a submission must be, and what an
//! event is.
//!
//! [`submission`] decodes an SQS message body and validates it as a whole; [`event`] explodes a
//! valid submission into its ordered events, serialises each as one Kinesis record and names
//! its partition key. No I/O, no AWS types, no clock (the caller passes "now"): the daemon,
//! the fleet tools and the fuzz target all use this crate, and only the daemon adds the AWS
//! around it.

pub mod event;
pub mod submission;
