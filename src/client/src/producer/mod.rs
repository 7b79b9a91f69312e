//! The producer: batching, linger, compression, retries, and Kafka's default partitioner.
//!
//! # Design
//!
//! [`Producer::send`] picks the partition, waits for buffer memory, and appends the record to
//! its partition's open batch in the [`accumulator`]; it returns a [`DeliveryFuture`] at
//! once. One sender task per producer drains ready batches (full, lingered, or flushed),
//! groups them by partition leader into one Produce request per broker (split at
//! `max_request_size`), and handles each response: offsets go back to the records' futures,
//! retriable errors put the batch back at the front of its queue after `retry_backoff_ms`
//! (refreshing metadata when the leader may have moved), non-retriable errors fail the
//! batch's records. `delivery_timeout_ms` bounds the whole life of a record.
//!
//! # Invariants
//!
//! * Per-partition order: at most one batch per partition is in flight, so a retry can never
//!   overtake a later batch (see [`accumulator`]). Requests to one broker may still pipeline
//!   up to `max_in_flight_requests_per_connection`, each carrying other partitions.
//! * Every accepted record completes exactly once: delivered, failed, or (if the sender task
//!   is gone) [`ProduceError::Aborted`] through the dropped reply.
//! * Accepted-but-unfinished records hold at most `buffer_memory` estimated bytes.
//! * Idempotence (`enable_idempotence`, on by default with acks=all): the sender takes a
//!   producer id and epoch (InitProducerId) before its first batch and stamps each batch with
//!   the partition's next sequence when it is first encoded; a retry sends the same bytes, so
//!   the leader answers a batch it already has with the original offsets instead of writing
//!   it twice. A batch that fails after it was stamped leaves its sequence unresolved, so the
//!   sender bumps the epoch (KIP-360) and the partitions restart at sequence 0. Without
//!   idempotence, a retry after a lost response may write a batch twice.

pub(crate) mod accumulator;
pub mod partitioner;
mod sender;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use protocol::ids::{Offset, TopicPartition};
pub use protocol::kafka_protocol::records::Compression;
use protocol::ResponseError;
use rt::sync::oneshot;
use rt::time::{Clock, Duration, Instant, SystemClock};

use crate::client::Client;
use crate::connection::lock;
use crate::error::{ClientError, ProduceError};
use crate::limits::{IN_FLIGHT_REQUESTS_MAX, PRODUCER_RETRIES_MAX, RECORD_BATCH_OVERHEAD_BYTES};
use crate::records::BatchRecord;
use accumulator::PendingRecord;
use sender::Shared;

/// How many replicas must have a batch before the broker answers (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: the broker sends no response; records complete with offset -1 once written
    /// to the socket.
    None,
    /// `acks=1`: the leader has appended the batch.
    Leader,
    /// `acks=all` (-1): every in-sync replica has the batch.
    #[default]
    All,
}

impl Acks {
    /// The wire value.
    pub fn as_i16(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings; names follow Kafka's producer properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Acknowledgement level.
    ///
    /// Default: [`Acks::All`].
    pub acks: Acks,
    /// How long a batch that is not full waits for more records before it is sent.
    ///
    /// Default: 5.
    pub linger_ms: u64,
    /// Target maximum of one partition batch in (estimated, uncompressed) bytes; a larger
    /// single record travels in a batch of its own.
    ///
    /// Default: 16384. Range: 1..=`max_request_size`.
    pub batch_size: usize,
    /// Codec for the batches.
    ///
    /// Default: [`Compression::None`].
    pub compression: Compression,
    /// Attempts after the first for a batch that fails with a retriable error; retrying ends
    /// earlier if `delivery_timeout_ms` passes.
    ///
    /// Default: [`PRODUCER_RETRIES_MAX`]. Range: 0..=`PRODUCER_RETRIES_MAX`.
    pub retries: u32,
    /// Upper bound on the time from `send` until a record is acknowledged or failed.
    ///
    /// Default: 120000. Range: 1..
    pub delivery_timeout_ms: u64,
    /// Maximum bytes of one Produce request's record data, and of one record.
    ///
    /// Default: 1048576. Range: 1..=2^31-1.
    pub max_request_size: usize,
    /// Bytes of records accepted but not yet completed; `send` waits for room beyond this.
    ///
    /// Default: 33554432 (32 MiB). Range: `max_request_size`..=2^32-1.
    pub buffer_memory: usize,
    /// Produce requests in flight to one broker at once.
    ///
    /// Default: 5. Range: 1..=[`IN_FLIGHT_REQUESTS_MAX`].
    pub max_in_flight_requests_per_connection: usize,
    /// Idempotent producing: no duplicates from retries. Takes effect only with
    /// [`Acks::All`]; with acks 0 or 1 the producer is not idempotent (as Kafka's producer
    /// when idempotence is not set explicitly).
    ///
    /// Default: true.
    pub enable_idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 5,
            batch_size: 16_384,
            compression: Compression::None,
            retries: PRODUCER_RETRIES_MAX,
            delivery_timeout_ms: 120_000,
            max_request_size: 1_048_576,
            buffer_memory: 32 * 1024 * 1024,
            max_in_flight_requests_per_connection: 5,
            enable_idempotence: true,
        }
    }
}

