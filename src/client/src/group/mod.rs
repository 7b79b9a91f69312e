//! The group consumer: a [`Consumer`] whose partitions come from a consumer group
//! (subscribe, rebalance, commit), over Kafka's classic group protocol.
//!
//! # Design
//!
//! [`GroupConsumer::poll`] does the group's work in the caller's task, as Kafka's consumer
//! does inside `poll`: when the member must (re)join it finds the coordinator, joins
//! (answering MEMBER_ID_REQUIRED with the id given), runs the chosen [`Assignor`] when it
//! leads, syncs, and applies the assignment: eager protocols give up every partition before
//! joining (committing first with auto-commit, reporting [`RebalanceEvent::Revoked`]), the
//! cooperative one keeps its partitions and gives up only those taken from it, then rejoins
//! so they can move (KIP-429). Newly assigned partitions start at the group's committed
//! offsets, or per `auto_offset_reset` without one. A heartbeat task per generation tells the
//! coordinator the member lives, and raises the rejoin flag when the coordinator answers
//! REBALANCE_IN_PROGRESS (it keeps heartbeating then, so the session outlives a caller that
//! polls late), ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID; it finds a new coordinator by itself
//! when the old one goes.
//!
//! Offsets are committed with the member's generation (auto-commit every
//! `auto_commit_interval_ms` inside `poll`, before an eager revoke and on close, or
//! [`GroupConsumer::commit`]); a commit the coordinator refuses because the group moved on
//! returns [`ClientError::Broker`] and rejoins.
//!
//! Each member needs its own [`Client`]: a coordinator answers a connection's requests in
//! order, so a JoinGroup waiting for the rest of the group holds back every later request on
//! that connection, including another member's heartbeats and its own JoinGroup.
//!
//! Not built: `max.poll.interval.ms` enforcement in the client (the coordinator's rebalance
//! timeout still drops a member that does not rejoin in time), pattern subscriptions.

pub mod assignor;
pub mod protocol;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::protocol::ids::{Offset, TopicPartition};
use ::protocol::kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use ::protocol::kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use ::protocol::kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use ::protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use ::protocol::kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use ::protocol::kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use ::protocol::kafka_protocol::messages::{ApiKey, GroupId, RequestKind, ResponseKind};
use ::protocol::kafka_protocol::protocol::StrBytes;
use ::protocol::ResponseError;
use rt::time::{sleep, Duration, Instant};

use self::assignor::Assignor;
use self::protocol::{decode_assignment, encode_assignment, Subscription};
use crate::admin::Admin;
use crate::client::{topic_name, Client};
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
use crate::error::ClientError;

/// Attempts at one rebalance (join and sync) before `poll` returns the error.
const REBALANCE_ATTEMPTS_MAX: u32 = 20;
/// The protocol type of consumer groups.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Longest `poll` sleeps when nothing is assigned.
const IDLE_POLL_MS: u64 = 100;

/// Group settings; names follow Kafka's consumer properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: static membership (KIP-345).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`. Default 45000.
    pub session_timeout_ms: i32,
    /// `heartbeat.interval.ms`. Default 3000.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`, sent as the rebalance timeout. Default 300000.
    pub max_poll_interval_ms: i32,
    /// `partition.assignment.strategy`, by preference. Default: range, cooperative-sticky
    /// (Kafka 3's default).
    pub assignors: Vec<Assignor>,
    /// `enable.auto.commit`. Default true.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`. Default 5000.
    pub auto_commit_interval_ms: u64,
}

impl GroupConfig {
    /// Kafka's defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            assignors: vec![Assignor::Range, Assignor::CooperativeSticky],
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
        }
    }
}

/// A change of the member's partitions, reported to the rebalance listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were given up (after their offsets were committed, with auto-commit).
    Revoked(Vec<TopicPartition>),
    /// These partitions were added.
    Assigned(Vec<TopicPartition>),
    /// These partitions were lost without a chance to commit (the member was dropped from
    /// the group).
    Lost(Vec<TopicPartition>),
}

