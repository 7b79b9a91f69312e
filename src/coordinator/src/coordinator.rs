//! The coordinator of the groups on one `__consumer_offsets` partition: requests in, outputs
//! out (see the crate docs).

use std::collections::BTreeMap;

use protocol::ids::TopicPartition;

use crate::group::{Group, GroupState, Member};
use crate::{CoordinatorConfig, CoordinatorError};

/// Names a request whose answer may come later, chosen by the caller (a connection and
/// correlation id, say); the coordinator only hands it back.
pub type RequestId = u64;

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Names the answer.
    pub request: RequestId,
    /// The group.
    pub group_id: String,
    /// Empty for a member that has none yet.
    pub member_id: String,
    /// Static membership (KIP-345).
    pub group_instance_id: Option<String>,
    /// "consumer" for consumers; the coordinator only compares it.
    pub protocol_type: String,
    /// The protocols (assignors) the member supports, by preference, with its metadata for
    /// each.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `max.poll.interval.ms` for consumers: how long the join phase may wait for it.
    pub rebalance_timeout_ms: i32,
    /// JoinGroup v4+: a member without an id must first ask for one (KIP-394).
    pub require_known_member_id: bool,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
}

/// One member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// The member.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// A successful JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// The new generation.
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata, for the leader only (empty for the others).
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// Names the answer.
    pub request: RequestId,
    /// The group.
    pub group_id: String,
    /// The member.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// The generation the member joined.
    pub generation_id: i32,
    /// v5+: must match the group's when set.
    pub protocol_type: Option<String>,
    /// v5+: must match the group's when set.
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the coordinator accepted it.
    pub commit_timestamp_ms: i64,
}

/// An OffsetCommit request for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    /// The group.
    pub group_id: String,
    /// The member, or empty for a commit outside group management.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// The member's generation, or -1 outside group management.
    pub generation_id: i32,
    /// The offsets: partition, offset, leader epoch, metadata.
    pub offsets: Vec<(TopicPartition, i64, i32, String)>,
}

/// What the coordinator writes to its `__consumer_offsets` partition, and reads back on a
/// leadership change ([`GroupCoordinator::replay`]). `None` values are tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// A committed offset (or its deletion).
    Offset {
        /// The group.
        group_id: String,
        /// The partition.
        topic_partition: TopicPartition,
        /// The offset, `None` when deleted.
        value: Option<CommittedOffset>,
    },
    /// A group's membership after a rebalance (or its deletion).
    Group {
        /// The group.
        group_id: String,
        /// The group, `None` when deleted.
        value: Option<GroupSnapshot>,
    },
}

/// A group as persisted: its generation, protocol, leader and members with assignments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The generation.
    pub generation_id: i32,
    /// The protocol type, once a member joined.
    pub protocol_type: Option<String>,
    /// The chosen protocol, while the group has members.
    pub protocol_name: Option<String>,
    /// The leader.
    pub leader: Option<String>,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// A member as DescribeGroups shows it (and as persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Its id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its session timeout.
    pub session_timeout_ms: i32,
    /// Its rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
    /// Its assignment.
    pub assignment: Vec<u8>,
}

/// A group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group.
    pub group_id: String,
    /// Its state, in Kafka's words (`Empty`, `PreparingRebalance`, ...).
    pub state: GroupState,
    /// The protocol type ("" when none).
    pub protocol_type: String,
    /// The chosen protocol ("" when none).
    pub protocol_name: String,
    /// The generation.
    pub generation_id: i32,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// What the broker must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Append this record to the group's partition and make it durable before delivering
    /// any later output.
    Persist(GroupRecord),
    /// Answer a JoinGroup.
    Join {
        /// The request.
        request: RequestId,
        /// The answer.
        result: Result<JoinResult, CoordinatorError>,
    },
    /// Answer a SyncGroup with the member's assignment.
    Sync {
        /// The request.
        request: RequestId,
        /// The answer.
        result: Result<Vec<u8>, CoordinatorError>,
    },
}

/// The groups of one `__consumer_offsets` partition.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    groups: BTreeMap<String, Group>,
    /// Distinguishes this coordinator's member ids from an earlier one's (the caller's
    /// choice: a broker epoch, say).
    member_id_nonce: u64,
    /// Member ids handed out so far.
    members_created: u64,
}

impl GroupCoordinator {
    /// A coordinator with no groups. Member ids are `{client_id}-{nonce}-{n}`.
    pub fn new(config: CoordinatorConfig, member_id_nonce: u64) -> GroupCoordinator {
        GroupCoordinator { config, groups: BTreeMap::new(), member_id_nonce, members_created: 0 }
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.members_created += 1;
        format!("{client_id}-{:x}-{}", self.member_id_nonce, self.members_created)
    }

    fn check_group_id(group_id: &str) -> Result<(), CoordinatorError> {
        if group_id.is_empty() {
            return Err(CoordinatorError::InvalidGroupId(group_id.to_owned()));
        }
        Ok(())
    }

