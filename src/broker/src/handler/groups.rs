//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//!
//! Each maps the request onto the group's coordinator (`crate::groups`) and builds the answer
//! for the request's version: fields a version does not carry are left at their defaults.

use std::sync::Arc;

use coordinator::{
    CommitRequest, CoordinatorError, GroupState, JoinRequest, JoinResult, Output, SyncRequest, CONSUMER_OFFSETS_TOPIC,
};
use protocol::ids::TopicPartition;
use protocol::kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use protocol::kafka_protocol::messages::delete_groups_response::{DeletableGroupResult, DeleteGroupsResponse};
use protocol::kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use protocol::kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use protocol::kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use protocol::kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use protocol::kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use protocol::kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use protocol::kafka_protocol::messages::join_group_request::JoinGroupRequest;
use protocol::kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use protocol::kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use protocol::kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use protocol::kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use protocol::kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use protocol::kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use protocol::kafka_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use protocol::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use protocol::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use protocol::kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use protocol::kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use protocol::kafka_protocol::messages::{BrokerId, GroupId, ResponseKind, TopicName};
use protocol::ResponseError;

use super::metadata::ensure_topic_with;
use super::str_bytes;
use crate::config::REQUEST_WAIT_MS_MAX;
use crate::connection::Reply;
use crate::node::Node;

/// Extra time a JoinGroup may wait beyond its rebalance timeout (the coordinator answers by
/// then; this only bounds a wait whose coordinator vanished).
const JOIN_WAIT_SLACK_MS: u64 = 5_000;
/// DescribeGroups' "authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

fn code(error: &CoordinatorError) -> i16 {
    error.error_code()
}

/// Where a group's coordinator is: the leader of its `__consumer_offsets` partition.
async fn locate(node: &Arc<Node>, group_id: &str) -> Result<(i32, String, i32), ResponseError> {
    if node.image().topic(CONSUMER_OFFSETS_TOPIC).is_none() {
        let brokers = i16::try_from(node.image().unfenced_brokers().count()).unwrap_or(i16::MAX).max(1);
        let factor = node.config.offsets_topic_replication_factor.min(brokers);
        let configs = [("cleanup.policy", "compact"), ("retention.ms", "-1")];
        ensure_topic_with(node, CONSUMER_OFFSETS_TOPIC, node.config.offsets_topic_num_partitions, factor, &configs)
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    }
    let image = node.image();
    let topic = image.topic(CONSUMER_OFFSETS_TOPIC).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let index = coordinator::partition_for(group_id, i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX));
    let leader =
        topic.partitions.get(&index).map(|state| state.leader).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let broker = image.unfenced_brokers().find(|broker| broker.broker_id == leader);
    match broker {
        Some(broker) => Ok((leader.0, broker.host.clone(), i32::from(broker.port))),
        None if leader == node.config.node_id => {
            Ok((leader.0, node.config.advertised_host.clone(), i32::from(node.config.advertised_port)))
        }
        None => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// FindCoordinator for groups (transactions are not served).
pub(crate) async fn find_coordinator(
    node: &Arc<Node>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request.coordinator_keys.iter().map(ToString::to_string).collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let found = if request.key_type != 0 {
            Err(ResponseError::TransactionalIdAuthorizationFailed)
        } else if key.is_empty() {
            Err(ResponseError::InvalidGroupId)
        } else {
            locate(node, &key).await
        };
        let entry = match found {
            Ok((node_id, host, port)) => Coordinator::default()
                .with_key(str_bytes(key))
                .with_node_id(BrokerId(node_id))
                .with_host(str_bytes(host))
                .with_port(port),
            Err(error) => Coordinator::default()
                .with_key(str_bytes(key))
                .with_node_id(BrokerId(-1))
                .with_host(str_bytes(""))
                .with_port(-1)
                .with_error_code(error.code()),
        };
        coordinators.push(entry);
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let entry = coordinators.pop().expect("one key below v4");
    FindCoordinatorResponse::default()
        .with_error_code(entry.error_code)
        .with_node_id(entry.node_id)
        .with_host(entry.host)
        .with_port(entry.port)
}

fn join_response(version: i16, result: Result<JoinResult, CoordinatorError>, member_id: &str) -> JoinGroupResponse {
    match result {
        Ok(joined) => {
            let members = joined
                .members
                .into_iter()
                .map(|member| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.filter(|_| version >= 5).map(str_bytes))
                        .with_metadata(member.metadata.into())
                })
                .collect();
            JoinGroupResponse::default()
                .with_generation_id(joined.generation_id)
                .with_protocol_type(Some(str_bytes(joined.protocol_type)))
                .with_protocol_name(Some(str_bytes(joined.protocol_name)))
                .with_leader(str_bytes(joined.leader))
                .with_member_id(str_bytes(joined.member_id))
                .with_members(members)
        }
        Err(error) => {
            let member_id = match &error {
                CoordinatorError::MemberIdRequired(assigned) => assigned.clone(),
                _ => member_id.to_owned(),
            };
            JoinGroupResponse::default()
                .with_error_code(code(&error))
                .with_generation_id(-1)
                .with_protocol_type(None)
                .with_protocol_name(if version >= 7 { None } else { Some(str_bytes("")) })
                .with_leader(str_bytes(""))
                .with_member_id(str_bytes(member_id))
        }
    }
}

