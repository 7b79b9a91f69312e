//! One classic group: its members, state and generation, and the rules of the join, sync,
//! heartbeat and leave protocol (Kafka's `ClassicGroup` and the classic half of its
//! `GroupMetadataManager`).

use std::collections::BTreeMap;
use std::fmt;

use protocol::ids::TopicPartition;

use crate::coordinator::{
    restored_member, CommitRequest, CommittedOffset, GroupRecord, GroupSnapshot, GroupSummary, JoinRequest, JoinResult,
    JoinedMember, MemberDescription, Output, RequestId, SyncRequest,
};
use crate::{CoordinatorConfig, CoordinatorError};

/// A group's state, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may remain).
    Empty,
    /// Waiting for the members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Gone (only reported for groups the coordinator does not know).
    Dead,
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        })
    }
}

/// A member of a group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    /// Supported protocols, by preference, with this member's metadata for each.
    pub(crate) protocols: Vec<(String, Vec<u8>)>,
    pub(crate) assignment: Vec<u8>,
    /// A JoinGroup waiting for the join phase to end.
    pub(crate) pending_join: Option<RequestId>,
    /// A SyncGroup waiting for the leader's assignment.
    pub(crate) pending_sync: Option<RequestId>,
    /// The session ends here unless the member is heard from.
    pub(crate) session_deadline_ms: i64,
    /// Order of joining: the first member leads when the leader is gone.
    pub(crate) join_order: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Vec<u8>)]) -> bool {
        self.protocols == protocols
    }

    fn touch(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }
}

/// One group.
#[derive(Debug)]
pub(crate) struct Group {
    group_id: String,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// Instance id -> member id of the static members.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED that have not joined yet, with the time
    /// they are forgotten.
    pending_members: BTreeMap<String, i64>,
    /// The join phase ends here at the latest (PreparingRebalance).
    rebalance_deadline_ms: Option<i64>,
    /// The join phase is the first of an empty group: it waits its whole delay for members.
    initial_delay: bool,
    /// The leader's assignment is due here (CompletingRebalance).
    sync_deadline_ms: Option<i64>,
    joins: u64,
    pub(crate) offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

/// A refused join: its request and why.
pub(crate) type JoinRefusal = (RequestId, CoordinatorError);

impl Group {
    pub(crate) fn new(group_id: &str) -> Group {
        Group {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: None,
            initial_delay: false,
            sync_deadline_ms: None,
            joins: 0,
            offsets: BTreeMap::new(),
        }
    }

    /// Nothing to keep: no members, no pending ids, no offsets, never rebalanced.
    pub(crate) fn is_unused(&self) -> bool {
        self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.generation_id == 0
            && self.state == GroupState::Empty
    }

    fn assert_invariants(&self) {
        match self.state {
            GroupState::Empty => assert!(self.members.is_empty(), "an empty group has no members"),
            GroupState::CompletingRebalance | GroupState::Stable => {
                let leader = self.leader.as_ref().expect("a joined group has a leader");
                assert!(self.members.contains_key(leader), "the leader is a member");
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        if let Some(leader) = &self.leader {
            assert!(self.members.contains_key(leader), "the leader is a member");
        }
        for (instance_id, member_id) in &self.static_members {
            let member = self.members.get(member_id).expect("every static member is a member");
            assert_eq!(member.group_instance_id.as_deref(), Some(instance_id.as_str()));
        }
        assert_eq!(self.state == GroupState::PreparingRebalance, self.rebalance_deadline_ms.is_some());
        assert_eq!(self.state == GroupState::CompletingRebalance, self.sync_deadline_ms.is_some());
    }

    /// The protocols every member supports.
    fn common_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return Vec::new() };
        let mut common: Vec<String> = first.protocols.iter().map(|(name, _)| name.clone()).collect();
        for member in members {
            common.retain(|name| member.protocols.iter().any(|(other, _)| other == name));
        }
        common
    }

