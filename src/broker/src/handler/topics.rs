//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::BTreeSet;
use std::sync::Arc;

use metadata::config::{effective_topic_configs, validate_topic_config};
use metadata::ops::PreferredElection;
use metadata::record::TopicId;
use protocol::ids::NodeId;
use protocol::kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use protocol::kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use protocol::kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use protocol::kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use protocol::kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use protocol::kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use protocol::kafka_protocol::messages::elect_leaders_request::ElectLeadersRequest;
use protocol::kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use protocol::kafka_protocol::messages::TopicName;
use protocol::names::validate_topic_name;
use protocol::ResponseError;

use super::str_bytes;
use crate::handler::error_code;
use crate::node::{Node, TOPIC_PARTITIONS_MAX};

type Refusal = (ResponseError, String);

/// A checked topic creation.
struct TopicPlan {
    partitions: i32,
    replication_factor: i16,
    assignments: Vec<Vec<NodeId>>,
    configs: Vec<(String, String)>,
}

/// Checks a topic creation against this broker's image (the controller checks again against
/// the latest one when it commits).
fn plan_topic(node: &Node, topic: &CreatableTopic) -> Result<TopicPlan, Refusal> {
    let name = topic.name.0.as_str();
    validate_topic_name(name).map_err(|error| (ResponseError::InvalidTopicException, error.to_string()))?;
    if node.image().topic(name).is_some() {
        return Err((ResponseError::TopicAlreadyExists, format!("Topic '{name}' already exists.")));
    }
    let mut assignments = Vec::new();
    let (partitions, replication_factor) = if topic.assignments.is_empty() {
        let partitions = if topic.num_partitions == -1 { node.config.num_partitions } else { topic.num_partitions };
        let factor = if topic.replication_factor == -1 {
            node.config.default_replication_factor
        } else {
            topic.replication_factor
        };
        (partitions, factor)
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "assignments exclude num_partitions and replication_factor".into(),
            ));
        }
        for (expected, assignment) in topic.assignments.iter().enumerate() {
            if assignment.partition_index != expected as i32 {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "assignments must cover partitions 0..n in order".into(),
                ));
            }
            assignments.push(assignment.broker_ids.iter().map(|id| NodeId(id.0)).collect::<Vec<_>>());
        }
        let factor = assignments.first().map_or(0, Vec::len) as i16;
        (topic.assignments.len() as i32, factor)
    };
    if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be between 1 and {TOPIC_PARTITIONS_MAX}, got {partitions}."),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut configs = Vec::with_capacity(topic.configs.len());
    for config in &topic.configs {
        let key = config.name.to_string();
        if !seen.insert(key.clone()) {
            return Err((ResponseError::InvalidRequest, format!("config {key} is given twice")));
        }
        let Some(value) = &config.value else {
            return Err((ResponseError::InvalidRequest, format!("Null value not supported for topic configs: {key}")));
        };
        validate_topic_config(&key, value).map_err(|error| (ResponseError::InvalidConfig, error.to_string()))?;
        configs.push((key, value.to_string()));
    }
    Ok(TopicPlan { partitions, replication_factor, assignments, configs })
}

