//! The consumer: manual assignment, seek, and fetch (no consumer groups yet).
//!
//! # Design
//!
//! The consumer keeps a position per assigned partition. [`Consumer::poll`] resolves missing
//! positions with ListOffsets (per `auto_offset_reset`), sends one Fetch per partition leader
//! concurrently, decodes the returned batches, drops records below the position (a fetch
//! returns whole batches) and control batches, and advances each position past the last
//! complete batch. It repeats until it has records or the timeout passes.
//!
//! # Invariants
//!
//! * A position only moves forward by fetching, or anywhere by `seek` and offset resets.
//! * A partition whose fetch failed keeps its position, so nothing is skipped; when some
//!   partitions return records and others fail, the records are returned and the error
//!   recurs on a later poll.

use std::collections::BTreeMap;

use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use protocol::kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestKind, ResponseKind};
use protocol::ResponseError;
use rt::sync::mpsc;
use rt::time::{sleep, Duration, Instant};

use crate::admin::{list_offset, OffsetSpec};
use crate::client::{topic_name, Client};
use crate::error::ClientError;
use crate::records::decode_fetched;
pub use crate::records::ConsumerRecord;
pub use protocol::kafka_protocol::records::TimestampType;

/// What to do when a partition has no position or its position is outside the log
/// (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Start from the log start offset.
    Earliest,
    /// Start from the log end offset: only records produced from now on.
    #[default]
    Latest,
    /// Fail `poll` with an error instead.
    None,
}

/// Which records a fetch may return (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Everything up to the high watermark, including records of open or aborted
    /// transactions. The only level implemented so far.
    #[default]
    ReadUncommitted,
}

impl IsolationLevel {
    fn as_i8(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
        }
    }
}

/// Consumer settings; names follow Kafka's consumer properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The broker holds a fetch until this many bytes are available (or the wait ends).
    ///
    /// Default: 1. Range: 0..
    pub fetch_min_bytes: i32,
    /// Upper bound the broker applies to one fetch response (it still returns a first batch
    /// larger than this, so the consumer cannot get stuck).
    ///
    /// Default: 52428800. Range: 1.. and within `ClientConfig::socket_max_bytes`.
    pub fetch_max_bytes: i32,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`.
    ///
    /// Default: 500. Range: 0..
    pub fetch_max_wait_ms: i32,
    /// Upper bound on one partition's data in a fetch response.
    ///
    /// Default: 1048576. Range: 1..
    pub max_partition_fetch_bytes: i32,
    /// Where to start without a valid position.
    ///
    /// Default: [`OffsetReset::Latest`].
    pub auto_offset_reset: OffsetReset,
    /// Which records to read.
    ///
    /// Default: [`IsolationLevel::ReadUncommitted`].
    pub isolation_level: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            fetch_max_wait_ms: 500,
            max_partition_fetch_bytes: 1_048_576,
            auto_offset_reset: OffsetReset::Latest,
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }
}

impl ConsumerConfig {
    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self, socket_max_bytes: usize) -> Result<(), ClientError> {
        let invalid = |field, reason| Err(ClientError::InvalidConfig { field, reason });
        if self.fetch_min_bytes < 0 {
            return invalid("fetch_min_bytes", "must not be negative");
        }
        if self.fetch_max_bytes < 1 || usize::try_from(self.fetch_max_bytes).unwrap_or(usize::MAX) > socket_max_bytes {
            return invalid("fetch_max_bytes", "must be in 1..=socket_max_bytes");
        }
        if self.fetch_max_wait_ms < 0 {
            return invalid("fetch_max_wait_ms", "must not be negative");
        }
        if self.max_partition_fetch_bytes < 1 {
            return invalid("max_partition_fetch_bytes", "must be positive");
        }
        Ok(())
    }
}

/// Where [`Consumer::seek`] moves a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The log start offset.
    Beginning,
    /// The log end offset.
    End,
    /// An explicit offset (checked by the broker on the next fetch).
    Offset(Offset),
    /// The first offset whose timestamp is at or after this (ms since the epoch); the log end
    /// if there is none.
    Timestamp(i64),
}

#[derive(Debug, Clone, Default)]
struct PartitionState {
    /// The next offset to fetch; `None` until reset.
    position: Option<Offset>,
    /// From the last fetch response.
    high_watermark: Option<Offset>,
}

/// A consumer of manually assigned partitions. Not `Clone`: positions belong to one reader.
///
/// # Example
///
/// ```no_run
/// # async fn demo(client: client::Client) -> Result<(), client::ClientError> {
/// use client::consumer::{Consumer, ConsumerConfig, SeekTo};
/// use protocol::ids::TopicPartition;
/// let mut consumer = Consumer::new(client, ConsumerConfig::default())?;
/// let partition = TopicPartition::new("events", 0);
/// consumer.assign(vec![partition.clone()]);
/// consumer.seek(&partition, SeekTo::Beginning).await?;
/// for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
///     println!("{}@{}: {:?}", record.partition, record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
}