    /// True if a member with `protocols` could join the group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        if protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self.common_protocols().iter().any(|name| protocols.iter().any(|(other, _)| other == name))
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            let mut ordered: Vec<&Member> = self.members.values().collect();
            ordered.sort_by_key(|member| member.join_order);
            ordered
                .into_iter()
                .map(|member| JoinedMember {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    metadata: member.metadata(&protocol_name),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name,
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn add_member(&mut self, now_ms: i64, member_id: String, request: &JoinRequest) {
        self.joins += 1;
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance_id) = &request.group_instance_id {
            let _ = self.static_members.insert(instance_id.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols.clone(),
            assignment: Vec::new(),
            pending_join: Some(request.request),
            pending_sync: None,
            session_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
            join_order: self.joins,
        };
        let _ = self.members.insert(member_id, member);
    }

    /// Handles a JoinGroup (see the crate docs). `new_id` is the id for a member that has
    /// none.
    pub(crate) fn join(
        &mut self,
        now_ms: i64,
        config: &CoordinatorConfig,
        request: JoinRequest,
        new_id: Option<String>,
        out: &mut Vec<Output>,
    ) -> Result<(), JoinRefusal> {
        let refuse = |error| Err((request.request, error));
        if self.state == GroupState::Dead {
            return refuse(CoordinatorError::CoordinatorNotAvailable);
        }
        if !self.supports(&request.protocol_type, &request.protocols) {
            return refuse(CoordinatorError::InconsistentGroupProtocol);
        }
        if let Some(new_id) = new_id {
            return self.join_new_member(now_ms, config, request, new_id, out);
        }
        let member_id = request.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            if self.members.len() as u64 >= u64::from(config.group_max_size) {
                return refuse(CoordinatorError::GroupMaxSizeReached(config.group_max_size));
            }
            self.add_member(now_ms, member_id, &request);
            self.prepare_rebalance(now_ms, config, out);
            self.maybe_complete_join(now_ms, out);
            return Ok(());
        }
        self.check_member(&member_id, request.group_instance_id.as_deref())
            .map_err(|error| (request.request, error))?;
        let member = self.members.get_mut(&member_id).expect("checked");
        let unchanged = member.same_protocols(&request.protocols);
        member.touch(now_ms);
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.protocols = request.protocols.clone();
        if let Some(previous) = member.pending_join.replace(request.request) {
            // A second join from the same member replaces the first, which is answered as
            // superseded (Kafka answers it with the same error the client then rejoins on).
            out.push(Output::Join { request: previous, result: Err(CoordinatorError::RebalanceInProgress) });
        }
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::CompletingRebalance | GroupState::Stable if unchanged && !is_leader => {
                let member = self.members.get_mut(&member_id).expect("checked");
                let request = member.pending_join.take().expect("just set");
                out.push(Output::Join { request, result: Ok(self.join_result(&member_id)) });
            }
            GroupState::CompletingRebalance if unchanged => {
                let member = self.members.get_mut(&member_id).expect("checked");
                let request = member.pending_join.take().expect("just set");
                out.push(Output::Join { request, result: Ok(self.join_result(&member_id)) });
            }
            _ => {
                self.prepare_rebalance(now_ms, config, out);
                self.maybe_complete_join(now_ms, out);
            }
        }
        self.assert_invariants();
        Ok(())
    }