fn join_error(version: i16, error: ResponseError, member_id: &str) -> ResponseKind {
    let mut response = join_response(version, Err(CoordinatorError::CoordinatorNotAvailable), member_id);
    response.error_code = error.code();
    ResponseKind::JoinGroup(response)
}

/// JoinGroup: answered when the join phase ends.
pub(crate) fn join_group(node: &Arc<Node>, request: JoinGroupRequest, version: i16, client: (&str, &str)) -> Reply {
    let group_id = request.group_id.to_string();
    let member_id = request.member_id.to_string();
    let slot = match node.groups.slot(node, &group_id) {
        Ok(slot) => slot,
        Err(error) => return Reply::Now(join_error(version, error, &member_id)),
    };
    let request_id = node.groups.request_id();
    let rebalance_timeout_ms = if version == 0 { request.session_timeout_ms } else { request.rebalance_timeout_ms };
    let join = JoinRequest {
        request: request_id,
        group_id,
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata.to_vec())).collect(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms,
        require_known_member_id: version >= 4,
        client_id: client.0.to_owned(),
        client_host: client.1.to_owned(),
    };
    let wait_ms =
        u64::try_from(rebalance_timeout_ms).unwrap_or(0).saturating_add(JOIN_WAIT_SLACK_MS).min(REQUEST_WAIT_MS_MAX);
    let node = Arc::clone(node);
    Reply::Later(Box::pin(async move {
        let answer = slot.wait_for(request_id);
        if let Err(error) = slot.call(&node, |coordinator, now_ms| ((), coordinator.join(now_ms, join))).await {
            slot.forget(request_id);
            return join_error(version, error, &member_id);
        }
        match rt::time::timeout(rt::time::Duration::from_millis(wait_ms), answer).await {
            Ok(Ok(Output::Join { result, .. })) => ResponseKind::JoinGroup(join_response(version, result, &member_id)),
            Ok(_) => join_error(version, ResponseError::NotCoordinator, &member_id),
            Err(_) => {
                slot.forget(request_id);
                join_error(version, ResponseError::RebalanceInProgress, &member_id)
            }
        }
    }))
}

fn sync_response(
    version: i16,
    result: Result<Vec<u8>, i16>,
    protocol: (Option<String>, Option<String>),
) -> ResponseKind {
    let response = match result {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment.into()),
        Err(error_code) => SyncGroupResponse::default().with_error_code(error_code),
    };
    let response = if version >= 5 {
        response.with_protocol_type(protocol.0.map(str_bytes)).with_protocol_name(protocol.1.map(str_bytes))
    } else {
        response
    };
    ResponseKind::SyncGroup(response)
}

/// SyncGroup: answered once the leader's assignment arrived.
pub(crate) fn sync_group(node: &Arc<Node>, request: SyncGroupRequest, version: i16) -> Reply {
    let group_id = request.group_id.to_string();
    let protocol = (
        request.protocol_type.as_ref().map(ToString::to_string),
        request.protocol_name.as_ref().map(ToString::to_string),
    );
    let slot = match node.groups.slot(node, &group_id) {
        Ok(slot) => slot,
        Err(error) => return Reply::Now(sync_response(version, Err(error.code()), protocol)),
    };
    let request_id = node.groups.request_id();
    let sync = SyncRequest {
        request: request_id,
        group_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        generation_id: request.generation_id,
        protocol_type: protocol.0.clone(),
        protocol_name: protocol.1.clone(),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect(),
    };
    let node = Arc::clone(node);
    Reply::Later(Box::pin(async move {
        let answer = slot.wait_for(request_id);
        if let Err(error) = slot.call(&node, |coordinator, now_ms| ((), coordinator.sync(now_ms, sync))).await {
            slot.forget(request_id);
            return sync_response(version, Err(error.code()), protocol);
        }
        match rt::time::timeout(rt::time::Duration::from_millis(REQUEST_WAIT_MS_MAX), answer).await {
            Ok(Ok(Output::Sync { result, .. })) => {
                sync_response(version, result.map_err(|error| code(&error)), protocol)
            }
            Ok(_) => sync_response(version, Err(ResponseError::NotCoordinator.code()), protocol),
            Err(_) => {
                slot.forget(request_id);
                sync_response(version, Err(ResponseError::RebalanceInProgress.code()), protocol)
            }
        }
    }))
}

