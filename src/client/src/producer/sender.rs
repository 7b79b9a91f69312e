//! The producer's sender task: drains ready batches, sends one Produce request per broker,
//! and completes, retries or fails the batches by the response.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use protocol::kafka_protocol::messages::produce_response::PartitionProduceResponse;
use protocol::kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestKind, ResponseKind};
use protocol::ResponseError;
use rt::sync::{watch, Notify, Semaphore};
use rt::time::{timeout, Duration, Instant};

use super::accumulator::{Accumulator, PendingRecord, ProducerBatch};
use super::{Acks, ProducerConfig, RecordMetadata};
use crate::client::{topic_name, Client};
use crate::connection::lock;
use crate::error::{ClientError, ProduceError};
use crate::records::{encode_stamped_batch, ProducerStamp};

/// State shared by the producer handles and the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: ProducerConfig,
    pub(crate) accumulator: Mutex<Accumulator>,
    /// Wakes the sender: a batch to send, a completion, a flush, or close.
    pub(crate) wakeup: Notify,
    /// Permits are bytes of `buffer_memory`; each pending record holds its size.
    pub(crate) memory: Arc<Semaphore>,
    /// Records accepted and not yet completed; `flush` waits for zero.
    pub(crate) outstanding: watch::Sender<usize>,
    /// Number of `flush` calls waiting; while positive, linger is ignored.
    pub(crate) flushing: AtomicUsize,
    /// Set when the last producer handle is dropped: send what is queued, then stop.
    pub(crate) closed: AtomicBool,
    /// One metadata refresh at a time.
    refreshing: AtomicBool,
    /// An InitProducerId is in flight (one at a time, off the sender loop).
    identity_pending: AtomicBool,
    /// Per-broker bound on Produce requests in flight.
    broker_slots: Mutex<BTreeMap<i32, Arc<Semaphore>>>,
    /// The idempotent producer's id, epoch and sequences (unused when not idempotent).
    idempotence: Mutex<Idempotence>,
}

/// An idempotent producer's identity and each partition's next sequence.
#[derive(Debug, Default)]
struct Idempotence {
    /// Producer id and epoch from InitProducerId; `None` before the first answer.
    identity: Option<(i64, i16)>,
    /// A stamped batch failed, so its sequence may or may not be in the log: the epoch must
    /// be bumped (and every partition restart at 0) before the next batch is stamped.
    bump_needed: bool,
    /// Per partition: the epoch its sequences belong to and the next sequence.
    sequences: BTreeMap<TopicPartition, (i16, i32)>,
}

impl Idempotence {
    /// The stamp for a batch of `records` on `topic_partition`, advancing its sequence;
    /// `None` while no usable identity is held. A partition whose sequence would pass
    /// `i32::MAX` asks for a new epoch instead.
    fn stamp(&mut self, topic_partition: &TopicPartition, records: usize) -> Option<ProducerStamp> {
        if self.bump_needed {
            return None;
        }
        let (producer_id, producer_epoch) = self.identity?;
        let records = i32::try_from(records).ok()?;
        let entry = self.sequences.entry(topic_partition.clone()).or_insert((producer_epoch, 0));
        if entry.0 != producer_epoch {
            *entry = (producer_epoch, 0);
        }
        let base_sequence = entry.1;
        let Some(next_sequence) = base_sequence.checked_add(records) else {
            self.bump_needed = true;
            return None;
        };
        entry.1 = next_sequence;
        Some(ProducerStamp { producer_id, producer_epoch, base_sequence })
    }
}

impl Shared {
    pub(crate) fn new(client: Client, config: ProducerConfig) -> Arc<Shared> {
        Arc::new(Shared {
            accumulator: Mutex::new(Accumulator::new(config.batch_size, Duration::from_millis(config.linger_ms))),
            wakeup: Notify::new(),
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            outstanding: watch::Sender::new(0),
            flushing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            identity_pending: AtomicBool::new(false),
            broker_slots: Mutex::new(BTreeMap::new()),
            idempotence: Mutex::new(Idempotence::default()),
            client,
            config,
        })
    }

    fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.client.config().retry_backoff_ms)
    }

    fn delivery_deadline(&self, batch: &ProducerBatch) -> Instant {
        batch.created_at + Duration::from_millis(self.config.delivery_timeout_ms)
    }

    /// Completes one record and releases its memory.
    fn complete_record(&self, record: PendingRecord, outcome: Result<RecordMetadata, ProduceError>) {
        // The caller may have dropped its future; the outcome is then unobserved.
        let _ = record.reply.send(outcome);
        drop(record.memory);
        self.outstanding.send_modify(|count| *count = count.saturating_sub(1));
    }

    /// Delivers a batch's records: offsets are consecutive from `base_offset`.
    fn succeed(&self, batch: ProducerBatch, base_offset: Offset, log_append_time_ms: i64) {
        let TopicPartition { topic, partition } = batch.topic_partition.clone();
        for (index, record) in batch.records.into_iter().enumerate() {
            let offset = if base_offset.0 < 0 { base_offset } else { base_offset.plus(index as i64) };
            let timestamp_ms = if log_append_time_ms >= 0 { log_append_time_ms } else { record.record.timestamp_ms };
            let metadata = RecordMetadata { topic: topic.clone(), partition: partition.0, offset, timestamp_ms };
            self.complete_record(record, Ok(metadata));
        }
        self.finish_partition(&batch.topic_partition);
    }

    /// Fails every record of a batch with the same error.
    fn fail(&self, batch: ProducerBatch, error: ProduceError) {
        tracing::debug!(topic_partition = %batch.topic_partition, %error, "batch failed");
        if self.config.idempotent() && batch.encoded.is_some() {
            lock(&self.idempotence).bump_needed = true;
        }
        for record in batch.records {
            self.complete_record(record, Err(error.clone()));
        }
        self.finish_partition(&batch.topic_partition);
    }

    /// Fails `batch` with DELIVERY_TIMEOUT, carrying its last error.
    fn time_out(&self, mut batch: ProducerBatch) {
        let failure = ProduceError::DeliveryTimeout {
            topic_partition: batch.topic_partition.clone(),
            delivery_timeout_ms: self.config.delivery_timeout_ms,
            last_error: batch.last_error.take().map(Box::new),
        };
        self.fail(batch, failure);
    }

    fn finish_partition(&self, topic_partition: &TopicPartition) {
        lock(&self.accumulator).complete(topic_partition);
        self.wakeup.notify_one();
    }

    /// After a failed attempt: retry after the backoff if the error is retriable and both
    /// `retries` and `delivery_timeout_ms` allow it, otherwise fail the batch.
    fn retry_or_fail(self: &Arc<Self>, mut batch: ProducerBatch, error: ClientError) {
        batch.attempts += 1;
        let now = Instant::now();
        // Whether or not this batch is retried, the next one must not go to the same stale
        // leader (as Kafka's sender requests a metadata update on any invalid-metadata error).
        if may_mean_leader_moved(&error) {
            self.refresh_metadata(vec![batch.topic_partition.topic.clone()]);
        }
        if !is_retriable_for_produce(&error) {
            let failure = match error {
                ClientError::Broker { error, message } => {
                    ProduceError::Broker { topic_partition: batch.topic_partition.clone(), error, message }
                }
                other => ProduceError::Client(other),
            };
            return self.fail(batch, failure);
        }
        if batch.attempts > self.config.retries {
            let failure = ProduceError::RetriesExhausted {
                topic_partition: batch.topic_partition.clone(),
                attempts: batch.attempts,
                last_error: Box::new(error),
            };
            return self.fail(batch, failure);
        }
        let retry_at = now + self.retry_backoff();
        if retry_at >= self.delivery_deadline(&batch) {
            batch.last_error = Some(error);
            return self.time_out(batch);
        }
        tracing::debug!(topic_partition = %batch.topic_partition, attempts = batch.attempts, %error, "retrying batch");
        batch.last_error = Some(error);
        lock(&self.accumulator).reenqueue(batch, retry_at);
        self.wakeup.notify_one();
    }

    /// Starts a metadata refresh for `topics` in the background unless one is running.
    fn refresh_metadata(self: &Arc<Self>, mut topics: Vec<String>) {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        topics.sort();
        topics.dedup();
        let shared = Arc::clone(self);
        drop(rt::task::spawn(async move {
            if let Err(error) = shared.client.refresh_metadata_with(Some(&topics), true).await {
                tracing::debug!(%error, "producer metadata refresh failed");
            }
            shared.refreshing.store(false, Ordering::SeqCst);
            shared.wakeup.notify_one();
        }));
    }

    /// Starts an InitProducerId in the background when idempotent and an identity (or an epoch
    /// bump) is needed, unless one is in flight. The sender loop goes on meanwhile, so batches
    /// waiting for their stamp still fail on time when the broker does not answer.
    fn request_identity(self: &Arc<Self>) {
        let needed = {
            let idempotence = lock(&self.idempotence);
            self.config.idempotent() && (idempotence.identity.is_none() || idempotence.bump_needed)
        };
        if !needed || self.identity_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = Arc::clone(self);
        drop(rt::task::spawn(async move {
            shared.ensure_identity().await;
            shared.identity_pending.store(false, Ordering::SeqCst);
            shared.wakeup.notify_one();
        }));
    }

    /// Takes a producer id, or bumps the epoch of the one held (KIP-360), when idempotent and
    /// needed. On failure the batches wait (their delivery timeout still runs).
    async fn ensure_identity(&self) {
        let current = {
            let idempotence = lock(&self.idempotence);
            if !self.config.idempotent() || (idempotence.identity.is_some() && !idempotence.bump_needed) {
                return;
            }
            idempotence.identity
        };
        let (producer_id, producer_epoch) = current.unwrap_or((-1, -1));
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(protocol::kafka_protocol::messages::ProducerId(producer_id))
            .with_producer_epoch(producer_epoch);
        let answer = match self.client.send(None, RequestKind::InitProducerId(request)).await {
            Ok(ResponseKind::InitProducerId(response)) => match ClientError::from_code(response.error_code, None) {
                None => Ok((response.producer_id.0, response.producer_epoch)),
                Some(error) => Err(error),
            },
            Ok(_) => Err(ClientError::UnexpectedResponse { api_key: ApiKey::InitProducerId }),
            Err(error) => Err(error),
        };
        match answer {
            Ok(identity) => {
                tracing::debug!(producer_id = identity.0, producer_epoch = identity.1, "producer identity");
                let mut idempotence = lock(&self.idempotence);
                idempotence.identity = Some(identity);
                idempotence.bump_needed = false;
            }
            Err(error) => tracing::debug!(%error, "InitProducerId failed; batches wait"),
        }
    }

    fn broker_slots(&self, broker: i32) -> Arc<Semaphore> {
        let max = self.config.max_in_flight_requests_per_connection;
        Arc::clone(lock(&self.broker_slots).entry(broker).or_insert_with(|| Arc::new(Semaphore::new(max))))
    }
}

