//! DeleteRecords: advance a partition's log start offset.

use std::sync::Arc;

use protocol::ids::Offset;
use protocol::kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use protocol::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use protocol::ResponseError;

use crate::handler::error_code;
use crate::node::Node;

/// `offset` meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Handles DeleteRecords.
pub(crate) async fn delete_records(node: &Arc<Node>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for requested in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(requested.partition_index)
                .with_low_watermark(-1);
            let partition = match node.leader_partition(&topic.name.0, requested.partition_index) {
                Ok(partition) => partition,
                Err(error) => {
                    partitions.push(result.with_error_code(error.code()));
                    continue;
                }
            };
            if !partition.settings().delete {
                // As Kafka: only a topic whose cleanup.policy holds delete may lose records by
                // offset; a compact-only topic keeps the latest value of every key.
                partitions.push(result.with_error_code(ResponseError::PolicyViolation.code()));
                continue;
            }
            let high_watermark = partition.high_watermark();
            let target = if requested.offset == HIGH_WATERMARK { high_watermark } else { Offset(requested.offset) };
            if target.0 < 0 || target > high_watermark {
                partitions.push(result.with_error_code(ResponseError::OffsetOutOfRange.code()));
                continue;
            }
            partitions.push(match partition.log.delete_records_before(target).await {
                Ok(low_watermark) => result.with_low_watermark(low_watermark.0),
                Err(error) => result.with_error_code(error_code::storage_error_code(&error)),
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(topic.name).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