/// Heartbeat.
pub(crate) async fn heartbeat(node: &Arc<Node>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let result = match node.groups.slot(node, &group_id) {
        Ok(slot) => slot
            .call(node, |coordinator, now_ms| {
                let result =
                    coordinator.heartbeat(now_ms, &group_id, &member_id, instance_id.as_deref(), request.generation_id);
                (result.map_err(|error| code(&error)), Vec::new())
            })
            .await
            .unwrap_or_else(|error| Err(error.code())),
        Err(error) => Err(error.code()),
    };
    HeartbeatResponse::default().with_error_code(result.err().unwrap_or(0))
}

/// LeaveGroup (one member before v3, a list from v3).
pub(crate) async fn leave_group(node: &Arc<Node>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(ToString::to_string)))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let outcome = match node.groups.slot(node, &group_id) {
        Ok(slot) => slot.call(node, |coordinator, now_ms| coordinator.leave(now_ms, &group_id, &members)).await,
        Err(error) => Err(error),
    };
    let results: Vec<Result<(), i16>> = match outcome {
        Ok(results) => results.into_iter().map(|result| result.map_err(|error| code(&error))).collect(),
        Err(error) => return LeaveGroupResponse::default().with_error_code(error.code()),
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(results[0].err().unwrap_or(0));
    }
    let responses = members
        .into_iter()
        .zip(results)
        .map(|((member_id, instance_id), result)| {
            MemberResponse::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(instance_id.map(str_bytes))
                .with_error_code(result.err().unwrap_or(0))
        })
        .collect();
    LeaveGroupResponse::default().with_members(responses)
}

/// OffsetCommit.
pub(crate) async fn offset_commit(node: &Arc<Node>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            offsets.push((
                TopicPartition::new(topic.name.to_string(), partition.partition_index),
                partition.committed_offset,
                partition.committed_leader_epoch,
                partition.committed_metadata.as_ref().map(ToString::to_string).unwrap_or_default(),
            ));
        }
    }
    let commit = CommitRequest {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        generation_id: request.generation_id_or_member_epoch,
        offsets,
    };
    let outcome = match node.groups.slot(node, &group_id) {
        Ok(slot) => slot
            .call(node, |coordinator, now_ms| match coordinator.commit_offsets(now_ms, commit) {
                Ok(outputs) => (Ok(()), outputs),
                Err(error) => (Err(code(&error)), Vec::new()),
            })
            .await
            .unwrap_or_else(|error| Err(error.code())),
        Err(error) => Err(error.code()),
    };
    let error_code = outcome.err().unwrap_or(0);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error_code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets of one group: (topic, [(partition, offset, leader epoch, metadata)]),
/// or an error code for the whole group.
async fn fetch_group(
    node: &Arc<Node>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<(i32, i64, i32, String)>)>, i16> {
    let slot = node.groups.slot(node, group_id).map_err(|error| error.code())?;
    let wanted: Option<Vec<TopicPartition>> = topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(|p| TopicPartition::new(topic.clone(), *p)))
            .collect()
    });
    let found = slot
        .call(node, |coordinator, _| (coordinator.fetch_offsets(group_id, wanted.as_deref()), Vec::new()))
        .await
        .map_err(|error| error.code())?;
    let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, i64, i32, String)>> = Default::default();
    for (tp, committed) in found {
        by_topic.entry(tp.topic).or_default().push((
            tp.partition.0,
            committed.offset,
            committed.leader_epoch,
            committed.metadata,
        ));
    }
    // Asked-for partitions without a commit answer offset -1.
    if let Some(topics) = topics {
        for (topic, partitions) in topics {
            let entries = by_topic.entry(topic).or_default();
            for partition in partitions {
                if !entries.iter().any(|entry| entry.0 == partition) {
                    entries.push((partition, -1, -1, String::new()));
                }
            }
            entries.sort_by_key(|entry| entry.0);
        }
    }
    Ok(by_topic.into_iter().collect())
}

/// OffsetFetch (one group before v8, several from v8).
pub(crate) async fn offset_fetch(node: &Arc<Node>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version < 8 {
        let topics = request
            .topics
            .map(|topics| topics.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
        return match fetch_group(node, &request.group_id, topics).await {
            Ok(found) => OffsetFetchResponse::default().with_topics(
                found
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, offset, epoch, metadata)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                                        .with_metadata(Some(str_bytes(metadata)))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            Err(error_code) => {
                OffsetFetchResponse::default().with_error_code(if version >= 2 { error_code } else { 0 })
            }
        };
    }
    let mut groups = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let topics =
            group.topics.map(|topics| topics.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
        let entry = match fetch_group(node, &group.group_id, topics).await {
            Ok(found) => OffsetFetchResponseGroup::default().with_group_id(group.group_id).with_topics(
                found
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(topic))).with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, offset, epoch, metadata)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(str_bytes(metadata)))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            Err(error_code) => {
                OffsetFetchResponseGroup::default().with_group_id(group.group_id).with_error_code(error_code)
            }
        };
        groups.push(entry);
    }
    OffsetFetchResponse::default().with_groups(groups)
}