impl ProducerConfig {
    /// True when batches carry a producer id and sequences.
    pub fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks == Acks::All
    }

    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |field, reason| Err(ClientError::InvalidConfig { field, reason });
        if self.max_request_size == 0 || self.max_request_size > i32::MAX as usize {
            return invalid("max_request_size", "must be in 1..=2147483647");
        }
        if self.batch_size == 0 || self.batch_size > self.max_request_size {
            return invalid("batch_size", "must be in 1..=max_request_size");
        }
        if self.retries > PRODUCER_RETRIES_MAX {
            return invalid("retries", "must be at most 2147483647");
        }
        if self.delivery_timeout_ms == 0 {
            return invalid("delivery_timeout_ms", "must be positive");
        }
        if self.buffer_memory < self.max_request_size || self.buffer_memory > u32::MAX as usize {
            return invalid("buffer_memory", "must be in max_request_size..=4294967295");
        }
        if !(1..=IN_FLIGHT_REQUESTS_MAX).contains(&self.max_in_flight_requests_per_connection) {
            return invalid("max_in_flight_requests_per_connection", "must be in 1..=IN_FLIGHT_REQUESTS_MAX");
        }
        Ok(())
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// An explicit partition; `None` lets the partitioner choose (by key, or sticky).
    pub partition: Option<i32>,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers. Of duplicate keys only the last is sent (the batch codec keys them in a map).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The record's timestamp; `None` stamps it with the client's wall clock at `send`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else set.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord { topic: topic.into(), value: Some(value.into()), ..ProducerRecord::default() }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    #[must_use]
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 with acks=0, where the broker does not say.
    pub offset: Offset,
    /// The record's timestamp, or the broker's append time if the topic uses log-append time.
    pub timestamp_ms: i64,
}

/// Resolves when the record is acknowledged or has failed for good.
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: oneshot::Receiver<Result<RecordMetadata, ProduceError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.outcome).poll(context).map(|received| received.unwrap_or(Err(ProduceError::Aborted)))
    }
}

/// Tells the sender to finish when the last producer handle is dropped.
#[derive(Debug)]
struct ProducerHandle {
    shared: Arc<Shared>,
}

impl Drop for ProducerHandle {
    fn drop(&mut self) {
        // The sender sends what is queued, then stops.
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wakeup.notify_one();
    }
}

/// An asynchronous, batching Kafka producer. Cloning shares it; when the last clone is
/// dropped, queued records are still sent and the sender task then stops.
///
/// # Example
///
/// ```no_run
/// # async fn demo(client: client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use client::producer::{Producer, ProducerConfig, ProducerRecord};
/// let producer = Producer::new(client, ProducerConfig::default())?;
/// let delivery = producer.send(ProducerRecord::new("events", "hello").with_key("k")).await?;
/// let metadata = delivery.await?;
/// println!("written at {}-{}@{}", metadata.topic, metadata.partition, metadata.offset);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    handle: Arc<ProducerHandle>,
}

impl Producer {
    /// Validates the config and starts the sender task.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`].
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer, ClientError> {
        config.validate()?;
        let shared = Shared::new(client, config);
        drop(rt::task::spawn(sender::run(Arc::clone(&shared))));
        Ok(Producer { handle: Arc::new(ProducerHandle { shared }) })
    }

