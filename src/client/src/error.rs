//! The client's typed errors.
//!
//! Kafka error codes stay data: a broker's answer is carried as
//! [`ResponseError`](protocol::ResponseError) inside [`ClientError::Broker`] or
//! [`ProduceError::Broker`], never turned into a string. Every error is `Clone` because one
//! failure (a lost connection, a rejected batch) is reported to many waiters at once.

use std::sync::Arc;

use protocol::frame::FrameError;
use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::messages::ApiKey;
use protocol::ResponseError;

/// Why a broker connection was given up. Every pending request on it fails with this cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// A read or write failed.
    #[error("I/O error: {0}")]
    Io(std::io::ErrorKind),
    /// The broker closed the connection.
    #[error("closed by the broker")]
    Closed,
    /// A response frame announced a length outside `0..=max_bytes`.
    #[error("response frame length {length} is outside 0..={max_bytes}")]
    FrameLength {
        /// The announced length.
        length: i32,
        /// The configured bound, [`crate::ClientConfig::socket_max_bytes`].
        max_bytes: usize,
    },
    /// A response answered no request we sent; the stream can no longer be trusted.
    #[error("response with unknown correlation id {0}")]
    UnknownCorrelationId(i32),
    /// A request on this connection timed out; like Kafka's clients we drop the connection,
    /// since the broker is stuck or the response stream is out of step.
    #[error("a request timed out")]
    RequestTimedOut,
}

/// An error of the client, the admin API or the consumer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A config field is out of range.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TCP connection could not be opened (or the handshake did not finish in time).
    #[error("cannot connect to {address}: {kind}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The I/O error kind (`TimedOut` for a connect timeout).
        kind: std::io::ErrorKind,
    },
    /// No bootstrap server or known broker accepted a connection.
    #[error("no broker is reachable (tried {attempted:?})")]
    NoBrokerAvailable {
        /// The addresses tried, in order.
        attempted: Vec<String>,
    },
    /// The connection broke while the request was pending; the request may or may not have
    /// been processed.
    #[error("connection to {address} lost: {cause}")]
    Disconnected {
        /// `host:port`.
        address: String,
        /// Why.
        cause: DisconnectCause,
    },
    /// No response arrived within `request_timeout_ms`.
    #[error("{api_key:?} request to {address} timed out after {timeout_ms} ms")]
    RequestTimeout {
        /// `host:port`.
        address: String,
        /// The request's API.
        api_key: ApiKey,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// A request could not be encoded or a response could not be decoded.
    #[error("protocol error: {0}")]
    Frame(Arc<FrameError>),
    /// A request kind this client version cannot name (newer than its API table).
    #[error("request kind unknown to this client")]
    UnsupportedRequest,
    /// The broker does not list this API in its ApiVersions response.
    #[error("broker at {address} does not serve {api_key:?}")]
    UnsupportedApi {
        /// `host:port`.
        address: String,
        /// The API.
        api_key: ApiKey,
    },
    /// The client's and the broker's version ranges for an API do not overlap.
    #[error("{api_key:?}: client versions {client_min}..={client_max} and broker versions {broker_min}..={broker_max} do not overlap")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// Lowest version the client encodes.
        client_min: i16,
        /// Highest version the client encodes.
        client_max: i16,
        /// Lowest version the broker serves.
        broker_min: i16,
        /// Highest version the broker serves.
        broker_max: i16,
    },
    /// The broker answered with a Kafka error code (kept as data).
    #[error("broker error {error}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The Kafka error.
        error: ResponseError,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },
    /// A broker id that the metadata cache does not know.
    #[error("unknown broker id {broker_id}")]
    UnknownBroker {
        /// The id.
        broker_id: i32,
    },
    /// The partition has no leader in the cached metadata.
    #[error("no leader known for {topic_partition}")]
    LeaderNotAvailable {
        /// The partition.
        topic_partition: TopicPartition,
    },
    /// The partition index is outside the topic's partitions.
    #[error("topic {topic} has no partition {partition} ({partition_count} partitions)")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The index asked for.
        partition: i32,
        /// How many partitions the topic has.
        partition_count: usize,
    },
    /// The response was of a different kind than the request (a bug in the broker or here).
    #[error("a {api_key:?} request got a response of another kind")]
    UnexpectedResponse {
        /// The request's API.
        api_key: ApiKey,
    },
    /// The response did not mention something the request asked about.
    #[error("{api_key:?} response does not mention {topic} partition {partition:?}")]
    MissingFromResponse {
        /// The request's API.
        api_key: ApiKey,
        /// The topic (or resource) asked about.
        topic: String,
        /// The partition asked about, if any.
        partition: Option<i32>,
    },
    /// One record is larger than `max_request_size` allows.
    #[error("record of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        /// Estimated encoded size.
        size_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },
    /// Records could not be encoded into a batch.
    #[error("cannot encode a record batch for {topic_partition}: {reason}")]
    RecordEncode {
        /// The partition.
        topic_partition: TopicPartition,
        /// The encoder's report.
        reason: String,
    },
    /// A fetched record batch does not decode (bad CRC, unknown compression, truncation
    /// inside a batch that claimed to be whole).
    #[error("corrupt record batch in {topic_partition} at offset {offset}: {reason}")]
    CorruptRecords {
        /// The partition.
        topic_partition: TopicPartition,
        /// The batch's base offset.
        offset: Offset,
        /// The decoder's report.
        reason: String,
    },
    /// The consumer was asked about a partition it is not assigned.
    #[error("{topic_partition} is not assigned to this consumer")]
    NotAssigned {
        /// The partition.
        topic_partition: TopicPartition,
    },
    /// The consumer has no position for a partition and `auto_offset_reset` is `None`.
    #[error("no valid position for {topic_partition} and auto_offset_reset is None")]
    NoOffsetForPartition {
        /// The partition.
        topic_partition: TopicPartition,
    },
    /// The fetch position is outside the partition's log and `auto_offset_reset` is `None`.
    #[error("offset {offset} is out of range for {topic_partition} and auto_offset_reset is None")]
    OffsetOutOfRange {
        /// The partition.
        topic_partition: TopicPartition,
        /// The position that was out of range.
        offset: Offset,
    },
    /// The producer's sender has stopped.
    #[error("the producer is closed")]
    ProducerClosed,
}

