//! Produce: validate each partition's batches, append them, and answer per `acks`.
//!
//! acks=0 sends no response, acks=1 answers after the local append, acks=all (-1) answers once
//! the high watermark passes the appended records, which by default means after the group
//! commit fsync (see `partition.rs`).
//!
//! Idempotent producers' batches are checked by the log under its append lock
//! (`replication::producer_state`): a retry of one of the producer's last five batches is not
//! appended again and is answered with the original offsets (after the same wait for the high
//! watermark), a gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER, and an old epoch is
//! INVALID_PRODUCER_EPOCH.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use metadata::config::TopicSettings;
use protocol::batch::{BatchError, Batches};
use protocol::ids::{LeaderEpoch, Offset};
use protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest};
use protocol::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use protocol::kafka_protocol::messages::ResponseKind;
use protocol::ResponseError;
use replication::producer_state::ProducerBatch;

use super::metadata::ensure_topic;
use crate::config::REQUEST_WAIT_MS_MAX;
use crate::connection::Reply;
use crate::handler::error_code;
use crate::node::Node;
use crate::partition::Partition;

/// One partition's outcome before the (possible) wait for durability.
struct Appended {
    response: PartitionProduceResponse,
    /// For a successful append: the partition, the offset the high watermark must reach, and
    /// the leader epoch the append happened in.
    wait_for: Option<(Arc<Partition>, Offset, LeaderEpoch)>,
}

fn failed(index: i32, error: ResponseError, message: Option<String>) -> Appended {
    Appended {
        response: PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(error.code())
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_error_message(message.map(super::str_bytes)),
        wait_for: None,
    }
}