    /// Handles a JoinGroup. Its answer is among the outputs, now or after a later call.
    pub fn join(&mut self, now_ms: i64, request: JoinRequest) -> Vec<Output> {
        let mut out = Vec::new();
        let answer = |error: CoordinatorError| vec![Output::Join { request: request.request, result: Err(error) }];
        if let Err(error) = Self::check_group_id(&request.group_id) {
            return answer(error);
        }
        let (min_ms, max_ms) = (self.config.group_min_session_timeout_ms, self.config.group_max_session_timeout_ms);
        if request.session_timeout_ms < min_ms || request.session_timeout_ms > max_ms {
            return answer(CoordinatorError::InvalidSessionTimeout {
                session_timeout_ms: request.session_timeout_ms,
                min_ms,
                max_ms,
            });
        }
        let needs_id = request.member_id.is_empty();
        let new_id = needs_id.then(|| self.new_member_id(&request.client_id));
        let config = self.config;
        let group = self.groups.entry(request.group_id.clone()).or_insert_with(|| Group::new(&request.group_id));
        if let Err(error) = group.join(now_ms, &config, request, new_id, &mut out) {
            out.push(Output::Join { request: error.0, result: Err(error.1) });
        }
        self.forget_if_unused(&out);
        out
    }

    /// Drops a group that a refused first join left with nothing in it.
    fn forget_if_unused(&mut self, _out: &[Output]) {
        self.groups.retain(|_, group| !group.is_unused());
    }

    /// Handles a SyncGroup. Its answer is among the outputs, now or after a later call.
    pub fn sync(&mut self, now_ms: i64, request: SyncRequest) -> Vec<Output> {
        let mut out = Vec::new();
        match self.groups.get_mut(&request.group_id) {
            None => out.push(Output::Sync {
                request: request.request,
                result: Err(CoordinatorError::UnknownMemberId(request.member_id)),
            }),
            Some(group) => group.sync(now_ms, request, &mut out),
        }
        out
    }

