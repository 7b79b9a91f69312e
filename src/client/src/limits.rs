//! Every bound of the client, named in one place.
//!
//! Bounds that users tune are validated config fields ([`crate::ClientConfig`],
//! [`crate::producer::ProducerConfig`], [`crate::consumer::ConsumerConfig`]); the fixed ones are
//! here. Relations between them are checked at compile time.

/// Requests that may be pipelined on one broker connection at once: the size of the map of
/// pending responses. A caller beyond this waits for a slot.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// Encoded frames queued for one connection's writer task. Equal to the in-flight bound, plus
/// room for acks=0 produce frames, which hold no in-flight slot.
pub const WRITE_QUEUE_FRAMES_MAX: usize = IN_FLIGHT_REQUESTS_MAX * 2;

/// Default for [`crate::ClientConfig::socket_max_bytes`]: the largest response frame accepted
/// (Kafka's `socket.request.max.bytes` is 100 MiB on the broker side).
pub const SOCKET_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// The smallest accepted response-frame bound; an ApiVersions response must fit.
pub const SOCKET_MAX_BYTES_MIN: usize = 64 * 1024;

/// Bytes of a v2 record batch header, before the first record.
pub const RECORD_BATCH_OVERHEAD_BYTES: usize = 61;

/// Upper bound on the bytes a v2 record adds besides its key, value and headers: length
/// varint (5), attributes (1), timestamp delta varlong (10), offset delta varint (5), key and
/// value lengths (5 + 5) and the header count (5).
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 36;

/// Upper bound on the bytes one header adds besides its key and value: two length varints.
pub const RECORD_HEADER_OVERHEAD_BYTES_MAX: usize = 10;

/// Default (and the practical maximum) of [`crate::producer::ProducerConfig::retries`], like
/// Kafka's `Integer.MAX_VALUE`: retries end by `delivery_timeout_ms` rather than by count.
pub const PRODUCER_RETRIES_MAX: u32 = i32::MAX as u32;

/// Default for [`crate::ClientConfig::metadata_max_age_ms`] (Kafka's `metadata.max.age.ms`).
pub const METADATA_MAX_AGE_MS_DEFAULT: u64 = 5 * 60 * 1000;

/// The name this client reports in ApiVersions v3+ (KIP-511).
pub const CLIENT_SOFTWARE_NAME: &str = "weir-client";

const _: () = assert!(WRITE_QUEUE_FRAMES_MAX >= IN_FLIGHT_REQUESTS_MAX);
const _: () = assert!(SOCKET_MAX_BYTES_MIN <= SOCKET_MAX_BYTES_DEFAULT);
const _: () = assert!(PRODUCER_RETRIES_MAX <= i32::MAX as u32);