/// Checks every batch of a partition's records, returning the records count.
fn validate_batches(records: &Bytes, settings: &TopicSettings, now_ms: i64) -> Result<u64, (ResponseError, String)> {
    let mut record_count: u64 = 0;
    let mut batches = Batches::new(records);
    for batch in batches.by_ref() {
        let (header, range) = batch.map_err(|error| {
            let code = match error {
                BatchError::UnsupportedMagic { .. } => ResponseError::UnsupportedForMessageFormat,
                _ => ResponseError::CorruptMessage,
            };
            (code, error.to_string())
        })?;
        if range.len() > settings.max_message_bytes {
            return Err((
                ResponseError::MessageTooLarge,
                format!("batch of {} bytes exceeds max.message.bytes {}", range.len(), settings.max_message_bytes),
            ));
        }
        if header.is_control() {
            return Err((ResponseError::InvalidRecord, "clients may not produce control batches".into()));
        }
        if header.record_count == 0 {
            return Err((ResponseError::InvalidRecord, "batch has no records".into()));
        }
        if settings.compact {
            // Kafka's rule: a compacted topic keeps the latest record per key, so a record
            // without a key could never be found again (and the cleaner would drop it).
            let batch = records.slice(range.clone());
            let parsed = protocol::record::batch_records(&header, &batch)
                .map_err(|error| (ResponseError::CorruptMessage, error.to_string()))?;
            if parsed.iter().any(|record| record.key.is_none()) {
                return Err((
                    ResponseError::InvalidRecord,
                    "a compacted topic does not accept records without a key".into(),
                ));
            }
        }
        if ProducerBatch::is_malformed(&header) {
            return Err((
                ResponseError::InvalidRecord,
                format!(
                    "batch of producer {} has epoch {} and base sequence {}",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            ));
        }
        if !settings.log_append_time && header.max_timestamp >= 0 {
            let ahead = header.max_timestamp.saturating_sub(now_ms);
            let behind = now_ms.saturating_sub(header.base_timestamp);
            if ahead > settings.message_timestamp_after_max_ms || behind > settings.message_timestamp_before_max_ms {
                return Err((
                    ResponseError::InvalidTimestamp,
                    format!("timestamp {} is outside the allowed window around {now_ms}", header.max_timestamp),
                ));
            }
        }
        record_count += header.record_count as u64;
    }
    if batches.position() != records.len() || records.is_empty() {
        return Err((ResponseError::CorruptMessage, "records do not end on a batch boundary".into()));
    }
    Ok(record_count)
}

async fn append_partition(node: &Arc<Node>, topic: &str, data: PartitionProduceData, acks: i16) -> Appended {
    let index = data.index;
    let partition = match node.leader_partition(topic, index) {
        Ok(partition) => partition,
        Err(error) => return failed(index, error, None),
    };
    // Held through the append: a change of leadership (which records the new epoch at the log
    // end) cannot slip between the epoch check and the write stamped with it.
    let _io = partition.replica_io().await;
    let leader_epoch = match partition.check_append(acks == -1) {
        Ok(leader_epoch) => leader_epoch,
        Err(error) => {
            let code = ResponseError::try_from_code(error.error_code()).unwrap_or(ResponseError::NotLeaderOrFollower);
            return failed(index, code, Some(error.to_string()));
        }
    };
    let Some(records) = data.records else {
        return failed(index, ResponseError::CorruptMessage, Some("no records".into()));
    };
    let settings = partition.settings();
    let now_ms = node.clock.now_ms();
    let record_count = match validate_batches(&records, &settings, now_ms) {
        Ok(count) => count,
        Err((error, message)) => return failed(index, error, Some(message)),
    };
    match partition.append_as_leader(BytesMut::from(&records[..]), leader_epoch, settings.log_append_time, now_ms).await
    {
        Ok(info) => {
            if !info.duplicate {
                partition.appended(record_count, info.log_end_offset, &settings);
            }
            Appended {
                response: PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(info.base_offset.0)
                    .with_log_append_time_ms(if settings.log_append_time { now_ms } else { -1 })
                    .with_log_start_offset(partition.log.log_start_offset().0),
                wait_for: Some((Arc::clone(&partition), info.last_offset.plus(1), leader_epoch)),
            }
        }
        Err(error) => {
            tracing::warn!(partition = %partition.topic_partition, %error, "append failed");
            let code = error_code::storage_error_code(&error);
            Appended {
                response: PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(code)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
                    .with_error_message(Some(super::str_bytes(error.to_string()))),
                wait_for: None,
            }
        }
    }
}

/// Handles a Produce request.
pub(crate) async fn handle(node: &Arc<Node>, request: ProduceRequest) -> Reply {
    let acks = request.acks;
    let mut topics: Vec<(TopicProduceResponse, Vec<Appended>)> = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic_error = if ![-1, 0, 1].contains(&acks) {
            Some(ResponseError::InvalidRequiredAcks)
        } else {
            ensure_topic(node, &name, node.config.auto_create_topics_enable).await.err()
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            partitions.push(match topic_error {
                Some(error) => failed(data.index, error, None),
                None => append_partition(node, &name, data, acks).await,
            });
        }
        topics.push((TopicProduceResponse::default().with_name(topic_data.name), partitions));
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let build = |topics: Vec<(TopicProduceResponse, Vec<Appended>)>| {
        let responses = topics
            .into_iter()
            .map(|(topic, partitions)| {
                topic.with_partition_responses(partitions.into_iter().map(|appended| appended.response).collect())
            })
            .collect();
        ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
    };
    if acks == 1 {
        return Reply::Now(build(topics));
    }
    let timeout_ms = u64::try_from(request.timeout_ms).unwrap_or(0).min(REQUEST_WAIT_MS_MAX);
    Reply::Later(Box::pin(async move {
        let mut topics = topics;
        for (_, partitions) in &mut topics {
            for appended in partitions.iter_mut() {
                if let Some((partition, offset, leader_epoch)) = appended.wait_for.take() {
                    if !partition.wait_for_high_watermark(offset, timeout_ms).await {
                        // The records are in the log and may still become durable: the outcome
                        // is unknown to the client, which is what REQUEST_TIMED_OUT tells it.
                        appended.response.error_code = ResponseError::RequestTimedOut.code();
                    } else if let Err(error) = partition.produce_outcome(offset, leader_epoch) {
                        // Committed, but the ISR shrank below min.insync.replicas meanwhile; or
                        // this broker stopped leading, and the high watermark it sees now is
                        // another leader's, which may not hold this write.
                        appended.response.error_code = error.error_code();
                        appended.response.error_message = Some(super::str_bytes(error.to_string()));
                    }
                }
            }
        }
        build(topics)
    }))
}