    /// Handles a Heartbeat.
    ///
    /// # Errors
    /// `UnknownMemberId`, `FencedInstanceId`, `IllegalGeneration`, `RebalanceInProgress`
    /// (rejoin), `CoordinatorNotAvailable`.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), CoordinatorError> {
        match self.groups.get_mut(group_id) {
            None => Err(CoordinatorError::UnknownMemberId(member_id.to_owned())),
            Some(group) => group.heartbeat(now_ms, member_id, group_instance_id, generation_id),
        }
    }

    /// Handles a LeaveGroup for `members` (member id, instance id): one answer each, plus the
    /// outputs of the rebalance it starts.
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> (Vec<Result<(), CoordinatorError>>, Vec<Output>) {
        let mut out = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            let unknown =
                members.iter().map(|(member_id, _)| Err(CoordinatorError::UnknownMemberId(member_id.clone())));
            return (unknown.collect(), out);
        };
        let config = self.config;
        let results = members
            .iter()
            .map(|(member_id, instance_id)| group.leave(now_ms, &config, member_id, instance_id.as_deref(), &mut out))
            .collect();
        (results, out)
    }

    /// Handles an OffsetCommit: on success the offsets are stored and their records are the
    /// outputs (to be made durable before the client is answered).
    ///
    /// # Errors
    /// `IllegalGeneration`, `UnknownMemberId`, `FencedInstanceId`, `RebalanceInProgress`,
    /// `CoordinatorNotAvailable`, `InvalidGroupId`, for the whole request.
    pub fn commit_offsets(&mut self, now_ms: i64, request: CommitRequest) -> Result<Vec<Output>, CoordinatorError> {
        Self::check_group_id(&request.group_id)?;
        if !self.groups.contains_key(&request.group_id) {
            if request.generation_id >= 0 || !request.member_id.is_empty() {
                return Err(CoordinatorError::IllegalGeneration { generation_id: request.generation_id, current: -1 });
            }
            let _ = self.groups.insert(request.group_id.clone(), Group::new(&request.group_id));
        }
        let group = self.groups.get_mut(&request.group_id).expect("inserted above");
        group.validate_commit(now_ms, &request)?;
        let mut out = Vec::with_capacity(request.offsets.len());
        for (topic_partition, offset, leader_epoch, metadata) in request.offsets {
            let value = CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms: now_ms };
            let _ = group.offsets.insert(topic_partition.clone(), value.clone());
            out.push(Output::Persist(GroupRecord::Offset {
                group_id: request.group_id.clone(),
                topic_partition,
                value: Some(value),
            }));
        }
        Ok(out)
    }

    /// Handles an OffsetFetch: the committed offsets of `partitions` (every committed one
    /// when `None`). Partitions without a commit are left out.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, CommittedOffset)> {
        let Some(group) = self.groups.get(group_id) else { return Vec::new() };
        match partitions {
            None => group.offsets.iter().map(|(tp, offset)| (tp.clone(), offset.clone())).collect(),
            Some(partitions) => partitions
                .iter()
                .filter_map(|tp| group.offsets.get(tp).map(|offset| (tp.clone(), offset.clone())))
                .collect(),
        }
    }

    /// Handles an OffsetDelete: removes the committed offsets of `partitions` when the group
    /// has no members (Kafka also allows it for topics the members do not subscribe to, which
    /// needs the consumer protocol's subscriptions; weir refuses those with
    /// `NON_EMPTY_GROUP` for now).
    ///
    /// # Errors
    /// `GroupIdNotFound`, `NonEmptyGroup`.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Output>, CoordinatorError> {
        let group =
            self.groups.get_mut(group_id).ok_or_else(|| CoordinatorError::GroupIdNotFound(group_id.to_owned()))?;
        if !group.members.is_empty() {
            return Err(CoordinatorError::NonEmptyGroup);
        }
        let mut out = Vec::new();
        for topic_partition in partitions {
            if group.offsets.remove(topic_partition).is_some() {
                out.push(Output::Persist(GroupRecord::Offset {
                    group_id: group_id.to_owned(),
                    topic_partition: topic_partition.clone(),
                    value: None,
                }));
            }
        }
        Ok(out)
    }

    /// Handles a DeleteGroups entry: an empty group and its offsets go.
    ///
    /// # Errors
    /// `GroupIdNotFound`, `NonEmptyGroup`.
    pub fn delete_group(&mut self, group_id: &str) -> Result<Vec<Output>, CoordinatorError> {
        let group = self.groups.get(group_id).ok_or_else(|| CoordinatorError::GroupIdNotFound(group_id.to_owned()))?;
        if !group.members.is_empty() {
            return Err(CoordinatorError::NonEmptyGroup);
        }
        let group = self.groups.remove(group_id).expect("present");
        let mut out: Vec<Output> = group
            .offsets
            .into_keys()
            .map(|topic_partition| {
                Output::Persist(GroupRecord::Offset { group_id: group_id.to_owned(), topic_partition, value: None })
            })
            .collect();
        out.push(Output::Persist(GroupRecord::Group { group_id: group_id.to_owned(), value: None }));
        Ok(out)
    }

    /// Every group with its state (ListGroups, DescribeGroups).
    pub fn groups(&self) -> Vec<GroupSummary> {
        self.groups.values().map(Group::summary).collect()
    }

    /// One group (DescribeGroups); a group this coordinator does not know is `Dead`, as in
    /// Kafka.
    pub fn describe(&self, group_id: &str) -> GroupSummary {
        self.groups.get(group_id).map_or_else(
            || GroupSummary {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: -1,
                members: Vec::new(),
            },
            Group::summary,
        )
    }

    /// The earliest time a [`GroupCoordinator::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.groups.values().filter_map(Group::next_deadline_ms).min()
    }

    /// Expires sessions, ends join phases and sync waits whose time has come.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        let config = self.config;
        for group in self.groups.values_mut() {
            group.tick(now_ms, &config, &mut out);
        }
        out
    }

    /// Folds in a record read back from the partition (in log order) while loading.
    pub fn replay(&mut self, now_ms: i64, record: &GroupRecord) {
        match record {
            GroupRecord::Offset { group_id, topic_partition, value } => {
                let group = self.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id));
                match value {
                    Some(value) => {
                        let _ = group.offsets.insert(topic_partition.clone(), value.clone());
                    }
                    None => {
                        let _ = group.offsets.remove(topic_partition);
                    }
                }
            }
            GroupRecord::Group { group_id, value: None } => {
                let _ = self.groups.remove(group_id);
            }
            GroupRecord::Group { group_id, value: Some(snapshot) } => {
                let group = self.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id));
                group.restore(now_ms, snapshot);
            }
        }
        self.groups.retain(|_, group| !group.is_unused());
    }

    /// The member of a group, for tests and tools.
    pub fn member_ids(&self, group_id: &str) -> Vec<String> {
        self.groups.get(group_id).map_or_else(Vec::new, |group| group.members.keys().cloned().collect())
    }
}

/// A member rebuilt from a snapshot (fresh session timer).
pub(crate) fn restored_member(now_ms: i64, description: &MemberDescription, protocol_name: Option<&str>) -> Member {
    Member {
        member_id: description.member_id.clone(),
        group_instance_id: description.group_instance_id.clone(),
        client_id: description.client_id.clone(),
        client_host: description.client_host.clone(),
        session_timeout_ms: description.session_timeout_ms,
        rebalance_timeout_ms: description.rebalance_timeout_ms,
        protocols: protocol_name.map(|name| vec![(name.to_owned(), description.metadata.clone())]).unwrap_or_default(),
        assignment: description.assignment.clone(),
        pending_join: None,
        pending_sync: None,
        session_deadline_ms: now_ms + i64::from(description.session_timeout_ms),
        join_order: 0,
    }
}
