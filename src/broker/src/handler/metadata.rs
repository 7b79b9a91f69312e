//! Metadata: brokers, controller, and topics with their partitions, auto-creating requested
//! topics when `auto.create.topics.enable` and the request allow it.

use std::sync::Arc;

use metadata::image::{MetadataImage, TopicImage};
use protocol::kafka_protocol::messages::metadata_request::MetadataRequest;
use protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use protocol::kafka_protocol::messages::{BrokerId, TopicName};
use protocol::names::validate_topic_name;
use protocol::ResponseError;

use super::str_bytes;
use crate::node::Node;

/// Kafka's "authorized operations not requested" sentinel.
pub(crate) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Makes sure a topic exists, creating it with the broker's defaults if `auto_create` allows.
/// Returns the error to report for the topic otherwise.
pub(crate) async fn ensure_topic(node: &Arc<Node>, name: &str, auto_create: bool) -> Result<(), ResponseError> {
    if node.image().topic(name).is_some() {
        return Ok(());
    }
    if validate_topic_name(name).is_err() {
        return Err(ResponseError::InvalidTopicException);
    }
    if !auto_create {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    ensure_topic_with(node, name, node.config.num_partitions, node.config.default_replication_factor, &[]).await
}

/// Creates topic `name` with these partitions, replication factor and configs unless it
/// exists (another request may create it meanwhile).
///
/// # Errors
/// KAFKA_STORAGE_ERROR, or LEADER_NOT_AVAILABLE when too few brokers are up or the controller
/// is away (clients retry).
pub(crate) async fn ensure_topic_with(
    node: &Arc<Node>,
    name: &str,
    partitions: i32,
    factor: i16,
    configs: &[(&str, &str)],
) -> Result<(), ResponseError> {
    if node.image().topic(name).is_some() {
        return Ok(());
    }
    let configs: Vec<(String, String)> = configs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    match node.create_topic(name, partitions, factor, Vec::new(), &configs).await {
        Ok(_) => {
            tracing::info!(topic = name, partitions, "auto-created topic");
            Ok(())
        }
        // Another request created it meanwhile.
        Err(crate::BrokerError::Op(metadata::ops::OpError::TopicExists { .. }))
        | Err(crate::BrokerError::Controller(controller::ControllerError::Op(metadata::ops::OpError::TopicExists {
            ..
        }))) => Ok(()),
        Err(error) => {
            tracing::warn!(topic = name, %error, "auto-create failed");
            Err(match error {
                crate::BrokerError::Storage(_) | crate::BrokerError::Io { .. } => ResponseError::KafkaStorageError,
                // Not enough live brokers yet, or the controller is away: clients retry.
                _ => ResponseError::LeaderNotAvailable,
            })
        }
    }
}

fn topic_response(topic: &TopicImage) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|(index, state)| {
            let error =
                if state.leader == metadata::ops::NO_LEADER { ResponseError::LeaderNotAvailable.code() } else { 0 };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(*index)
                .with_leader_id(BrokerId(state.leader.0))
                .with_leader_epoch(state.leader_epoch.0)
                .with_replica_nodes(state.replicas.iter().map(|node| BrokerId(node.0)).collect())
                .with_isr_nodes(state.isr.iter().map(|node| BrokerId(node.0)).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(uuid::Uuid::from_bytes(topic.topic_id.0))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn error_topic(name: Option<TopicName>, topic_id: uuid::Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name)
        .with_topic_id(topic_id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// Handles a Metadata request.
pub(crate) async fn handle(node: &Arc<Node>, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 has no null: an empty list means all topics. From v1, null means all, empty means none.
    let requested = match request.topics {
        Some(topics) if version == 0 && topics.is_empty() => None,
        other => other,
    };
    let auto_create = node.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match requested {
        None => topics.extend(node.image().topics().map(topic_response)),
        Some(requested) => {
            for topic in requested {
                match topic.name {
                    Some(name) => {
                        let text = name.0.to_string();
                        match ensure_topic(node, &text, auto_create).await {
                            Ok(()) => match node.image().topic(&text) {
                                Some(image) => topics.push(topic_response(image)),
                                None => topics.push(error_topic(
                                    Some(name),
                                    uuid::Uuid::nil(),
                                    ResponseError::UnknownTopicOrPartition,
                                )),
                            },
                            Err(error) => topics.push(error_topic(Some(name), uuid::Uuid::nil(), error)),
                        }
                    }
                    None => {
                        let image = node.image();
                        match image.topic_by_id(metadata::record::TopicId(*topic.topic_id.as_bytes())) {
                            Some(image) => topics.push(topic_response(image)),
                            None => topics.push(error_topic(None, topic.topic_id, ResponseError::UnknownTopicId)),
                        }
                    }
                }
            }
        }
    }
    let image: Arc<MetadataImage> = node.image();
    MetadataResponse::default()
        .with_brokers(
            image
                .unfenced_brokers()
                .map(|broker| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(broker.broker_id.0))
                        .with_host(str_bytes(broker.host.clone()))
                        .with_port(i32::from(broker.port))
                        .with_rack(broker.rack.clone().map(str_bytes))
                })
                .collect(),
        )
        .with_cluster_id(Some(str_bytes(node.cluster_id.clone())))
        .with_controller_id(BrokerId(node.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
