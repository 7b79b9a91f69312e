//! Fetch: read whole batches below the high watermark, long-polling up to `max_wait_ms` until
//! `min_bytes` are available.
//!
//! A fetch with a `ReplicaId` is a follower's: it must carry the leader's epoch
//! (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH otherwise); a `LastFetchedEpoch` that does not
//! match this log answers with the diverging epoch and no records; otherwise its offset feeds
//! the leader's high watermark and ISR bookkeeping, and it reads up to the log end, waking on
//! appends rather than on high-watermark moves.
//!
//! Limits: each partition returns at most `partition_max_bytes`, the response at most
//! `max_bytes`, except that the first partition with data returns at least one whole batch so
//! a consumer always makes progress (KIP-74). Fetch sessions (KIP-227) are not kept: the
//! response's session id 0 tells clients to send full fetch requests.

use std::sync::Arc;

use bytes::Bytes;
use protocol::ids::{LeaderEpoch, NodeId, Offset};
use protocol::kafka_protocol::messages::fetch_request::FetchPartition;
use protocol::kafka_protocol::messages::fetch_request::FetchRequest;
use protocol::kafka_protocol::messages::fetch_response::EpochEndOffset;
use protocol::kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
use protocol::kafka_protocol::messages::ResponseKind;
use protocol::ResponseError;

use crate::config::REQUEST_WAIT_MS_MAX;
use crate::connection::Reply;
use crate::handler::error_code;
use crate::node::Node;