/// Membership state shared with the heartbeat task.
#[derive(Debug, Default)]
struct Membership {
    member_id: String,
    generation_id: i32,
    coordinator: Option<i32>,
    rejoin_needed: bool,
    /// The member was dropped (UNKNOWN_MEMBER_ID, FENCED): its partitions are lost.
    lost: bool,
    protocol: Option<Assignor>,
}

fn lock(membership: &Mutex<Membership>) -> std::sync::MutexGuard<'_, Membership> {
    membership.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A consumer in a consumer group.
pub struct GroupConsumer {
    client: Client,
    consumer: Consumer,
    config: GroupConfig,
    topics: Vec<String>,
    membership: Arc<Mutex<Membership>>,
    /// Stops the current generation's heartbeat task.
    heartbeat_stop: Arc<AtomicBool>,
    /// Behind a mutex so the consumer is `Sync` (its futures hold `&self` across awaits).
    listener: Mutex<Option<Box<dyn FnMut(RebalanceEvent) + Send>>>,
    last_commit: Instant,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("config", &self.config)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// A member of `config.group_id`, not yet subscribed.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`].
    pub fn new(client: Client, consumer: ConsumerConfig, config: GroupConfig) -> Result<GroupConsumer, ClientError> {
        let invalid = |field, reason| Err(ClientError::InvalidConfig { field, reason });
        if config.group_id.is_empty() {
            return invalid("group_id", "must not be empty");
        }
        if config.assignors.is_empty() {
            return invalid("assignors", "must name at least one assignor");
        }
        if config.heartbeat_interval_ms == 0
            || config.heartbeat_interval_ms >= u64::try_from(config.session_timeout_ms).unwrap_or(0)
        {
            return invalid("heartbeat_interval_ms", "must be positive and below session_timeout_ms");
        }
        Ok(GroupConsumer {
            consumer: Consumer::new(client.clone(), consumer)?,
            client,
            config,
            topics: Vec::new(),
            membership: Arc::new(Mutex::new(Membership { rejoin_needed: true, ..Membership::default() })),
            heartbeat_stop: Arc::new(AtomicBool::new(true)),
            listener: Mutex::new(None),
            last_commit: Instant::now(),
        })
    }