/// Handles CreateTopics.
pub(crate) async fn create_topics(
    node: &Arc<Node>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut names = BTreeSet::new();
    let duplicates: BTreeSet<String> = request
        .topics
        .iter()
        .map(|topic| topic.name.0.to_string())
        .filter(|name| !names.insert(name.clone()))
        .collect();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if duplicates.contains(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!("topic {name} appears more than once in the request")))),
            );
            continue;
        }
        let TopicPlan { partitions, replication_factor, assignments, configs } = match plan_topic(node, topic) {
            Ok(plan) => plan,
            Err((error, message)) => {
                results.push(result.with_error_code(error.code()).with_error_message(Some(str_bytes(message))));
                continue;
            }
        };
        let created = if request.validate_only {
            let op =
                node.create_topic_op(&name, TopicId::default(), partitions, replication_factor, assignments, &configs);
            metadata::ops::plan(&node.image(), &op).map(|_| TopicId::default()).map_err(crate::BrokerError::Op)
        } else {
            node.create_topic(&name, partitions, replication_factor, assignments, &configs).await
        };
        let topic_id = match created {
            Ok(topic_id) => topic_id,
            Err(error) => {
                results.push(
                    result.with_error_code(error_code(&error)).with_error_message(Some(str_bytes(error.to_string()))),
                );
                continue;
            }
        };
        let overrides = configs.iter().cloned().collect();
        let described = effective_topic_configs(Some(&overrides), &node.config.static_configs)
            .into_iter()
            .map(|config| {
                CreatableTopicConfigs::default()
                    .with_name(str_bytes(config.name))
                    .with_value(Some(str_bytes(config.value)))
                    .with_config_source(config.source.wire())
            })
            .collect();
        results.push(
            result
                .with_topic_id(uuid::Uuid::from_bytes(topic_id.0))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs((version >= 5).then_some(described)),
        );
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Handles DeleteTopics (by name before v6, by name or id from v6).
pub(crate) async fn delete_topics(node: &Arc<Node>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut wanted: Vec<(Option<TopicName>, uuid::Uuid)> =
        request.topic_names.into_iter().map(|name| (Some(name), uuid::Uuid::nil())).collect();
    wanted.extend(request.topics.into_iter().map(|topic| (topic.name, topic.topic_id)));
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, topic_id) in wanted {
        let image = node.image();
        let found = match &name {
            Some(name) => image.topic(&name.0),
            None => image.topic_by_id(TopicId(*topic_id.as_bytes())),
        };
        let result = DeletableTopicResult::default().with_name(name.clone()).with_topic_id(topic_id);
        let Some(topic) = found else {
            let error =
                if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
            responses.push(result.with_error_code(error.code()));
            continue;
        };
        let (found_name, found_id) = (topic.name.clone(), topic.topic_id);
        let result = result
            .with_name(Some(TopicName(str_bytes(found_name.clone()))))
            .with_topic_id(uuid::Uuid::from_bytes(found_id.0));
        match node.delete_topic(found_id).await {
            Ok(()) => {
                tracing::info!(topic = found_name, "deleted topic");
                responses.push(result);
            }
            Err(error) => responses.push(
                result.with_error_code(error_code(&error)).with_error_message(Some(str_bytes(error.to_string()))),
            ),
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Handles CreatePartitions.
pub(crate) async fn create_partitions(node: &Arc<Node>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let image = node.image();
        let Some(existing) = image.topic(&topic.name.0) else {
            results.push(result.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
            continue;
        };
        let current = existing.partitions.len() as i32;
        let refusal = if topic.count <= current {
            Some((
                ResponseError::InvalidPartitions,
                format!(
                    "Topic currently has {current} partitions, which is higher than the requested {}.",
                    topic.count
                ),
            ))
        } else if topic.count > TOPIC_PARTITIONS_MAX {
            Some((
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be at most {TOPIC_PARTITIONS_MAX}."),
            ))
        } else {
            None
        };
        if let Some((error, message)) = refusal {
            results.push(result.with_error_code(error.code()).with_error_message(Some(str_bytes(message))));
            continue;
        }
        let assignments: Vec<Vec<NodeId>> = topic
            .assignments
            .iter()
            .flatten()
            .map(|assignment| assignment.broker_ids.iter().map(|id| NodeId(id.0)).collect())
            .collect();
        let topic_id = existing.topic_id;
        let outcome = if request.validate_only {
            let op = metadata::ops::MetadataOp::CreatePartitions {
                topic_id,
                total: topic.count,
                assignments,
                placement_seed: 0,
            };
            metadata::ops::plan(&image, &op).map(|_| ()).map_err(crate::BrokerError::Op)
        } else {
            node.create_partitions(topic_id, topic.count, assignments).await
        };
        if let Err(error) = outcome {
            results.push(
                result.with_error_code(error_code(&error)).with_error_message(Some(str_bytes(error.to_string()))),
            );
            continue;
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Kafka's election type for the preferred replica.
const ELECTION_PREFERRED: i8 = 0;
/// Kafka's election type for an unclean election.
const ELECTION_UNCLEAN: i8 = 1;

/// Handles ElectLeaders (all partitions when none are named): preferred-replica elections,
/// and unclean ones, which give a partition whose ISR is all down a leader from its other live
/// replicas (records only the lost ISR held are then gone).
pub(crate) async fn elect_leaders(node: &Arc<Node>, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let image = node.image();
    let wanted: Vec<(String, Vec<i32>)> = match request.topic_partitions {
        Some(topics) => topics.into_iter().map(|topic| (topic.topic.0.to_string(), topic.partitions)).collect(),
        None => image.topics().map(|topic| (topic.name.clone(), topic.partitions.keys().copied().collect())).collect(),
    };
    let mut outcomes = Vec::new();
    let mut elect = Vec::new();
    let mut unclean = Vec::new();
    for (name, partitions) in &wanted {
        for partition in partitions {
            let topic_id = image.topic(name).map(|topic| topic.topic_id);
            let outcome = if request.election_type == ELECTION_UNCLEAN {
                let state = image.topic(name).and_then(|topic| topic.partitions.get(partition));
                match (topic_id, state) {
                    (Some(id), Some(state)) => {
                        if state.leader.0 >= 0 && image.is_unfenced(state.leader) {
                            Err((ResponseError::ElectionNotNeeded, "the partition has a live leader".to_owned()))
                        } else if metadata::ops::unclean_election_possible(&image, state).is_some() {
                            unclean.push((id, *partition));
                            Ok(())
                        } else {
                            Err((
                                ResponseError::EligibleLeadersNotAvailable,
                                "a live ISR member will be elected, or no replica is live".to_owned(),
                            ))
                        }
                    }
                    _ => Err((ResponseError::UnknownTopicOrPartition, "no such partition".to_owned())),
                }
            } else if request.election_type != ELECTION_PREFERRED {
                Err((ResponseError::InvalidRequest, format!("unknown election type {}", request.election_type)))
            } else {
                match topic_id.map(|id| (id, metadata::ops::preferred_election(&image, id, *partition))) {
                    None | Some((_, PreferredElection::UnknownPartition)) => {
                        Err((ResponseError::UnknownTopicOrPartition, "no such partition".to_owned()))
                    }
                    Some((_, PreferredElection::NotNeeded)) => {
                        Err((ResponseError::ElectionNotNeeded, "the preferred replica already leads".to_owned()))
                    }
                    Some((_, PreferredElection::NotAvailable)) => Err((
                        ResponseError::PreferredLeaderNotAvailable,
                        "the preferred replica is fenced or not in the ISR".to_owned(),
                    )),
                    Some((id, PreferredElection::Elect)) => {
                        elect.push((id, *partition));
                        Ok(())
                    }
                }
            };
            outcomes.push((name.clone(), *partition, outcome));
        }
    }
    let committed = if !unclean.is_empty() {
        node.elect_unclean_leaders(unclean).await
    } else if elect.is_empty() {
        Ok(())
    } else {
        node.elect_preferred_leaders(elect).await
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (name, partition, outcome) in outcomes {
        let result = match error_code::with_commit(&committed, outcome) {
            Ok(()) => PartitionResult::default().with_partition_id(partition),
            Err((error, message)) => PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message))),
        };
        match results.last_mut().filter(|last| last.topic.0.as_str() == name) {
            Some(last) => last.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(name)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