fn partition_error(index: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

/// A follower's fetch of one partition: epoch checks, divergence, the leader's bookkeeping,
/// then a read up to the log end.
async fn read_for_replica(
    node: &Arc<Node>,
    topic: &str,
    requested: &FetchPartition,
    replica: NodeId,
    limit: usize,
    first: bool,
) -> PartitionData {
    let index = requested.partition;
    let partition = match node.leader_partition(topic, index) {
        Ok(partition) => partition,
        Err(error) => return partition_error(index, error),
    };
    let Some(leader_epoch) = partition.leader_epoch() else {
        return partition_error(index, ResponseError::NotLeaderOrFollower);
    };
    if requested.current_leader_epoch >= 0 {
        if requested.current_leader_epoch < leader_epoch.0 {
            return partition_error(index, ResponseError::FencedLeaderEpoch);
        }
        if requested.current_leader_epoch > leader_epoch.0 {
            return partition_error(index, ResponseError::UnknownLeaderEpoch);
        }
    }
    let log = &partition.log;
    let fetch_offset = Offset(requested.fetch_offset);
    let log_end_offset = log.log_end_offset();
    let log_start_offset = log.log_start_offset();
    let with_offsets = |data: PartitionData| {
        data.with_high_watermark(partition.high_watermark().0)
            .with_last_stable_offset(partition.high_watermark().0)
            .with_log_start_offset(log_start_offset.0)
    };
    let diverging = log.diverging_epoch(fetch_offset, LeaderEpoch(requested.last_fetched_epoch));
    if let Some(mut end) = diverging {
        // No epoch at or below the follower's here: all of its log diverges. Epoch -1 would
        // read as "no divergence", so the answer carries the log start offset, which the
        // follower takes as "start over".
        if end.epoch.0 < 0 {
            end.end_offset = log_start_offset;
        }
        let data = PartitionData::default()
            .with_partition_index(index)
            .with_diverging_epoch(EpochEndOffset::default().with_epoch(end.epoch.0).with_end_offset(end.end_offset.0))
            .with_records(Some(Bytes::new()));
        return with_offsets(data);
    }
    if fetch_offset < log_start_offset || fetch_offset > log_end_offset {
        let data = partition_error(index, ResponseError::OffsetOutOfRange);
        return with_offsets(data);
    }
    let may_join_isr = node.image().is_unfenced(replica);
    match partition.on_replica_fetch(replica, fetch_offset, node.monotonic_ms(), may_join_isr) {
        Ok(Some(alter)) => node.alter_partition(&partition, alter),
        Ok(None) => {}
        Err(error) => {
            let code = ResponseError::try_from_code(error.error_code()).unwrap_or(ResponseError::NotLeaderOrFollower);
            return partition_error(index, code);
        }
    }
    let records = if fetch_offset >= log_end_offset {
        Ok(Bytes::new())
    } else {
        log.read(fetch_offset, log_end_offset, limit, first).await.map(|result| result.bytes)
    };
    match records {
        Ok(bytes) => with_offsets(PartitionData::default().with_partition_index(index).with_records(Some(bytes))),
        Err(error) => {
            let mut data = partition_error(index, ResponseError::KafkaStorageError);
            data.error_code = error_code::storage_error_code(&error);
            with_offsets(data)
        }
    }
}

/// Reads every requested partition once. Returns the response and the bytes it carries.
async fn read_once(node: &Arc<Node>, request: &FetchRequest) -> (FetchResponse, usize) {
    let replica = Some(NodeId(request.replica_id.0)).filter(|replica| replica.0 >= 0);
    let mut budget = usize::try_from(request.max_bytes).unwrap_or(0);
    let mut total = 0usize;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.topic.0.as_str();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for requested in &topic.partitions {
            if let Some(replica) = replica {
                let limit = usize::try_from(requested.partition_max_bytes).unwrap_or(0).min(budget);
                let data = read_for_replica(node, name, requested, replica, limit, total == 0).await;
                let bytes = data.records.as_ref().map_or(0, Bytes::len);
                total += bytes;
                budget = budget.saturating_sub(bytes);
                partitions.push(data);
                continue;
            }
            let partition = match node.leader_partition(name, requested.partition) {
                Ok(partition) => partition,
                Err(error) => {
                    partitions.push(partition_error(requested.partition, error));
                    continue;
                }
            };
            let high_watermark = partition.high_watermark();
            let log_start_offset = partition.log.log_start_offset();
            let fetch_offset = Offset(requested.fetch_offset);
            let limit = usize::try_from(requested.partition_max_bytes).unwrap_or(0).min(budget);
            let records = if fetch_offset >= high_watermark && fetch_offset <= partition.log.log_end_offset() {
                Ok(Bytes::new())
            } else {
                partition.log.read(fetch_offset, high_watermark, limit, total == 0).await.map(|result| result.bytes)
            };
            match records {
                Ok(bytes) => {
                    total += bytes.len();
                    budget = budget.saturating_sub(bytes.len());
                    partitions.push(
                        PartitionData::default()
                            .with_partition_index(requested.partition)
                            .with_high_watermark(high_watermark.0)
                            .with_last_stable_offset(high_watermark.0)
                            .with_log_start_offset(log_start_offset.0)
                            .with_records(Some(bytes)),
                    );
                }
                Err(error) => {
                    let mut data = partition_error(requested.partition, ResponseError::KafkaStorageError);
                    data.error_code = error_code::storage_error_code(&error);
                    data.high_watermark = high_watermark.0;
                    data.last_stable_offset = high_watermark.0;
                    data.log_start_offset = log_start_offset.0;
                    partitions.push(data);
                }
            }
        }
        topics.push(FetchableTopicResponse::default().with_topic(topic.topic.clone()).with_partitions(partitions));
    }
    (FetchResponse::default().with_responses(topics), total)
}

/// Handles a Fetch request.
pub(crate) fn handle(node: &Arc<Node>, request: FetchRequest) -> Reply {
    let node = Arc::clone(node);
    Reply::Later(Box::pin(async move {
        if request.session_id != 0 {
            // No fetch sessions are kept; the client falls back to a full fetch.
            return ResponseKind::Fetch(
                FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()),
            );
        }
        let max_wait_ms = u64::try_from(request.max_wait_ms).unwrap_or(0).min(REQUEST_WAIT_MS_MAX);
        let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
        let deadline = rt::time::Instant::now() + rt::time::Duration::from_millis(max_wait_ms);
        // A follower waits for appends, a consumer for the high watermark.
        let mut changed = if request.replica_id.0 >= 0 {
            node.any_append.subscribe()
        } else {
            node.any_high_watermark_changed.subscribe()
        };
        loop {
            let _ = changed.borrow_and_update();
            let (response, bytes) = read_once(&node, &request).await;
            let now = rt::time::Instant::now();
            if bytes >= min_bytes || now >= deadline {
                return ResponseKind::Fetch(response);
            }
            if rt::time::timeout(deadline - now, changed.changed()).await.is_err() {
                let (response, _) = read_once(&node, &request).await;
                return ResponseKind::Fetch(response);
            }
        }
    }))
}
