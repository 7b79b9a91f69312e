//! Per-partition queues of record batches: what the producer has accepted and not yet sent.
//!
//! The accumulator is plain data with no I/O and no clock: callers pass `now`. The sender
//! drains batches that are ready and hands back the ones to retry.
//!
//! # Invariants
//!
//! * At most one batch per partition is in flight. A retried batch goes back to the front of
//!   its queue, so records of a partition reach the broker in the order they were sent even
//!   when a request fails and is retried (Kafka's `max.in.flight.requests.per.connection=1`
//!   guarantee, kept per partition while requests for different partitions still pipeline).
//! * Only the last batch of a queue that has never been attempted takes new records.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use protocol::ids::TopicPartition;
use rt::sync::{oneshot, OwnedSemaphorePermit};
use rt::time::{Duration, Instant};

use crate::error::{ClientError, ProduceError};
use crate::limits::RECORD_BATCH_OVERHEAD_BYTES;
use crate::producer::RecordMetadata;
use crate::records::BatchRecord;

/// Where a record's outcome is delivered.
pub(crate) type Reply = oneshot::Sender<Result<RecordMetadata, ProduceError>>;

/// A record accepted by `send`, waiting for its outcome.
#[derive(Debug)]
pub(crate) struct PendingRecord {
    pub(crate) record: BatchRecord,
    pub(crate) reply: Reply,
    /// The buffer-memory permit, released when the record completes.
    pub(crate) memory: Option<OwnedSemaphorePermit>,
}

/// Records of one partition sent together in one Produce request.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    pub(crate) topic_partition: TopicPartition,
    pub(crate) records: Vec<PendingRecord>,
    /// Estimated encoded size, header included; compared with `batch_size`.
    pub(crate) size_bytes: usize,
    /// When the first record arrived: linger and the delivery timeout count from here.
    pub(crate) created_at: Instant,
    /// Produce attempts made so far.
    pub(crate) attempts: u32,
    /// The error of the last attempt, reported if the batch finally times out.
    pub(crate) last_error: Option<ClientError>,
    /// The encoded batch, kept across retries so a retry sends identical bytes.
    pub(crate) encoded: Option<Bytes>,
}

impl ProducerBatch {
    fn new(topic_partition: TopicPartition, now: Instant) -> Self {
        ProducerBatch {
            topic_partition,
            records: Vec::new(),
            size_bytes: RECORD_BATCH_OVERHEAD_BYTES,
            created_at: now,
            attempts: 0,
            last_error: None,
            encoded: None,
        }
    }

    /// Whether another `record_bytes` fit. An empty batch takes any record, so a record
    /// larger than `batch_size` travels alone.
    fn has_room(&self, record_bytes: usize, batch_size: usize) -> bool {
        self.records.is_empty()
            || (self.attempts == 0 && self.encoded.is_none() && self.size_bytes + record_bytes <= batch_size)
    }
}

#[derive(Debug, Default)]
struct PartitionQueue {
    batches: VecDeque<ProducerBatch>,
    /// A batch of this partition is being sent.
    in_flight: bool,
    /// A retried batch waits until then (retry backoff).
    retry_at: Option<Instant>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The record started a new batch.
    pub(crate) new_batch: bool,
    /// The batch the record went into is now full (ready to send regardless of linger).
    pub(crate) batch_full: bool,
}

/// The per-partition queues.
#[derive(Debug)]
pub(crate) struct Accumulator {
    /// Max estimated bytes of one batch (`ProducerConfig::batch_size`).
    batch_size: usize,
    /// How long a batch that is not full waits for more records (`linger_ms`).
    linger: Duration,
    partitions: BTreeMap<TopicPartition, PartitionQueue>,
    /// The current sticky partition of each topic, for records without a key.
    sticky: BTreeMap<String, i32>,
}

impl Accumulator {
    pub(crate) fn new(batch_size: usize, linger: Duration) -> Self {
        Accumulator { batch_size, linger, partitions: BTreeMap::new(), sticky: BTreeMap::new() }
    }

    /// Whether appending `record_bytes` to the partition would start a new batch.
    pub(crate) fn would_start_batch(&self, topic_partition: &TopicPartition, record_bytes: usize) -> bool {
        self.partitions
            .get(topic_partition)
            .and_then(|queue| queue.batches.back())
            .is_none_or(|last| !last.has_room(record_bytes, self.batch_size))
    }