impl Consumer {
    /// Validates the config.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`].
    pub fn new(client: Client, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        config.validate(client.config().socket_max_bytes)?;
        Ok(Consumer { client, config, partitions: BTreeMap::new() })
    }

    /// Replaces the assignment. Partitions that stay keep their positions.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let mut previous = std::mem::take(&mut self.partitions);
        self.partitions = partitions
            .into_iter()
            .map(|tp| {
                let state = previous.remove(&tp).unwrap_or_default();
                (tp, state)
            })
            .collect();
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Moves a partition's position.
    ///
    /// # Errors
    /// `NotAssigned`, and ListOffsets errors for every target but `Offset`.
    pub async fn seek(&mut self, topic_partition: &TopicPartition, to: SeekTo) -> Result<(), ClientError> {
        if !self.partitions.contains_key(topic_partition) {
            return Err(ClientError::NotAssigned { topic_partition: topic_partition.clone() });
        }
        let position = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Beginning => list_offset(&self.client, topic_partition, OffsetSpec::Earliest).await?.0,
            SeekTo::End => list_offset(&self.client, topic_partition, OffsetSpec::Latest).await?.0,
            SeekTo::Timestamp(timestamp_ms) => {
                match list_offset(&self.client, topic_partition, OffsetSpec::Timestamp(timestamp_ms)).await?.0 {
                    Offset(-1) => list_offset(&self.client, topic_partition, OffsetSpec::Latest).await?.0,
                    offset => offset,
                }
            }
        };
        if let Some(state) = self.partitions.get_mut(topic_partition) {
            state.position = Some(position);
        }
        Ok(())
    }

    /// The next offset `poll` will return for a partition, if known.
    pub fn position(&self, topic_partition: &TopicPartition) -> Option<Offset> {
        self.partitions.get(topic_partition).and_then(|state| state.position)
    }

    /// The partition's high watermark as of the last fetch response.
    pub fn high_watermark(&self, topic_partition: &TopicPartition) -> Option<Offset> {
        self.partitions.get(topic_partition).and_then(|state| state.high_watermark)
    }

    /// Fetches records from the assigned partitions, waiting up to `timeout` for some to
    /// arrive. Returns an empty list if none did. Retriable errors (leader moves, lost
    /// connections) are retried inside the timeout.
    ///
    /// # Errors
    /// `OffsetOutOfRange`/`NoOffsetForPartition` with `OffsetReset::None`, `CorruptRecords`,
    /// and non-retriable broker errors.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        let backoff = Duration::from_millis(self.client.config().retry_backoff_ms);
        loop {
            match self.poll_once(deadline).await {
                Ok(records) if !records.is_empty() => return Ok(records),
                Ok(_) => {}
                Err(error) if error.is_retriable() => {
                    tracing::debug!(%error, "retrying fetch");
                    sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
                Err(error) => return Err(error),
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// One round: reset missing positions, one Fetch per leader, decode.
    async fn poll_once(&mut self, deadline: Instant) -> Result<Vec<ConsumerRecord>, ClientError> {
        self.reset_missing_positions().await?;
        if self.partitions.is_empty() {
            sleep(deadline.saturating_duration_since(Instant::now())).await;
            return Ok(Vec::new());
        }

        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, Offset)>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for (tp, state) in &self.partitions {
            let Some(position) = state.position else {
                continue;
            };
            match self.client.cached_leader(tp) {
                Some(leader) => by_leader.entry(leader).or_default().push((tp.clone(), position)),
                None => leaderless.push(tp.topic.clone()),
            }
        }
        if !leaderless.is_empty() {
            leaderless.dedup();
            self.client.refresh_metadata(Some(&leaderless)).await?;
        }
        if by_leader.is_empty() {
            let topic_partition = self.partitions.keys().next().cloned().unwrap_or_else(|| TopicPartition::new("", -1));
            return Err(ClientError::LeaderNotAvailable { topic_partition });
        }

        let max_wait_ms = i32::try_from(deadline.saturating_duration_since(Instant::now()).as_millis())
            .unwrap_or(i32::MAX)
            .min(self.config.fetch_max_wait_ms);
        let (results, mut received) = mpsc::channel(by_leader.len());
        for (leader, partitions) in by_leader {
            let request = self.fetch_request(&partitions, max_wait_ms);
            let client = self.client.clone();
            let results = results.clone();
            drop(rt::task::spawn(async move {
                let response = client.send(Some(leader), RequestKind::Fetch(request)).await;
                // The receiver lives until every sender is gone.
                let _ = results.send(response).await;
            }));
        }
        drop(results);

        let mut records = Vec::new();
        let mut first_error = None;
        let mut refresh_topics = Vec::new();
        while let Some(response) = received.recv().await {
            let outcome = match response {
                Ok(ResponseKind::Fetch(response)) => {
                    self.on_fetch_response(response, &mut records, &mut refresh_topics)
                }
                Ok(_) => Err(ClientError::UnexpectedResponse { api_key: ApiKey::Fetch }),
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
        if !refresh_topics.is_empty() {
            refresh_topics.sort();
            refresh_topics.dedup();
            if let Err(error) = self.client.refresh_metadata(Some(&refresh_topics)).await {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) if records.is_empty() => Err(error),
            _ => Ok(records),
        }
    }

    fn fetch_request(&self, partitions: &[(TopicPartition, Offset)], max_wait_ms: i32) -> FetchRequest {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, position) in partitions {
            topics.entry(tp.topic.as_str()).or_default().push(
                FetchPartition::default()
                    .with_partition(tp.partition.0)
                    .with_fetch_offset(position.0)
                    .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
            );
        }
        FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_isolation_level(self.config.isolation_level.as_i8())
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        FetchTopic::default().with_topic(topic_name(topic)).with_partitions(partitions)
                    })
                    .collect(),
            )
    }

    /// Applies one broker's fetch response: records out, positions and high watermarks
    /// updated, out-of-range positions reset, leader errors queued for a metadata refresh.
    /// Returns the first partition error that is not handled here.
    fn on_fetch_response(
        &mut self,
        response: FetchResponse,
        records: &mut Vec<ConsumerRecord>,
        refresh_topics: &mut Vec<String>,
    ) -> Result<(), ClientError> {
        if let Some(error) = ClientError::from_code(response.error_code, None) {
            return Err(error);
        }
        let mut first_error = None;
        for topic in response.responses {
            let topic_name = topic.topic.0.to_string();
            for partition in topic.partitions {
                let tp = TopicPartition::new(topic_name.clone(), partition.partition_index);
                let Some(state) = self.partitions.get_mut(&tp) else {
                    continue;
                };
                let Some(position) = state.position else {
                    continue;
                };
                match ResponseError::try_from_code(partition.error_code) {
                    None => {
                        state.high_watermark = Some(Offset(partition.high_watermark));
                        let Some(bytes) = partition.records else {
                            continue;
                        };
                        match decode_fetched(&tp, bytes, position) {
                            Ok(fetched) => {
                                records.extend(fetched.records);
                                state.position = Some(fetched.next_position);
                            }
                            Err(error) => {
                                first_error.get_or_insert(error);
                            }
                        }
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        if self.config.auto_offset_reset == OffsetReset::None {
                            first_error
                                .get_or_insert(ClientError::OffsetOutOfRange { topic_partition: tp, offset: position });
                        } else {
                            tracing::debug!(topic_partition = %tp, %position, "position out of range; resetting");
                            state.position = None;
                        }
                    }
                    Some(error) if error.is_retriable() || error == ResponseError::FencedLeaderEpoch => {
                        refresh_topics.push(tp.topic);
                    }
                    Some(error) => {
                        first_error.get_or_insert(ClientError::Broker { error, message: None });
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Gives every partition without a position one, per `auto_offset_reset`.
    async fn reset_missing_positions(&mut self) -> Result<(), ClientError> {
        let missing: Vec<TopicPartition> =
            self.partitions.iter().filter(|(_, state)| state.position.is_none()).map(|(tp, _)| tp.clone()).collect();
        for tp in missing {
            let spec = match self.config.auto_offset_reset {
                OffsetReset::Earliest => OffsetSpec::Earliest,
                OffsetReset::Latest => OffsetSpec::Latest,
                OffsetReset::None => return Err(ClientError::NoOffsetForPartition { topic_partition: tp }),
            };
            let (offset, _) = match list_offset(&self.client, &tp, spec).await {
                Ok(found) => found,
                Err(error) => {
                    if error.is_retriable() {
                        // The leader may have moved; the next attempt looks it up afresh.
                        let _ = self.client.refresh_metadata(Some(std::slice::from_ref(&tp.topic))).await;
                    }
                    return Err(error);
                }
            };
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.position = Some(offset);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{encode_batch, BatchRecord};
    use bytes::Bytes;
    use protocol::kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use protocol::kafka_protocol::records::Compression;

    fn consumer(reset: OffsetReset) -> Consumer {
        let client = Client::unconnected(crate::ClientConfig::default()).expect("valid config");
        let config = ConsumerConfig { auto_offset_reset: reset, ..ConsumerConfig::default() };
        Consumer::new(client, config).expect("valid config")
    }

    /// A batch of `count` records with values "0", "1", ... rebased to `base_offset`.
    fn batch(base_offset: i64, count: usize) -> Vec<u8> {
        let records: Vec<BatchRecord> = (0..count)
            .map(|i| BatchRecord {
                key: None,
                value: Some(Bytes::from(i.to_string())),
                headers: vec![],
                timestamp_ms: 7,
            })
            .collect();
        let encoded = encode_batch(&TopicPartition::new("t", 0), records.iter(), Compression::None).expect("encodes");
        let mut bytes = encoded.to_vec();
        protocol::batch::set_base_offset(&mut bytes, Offset(base_offset));
        bytes
    }

    fn response(partitions: Vec<PartitionData>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(topic_name("t"))
            .with_partitions(partitions)])
    }

    #[test]
    fn fetched_records_below_the_position_are_skipped_and_positions_advance() {
        let mut consumer = consumer(OffsetReset::Earliest);
        let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        consumer.assign(vec![p0.clone(), p1.clone()]);
        consumer.partitions.get_mut(&p0).expect("assigned").position = Some(Offset(12));
        consumer.partitions.get_mut(&p1).expect("assigned").position = Some(Offset(0));
        let mut bytes = batch(10, 5);
        bytes.extend(batch(15, 2));
        let fetched = response(vec![
            PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(17)
                .with_records(Some(Bytes::from(bytes))),
            PartitionData::default().with_partition_index(1).with_high_watermark(0).with_records(Some(Bytes::new())),
        ]);
        let (mut records, mut refresh) = (Vec::new(), Vec::new());
        consumer.on_fetch_response(fetched, &mut records, &mut refresh).expect("no errors");
        assert_eq!(records.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![12, 13, 14, 15, 16]);
        assert_eq!(records[0].value.as_deref(), Some(&b"2"[..]));
        assert_eq!(consumer.position(&p0), Some(Offset(17)));
        assert_eq!(consumer.high_watermark(&p0), Some(Offset(17)));
        assert_eq!(consumer.position(&p1), Some(Offset(0)), "an empty partition stays put");
        assert!(refresh.is_empty());
    }

    #[test]
    fn partition_errors_reset_refresh_or_fail_without_losing_other_records() {
        let mut consumer = consumer(OffsetReset::Latest);
        let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
        consumer.assign(tps.clone());
        for tp in &tps {
            consumer.partitions.get_mut(tp).expect("assigned").position = Some(Offset(0));
        }
        let fetched = response(vec![
            PartitionData::default().with_partition_index(0).with_error_code(ResponseError::OffsetOutOfRange.code()),
            PartitionData::default().with_partition_index(1).with_error_code(ResponseError::NotLeaderOrFollower.code()),
            PartitionData::default()
                .with_partition_index(2)
                .with_high_watermark(1)
                .with_records(Some(Bytes::from(batch(0, 1)))),
        ]);
        let (mut records, mut refresh) = (Vec::new(), Vec::new());
        consumer.on_fetch_response(fetched, &mut records, &mut refresh).expect("handled errors");
        assert_eq!(consumer.position(&tps[0]), None, "out of range: reset on the next poll");
        assert_eq!(refresh, vec!["t".to_owned()], "not leader: metadata refresh");
        assert_eq!(consumer.position(&tps[1]), Some(Offset(0)));
        assert_eq!(records.len(), 1);

        let mut strict = consumer_with_positions(OffsetReset::None, &tps);
        let fetched = response(vec![
            PartitionData::default().with_partition_index(0).with_error_code(ResponseError::OffsetOutOfRange.code()),
            PartitionData::default()
                .with_partition_index(2)
                .with_high_watermark(1)
                .with_records(Some(Bytes::from(batch(0, 1)))),
        ]);
        let (mut records, mut refresh) = (Vec::new(), Vec::new());
        let error = strict.on_fetch_response(fetched, &mut records, &mut refresh).expect_err("no reset allowed");
        assert!(matches!(error, ClientError::OffsetOutOfRange { offset: Offset(0), .. }));
        assert_eq!(records.len(), 1, "records of healthy partitions are kept");
        assert_eq!(strict.position(&tps[2]), Some(Offset(1)));
    }

    fn consumer_with_positions(reset: OffsetReset, tps: &[TopicPartition]) -> Consumer {
        let mut consumer = consumer(reset);
        consumer.assign(tps.to_vec());
        for tp in tps {
            consumer.partitions.get_mut(tp).expect("assigned").position = Some(Offset(0));
        }
        consumer
    }

    #[test]
    fn assign_keeps_positions_of_partitions_that_stay() {
        let mut consumer = consumer(OffsetReset::Latest);
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        consumer.assign(vec![a.clone()]);
        consumer.partitions.get_mut(&a).expect("assigned").position = Some(Offset(5));
        consumer.assign(vec![a.clone(), b.clone()]);
        assert_eq!(consumer.position(&a), Some(Offset(5)));
        assert_eq!(consumer.position(&b), None);
        assert_eq!(consumer.assignment(), vec![a, b]);
    }

    #[test]
    fn default_config_is_valid_and_bounded_by_the_socket() {
        assert!(ConsumerConfig::default().validate(crate::limits::SOCKET_MAX_BYTES_DEFAULT).is_ok());
        assert!(matches!(
            ConsumerConfig::default().validate(1024 * 1024),
            Err(ClientError::InvalidConfig { field: "fetch_max_bytes", .. })
        ));
    }
}