    fn join_new_member(
        &mut self,
        now_ms: i64,
        config: &CoordinatorConfig,
        request: JoinRequest,
        new_id: String,
        out: &mut Vec<Output>,
    ) -> Result<(), JoinRefusal> {
        if let Some(instance_id) = request.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance_id).cloned() {
                // A static member back under a new id: the old id is fenced, the assignment
                // kept; no rebalance unless something changed or it leads.
                let mut member = self.members.remove(&old_id).expect("static members are members");
                if let Some(pending) = member.pending_join.take() {
                    out.push(Output::Join {
                        request: pending,
                        result: Err(CoordinatorError::FencedInstanceId(instance_id.clone())),
                    });
                }
                if let Some(pending) = member.pending_sync.take() {
                    out.push(Output::Sync {
                        request: pending,
                        result: Err(CoordinatorError::FencedInstanceId(instance_id.clone())),
                    });
                }
                let unchanged = member.same_protocols(&request.protocols);
                member.member_id = new_id.clone();
                member.client_id = request.client_id.clone();
                member.client_host = request.client_host.clone();
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                member.protocols = request.protocols.clone();
                member.touch(now_ms);
                member.pending_join = Some(request.request);
                let _ = self.members.insert(new_id.clone(), member);
                let _ = self.static_members.insert(instance_id, new_id.clone());
                let was_leader = self.leader.as_deref() == Some(old_id.as_str());
                if was_leader {
                    self.leader = Some(new_id.clone());
                }
                match self.state {
                    GroupState::Stable if unchanged && !was_leader => {
                        let member = self.members.get_mut(&new_id).expect("inserted");
                        let request = member.pending_join.take().expect("just set");
                        out.push(Output::Join { request, result: Ok(self.join_result(&new_id)) });
                    }
                    GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
                    _ => {
                        self.prepare_rebalance(now_ms, config, out);
                        self.maybe_complete_join(now_ms, out);
                    }
                }
                self.assert_invariants();
                return Ok(());
            }
        } else if request.require_known_member_id {
            let _ = self.pending_members.insert(new_id.clone(), now_ms + i64::from(request.session_timeout_ms));
            return Err((request.request, CoordinatorError::MemberIdRequired(new_id)));
        }
        if self.members.len() as u64 >= u64::from(config.group_max_size) {
            return Err((request.request, CoordinatorError::GroupMaxSizeReached(config.group_max_size)));
        }
        self.add_member(now_ms, new_id, &request);
        self.prepare_rebalance(now_ms, config, out);
        self.maybe_complete_join(now_ms, out);
        self.assert_invariants();
        Ok(())
    }

    /// The member exists and, for a static member, still holds its instance id.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), CoordinatorError> {
        if let Some(instance_id) = instance_id {
            match self.static_members.get(instance_id) {
                Some(holder) if holder != member_id => {
                    return Err(CoordinatorError::FencedInstanceId(instance_id.to_owned()));
                }
                Some(_) => {}
                None => return Err(CoordinatorError::UnknownMemberId(member_id.to_owned())),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(CoordinatorError::UnknownMemberId(member_id.to_owned()));
        }
        Ok(())
    }

    /// Starts a join phase (unless one is running).
    fn prepare_rebalance(&mut self, now_ms: i64, config: &CoordinatorConfig, out: &mut Vec<Output>) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(request) = member.pending_sync.take() {
                    out.push(Output::Sync { request, result: Err(CoordinatorError::RebalanceInProgress) });
                }
            }
            self.sync_deadline_ms = None;
        }
        let rebalance_timeout_ms =
            self.members.values().map(|member| i64::from(member.rebalance_timeout_ms)).max().unwrap_or(0);
        self.initial_delay = self.state == GroupState::Empty;
        let wait_ms = if self.initial_delay {
            i64::from(config.group_initial_rebalance_delay_ms).min(rebalance_timeout_ms)
        } else {
            rebalance_timeout_ms
        };
        self.rebalance_deadline_ms = Some(now_ms + wait_ms);
        self.state = GroupState::PreparingRebalance;
    }

    /// Ends the join phase if every member rejoined (and no initial delay is running).
    fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if self.state != GroupState::PreparingRebalance || self.initial_delay {
            return;
        }
        if self.members.values().all(|member| member.pending_join.is_some()) {
            self.complete_join(now_ms, out);
        }
    }

    /// Ends the join phase: members that did not rejoin go, the generation is bumped, a
    /// protocol and leader are chosen and every waiting join is answered.
    fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let gone: Vec<String> =
            self.members.values().filter(|member| member.pending_join.is_none()).map(|m| m.member_id.clone()).collect();
        for member_id in gone {
            self.remove_member(&member_id, out);
        }
        self.rebalance_deadline_ms = None;
        self.initial_delay = false;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            out.push(self.persist());
            self.assert_invariants();
            return;
        }
        self.protocol_name = Some(self.choose_protocol());
        if !self.leader.as_ref().is_some_and(|leader| self.members.contains_key(leader)) {
            self.leader = self.members.values().min_by_key(|member| member.join_order).map(|m| m.member_id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let rebalance_timeout_ms =
            self.members.values().map(|member| i64::from(member.rebalance_timeout_ms)).max().unwrap_or(0);
        self.sync_deadline_ms = Some(now_ms + rebalance_timeout_ms);
        let waiting: Vec<(String, RequestId)> = self
            .members
            .values_mut()
            .map(|member| {
                member.touch(now_ms);
                (member.member_id.clone(), member.pending_join.take().expect("every member rejoined"))
            })
            .collect();
        for (member_id, request) in waiting {
            out.push(Output::Join { request, result: Ok(self.join_result(&member_id)) });
        }
        self.assert_invariants();
    }

    /// The protocol all members support with the most first-choice votes (ties go to the
    /// leader's order of preference, then the name).
    fn choose_protocol(&self) -> String {
        let common = self.common_protocols();
        assert!(!common.is_empty(), "members join only with a protocol the group supports");
        let mut votes: BTreeMap<&str, u32> = common.iter().map(|name| (name.as_str(), 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(name, _)| votes.contains_key(name.as_str())) {
                *votes.get_mut(name.as_str()).expect("a common protocol") += 1;
            }
        }
        let most = votes.values().copied().max().unwrap_or(0);
        common.iter().find(|name| votes[name.as_str()] == most).cloned().expect("some protocol has the most votes")
    }

    /// Removes a member, answering anything it waits on.
    fn remove_member(&mut self, member_id: &str, out: &mut Vec<Output>) {
        let Some(mut member) = self.members.remove(member_id) else { return };
        if let Some(request) = member.pending_join.take() {
            out.push(Output::Join { request, result: Err(CoordinatorError::UnknownMemberId(member_id.to_owned())) });
        }
        if let Some(request) = member.pending_sync.take() {
            out.push(Output::Sync { request, result: Err(CoordinatorError::UnknownMemberId(member_id.to_owned())) });
        }
        if let Some(instance_id) = &member.group_instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                let _ = self.static_members.remove(instance_id);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    fn persist(&self) -> Output {
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        Output::Persist(GroupRecord::Group {
            group_id: self.group_id.clone(),
            value: Some(GroupSnapshot {
                generation_id: self.generation_id,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: self.leader.clone(),
                members: self.describe_members(&protocol_name),
            }),
        })
    }

    fn describe_members(&self, protocol_name: &str) -> Vec<MemberDescription> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|member| member.join_order);
        members
            .into_iter()
            .map(|member| MemberDescription {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                metadata: member.metadata(protocol_name),
                assignment: member.assignment.clone(),
            })
            .collect()
    }

    pub(crate) fn summary(&self) -> GroupSummary {
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        GroupSummary {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            members: self.describe_members(&protocol_name),
            protocol_name,
            generation_id: self.generation_id,
        }
    }

    /// Handles a SyncGroup (see the crate docs).
    pub(crate) fn sync(&mut self, now_ms: i64, request: SyncRequest, out: &mut Vec<Output>) {
        let answer = |out: &mut Vec<Output>, result| out.push(Output::Sync { request: request.request, result });
        if let Err(error) = self.check_member(&request.member_id, request.group_instance_id.as_deref()) {
            return answer(out, Err(error));
        }
        if request.generation_id != self.generation_id {
            return answer(
                out,
                Err(CoordinatorError::IllegalGeneration {
                    generation_id: request.generation_id,
                    current: self.generation_id,
                }),
            );
        }
        let type_mismatch = request.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = request.protocol_name.as_ref().is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            return answer(out, Err(CoordinatorError::InconsistentGroupProtocol));
        }
        let member = self.members.get_mut(&request.member_id).expect("checked");
        member.touch(now_ms);
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                answer(out, Err(CoordinatorError::UnknownMemberId(request.member_id.clone())));
            }
            GroupState::PreparingRebalance => answer(out, Err(CoordinatorError::RebalanceInProgress)),
            GroupState::Stable => answer(out, Ok(member.assignment.clone())),
            GroupState::CompletingRebalance => {
                if let Some(previous) = member.pending_sync.replace(request.request) {
                    out.push(Output::Sync { request: previous, result: Err(CoordinatorError::RebalanceInProgress) });
                }
                if self.leader.as_deref() == Some(request.member_id.as_str()) {
                    let assignments: BTreeMap<String, Vec<u8>> = request.assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = assignments.get(&member.member_id).cloned().unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline_ms = None;
                    out.push(self.persist());
                    for member in self.members.values_mut() {
                        if let Some(request) = member.pending_sync.take() {
                            out.push(Output::Sync { request, result: Ok(member.assignment.clone()) });
                        }
                    }
                }
            }
        }
        self.assert_invariants();
    }

    /// Handles a Heartbeat.
    pub(crate) fn heartbeat(
        &mut self,
        now_ms: i64,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), CoordinatorError> {
        if self.state == GroupState::Dead {
            return Err(CoordinatorError::CoordinatorNotAvailable);
        }
        self.check_member(member_id, instance_id)?;
        if generation_id != self.generation_id {
            return Err(CoordinatorError::IllegalGeneration { generation_id, current: self.generation_id });
        }
        self.members.get_mut(member_id).expect("checked").touch(now_ms);
        match self.state {
            GroupState::PreparingRebalance => Err(CoordinatorError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(CoordinatorError::UnknownMemberId(member_id.to_owned())),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Handles one member of a LeaveGroup.
    pub(crate) fn leave(
        &mut self,
        now_ms: i64,
        config: &CoordinatorConfig,
        member_id: &str,
        instance_id: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), CoordinatorError> {
        let member_id = match instance_id {
            // LeaveGroup v3+ may name a static member by instance id alone.
            Some(instance_id) => {
                let holder = self
                    .static_members
                    .get(instance_id)
                    .cloned()
                    .ok_or_else(|| CoordinatorError::UnknownMemberId(member_id.to_owned()))?;
                if !member_id.is_empty() && holder != member_id {
                    return Err(CoordinatorError::FencedInstanceId(instance_id.to_owned()));
                }
                holder
            }
            None => {
                if !self.members.contains_key(member_id) {
                    return Err(CoordinatorError::UnknownMemberId(member_id.to_owned()));
                }
                member_id.to_owned()
            }
        };
        self.remove_member(&member_id, out);
        self.after_removal(now_ms, config, out);
        Ok(())
    }

    /// After members left: a rebalance, or the end of the running join phase.
    fn after_removal(&mut self, now_ms: i64, config: &CoordinatorConfig, out: &mut Vec<Output>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, config, out),
            _ => {}
        }
        self.maybe_complete_join(now_ms, out);
        self.assert_invariants();
    }

    /// Checks an OffsetCommit against the group (see the crate docs) and resets the
    /// member's session.
    pub(crate) fn validate_commit(&mut self, now_ms: i64, request: &CommitRequest) -> Result<(), CoordinatorError> {
        if self.state == GroupState::Dead {
            return Err(CoordinatorError::CoordinatorNotAvailable);
        }
        if request.generation_id < 0 && request.member_id.is_empty() && request.group_instance_id.is_none() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(CoordinatorError::UnknownMemberId(String::new()))
            };
        }
        self.check_member(&request.member_id, request.group_instance_id.as_deref())?;
        if request.generation_id != self.generation_id {
            return Err(CoordinatorError::IllegalGeneration {
                generation_id: request.generation_id,
                current: self.generation_id,
            });
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(CoordinatorError::RebalanceInProgress);
        }
        self.members.get_mut(&request.member_id).expect("checked").touch(now_ms);
        Ok(())
    }

    /// The earliest deadline of this group.
    pub(crate) fn next_deadline_ms(&self) -> Option<i64> {
        let sessions = self
            .members
            .values()
            .filter(|member| member.pending_join.is_none() && member.pending_sync.is_none())
            .map(|member| member.session_deadline_ms);
        sessions
            .chain(self.pending_members.values().copied())
            .chain(self.rebalance_deadline_ms)
            .chain(self.sync_deadline_ms)
            .min()
    }

    /// Acts on every deadline that passed.
    pub(crate) fn tick(&mut self, now_ms: i64, config: &CoordinatorConfig, out: &mut Vec<Output>) {
        self.pending_members.retain(|_, deadline_ms| *deadline_ms > now_ms);
        if self.rebalance_deadline_ms.is_some_and(|deadline_ms| deadline_ms <= now_ms) {
            self.complete_join(now_ms, out);
        }
        if self.sync_deadline_ms.is_some_and(|deadline_ms| deadline_ms <= now_ms) {
            // The leader's assignment never came: members that did not sync go, the rest
            // rejoin.
            let gone: Vec<String> = self
                .members
                .values()
                .filter(|member| member.pending_sync.is_none())
                .map(|member| member.member_id.clone())
                .collect();
            for member_id in gone {
                self.remove_member(&member_id, out);
            }
            self.prepare_rebalance(now_ms, config, out);
            self.maybe_complete_join(now_ms, out);
        }
        // A member waiting on a join or sync is not expired (Kafka's hasSatisfiedHeartbeat).
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| {
                member.pending_join.is_none() && member.pending_sync.is_none() && member.session_deadline_ms <= now_ms
            })
            .map(|member| member.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for member_id in &expired {
                self.remove_member(member_id, out);
            }
            self.after_removal(now_ms, config, out);
        }
        self.assert_invariants();
    }

    /// Rebuilds the group from its persisted snapshot: its last stable generation, with
    /// fresh session timers.
    pub(crate) fn restore(&mut self, now_ms: i64, snapshot: &GroupSnapshot) {
        self.generation_id = snapshot.generation_id;
        self.protocol_type = snapshot.protocol_type.clone();
        self.protocol_name = snapshot.protocol_name.clone();
        self.leader = snapshot.leader.clone();
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.rebalance_deadline_ms = None;
        self.sync_deadline_ms = None;
        self.initial_delay = false;
        for description in &snapshot.members {
            self.joins += 1;
            let mut member = restored_member(now_ms, description, snapshot.protocol_name.as_deref());
            member.join_order = self.joins;
            if let Some(instance_id) = &member.group_instance_id {
                let _ = self.static_members.insert(instance_id.clone(), member.member_id.clone());
            }
            let _ = self.members.insert(member.member_id.clone(), member);
        }
        self.state = if self.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        if self.members.is_empty() {
            self.leader = None;
        }
        self.assert_invariants();
    }
}
