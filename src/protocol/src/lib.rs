//! Kafka wire protocol for weir: framing, version gating, record-batch headers, error codes.
//!
//! # Design
//!
//! Message bodies come from the `kafka-protocol` crate, generated from Kafka's JSON message
//! specs; this crate adds what weir decides itself. [`frame`] reads and writes size-prefixed
//! frames and rejects unknown keys and versions before any body is decoded. [`versions`] holds
//! the advertised and decodable ranges. [`batch`] parses and validates the 61-byte v2 record
//! batch header (CRC-32C) so that batches stay opaque bytes from producer to disk to consumer.
//! [`ids`] has the newtypes for offsets, epochs and ids. Nothing here does I/O.
//!
//! # Invariants
//!
//! * A decoded request's version is inside [`versions::SUPPORTED`].
//! * A batch accepted by [`batch::validate`] has a matching CRC and consistent counts.
//!
//! # Example
//!
//! ```
//! use protocol::batch::{self, BatchError};
//! assert!(matches!(batch::validate(&[0u8; 10]), Err(BatchError::Truncated { .. })));
//! ```

#![deny(missing_docs)]

pub mod batch;
pub mod frame;
pub mod ids;
pub mod names;
pub mod record;
pub mod versions;

pub use kafka_protocol;
pub use kafka_protocol::error::ResponseError;

/// A Kafka error code as sent on the wire (0 is success).
pub type ErrorCode = i16;

/// The success code.
pub const NONE: ErrorCode = 0;

/// The wire code of a Kafka error.
pub fn code(error: ResponseError) -> ErrorCode {
    error.code()
}