impl ClientError {
    /// Whether retrying the same operation later may succeed: network failures, timeouts,
    /// missing leaders, and Kafka error codes that Kafka marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::NoBrokerAvailable { .. }
            | ClientError::Disconnected { .. }
            | ClientError::RequestTimeout { .. }
            | ClientError::LeaderNotAvailable { .. }
            | ClientError::UnknownBroker { .. }
            | ClientError::MissingFromResponse { .. } => true,
            ClientError::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// The Kafka error, if the broker answered with one.
    pub fn response_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// A broker error from a wire code, or `None` for 0 (success).
    pub(crate) fn from_code(code: i16, message: Option<String>) -> Option<ClientError> {
        ResponseError::try_from_code(code).map(|error| ClientError::Broker { error, message })
    }
}

impl From<FrameError> for ClientError {
    fn from(error: FrameError) -> Self {
        ClientError::Frame(Arc::new(error))
    }
}

/// Why a produced record was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The broker rejected the batch with a non-retriable Kafka error.
    #[error("broker rejected the batch for {topic_partition}: {error}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The partition.
        topic_partition: TopicPartition,
        /// The Kafka error.
        error: ResponseError,
        /// The broker's message, if any.
        message: Option<String>,
    },
    /// `delivery_timeout_ms` passed before the record was acknowledged.
    #[error("record for {topic_partition} not delivered within {delivery_timeout_ms} ms (last error: {last_error:?})")]
    DeliveryTimeout {
        /// The partition.
        topic_partition: TopicPartition,
        /// The configured timeout.
        delivery_timeout_ms: u64,
        /// The error of the last attempt, if there was one.
        last_error: Option<Box<ClientError>>,
    },
    /// The batch failed with a retriable error and `retries` attempts were used up.
    #[error("record for {topic_partition} not delivered after {attempts} attempts: {last_error}")]
    RetriesExhausted {
        /// The partition.
        topic_partition: TopicPartition,
        /// Attempts made.
        attempts: u32,
        /// The error of the last attempt.
        last_error: Box<ClientError>,
    },
    /// A client-side failure that retrying cannot fix (encoding, unknown partition, ...).
    #[error(transparent)]
    Client(ClientError),
    /// The producer was dropped or its sender stopped before the record completed.
    #[error("the producer stopped before the record was delivered")]
    Aborted,
}