    /// The topic's sticky partition, if one was chosen.
    pub(crate) fn sticky_partition(&self, topic: &str) -> Option<i32> {
        self.sticky.get(topic).copied()
    }

    /// Makes `partition` the topic's sticky partition.
    pub(crate) fn set_sticky_partition(&mut self, topic: &str, partition: i32) {
        self.sticky.insert(topic.to_owned(), partition);
    }

    /// Appends a record to its partition's open batch, or to a new one.
    pub(crate) fn append(&mut self, topic_partition: TopicPartition, record: PendingRecord, now: Instant) -> Appended {
        let record_bytes = record.record.size_bytes_max();
        let new_batch = self.would_start_batch(&topic_partition, record_bytes);
        let queue = self.partitions.entry(topic_partition.clone()).or_default();
        if new_batch {
            queue.batches.push_back(ProducerBatch::new(topic_partition, now));
        }
        let batch = queue.batches.back_mut().expect("a batch was just ensured");
        batch.size_bytes += record_bytes;
        batch.records.push(record);
        Appended { new_batch, batch_full: batch.size_bytes >= self.batch_size }
    }

    /// Takes the front batch of every partition that is not in flight, not backing off, and
    /// ready: full, followed by another batch, lingered long enough, or `force`d (flush and
    /// close). Marks those partitions in flight.
    pub(crate) fn drain(&mut self, now: Instant, force: bool) -> Vec<ProducerBatch> {
        let mut ready = Vec::new();
        for queue in self.partitions.values_mut() {
            if queue.in_flight || queue.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let Some(front) = queue.batches.front() else {
                continue;
            };
            let is_ready = force
                || queue.batches.len() > 1
                || front.size_bytes >= self.batch_size
                || front.attempts > 0
                || now >= front.created_at + self.linger;
            if is_ready {
                queue.retry_at = None;
                queue.in_flight = true;
                ready.extend(queue.batches.pop_front());
            }
        }
        self.partitions.retain(|_, queue| queue.in_flight || !queue.batches.is_empty());
        ready
    }

    /// The earliest time something may become ready without new records arriving: a linger
    /// expiry or the end of a retry backoff. `None` if nothing is waiting.
    pub(crate) fn next_ready_at(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter(|queue| !queue.in_flight)
            .filter_map(|queue| {
                let front = queue.batches.front()?;
                let lingered = if front.attempts > 0 { front.created_at } else { front.created_at + self.linger };
                Some(queue.retry_at.map_or(lingered, |at| at.max(lingered)))
            })
            .min()
    }

    /// The partition's in-flight batch completed (delivered or failed for good).
    pub(crate) fn complete(&mut self, topic_partition: &TopicPartition) {
        if let Some(queue) = self.partitions.get_mut(topic_partition) {
            queue.in_flight = false;
            if queue.batches.is_empty() {
                self.partitions.remove(topic_partition);
            }
        }
    }

    /// Puts a drained batch back at the front of its queue, to be sent again at `retry_at`.
    pub(crate) fn reenqueue(&mut self, batch: ProducerBatch, retry_at: Instant) {
        let queue = self.partitions.entry(batch.topic_partition.clone()).or_default();
        queue.in_flight = false;
        queue.retry_at = Some(retry_at);
        queue.batches.push_front(batch);
    }

    /// No batch is queued or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH_SIZE: usize = 1000;
    const LINGER: Duration = Duration::from_millis(5);