    /// Accepts a record: chooses its partition, waits for buffer memory, and appends it to a
    /// batch. The returned future resolves when the record is delivered or has failed.
    ///
    /// # Errors
    /// `RecordTooLarge`, `UnknownPartition`, the topic's metadata errors once
    /// `delivery_timeout_ms` has passed without the topic becoming available, and
    /// `ProducerClosed`.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let shared = &self.handle.shared;
        let batch_record = BatchRecord {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(|| SystemClock.now_ms()),
        };
        let size_bytes = batch_record.size_bytes_max() + RECORD_BATCH_OVERHEAD_BYTES;
        if size_bytes > shared.config.max_request_size {
            return Err(ClientError::RecordTooLarge { size_bytes, limit_bytes: shared.config.max_request_size });
        }
        let partitions = self.available_partitions(&record.topic).await?;
        if let Some(partition) = record.partition {
            if !(0..partitions.count).contains(&partition) {
                return Err(ClientError::UnknownPartition {
                    topic: record.topic,
                    partition,
                    partition_count: usize::try_from(partitions.count).unwrap_or(0),
                });
            }
        }
        // Validated: buffer_memory <= u32::MAX and size_bytes <= max_request_size <= buffer_memory.
        let permits = u32::try_from(size_bytes).unwrap_or(u32::MAX);
        let memory =
            Arc::clone(&shared.memory).acquire_many_owned(permits).await.map_err(|_| ClientError::ProducerClosed)?;
        let (reply, outcome) = oneshot::channel();
        let pending = PendingRecord { record: batch_record, reply, memory: Some(memory) };
        let appended = {
            let mut accumulator = lock(&shared.accumulator);
            let partition = match (record.partition, pending.record.key.as_deref()) {
                (Some(partition), _) => partition,
                (None, Some(key)) => partitioner::partition_for_key(key, partitions.count),
                (None, None) => {
                    let sticky = accumulator.sticky_partition(&record.topic);
                    let current = sticky.filter(|p| *p < partitions.count);
                    let record_bytes = pending.record.size_bytes_max();
                    let keep = current.filter(|p| {
                        !accumulator.would_start_batch(&TopicPartition::new(record.topic.clone(), *p), record_bytes)
                    });
                    let chosen = keep
                        .or_else(|| {
                            partitioner::next_sticky_partition(&partitions.with_leader, current, rt::rand::random_u64())
                        })
                        .unwrap_or_else(|| {
                            i32::try_from(rt::rand::random_u64() % partitions.count as u64).unwrap_or(0)
                        });
                    accumulator.set_sticky_partition(&record.topic, chosen);
                    chosen
                }
            };
            shared.outstanding.send_modify(|count| *count += 1);
            accumulator.append(TopicPartition::new(record.topic, partition), pending, Instant::now())
        };
        if appended.new_batch || appended.batch_full {
            shared.wakeup.notify_one();
        }
        Ok(DeliveryFuture { outcome })
    }

    /// Sends a record and waits for its delivery.
    ///
    /// # Errors
    /// As [`Producer::send`] (as [`ProduceError::Client`]) and the delivery's error.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.send(record).await.map_err(ProduceError::Client)?.await
    }

    /// Sends every queued batch without waiting for linger, and waits until no accepted
    /// record is outstanding. Records sent concurrently with a flush extend the wait.
    ///
    /// # Errors
    /// `ProducerClosed` if the sender task has stopped.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let shared = &self.handle.shared;
        let mut outstanding = shared.outstanding.subscribe();
        shared.flushing.fetch_add(1, Ordering::SeqCst);
        shared.wakeup.notify_one();
        let result =
            outstanding.wait_for(|count| *count == 0).await.map(|_| ()).map_err(|_| ClientError::ProducerClosed);
        shared.flushing.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// The topic's partition count and the partitions that have a leader, waiting (up to
    /// `delivery_timeout_ms`) while the topic is being created or has no leaders yet.
    async fn available_partitions(&self, topic: &str) -> Result<TopicPartitions, ClientError> {
        let shared = &self.handle.shared;
        let client = &shared.client;
        let deadline = Instant::now() + Duration::from_millis(shared.config.delivery_timeout_ms);
        let backoff = Duration::from_millis(client.config().retry_backoff_ms);
        loop {
            let result = client.partitions_for_with(topic, true).await;
            let retry_error = match result {
                Ok(partitions) if !partitions.is_empty() => {
                    let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
                    let with_leader = partitions.iter().filter(|p| p.leader >= 0).map(|p| p.partition).collect();
                    return Ok(TopicPartitions { count, with_leader });
                }
                Ok(_) => ClientError::Broker { error: ResponseError::LeaderNotAvailable, message: None },
                Err(error) if error.is_retriable() => error,
                Err(error) => return Err(error),
            };
            if Instant::now() + backoff >= deadline {
                return Err(retry_error);
            }
            rt::time::sleep(backoff).await;
        }
    }
}

/// What the partitioner needs to know about a topic.
struct TopicPartitions {
    count: i32,
    /// Partitions with a leader, where sticky partitioning prefers to go.
    with_leader: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_relations_are_checked() {
        assert!(ProducerConfig::default().validate().is_ok());
        let config = ProducerConfig { batch_size: 2_000_000, ..ProducerConfig::default() };
        assert!(matches!(config.validate(), Err(ClientError::InvalidConfig { field: "batch_size", .. })));
        let config = ProducerConfig { buffer_memory: 10, ..ProducerConfig::default() };
        assert!(matches!(config.validate(), Err(ClientError::InvalidConfig { field: "buffer_memory", .. })));
        let config = ProducerConfig { max_in_flight_requests_per_connection: 0, ..ProducerConfig::default() };
        assert!(config.validate().is_err());
    }

    #[test]
    fn acks_have_kafka_wire_values() {
        assert_eq!([Acks::None.as_i16(), Acks::Leader.as_i16(), Acks::All.as_i16()], [0, 1, -1]);
    }
}