/// Errors worth retrying for a batch: the leader moved or is unknown, the request timed out,
/// too few replicas for now, a storage error on one broker, or the network.
/// CORRUPT_MESSAGE is retriable in Kafka's table but would fail again with the same bytes.
fn is_retriable_for_produce(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { error, .. } => matches!(
            error,
            ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable
                | ResponseError::RequestTimedOut
                | ResponseError::NotEnoughReplicas
                | ResponseError::NotEnoughReplicasAfterAppend
                | ResponseError::KafkaStorageError
                | ResponseError::NetworkException
        ),
        other => other.is_retriable(),
    }
}

/// Errors after which the cached leader may be wrong.
fn may_mean_leader_moved(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { error, .. } => matches!(
            error,
            ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable
                | ResponseError::KafkaStorageError
        ),
        _ => true,
    }
}

/// The sender loop. Ends after close once every batch has completed.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        shared.request_identity();
        let now = Instant::now();
        let force = shared.flushing.load(Ordering::SeqCst) > 0 || shared.closed.load(Ordering::SeqCst);
        let ready = lock(&shared.accumulator).drain(now, force);
        let mut by_leader: BTreeMap<i32, Vec<ProducerBatch>> = BTreeMap::new();
        let mut unrouted_topics = Vec::new();
        for mut batch in ready {
            if now >= shared.delivery_deadline(&batch) {
                shared.time_out(batch);
                continue;
            }
            if batch.encoded.is_none() {
                let stamp = if shared.config.idempotent() {
                    let stamp = lock(&shared.idempotence).stamp(&batch.topic_partition, batch.records.len());
                    if stamp.is_none() {
                        // No identity yet (or an epoch bump pending): try again after the backoff.
                        let retry_at = now + shared.retry_backoff();
                        lock(&shared.accumulator).reenqueue(batch, retry_at);
                        continue;
                    }
                    stamp
                } else {
                    None
                };
                let records = batch.records.iter().map(|pending| &pending.record);
                match encode_stamped_batch(&batch.topic_partition, records, shared.config.compression, stamp) {
                    Ok(encoded) => batch.encoded = Some(encoded),
                    Err(error) => {
                        if stamp.is_some() {
                            // Its sequences were taken and will never be written.
                            lock(&shared.idempotence).bump_needed = true;
                        }
                        shared.fail(batch, ProduceError::Client(error));
                        continue;
                    }
                }
            }
            match shared.client.cached_leader(&batch.topic_partition) {
                Some(leader) => by_leader.entry(leader).or_default().push(batch),
                None => {
                    unrouted_topics.push(batch.topic_partition.topic.clone());
                    let retry_at = now + shared.retry_backoff();
                    lock(&shared.accumulator).reenqueue(batch, retry_at);
                }
            }
        }
        if !unrouted_topics.is_empty() {
            shared.refresh_metadata(unrouted_topics);
        }
        for (leader, batches) in by_leader {
            for request in split_by_size(batches, shared.config.max_request_size) {
                drop(rt::task::spawn(send_produce(Arc::clone(&shared), leader, request)));
            }
        }

        let (next_ready_at, idle) = {
            let accumulator = lock(&shared.accumulator);
            (accumulator.next_ready_at(), accumulator.is_empty())
        };
        if idle && shared.closed.load(Ordering::SeqCst) {
            break;
        }
        let notified = shared.wakeup.notified();
        match next_ready_at {
            Some(at) => {
                let _ = timeout(at.saturating_duration_since(Instant::now()), notified).await;
            }
            None => notified.await,
        }
    }
}