    /// Reports every assignment change to `listener` (called inside `poll` and `close`).
    pub fn set_rebalance_listener(&mut self, listener: impl FnMut(RebalanceEvent) + Send + 'static) {
        *self.listener.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(listener));
    }

    /// Subscribes to `topics` (replacing any earlier subscription); takes effect at the next
    /// `poll`.
    pub fn subscribe(&mut self, topics: Vec<String>) {
        self.topics = topics;
        lock(&self.membership).rejoin_needed = true;
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    /// The member id and the generation of the partitions it holds (empty and 0 before the
    /// first join; a generation joined but not yet synced is not reported).
    pub fn generation(&self) -> (String, i32) {
        let membership = lock(&self.membership);
        (membership.member_id.clone(), membership.generation_id)
    }

    /// The next offset `poll` returns for a partition, if known.
    pub fn position(&self, topic_partition: &TopicPartition) -> Option<Offset> {
        self.consumer.position(topic_partition)
    }

    fn report(&self, event: RebalanceEvent) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            listener(event);
        }
    }

    /// Rebalances if needed, auto-commits when due, then fetches records for up to `timeout`.
    ///
    /// # Errors
    /// A rebalance that failed [`REBALANCE_ATTEMPTS_MAX`] times, and the consumer's errors.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if lock(&self.membership).rejoin_needed && !self.topics.is_empty() {
            self.rebalance().await?;
        }
        if self.config.enable_auto_commit
            && self.last_commit.elapsed() >= Duration::from_millis(self.config.auto_commit_interval_ms)
        {
            if let Err(error) = self.commit().await {
                tracing::debug!(%error, "auto-commit failed");
            }
        }
        if self.consumer.assignment().is_empty() {
            sleep(timeout.min(Duration::from_millis(IDLE_POLL_MS))).await;
            return Ok(Vec::new());
        }
        // Bounded by the heartbeat interval so a rebalance is noticed while data flows.
        let bounded = timeout.min(Duration::from_millis(self.config.heartbeat_interval_ms));
        self.consumer.poll(bounded).await
    }

    /// Commits the positions of the assigned partitions under the current generation.
    ///
    /// # Errors
    /// `Broker` (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID: the member
    /// rejoins at the next `poll`), connection and request errors.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets: Vec<(TopicPartition, Offset)> = self
            .consumer
            .assignment()
            .into_iter()
            .filter_map(|tp| self.consumer.position(&tp).map(|position| (tp, position)))
            .collect();
        self.last_commit = Instant::now();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_offsets(&offsets).await
    }

    /// Commits these offsets (the next offset to read, per partition) under the current
    /// generation.
    ///
    /// # Errors
    /// As [`GroupConsumer::commit`].
    pub async fn commit_offsets(&self, offsets: &[(TopicPartition, Offset)]) -> Result<(), ClientError> {
        let (member_id, generation_id, coordinator) = {
            let membership = lock(&self.membership);
            (membership.member_id.clone(), membership.generation_id, membership.coordinator)
        };
        let coordinator = match coordinator {
            Some(coordinator) => coordinator,
            None => self.find_coordinator().await?,
        };
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            by_topic.entry(tp.topic.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_committed_offset(offset.0)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::from_static_str(""))),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(&self.config.group_id))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(self.config.group_instance_id.clone().map(StrBytes::from_string))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = match self.client.send(Some(coordinator), RequestKind::OffsetCommit(request)).await {
            Ok(ResponseKind::OffsetCommit(response)) => response,
            Ok(_) => return Err(ClientError::UnexpectedResponse { api_key: ApiKey::OffsetCommit }),
            Err(error) => {
                lock(&self.membership).coordinator = None;
                return Err(error);
            }
        };
        let code = response.topics.iter().flat_map(|t| &t.partitions).map(|p| p.error_code).find(|code| *code != 0);
        match code.and_then(|code| ClientError::from_code(code, None)) {
            None => Ok(()),
            Some(error) => {
                self.on_group_error(&error);
                Err(error)
            }
        }
    }

    /// The group's committed offsets of `partitions` (those without one are left out).
    ///
    /// # Errors
    /// Connection and broker errors.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Offset>, ClientError> {
        // The guard must be gone before `find_coordinator` locks again.
        let known = lock(&self.membership).coordinator;
        let coordinator = match known {
            Some(coordinator) => coordinator,
            None => self.find_coordinator().await?,
        };
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(tp.topic.as_str()).or_default().push(tp.partition.0);
        }
        let request = OffsetFetchRequest::default().with_group_id(group_id(&self.config.group_id)).with_topics(Some(
            by_topic
                .into_iter()
                .map(|(topic, indexes)| {
                    OffsetFetchRequestTopic::default().with_name(topic_name(topic)).with_partition_indexes(indexes)
                })
                .collect(),
        ));
        let response = match self.client.send(Some(coordinator), RequestKind::OffsetFetch(request)).await? {
            ResponseKind::OffsetFetch(response) => response,
            _ => return Err(ClientError::UnexpectedResponse { api_key: ApiKey::OffsetFetch }),
        };
        crate::groups::committed_offsets(response).inspect_err(|error| self.on_group_error(error))
    }

    /// Commits (with auto-commit), gives up the partitions and leaves the group.
    ///
    /// # Errors
    /// The LeaveGroup's connection errors (the member then expires with its session).
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.config.enable_auto_commit {
            let _ = self.commit().await;
        }
        self.heartbeat_stop.store(true, Ordering::SeqCst);
        let assigned = self.consumer.assignment();
        if !assigned.is_empty() {
            self.report(RebalanceEvent::Revoked(assigned));
        }
        let (member_id, coordinator) = {
            let membership = lock(&self.membership);
            (membership.member_id.clone(), membership.coordinator)
        };
        let (Some(coordinator), false) = (coordinator, member_id.is_empty()) else { return Ok(()) };
        // LeaveGroup v3+: members by identity (the top-level member id is v0-2 only).
        let request = LeaveGroupRequest::default().with_group_id(group_id(&self.config.group_id)).with_members(vec![
            MemberIdentity::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(self.config.group_instance_id.clone().map(StrBytes::from_string)),
        ]);
        let _ = self.client.send(Some(coordinator), RequestKind::LeaveGroup(request)).await?;
        Ok(())
    }

    async fn find_coordinator(&self) -> Result<i32, ClientError> {
        let coordinator = Admin::new(&self.client).find_group_coordinator(&self.config.group_id).await?;
        lock(&self.membership).coordinator = Some(coordinator);
        Ok(coordinator)
    }

    /// Reacts to a coordinator's error code: rejoin, forget the member id, or find the
    /// coordinator again.
    fn on_group_error(&self, error: &ClientError) {
        let ClientError::Broker { error, .. } = error else {
            lock(&self.membership).coordinator = None;
            return;
        };
        let mut membership = lock(&self.membership);
        match error {
            ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration => membership.rejoin_needed = true,
            ResponseError::UnknownMemberId | ResponseError::FencedInstanceId => {
                membership.member_id.clear();
                membership.rejoin_needed = true;
                membership.lost = true;
            }
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => membership.coordinator = None,
            _ => {}
        }
    }

    /// Joins and syncs until the member has an assignment for a generation.
    async fn rebalance(&mut self) -> Result<(), ClientError> {
        let backoff = Duration::from_millis(self.client.config().retry_backoff_ms);
        let mut last_error = None;
        for _ in 0..REBALANCE_ATTEMPTS_MAX {
            match self.rebalance_once().await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(group = %self.config.group_id, %error, "rebalance attempt failed");
                    self.on_group_error(&error);
                    last_error = Some(error);
                    sleep(backoff).await;
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn rebalance_once(&mut self) -> Result<(), ClientError> {
        self.heartbeat_stop.store(true, Ordering::SeqCst);
        let owned = self.consumer.assignment();
        let (lost, protocol) = {
            let mut membership = lock(&self.membership);
            (std::mem::take(&mut membership.lost), membership.protocol)
        };
        let cooperative = protocol.is_some_and(Assignor::cooperative);
        if lost && !owned.is_empty() {
            self.report(RebalanceEvent::Lost(owned.clone()));
            self.consumer.assign(Vec::new());
        } else if !cooperative && !owned.is_empty() {
            if self.config.enable_auto_commit {
                let _ = self.commit().await;
            }
            self.report(RebalanceEvent::Revoked(owned.clone()));
            self.consumer.assign(Vec::new());
        }
        let owned = self.consumer.assignment();
        // The guard must be gone before `find_coordinator` locks again.
        let known = lock(&self.membership).coordinator;
        let coordinator = match known {
            Some(coordinator) => coordinator,
            None => self.find_coordinator().await?,
        };

        // Join (twice when the coordinator first hands out a member id).
        let mut joined = None;
        for _ in 0..2 {
            let member_id = lock(&self.membership).member_id.clone();
            let subscription =
                Subscription { topics: self.topics.clone(), user_data: Vec::new(), owned_partitions: owned.clone() };
            let metadata = subscription.encode();
            let request = JoinGroupRequest::default()
                .with_group_id(group_id(&self.config.group_id))
                .with_session_timeout_ms(self.config.session_timeout_ms)
                .with_rebalance_timeout_ms(self.config.max_poll_interval_ms)
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(self.config.group_instance_id.clone().map(StrBytes::from_string))
                .with_protocol_type(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE))
                .with_protocols(
                    self.config
                        .assignors
                        .iter()
                        .map(|assignor| {
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str(assignor.name()))
                                .with_metadata(metadata.clone().into())
                        })
                        .collect(),
                );
            let response = match self.client.send(Some(coordinator), RequestKind::JoinGroup(request)).await? {
                ResponseKind::JoinGroup(response) => response,
                _ => return Err(ClientError::UnexpectedResponse { api_key: ApiKey::JoinGroup }),
            };
            match ClientError::from_code(response.error_code, None) {
                None => {
                    joined = Some(response);
                    break;
                }
                Some(ClientError::Broker { error: ResponseError::MemberIdRequired, .. }) => {
                    lock(&self.membership).member_id = response.member_id.to_string();
                }
                Some(error) => return Err(error),
            }
        }
        let joined = joined.ok_or(ClientError::Broker { error: ResponseError::MemberIdRequired, message: None })?;
        let member_id = joined.member_id.to_string();
        let generation_id = joined.generation_id;
        let protocol_name = joined.protocol_name.as_ref().map(ToString::to_string).unwrap_or_default();
        let assignor = Assignor::from_name(&protocol_name).ok_or(ClientError::Broker {
            error: ResponseError::InconsistentGroupProtocol,
            message: Some(format!("the group chose assignor {protocol_name:?}")),
        })?;
        {
            let mut membership = lock(&self.membership);
            // The generation is taken only with its assignment (below): until then the member
            // holds the previous generation's partitions, and must not commit or report them
            // under the new one.
            membership.member_id = member_id.clone();
            membership.protocol = Some(assignor);
        }

        // The leader assigns.
        let mut assignments = Vec::new();
        if joined.leader.as_str() == member_id {
            let members: BTreeMap<String, Subscription> = joined
                .members
                .iter()
                .map(|member| {
                    (member.member_id.to_string(), Subscription::decode(&member.metadata).unwrap_or_default())
                })
                .collect();
            let topics: BTreeSet<String> = members.values().flat_map(|s| s.topics.iter().cloned()).collect();
            let topic_list: Vec<String> = topics.iter().cloned().collect();
            let _ = self.client.refresh_metadata(Some(&topic_list)).await;
            let mut counts = BTreeMap::new();
            for topic in topics {
                if let Ok(partitions) = self.client.partitions_for(&topic).await {
                    let _ = counts.insert(topic, i32::try_from(partitions.len()).unwrap_or(i32::MAX));
                }
            }
            for (member, partitions) in assignor.assign(&members, &counts) {
                assignments.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(encode_assignment(&partitions).into()),
                );
            }
        }
        let request = SyncGroupRequest::default()
            .with_group_id(group_id(&self.config.group_id))
            .with_generation_id(generation_id)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_group_instance_id(self.config.group_instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE)))
            .with_protocol_name(Some(StrBytes::from_string(protocol_name)))
            .with_assignments(assignments);
        let synced = match self.client.send(Some(coordinator), RequestKind::SyncGroup(request)).await? {
            ResponseKind::SyncGroup(response) => response,
            _ => return Err(ClientError::UnexpectedResponse { api_key: ApiKey::SyncGroup }),
        };
        if let Some(error) = ClientError::from_code(synced.error_code, None) {
            return Err(error);
        }
        let assigned = decode_assignment(&synced.assignment).ok_or(ClientError::Broker {
            error: ResponseError::InconsistentGroupProtocol,
            message: Some("the assignment does not decode".into()),
        })?;
        // Cleared first: a cooperative revocation asks for the follow-up rejoin while applying.
        let previous_generation = {
            let mut membership = lock(&self.membership);
            membership.rejoin_needed = false;
            std::mem::replace(&mut membership.generation_id, generation_id)
        };
        if let Err(error) = self.apply_assignment(owned, assigned, assignor.cooperative()).await {
            let mut membership = lock(&self.membership);
            membership.generation_id = previous_generation;
            membership.rejoin_needed = true;
            return Err(error);
        }
        self.start_heartbeats(coordinator, member_id, generation_id);
        Ok(())
    }

    /// Moves to a new assignment: revokes what left (cooperative), assigns what came, and
    /// starts new partitions at their committed offsets.
    ///
    /// # Errors
    /// The group's committed offsets for the new partitions could not be read: nothing
    /// changes (starting them per `auto_offset_reset` instead would re-read or skip what the
    /// group already consumed), and the member joins again.
    async fn apply_assignment(
        &mut self,
        owned: Vec<TopicPartition>,
        assigned: Vec<TopicPartition>,
        cooperative: bool,
    ) -> Result<(), ClientError> {
        let added: Vec<TopicPartition> = assigned.iter().filter(|tp| !owned.contains(tp)).cloned().collect();
        let committed = if added.is_empty() { BTreeMap::new() } else { self.committed(&added).await? };
        let new: BTreeSet<TopicPartition> = assigned.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = owned.iter().filter(|tp| !new.contains(*tp)).cloned().collect();
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                let offsets: Vec<(TopicPartition, Offset)> =
                    revoked.iter().filter_map(|tp| self.consumer.position(tp).map(|p| (tp.clone(), p))).collect();
                let _ = self.commit_offsets(&offsets).await;
            }
            self.report(RebalanceEvent::Revoked(revoked.clone()));
            if cooperative {
                // The revoked partitions move in a follow-up rebalance (KIP-429).
                lock(&self.membership).rejoin_needed = true;
            }
        }
        self.consumer.assign(assigned);
        for (tp, offset) in committed {
            // An explicit offset needs no request, so this cannot fail.
            let _ = self.consumer.seek(&tp, SeekTo::Offset(offset)).await;
        }
        self.report(RebalanceEvent::Assigned(added));
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Heartbeats for this generation until stopped or told to rejoin.
    fn start_heartbeats(&mut self, coordinator: i32, member_id: String, generation_id: i32) {
        let stop = Arc::new(AtomicBool::new(false));
        self.heartbeat_stop = Arc::clone(&stop);
        let (client, membership) = (self.client.clone(), Arc::clone(&self.membership));
        let (group, instance) = (self.config.group_id.clone(), self.config.group_instance_id.clone());
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        drop(rt::task::spawn(async move {
            let mut coordinator = Some(coordinator);
            loop {
                sleep(interval).await;
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let target = match coordinator {
                    Some(target) => target,
                    None => match Admin::new(&client).find_group_coordinator(&group).await {
                        Ok(found) => {
                            coordinator = Some(found);
                            lock(&membership).coordinator = Some(found);
                            found
                        }
                        Err(_) => continue,
                    },
                };
                let request = HeartbeatRequest::default()
                    .with_group_id(group_id(&group))
                    .with_generation_id(generation_id)
                    .with_member_id(StrBytes::from_string(member_id.clone()))
                    .with_group_instance_id(instance.clone().map(StrBytes::from_string));
                let code = match client.send(Some(target), RequestKind::Heartbeat(request)).await {
                    Ok(ResponseKind::Heartbeat(response)) => response.error_code,
                    _ => {
                        coordinator = None;
                        continue;
                    }
                };
                let mut state = lock(&membership);
                match ResponseError::try_from_code(code) {
                    None => {}
                    // Heartbeats go on while the group rebalances, so the session outlives a
                    // caller that reaches `poll` only later (as Kafka's heartbeat thread does).
                    Some(ResponseError::RebalanceInProgress) => state.rejoin_needed = true,
                    Some(ResponseError::IllegalGeneration) => {
                        state.rejoin_needed = true;
                        return;
                    }
                    Some(ResponseError::UnknownMemberId | ResponseError::FencedInstanceId) => {
                        state.member_id.clear();
                        state.rejoin_needed = true;
                        state.lost = true;
                        return;
                    }
                    Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
                        coordinator = None;
                        state.coordinator = None;
                    }
                    Some(other) => tracing::debug!(error = ?other, "heartbeat failed"),
                }
            }
        }));
    }
}

impl Drop for GroupConsumer {
    /// Stops the heartbeats (a consumer dropped without `close` leaves its session to
    /// expire, like a crashed process).
    fn drop(&mut self) {
        self.heartbeat_stop.store(true, Ordering::SeqCst);
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}