/// ListGroups: the groups of every `__consumer_offsets` partition this broker leads.
pub(crate) async fn list_groups(node: &Arc<Node>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let image = node.image();
    let mut listed = Vec::new();
    let mut error_code = 0;
    if let Some(topic) = image.topic(CONSUMER_OFFSETS_TOPIC) {
        for (index, state) in &topic.partitions {
            if state.leader != node.config.node_id {
                continue;
            }
            let Ok(slot) = node.groups.slot_at(node, *index) else {
                error_code = ResponseError::CoordinatorLoadInProgress.code();
                continue;
            };
            match slot.call(node, |coordinator, _| (coordinator.groups(), Vec::new())).await {
                Ok(groups) => listed.extend(groups),
                Err(error) => error_code = error.code(),
            }
        }
    }
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = listed
        .into_iter()
        .filter(|group| states.is_empty() || states.contains(&group.state.to_string().to_lowercase()))
        .map(|group| {
            let entry = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(group.group_id)))
                .with_protocol_type(str_bytes(group.protocol_type));
            let entry = if version >= 4 { entry.with_group_state(str_bytes(group.state.to_string())) } else { entry };
            if version >= 5 {
                entry.with_group_type(str_bytes("classic"))
            } else {
                entry
            }
        })
        .collect();
    ListGroupsResponse::default().with_error_code(error_code).with_groups(groups)
}

/// DescribeGroups.
pub(crate) async fn describe_groups(
    node: &Arc<Node>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut described = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let name = group_id.to_string();
        let summary = match node.groups.slot(node, &name) {
            Ok(slot) => slot.call(node, |coordinator, _| (coordinator.describe(&name), Vec::new())).await,
            Err(error) => Err(error),
        };
        let entry = match summary {
            Ok(summary) => DescribedGroup::default()
                .with_group_id(group_id)
                .with_group_state(str_bytes(summary.state.to_string()))
                .with_protocol_type(str_bytes(summary.protocol_type))
                .with_protocol_data(str_bytes(summary.protocol_name))
                .with_members(
                    summary
                        .members
                        .into_iter()
                        .map(|member| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(member.member_id))
                                .with_group_instance_id(
                                    member.group_instance_id.filter(|_| version >= 4).map(str_bytes),
                                )
                                .with_client_id(str_bytes(member.client_id))
                                .with_client_host(str_bytes(member.client_host))
                                .with_member_metadata(member.metadata.into())
                                .with_member_assignment(member.assignment.into())
                        })
                        .collect(),
                ),
            Err(error) => DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(error.code())
                .with_group_state(str_bytes(GroupState::Dead.to_string())),
        };
        let entry = if version >= 3 { entry.with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED) } else { entry };
        described.push(entry);
    }
    DescribeGroupsResponse::default().with_groups(described)
}

/// DeleteGroups: empty groups and their offsets go.
pub(crate) async fn delete_groups(node: &Arc<Node>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let name = group_id.to_string();
        let outcome = match node.groups.slot(node, &name) {
            Ok(slot) => slot
                .call(node, |coordinator, _| match coordinator.delete_group(&name) {
                    Ok(outputs) => (Ok(()), outputs),
                    Err(error) => (Err(code(&error)), Vec::new()),
                })
                .await
                .unwrap_or_else(|error| Err(error.code())),
            Err(error) => Err(error.code()),
        };
        results
            .push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(outcome.err().unwrap_or(0)));
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete.
pub(crate) async fn offset_delete(node: &Arc<Node>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| TopicPartition::new(topic.name.to_string(), p.partition_index))
        })
        .collect();
    let outcome = match node.groups.slot(node, &group_id) {
        Ok(slot) => slot
            .call(node, |coordinator, _| match coordinator.delete_offsets(&group_id, &partitions) {
                Ok(outputs) => (Ok(()), outputs),
                Err(error) => (Err(code(&error)), Vec::new()),
            })
            .await
            .unwrap_or_else(|error| Err(error.code())),
        Err(error) => Err(error.code()),
    };
    if let Err(error_code) = outcome {
        return OffsetDeleteResponse::default().with_error_code(error_code);
    }
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            OffsetDeleteResponseTopic::default().with_name(topic.name).with_partitions(
                topic
                    .partitions
                    .iter()
                    .map(|p| OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index))
                    .collect(),
            )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
