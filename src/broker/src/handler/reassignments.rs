//! AlterPartitionReassignments and ListPartitionReassignments: moving a partition's replicas.
//!
//! A reassignment adds the target's new replicas to the partition (they open their logs and
//! fetch from the leader), and completes when every target replica is in the ISR: the
//! controller then drops the old replicas and, if the leader was one of them, elects a target
//! replica (`metadata::ops`, `ReassignPartitions`). `None` as a partition's replicas cancels
//! the reassignment in progress. Each partition is checked on its own and gets its own error;
//! the valid ones are committed together.

use std::sync::Arc;

use metadata::ops::check_reassignment;
use protocol::ids::NodeId;
use protocol::kafka_protocol::messages::alter_partition_reassignments_request::AlterPartitionReassignmentsRequest;
use protocol::kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use protocol::kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use protocol::kafka_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use protocol::kafka_protocol::messages::{BrokerId, TopicName};
use protocol::ResponseError;

use super::error_code::{op_error_code, with_commit};
use super::str_bytes;
use crate::node::Node;

/// Handles AlterPartitionReassignments.
pub(crate) async fn alter(
    node: &Arc<Node>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let image = node.image();
    let mut outcomes: Vec<(String, i32, Result<(), (ResponseError, String)>)> = Vec::new();
    let mut valid = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        for partition in &topic.partitions {
            let target: Option<Vec<NodeId>> =
                partition.replicas.as_ref().map(|replicas| replicas.iter().map(|broker| NodeId(broker.0)).collect());
            let outcome = match image.topic(&name) {
                _ if !seen.insert((name.clone(), partition.partition_index)) => {
                    Err((ResponseError::InvalidRequest, "the partition is listed more than once".to_owned()))
                }
                None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}"))),
                Some(found) => {
                    match check_reassignment(&image, found.topic_id, partition.partition_index, target.as_deref()) {
                        Ok(()) => {
                            valid.push((found.topic_id, partition.partition_index, target));
                            Ok(())
                        }
                        Err(error) => Err((op_error_code(&error), error.to_string())),
                    }
                }
            };
            outcomes.push((name.clone(), partition.partition_index, outcome));
        }
    }
    let committed = if valid.is_empty() { Ok(()) } else { node.reassign_partitions(valid).await };
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (name, partition, outcome) in outcomes {
        let result = match with_commit(&committed, outcome) {
            Ok(()) => ReassignablePartitionResponse::default().with_partition_index(partition),
            Err((error, message)) => ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message))),
        };
        match responses.last_mut().filter(|last| last.name.0.as_str() == name) {
            Some(last) => last.partitions.push(result),
            None => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(vec![result]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

/// Handles ListPartitionReassignments: the reassignments in progress (of the named
/// partitions, or of all).
pub(crate) fn list(node: &Arc<Node>, request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let image = node.image();
    let wanted: Vec<(String, Option<Vec<i32>>)> = match request.topics {
        Some(topics) => {
            topics.into_iter().map(|topic| (topic.name.0.to_string(), Some(topic.partition_indexes))).collect()
        }
        None => image.topics().map(|topic| (topic.name.clone(), None)).collect(),
    };
    let brokers = |nodes: &[NodeId]| nodes.iter().map(|node| BrokerId(node.0)).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for (name, indexes) in wanted {
        let Some(topic) = image.topic(&name) else { continue };
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .filter(|(index, state)| {
                state.reassigning() && indexes.as_ref().is_none_or(|wanted| wanted.contains(index))
            })
            .map(|(index, state)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(*index)
                    .with_replicas(brokers(&state.replicas))
                    .with_adding_replicas(brokers(&state.adding_replicas))
                    .with_removing_replicas(brokers(&state.removing_replicas))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default().with_name(TopicName(str_bytes(name))).with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
