//! Consumer-group administration: list, describe and delete groups, read and set their
//! committed offsets (what `weir group` is built on).
//!
//! Requests about one group go to its coordinator (FindCoordinator first); ListGroups goes to
//! every broker, since each lists only the groups it coordinates. Committed offsets can be set
//! only while the group has no members (the coordinator refuses a commit without a generation
//! otherwise), as with Kafka's `kafka-consumer-groups --reset-offsets`.

use std::collections::BTreeMap;

use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use protocol::kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse, RequestKind, ResponseKind,
};
use protocol::kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::client::topic_name;
use crate::error::ClientError;

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// "consumer" for consumer groups.
    pub protocol_type: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    /// The coordinator's broker id.
    pub coordinator: i32,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its assigned partitions (decoded from the consumer protocol; empty for other
    /// protocol types).
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Its state (`Dead` for a group the coordinator does not know).
    pub state: String,
    /// "consumer" for consumer groups.
    pub protocol_type: String,
    /// The assignor in use.
    pub protocol: String,
    /// The coordinator's broker id.
    pub coordinator: i32,
    /// The members.
    pub members: Vec<GroupMember>,
}

/// Decodes a consumer-protocol assignment (`ConsumerProtocolAssignment` v0-3: version,
/// topics with partitions, user data); `None` if it does not parse.
pub fn decode_consumer_assignment(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
        if bytes.len() < count {
            return None;
        }
        let (head, rest) = bytes.split_at(count);
        *bytes = rest;
        Some(head)
    }
    fn i16_of(bytes: &mut &[u8]) -> Option<i16> {
        take(bytes, 2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32_of(bytes: &mut &[u8]) -> Option<i32> {
        take(bytes, 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut bytes = bytes;
    let _version = i16_of(&mut bytes)?;
    let topics = i32_of(&mut bytes)?;
    let mut assignment = Vec::new();
    for _ in 0..topics.max(0) {
        let length = usize::try_from(i16_of(&mut bytes)?).ok()?;
        let topic = std::str::from_utf8(take(&mut bytes, length)?).ok()?.to_owned();
        let partitions = i32_of(&mut bytes)?;
        for _ in 0..partitions.max(0) {
            assignment.push(TopicPartition::new(topic.clone(), i32_of(&mut bytes)?));
        }
    }
    Some(assignment)
}

/// The committed offsets of a single-group OffsetFetch answer (v1-7); partitions without a
/// commit are left out.
///
/// # Errors
/// The group's or a partition's error.
pub(crate) fn committed_offsets(
    response: OffsetFetchResponse,
) -> Result<BTreeMap<TopicPartition, Offset>, ClientError> {
    if let Some(error) = ClientError::from_code(response.error_code, None) {
        return Err(error);
    }
    let mut offsets = BTreeMap::new();
    for topic in response.topics {
        for partition in topic.partitions {
            if let Some(error) = ClientError::from_code(partition.error_code, None) {
                return Err(error);
            }
            if partition.committed_offset >= 0 {
                let _ = offsets.insert(
                    TopicPartition::new(topic.name.to_string(), partition.partition_index),
                    Offset(partition.committed_offset),
                );
            }
        }
    }
    Ok(offsets)
}

fn unexpected(api_key: ApiKey) -> ClientError {
    ClientError::UnexpectedResponse { api_key }
}

impl Admin {
    /// The broker coordinating `group_id`.
    ///
    /// # Errors
    /// `Broker` (COORDINATOR_NOT_AVAILABLE while `__consumer_offsets` is being created, ...),
    /// connection and request errors.
    pub async fn find_group_coordinator(&self, group_id: &str) -> Result<i32, ClientError> {
        let request =
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group_id.to_owned())).with_key_type(0);
        let response = match self.client().send(None, RequestKind::FindCoordinator(request)).await? {
            ResponseKind::FindCoordinator(response) => response,
            _ => return Err(unexpected(ApiKey::FindCoordinator)),
        };
        let (error_code, node_id) = match response.coordinators.first() {
            Some(coordinator) => (coordinator.error_code, coordinator.node_id.0),
            None => (response.error_code, response.node_id.0),
        };
        if let Some(error) = ClientError::from_code(error_code, None) {
            return Err(error);
        }
        // The coordinator must be a broker this client can reach.
        if !self.client().with_metadata(|metadata| metadata.brokers.contains_key(&node_id)) {
            let _ = self.client().refresh_metadata(None).await;
        }
        Ok(node_id)
    }

    /// Every group of every broker.
    ///
    /// # Errors
    /// The first broker's error, connection and request errors.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let brokers: Vec<i32> = self.client().with_metadata(|metadata| metadata.brokers.keys().copied().collect());
        let mut groups = Vec::new();
        for broker in brokers {
            let response =
                match self.client().send(Some(broker), RequestKind::ListGroups(ListGroupsRequest::default())).await? {
                    ResponseKind::ListGroups(response) => response,
                    _ => return Err(unexpected(ApiKey::ListGroups)),
                };
            if let Some(error) = ClientError::from_code(response.error_code, None) {
                return Err(error);
            }
            groups.extend(response.groups.into_iter().map(|group| GroupListing {
                group_id: group.group_id.to_string(),
                protocol_type: group.protocol_type.to_string(),
                state: group.group_state.to_string(),
                coordinator: broker,
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// One group's state and members.
    ///
    /// # Errors
    /// `Broker`, connection and request errors.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription, ClientError> {
        let coordinator = self.find_group_coordinator(group_id).await?;
        let request =
            DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group_id.to_owned()))]);
        let response = match self.client().send(Some(coordinator), RequestKind::DescribeGroups(request)).await? {
            ResponseKind::DescribeGroups(response) => response,
            _ => return Err(unexpected(ApiKey::DescribeGroups)),
        };
        let group = response.groups.into_iter().next().ok_or(unexpected(ApiKey::DescribeGroups))?;
        if let Some(error) = ClientError::from_code(group.error_code, None) {
            return Err(error);
        }
        let consumer = group.protocol_type.as_str() == "consumer";
        Ok(GroupDescription {
            group_id: group.group_id.to_string(),
            state: group.group_state.to_string(),
            protocol_type: group.protocol_type.to_string(),
            protocol: group.protocol_data.to_string(),
            coordinator,
            members: group
                .members
                .into_iter()
                .map(|member| GroupMember {
                    member_id: member.member_id.to_string(),
                    group_instance_id: member.group_instance_id.map(|id| id.to_string()),
                    client_id: member.client_id.to_string(),
                    client_host: member.client_host.to_string(),
                    assignment: if consumer {
                        decode_consumer_assignment(&member.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        })
    }

    /// The committed offsets of a group, every partition it committed.
    ///
    /// # Errors
    /// `Broker`, connection and request errors.
    pub async fn list_group_offsets(&self, group_id: &str) -> Result<BTreeMap<TopicPartition, Offset>, ClientError> {
        let coordinator = self.find_group_coordinator(group_id).await?;
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())))
            .with_topics(None);
        let response = match self.client().send(Some(coordinator), RequestKind::OffsetFetch(request)).await? {
            ResponseKind::OffsetFetch(response) => response,
            _ => return Err(unexpected(ApiKey::OffsetFetch)),
        };
        committed_offsets(response)
    }

    /// Sets a group's committed offsets (the group must have no members).
    ///
    /// # Errors
    /// `Broker` (UNKNOWN_MEMBER_ID while the group has members), connection and request errors.
    pub async fn alter_group_offsets(
        &self,
        group_id: &str,
        offsets: &BTreeMap<TopicPartition, Offset>,
    ) -> Result<(), ClientError> {
        let coordinator = self.find_group_coordinator(group_id).await?;
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (topic_partition, offset) in offsets {
            by_topic.entry(topic_partition.topic.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(topic_partition.partition.0)
                    .with_committed_offset(offset.0)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::from_static_str(""))),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = match self.client().send(Some(coordinator), RequestKind::OffsetCommit(request)).await? {
            ResponseKind::OffsetCommit(response) => response,
            _ => return Err(unexpected(ApiKey::OffsetCommit)),
        };
        for topic in response.topics {
            for partition in topic.partitions {
                if let Some(error) = ClientError::from_code(partition.error_code, None) {
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Deletes an empty group and its committed offsets.
    ///
    /// # Errors
    /// `Broker` (NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND), connection and request errors.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ClientError> {
        let coordinator = self.find_group_coordinator(group_id).await?;
        let request =
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(group_id.to_owned()))]);
        let response = match self.client().send(Some(coordinator), RequestKind::DeleteGroups(request)).await? {
            ResponseKind::DeleteGroups(response) => response,
            _ => return Err(unexpected(ApiKey::DeleteGroups)),
        };
        let result = response.results.into_iter().next().ok_or(unexpected(ApiKey::DeleteGroups))?;
        match ClientError::from_code(result.error_code, None) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_assignments_decode() {
        // Version 1, one topic "t" with partitions 0 and 2, empty user data.
        let bytes = [0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        let decoded = decode_consumer_assignment(&bytes).expect("decodes");
        assert_eq!(decoded, vec![TopicPartition::new("t", 0), TopicPartition::new("t", 2)]);
        assert_eq!(decode_consumer_assignment(&[]), Some(Vec::new()));
        assert_eq!(decode_consumer_assignment(&[0, 1, 0, 0, 0, 5]), None);
    }
}
