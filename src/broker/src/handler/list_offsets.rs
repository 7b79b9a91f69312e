//! ListOffsets: earliest, latest, max timestamp, or the first offset at or after a timestamp.
//!
//! A request with `ReplicaId` -2 (Kafka's debugging replica id, used by its replica
//! verification tool) may be served by any replica, not only the leader, and its latest
//! offset is that replica's log end offset rather than the high watermark: `weir topic
//! describe` asks every replica this way to show how far each one lags.

use std::sync::Arc;

use protocol::kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use protocol::ResponseError;

use crate::handler::error_code;
use crate::node::Node;

/// `timestamp` asking for the latest offset (the high watermark).
const LATEST_TIMESTAMP: i64 = -1;
/// `timestamp` asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;
/// `timestamp` asking for the record with the largest timestamp (KIP-734).
const MAX_TIMESTAMP: i64 = -3;
/// `timestamp` asking for the earliest local offset (KIP-405); no tiered storage, so the log
/// start.
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

/// `ReplicaId` of a debugging request (Kafka's `ListOffsetsRequest.DEBUGGING_REPLICA_ID`).
const DEBUGGING_REPLICA_ID: i32 = -2;

/// Handles a ListOffsets request.
pub(crate) async fn handle(node: &Arc<Node>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    // The leader epoch exists from v4; older versions must leave it at its default.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let debugging = request.replica_id.0 == DEBUGGING_REPLICA_ID;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for requested in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(requested.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(leader_epoch);
            let hosted = if debugging {
                node.partition(&topic.name.0, requested.partition_index).ok_or(ResponseError::NotLeaderOrFollower)
            } else {
                node.leader_partition(&topic.name.0, requested.partition_index)
            };
            let partition = match hosted {
                Ok(partition) => partition,
                Err(error) => {
                    partitions.push(response.with_error_code(error.code()).with_leader_epoch(-1));
                    continue;
                }
            };
            let answer = match requested.timestamp {
                LATEST_TIMESTAMP if debugging => Ok(Some((partition.log.log_end_offset(), -1))),
                LATEST_TIMESTAMP => Ok(Some((partition.high_watermark(), -1))),
                EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok(Some((partition.log.log_start_offset(), -1))),
                // The log knows which batch holds the largest timestamp; the exact record
                // (KAFKA-16310) is the first one at that timestamp.
                MAX_TIMESTAMP => match partition.log.max_timestamp() {
                    Some((_, timestamp)) => partition.log.offset_for_timestamp(timestamp).await,
                    None => Ok(None),
                },
                timestamp if timestamp >= 0 => partition.log.offset_for_timestamp(timestamp).await,
                _ => {
                    partitions.push(response.with_error_code(ResponseError::InvalidRequest.code()));
                    continue;
                }
            };
            partitions.push(match answer {
                Ok(Some((offset, timestamp))) => response.with_offset(offset.0).with_timestamp(timestamp),
                Ok(None) => response,
                Err(error) => response.with_error_code(error_code::storage_error_code(&error)),
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}