    fn record(value_bytes: usize) -> (PendingRecord, oneshot::Receiver<Result<RecordMetadata, ProduceError>>) {
        let (reply, outcome) = oneshot::channel();
        let record = BatchRecord {
            key: None,
            value: Some(Bytes::from(vec![b'x'; value_bytes])),
            headers: vec![],
            timestamp_ms: 0,
        };
        (PendingRecord { record, reply, memory: None }, outcome)
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn values(batch: &ProducerBatch) -> Vec<usize> {
        batch.records.iter().map(|r| r.record.value.as_ref().map_or(0, Bytes::len)).collect()
    }

    #[test]
    fn records_fill_a_batch_until_batch_size_then_start_another() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(BATCH_SIZE, LINGER);
        let record_bytes = record(200).0.record.size_bytes_max();
        let per_batch = (BATCH_SIZE - RECORD_BATCH_OVERHEAD_BYTES) / record_bytes;
        let mut new_batches = 0;
        for _ in 0..per_batch * 2 + 1 {
            let appended = accumulator.append(tp(0), record(200).0, now);
            new_batches += usize::from(appended.new_batch);
        }
        assert_eq!(new_batches, 3);
        // Linger has not passed: the two full batches are ready, but only one may be in flight.
        let drained = accumulator.drain(now, false);
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].records.len(), per_batch);
        assert!(drained[0].size_bytes <= BATCH_SIZE);
        assert!(accumulator.drain(now, false).is_empty(), "one batch per partition in flight");
        accumulator.complete(&tp(0));
        assert_eq!(accumulator.drain(now, false)[0].records.len(), per_batch);
        accumulator.complete(&tp(0));
        assert!(accumulator.drain(now, false).is_empty(), "the last batch is not full and lingers");
        assert_eq!(accumulator.drain(now + LINGER, false)[0].records.len(), 1);
        accumulator.complete(&tp(0));
        assert!(accumulator.is_empty());
    }

    #[test]
    fn an_oversized_record_gets_a_batch_of_its_own() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(BATCH_SIZE, LINGER);
        assert!(accumulator.append(tp(0), record(10).0, now).new_batch);
        let big = accumulator.append(tp(0), record(5000).0, now);
        assert!(big.new_batch && big.batch_full);
        assert!(accumulator.append(tp(0), record(10).0, now).new_batch, "nothing joins a full batch");
    }

    #[test]
    fn linger_holds_a_partial_batch_until_it_expires_or_a_flush() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(BATCH_SIZE, LINGER);
        accumulator.append(tp(0), record(10).0, start);
        accumulator.append(tp(1), record(10).0, start + Duration::from_millis(3));
        assert!(accumulator.drain(start, false).is_empty());
        assert_eq!(accumulator.next_ready_at(), Some(start + LINGER));
        let first = accumulator.drain(start + LINGER, false);
        assert_eq!(first.iter().map(|b| b.topic_partition.clone()).collect::<Vec<_>>(), vec![tp(0)]);
        assert_eq!(accumulator.next_ready_at(), Some(start + Duration::from_millis(3) + LINGER));
        assert_eq!(accumulator.drain(start + LINGER, true).len(), 1, "force ignores linger");
        assert_eq!(accumulator.next_ready_at(), None);
    }

    #[test]
    fn a_retried_batch_goes_first_and_waits_for_its_backoff() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(BATCH_SIZE, Duration::ZERO);
        accumulator.append(tp(0), record(1).0, now);
        let mut first = accumulator.drain(now, false).pop().expect("ready");
        // While the first batch is in flight, later records form a second batch.
        accumulator.append(tp(0), record(2).0, now);
        accumulator.append(tp(0), record(3).0, now);
        first.attempts += 1;
        let backoff = Duration::from_millis(100);
        accumulator.reenqueue(first, now + backoff);
        assert!(accumulator.drain(now, false).is_empty(), "backing off");
        assert_eq!(accumulator.next_ready_at(), Some(now + backoff));
        accumulator.append(tp(0), record(4).0, now);
        let retried = accumulator.drain(now + backoff, false).pop().expect("ready after backoff");
        assert_eq!(values(&retried), vec![1], "the retried batch is sent before later records");
        accumulator.complete(&tp(0));
        let next = accumulator.drain(now + backoff, false).pop().expect("ready");
        assert_eq!(values(&next), vec![2, 3, 4]);
    }

    #[test]
    fn partitions_are_independent() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(BATCH_SIZE, Duration::ZERO);
        accumulator.append(tp(0), record(1).0, now);
        accumulator.append(tp(1), record(1).0, now);
        let drained = accumulator.drain(now, false);
        assert_eq!(drained.len(), 2, "one in-flight batch per partition, not per producer");
        accumulator.append(tp(0), record(1).0, now);
        assert!(accumulator.drain(now, false).is_empty());
        accumulator.complete(&tp(1));
        assert!(accumulator.drain(now, false).is_empty(), "partition 0 is still in flight");
        accumulator.complete(&tp(0));
        assert_eq!(accumulator.drain(now, false).len(), 1);
    }

    #[test]
    fn would_start_batch_tracks_room_in_the_open_batch() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(BATCH_SIZE, LINGER);
        assert!(accumulator.would_start_batch(&tp(0), 10));
        accumulator.append(tp(0), record(10).0, now);
        assert!(!accumulator.would_start_batch(&tp(0), 10));
        assert!(accumulator.would_start_batch(&tp(0), BATCH_SIZE));
    }
}