/// Groups batches for one broker into requests of at most `max_bytes` record data (a batch
/// larger than that alone still gets a request; the broker decides).
fn split_by_size(batches: Vec<ProducerBatch>, max_bytes: usize) -> Vec<Vec<ProducerBatch>> {
    let mut requests: Vec<Vec<ProducerBatch>> = Vec::new();
    let mut current_bytes = 0;
    for batch in batches {
        let bytes = batch.encoded.as_ref().map_or(batch.size_bytes, |encoded| encoded.len());
        match requests.last_mut() {
            Some(current) if current_bytes + bytes <= max_bytes => {
                current_bytes += bytes;
                current.push(batch);
            }
            _ => {
                current_bytes = bytes;
                requests.push(vec![batch]);
            }
        }
    }
    requests
}

/// What one Produce attempt came back with.
enum Attempt {
    /// acks=0: written to the socket.
    Sent,
    /// The broker's answer.
    Answered(ProduceResponse),
    /// No answer: the connection or the request failed.
    Failed(ClientError),
}

/// Sends one Produce request for batches led by `broker` and settles every batch. The whole
/// attempt (waiting for a request slot, dialling, the exchange) ends by the batches' earliest
/// delivery deadline: while a broker keeps failing, queued attempts would otherwise wait for
/// one another's connection timeouts far past it.
async fn send_produce(shared: Arc<Shared>, broker: i32, batches: Vec<ProducerBatch>) {
    let deadline = batches.iter().map(|batch| shared.delivery_deadline(batch)).min().unwrap_or_else(Instant::now);
    let left = deadline.saturating_duration_since(Instant::now());
    let attempt = match timeout(left, attempt_produce(&shared, broker, &batches)).await {
        Ok(attempt) => attempt,
        Err(_) => {
            for batch in batches {
                shared.time_out(batch);
            }
            return;
        }
    };
    let response = match attempt {
        Attempt::Sent => {
            for batch in batches {
                shared.succeed(batch, Offset(-1), -1);
            }
            return;
        }
        Attempt::Failed(error) => {
            for batch in batches {
                shared.retry_or_fail(batch, error.clone());
            }
            return;
        }
        Attempt::Answered(response) => response,
    };
    let mut results: BTreeMap<(String, i32), PartitionProduceResponse> = BTreeMap::new();
    for topic in response.responses {
        for partition in topic.partition_responses {
            results.insert((topic.name.0.to_string(), partition.index), partition);
        }
    }
    for batch in batches {
        let key = (batch.topic_partition.topic.clone(), batch.topic_partition.partition.0);
        match results.remove(&key) {
            None => {
                let error =
                    ClientError::MissingFromResponse { api_key: ApiKey::Produce, topic: key.0, partition: Some(key.1) };
                shared.retry_or_fail(batch, error);
            }
            Some(result) => {
                match ClientError::from_code(result.error_code, result.error_message.map(|m| m.to_string())) {
                    None => shared.succeed(batch, Offset(result.base_offset), result.log_append_time_ms),
                    Some(error) => shared.retry_or_fail(batch, error),
                }
            }
        }
    }
}

/// One Produce attempt: a request slot for the broker, then the request.
async fn attempt_produce(shared: &Shared, broker: i32, batches: &[ProducerBatch]) -> Attempt {
    let slots = shared.broker_slots(broker);
    let _slot = slots.acquire().await;
    let request =
        RequestKind::Produce(produce_request(&shared.config, shared.client.config().request_timeout_ms, batches));
    if shared.config.acks == Acks::None {
        let sent = match shared.client.connection(Some(broker)).await {
            Ok(connection) => connection.send_without_response(&request).await,
            Err(error) => Err(error),
        };
        return match sent {
            Ok(()) => Attempt::Sent,
            Err(error) => Attempt::Failed(error),
        };
    }
    match shared.client.send(Some(broker), request).await {
        Ok(ResponseKind::Produce(response)) => Attempt::Answered(response),
        Ok(_) => Attempt::Failed(ClientError::UnexpectedResponse { api_key: ApiKey::Produce }),
        Err(error) => Attempt::Failed(error),
    }
}

/// The Produce request for a set of batches (one entry per topic, one per partition).
fn produce_request(config: &ProducerConfig, request_timeout_ms: u64, batches: &[ProducerBatch]) -> ProduceRequest {
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for batch in batches {
        topics.entry(batch.topic_partition.topic.as_str()).or_default().push(
            PartitionProduceData::default()
                .with_index(batch.topic_partition.partition.0)
                .with_records(batch.encoded.clone()),
        );
    }
    ProduceRequest::default()
        .with_acks(config.acks.as_i16())
        .with_timeout_ms(i32::try_from(request_timeout_ms).unwrap_or(i32::MAX))
        .with_topic_data(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partitions)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn produce_retries_follow_the_documented_list() {
        let broker = |error| ClientError::Broker { error, message: None };
        for retriable in [
            ResponseError::NotLeaderOrFollower,
            ResponseError::NotEnoughReplicasAfterAppend,
            ResponseError::KafkaStorageError,
        ] {
            assert!(is_retriable_for_produce(&broker(retriable)), "{retriable:?}");
        }
        for fatal in [
            ResponseError::MessageTooLarge,
            ResponseError::CorruptMessage,
            ResponseError::InvalidTopicException,
            ResponseError::PolicyViolation,
        ] {
            assert!(!is_retriable_for_produce(&broker(fatal)), "{fatal:?}");
        }
        let lost = ClientError::Disconnected { address: "b:1".into(), cause: crate::error::DisconnectCause::Closed };
        assert!(is_retriable_for_produce(&lost));
    }

    #[test]
    fn requests_are_split_at_max_request_size() {
        let batch = |partition: i32, bytes: usize| {
            let mut batch = ProducerBatch {
                topic_partition: TopicPartition::new("t", partition),
                records: vec![],
                size_bytes: bytes,
                created_at: Instant::now(),
                attempts: 0,
                last_error: None,
                encoded: None,
            };
            batch.encoded = Some(Bytes::from(vec![0; bytes]));
            batch
        };
        let requests = split_by_size(vec![batch(0, 400), batch(1, 400), batch(2, 400), batch(3, 2000)], 1000);
        let shape: Vec<Vec<i32>> =
            requests.iter().map(|r| r.iter().map(|b| b.topic_partition.partition.0).collect()).collect();
        assert_eq!(shape, vec![vec![0, 1], vec![2], vec![3]]);

        let request = produce_request(&ProducerConfig::default(), 30_000, &requests[0]);
        assert_eq!(request.acks, -1);
        assert_eq!(request.topic_data.len(), 1, "partitions of one topic share a topic entry");
        assert_eq!(request.topic_data[0].partition_data.len(), 2);
    }
}
