//! Metadata operations: the changes brokers ask for, planned against an image into the records
//! that carry them out.
//!
//! Planning is pure and deterministic, and it is the one place these rules live: a single node
//! plans against its own image under its metadata-log lock, the active controller plans against
//! its image with every pending proposal applied (so two racing creations of one name cannot
//! both pass). The caller commits the records as one entry.
//!
//! Replica placement follows Kafka's rack-unaware assignment: partition `p`'s first replica is
//! broker `(start + p) mod n` among the unfenced brokers in id order, the others follow at a
//! shift that grows each time the partitions wrap around the brokers, so leaders and followers
//! both spread evenly. `start` and the initial shift come from a seed the caller draws.
//!
//! Fencing follows KRaft: a fenced broker leaves every ISR it is in unless it is the last
//! member (that member is kept, so the partition waits for it instead of electing a replica
//! that may lack acknowledged records), and partitions it led move to the first unfenced ISR
//! member in replica order, or to no leader. Unfencing gives leaderless partitions whose ISR
//! holds the broker their leader back.

use protocol::ids::{LeaderEpoch, NodeId, PartitionEpoch};

use crate::image::{ApplyError, MetadataImage, PartitionState};
use crate::record::{ConfigResource, MetadataRecord, TopicId};

/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 100_000;
/// The leader id of a partition without a leader.
pub const NO_LEADER: NodeId = NodeId(-1);

/// A metadata change a broker asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetadataOp {
    /// Create a topic (name and configs already validated by the broker).
    CreateTopic {
        /// The name.
        name: String,
        /// The id the broker drew for it.
        topic_id: TopicId,
        /// Partition count (ignored when `assignments` is given).
        partitions: i32,
        /// Replicas per partition (ignored when `assignments` is given).
        replication_factor: i16,
        /// Explicit replicas per partition, preferred leader first; empty to let weir place them.
        assignments: Vec<Vec<NodeId>>,
        /// Config overrides.
        configs: Vec<(String, String)>,
        /// Seeds the placement's start broker and shift.
        placement_seed: u32,
    },
    /// Grow a topic to `total` partitions.
    CreatePartitions {
        /// The topic.
        topic_id: TopicId,
        /// The new partition count.
        total: i32,
        /// Explicit replicas for each new partition; empty to let weir place them.
        assignments: Vec<Vec<NodeId>>,
        /// Seeds the placement.
        placement_seed: u32,
    },
    /// Delete a topic.
    DeleteTopic {
        /// The topic.
        topic_id: TopicId,
    },
    /// Change config overrides (`None` removes one); with `replace_all`, overrides not named
    /// are removed too (AlterConfigs).
    SetConfigs {
        /// What they apply to.
        resource: ConfigResource,
        /// The changes.
        changes: Vec<(String, Option<String>)>,
        /// AlterConfigs (true) or IncrementalAlterConfigs (false) semantics.
        replace_all: bool,
    },
    /// Take the next block of producer ids.
    AllocateProducerIds {
        /// The broker taking it.
        broker_id: NodeId,
        /// Ids in the block.
        count: i32,
    },
    /// A broker (re)joins: it gets the next broker epoch.
    RegisterBroker {
        /// The broker.
        broker_id: NodeId,
        /// Advertised host.
        host: String,
        /// Advertised Kafka port.
        port: u16,
        /// Rack.
        rack: Option<String>,
        /// The epoch the broker's previous run shut down cleanly with, or -1 (unclean or first
        /// start). A mismatch with the registered epoch means the last run crashed.
        previous_broker_epoch: i64,
        /// Register fenced (a cluster member) or unfenced (a single node).
        fenced: bool,
    },
    /// Fence a broker: its session expired, or it is shutting down (controlled shutdown).
    FenceBroker {
        /// The broker.
        broker_id: NodeId,
        /// Its registration.
        broker_epoch: i64,
    },
    /// Unfence a broker that has caught up with the metadata log.
    UnfenceBroker {
        /// The broker.
        broker_id: NodeId,
        /// Its registration.
        broker_epoch: i64,
    },
    /// Move leadership of these partitions to their preferred (first) replica where it is an
    /// unfenced ISR member.
    ElectPreferredLeaders {
        /// The partitions.
        partitions: Vec<(TopicId, i32)>,
    },
    /// Reassign partitions to new replica sets (`None` cancels a reassignment in progress):
    /// new replicas are added, catch up and join the ISR, then the old ones are dropped
    /// (completed by the AlterPartition that brings the last target replica into the ISR).
    ReassignPartitions {
        /// (topic, partition, target replicas, preferred leader first).
        reassignments: Vec<(TopicId, i32, Option<Vec<NodeId>>)>,
    },
    /// Give these leaderless partitions, none of whose ISR members is live, a leader from
    /// their other live replicas (ElectLeaders with the unclean election type): an operator
    /// choosing availability over the records only the lost ISR held.
    ElectUncleanLeaders {
        /// The partitions.
        partitions: Vec<(TopicId, i32)>,
    },
    /// A leader changes its partition's ISR (Kafka's AlterPartition): a compare-and-set on
    /// the partition epoch, from the leader of the leader epoch it names.
    AlterPartition {
        /// The topic.
        topic_id: TopicId,
        /// The partition.
        partition: i32,
        /// The leader asking.
        broker_id: NodeId,
        /// Its registration.
        broker_epoch: i64,
        /// The leader epoch it leads in.
        leader_epoch: LeaderEpoch,
        /// The partition epoch it saw.
        partition_epoch: PartitionEpoch,
        /// The ISR it wants.
        new_isr: Vec<NodeId>,
    },
}

/// Why an operation cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum OpError {
    /// The topic name or id is taken.
    #[error("Topic '{name}' already exists.")]
    TopicExists {
        /// The name.
        name: String,
    },
    /// The topic does not exist.
    #[error("unknown topic")]
    UnknownTopic,
    /// A bad partition count.
    #[error("{0}")]
    InvalidPartitions(String),
    /// A replication factor the live brokers cannot meet.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Explicit assignments that do not work.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// The broker is not registered with that epoch.
    #[error("broker {broker_id} is not registered with epoch {broker_epoch}")]
    StaleBrokerEpoch {
        /// The broker.
        broker_id: NodeId,
        /// The epoch asked about.
        broker_epoch: i64,
    },
    /// No such partition.
    #[error("unknown partition {partition}")]
    UnknownPartition {
        /// The partition index.
        partition: i32,
    },
    /// The request's leader epoch is not the partition's (FENCED_LEADER_EPOCH).
    #[error("leader epoch {requested} is not the partition's leader epoch {current}")]
    FencedLeaderEpoch {
        /// The epoch asked about.
        requested: LeaderEpoch,
        /// The partition's.
        current: LeaderEpoch,
    },
    /// The broker asking does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    #[error("broker {broker_id} does not lead this partition (its leader is {leader})")]
    NotLeader {
        /// The broker asking.
        broker_id: NodeId,
        /// The partition's leader.
        leader: NodeId,
    },
    /// The partition changed since the leader read it (INVALID_UPDATE_VERSION).
    #[error("partition epoch {requested} is stale; the partition is at {current}")]
    InvalidUpdateVersion {
        /// The epoch asked about.
        requested: PartitionEpoch,
        /// The partition's.
        current: PartitionEpoch,
    },
    /// A proposed ISR member may not be in the ISR: fenced, unregistered, or not a replica
    /// (INELIGIBLE_REPLICA).
    #[error("{0}")]
    IneligibleReplica(String),
    /// A malformed ISR (empty, repeated members, without the leader).
    #[error("{0}")]
    InvalidIsr(String),
    /// A cancellation of a reassignment where none is in progress (NO_REASSIGNMENT_IN_PROGRESS).
    #[error("no reassignment is in progress for this partition")]
    NoReassignmentInProgress,
    /// The operation would change more than one metadata-log entry holds.
    #[error("the change needs {records} metadata records; one change holds at most {max}")]
    TooManyRecords {
        /// Records it needs.
        records: usize,
        /// The bound.
        max: usize,
    },
    /// The planned records do not fit the image (a bug in planning).
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// What a preferred-leader election would do for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferredElection {
    /// The preferred replica becomes leader.
    Elect,
    /// It already leads.
    NotNeeded,
    /// It is fenced or out of the ISR.
    NotAvailable,
    /// No such partition.
    UnknownPartition,
}

/// Plans an operation against `image`: the records to commit, as one entry. An empty list
/// means there is nothing to change.
///
/// # Errors
/// [`OpError`] if the operation does not fit the image.
pub fn plan(image: &MetadataImage, op: &MetadataOp) -> Result<Vec<MetadataRecord>, OpError> {
    let records = match op {
        MetadataOp::CreateTopic {
            name,
            topic_id,
            partitions,
            replication_factor,
            assignments,
            configs,
            placement_seed,
        } => {
            if image.topic(name).is_some() || image.topic_by_id(*topic_id).is_some() {
                return Err(OpError::TopicExists { name: name.clone() });
            }
            let assignments = if assignments.is_empty() {
                check_partition_count(*partitions)?;
                place(image, 0, *partitions, *replication_factor, *placement_seed)?
            } else {
                check_partition_count(assignments.len() as i32)?;
                check_assignments(image, assignments, None)?;
                assignments.clone()
            };
            let mut records = vec![MetadataRecord::Topic { name: name.clone(), topic_id: *topic_id }];
            records.extend(configs.iter().map(|(config, value)| MetadataRecord::Config {
                resource: ConfigResource::Topic(name.clone()),
                name: config.clone(),
                value: Some(value.clone()),
            }));
            records.extend(new_partitions(image, *topic_id, 0, assignments));
            records
        }
        MetadataOp::CreatePartitions { topic_id, total, assignments, placement_seed } => {
            let topic = image.topic_by_id(*topic_id).ok_or(OpError::UnknownTopic)?;
            let current = topic.partitions.len() as i32;
            if *total <= current {
                return Err(OpError::InvalidPartitions(format!(
                    "Topic currently has {current} partitions, which is higher than the requested {total}."
                )));
            }
            check_partition_count(*total)?;
            let factor = topic.partitions.get(&0).map_or(1, |state| state.replicas.len() as i16);
            let assignments = if assignments.is_empty() {
                place(image, current, total - current, factor, *placement_seed)?
            } else {
                if assignments.len() as i32 != total - current {
                    return Err(OpError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        total - current,
                        assignments.len()
                    )));
                }
                check_assignments(image, assignments, Some(factor as usize))?;
                assignments.clone()
            };
            new_partitions(image, *topic_id, current, assignments).collect()
        }
        MetadataOp::DeleteTopic { topic_id } => {
            if image.topic_by_id(*topic_id).is_none() {
                return Err(OpError::UnknownTopic);
            }
            vec![MetadataRecord::RemoveTopic { topic_id: *topic_id }]
        }
        MetadataOp::SetConfigs { resource, changes, replace_all } => {
            if let ConfigResource::Topic(name) = resource {
                if image.topic(name).is_none() {
                    return Err(OpError::UnknownTopic);
                }
            }
            let mut records = Vec::new();
            if *replace_all {
                for name in image.configs(resource).into_iter().flat_map(|existing| existing.keys()) {
                    if !changes.iter().any(|(changed, _)| changed == name) {
                        records.push(MetadataRecord::Config {
                            resource: resource.clone(),
                            name: name.clone(),
                            value: None,
                        });
                    }
                }
            }
            records.extend(changes.iter().map(|(name, value)| MetadataRecord::Config {
                resource: resource.clone(),
                name: name.clone(),
                value: value.clone(),
            }));
            records
        }
        MetadataOp::AllocateProducerIds { broker_id, count } => vec![MetadataRecord::AllocateProducerIds {
            broker_id: *broker_id,
            first_producer_id: image.next_producer_id(),
            count: *count,
        }],
        MetadataOp::RegisterBroker { broker_id, host, port, rack, previous_broker_epoch, fenced } => {
            let current = image.broker(*broker_id);
            let clean_shutdown = match current {
                Some(current) => current.broker_epoch == *previous_broker_epoch,
                None => true,
            };
            // A new incarnation of a broker the image still has unfenced (it restarted within
            // its session) replaces a live registration: its leaderships and ISR places move
            // first, as a fencing would move them, so no committed image names a fenced leader.
            // A single node registers unfenced and keeps its leaderships.
            let mut records = match current {
                Some(current) if *fenced && !current.fenced => move_away(image, *broker_id),
                _ => Vec::new(),
            };
            if !clean_shutdown {
                let mut moved = image.clone();
                for record in &records {
                    moved.apply(record)?;
                }
                records.extend(forget_unclean(&moved, *broker_id));
            }
            records.push(MetadataRecord::RegisterBroker {
                broker_id: *broker_id,
                broker_epoch: current.map_or(1, |current| current.broker_epoch + 1),
                host: host.clone(),
                port: *port,
                rack: rack.clone(),
                fenced: *fenced,
                clean_shutdown,
            });
            records
        }
        MetadataOp::FenceBroker { broker_id, broker_epoch } => fence(image, *broker_id, *broker_epoch)?,
        MetadataOp::UnfenceBroker { broker_id, broker_epoch } => unfence(image, *broker_id, *broker_epoch)?,
        MetadataOp::AlterPartition {
            topic_id,
            partition,
            broker_id,
            broker_epoch,
            leader_epoch,
            partition_epoch,
            new_isr,
        } => alter_partition(
            image,
            *topic_id,
            *partition,
            *broker_id,
            *broker_epoch,
            *leader_epoch,
            *partition_epoch,
            new_isr,
        )?,
        MetadataOp::ReassignPartitions { reassignments } => {
            let mut records = Vec::new();
            let mut planned = image.clone();
            for (topic_id, partition, target) in reassignments {
                check_reassignment(&planned, *topic_id, *partition, target.as_deref())?;
                let state = planned.topic_by_id(*topic_id).expect("checked").partitions[partition].clone();
                let next = reassigned(&planned, &state, target.as_deref());
                if next.isr.is_empty() {
                    return Err(OpError::InvalidReplicaAssignment(format!(
                        "reassigning partition {partition} so would leave it no in-sync replica"
                    )));
                }
                if next != state {
                    let record = changed(*topic_id, *partition, &state, next);
                    planned.apply(&record)?;
                    records.push(record);
                }
            }
            records
        }
        MetadataOp::ElectUncleanLeaders { partitions } => {
            let mut records = Vec::new();
            // A partition named twice is elected once.
            let partitions: std::collections::BTreeSet<_> = partitions.iter().collect();
            for (topic_id, partition) in partitions {
                let Some(state) = image.topic_by_id(*topic_id).and_then(|topic| topic.partitions.get(partition)) else {
                    continue;
                };
                if let Some(replica) = unclean_election_possible(image, state) {
                    let mut next = state.clone();
                    elect_uncleanly(&mut next, replica);
                    records.push(changed(*topic_id, *partition, state, next));
                }
            }
            records
        }
        MetadataOp::ElectPreferredLeaders { partitions } => {
            let mut records = Vec::new();
            // A partition named twice is elected once.
            let partitions: std::collections::BTreeSet<_> = partitions.iter().collect();
            for (topic_id, partition) in partitions {
                if preferred_election(image, *topic_id, *partition) != PreferredElection::Elect {
                    continue;
                }
                let state = &image.topic_by_id(*topic_id).expect("checked").partitions[partition];
                let mut next = state.clone();
                next.leader = state.replicas[0];
                records.push(changed(*topic_id, *partition, state, next));
            }
            records
        }
    };
    // One operation is one metadata-log entry, and an entry is bounded: a request naming
    // more partitions than that is refused here, for a single node and a controller alike.
    if records.len() > crate::record::BATCH_RECORDS_MAX {
        return Err(OpError::TooManyRecords { records: records.len(), max: crate::record::BATCH_RECORDS_MAX });
    }
    let mut check = image.clone();
    for record in &records {
        check.apply(record)?;
    }
    Ok(records)
}

/// What electing the preferred replica of one partition would do.
pub fn preferred_election(image: &MetadataImage, topic_id: TopicId, partition: i32) -> PreferredElection {
    let Some(state) = image.topic_by_id(topic_id).and_then(|topic| topic.partitions.get(&partition)) else {
        return PreferredElection::UnknownPartition;
    };
    let Some(preferred) = state.replicas.first().copied() else { return PreferredElection::NotAvailable };
    if state.leader == preferred {
        PreferredElection::NotNeeded
    } else if state.isr.contains(&preferred) && image.is_unfenced(preferred) {
        PreferredElection::Elect
    } else {
        PreferredElection::NotAvailable
    }
}

fn check_partition_count(partitions: i32) -> Result<(), OpError> {
    if (1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
        Ok(())
    } else {
        Err(OpError::InvalidPartitions(format!(
            "Number of partitions must be between 1 and {TOPIC_PARTITIONS_MAX}, got {partitions}."
        )))
    }
}

fn check_assignments(image: &MetadataImage, assignments: &[Vec<NodeId>], factor: Option<usize>) -> Result<(), OpError> {
    let factor = factor.unwrap_or_else(|| assignments.first().map_or(0, Vec::len));
    for (index, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() || replicas.len() != factor {
            return Err(OpError::InvalidReplicaAssignment(format!(
                "partition {index} has {} replicas; every partition needs the same number ({factor}), at least one",
                replicas.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for replica in replicas {
            if !seen.insert(*replica) {
                return Err(OpError::InvalidReplicaAssignment(format!(
                    "partition {index} lists broker {} twice",
                    replica.0
                )));
            }
            if image.broker(*replica).is_none() {
                return Err(OpError::InvalidReplicaAssignment(format!(
                    "partition {index} is assigned to broker {}, which is not registered",
                    replica.0
                )));
            }
        }
    }
    Ok(())
}

/// Kafka's rack-unaware placement over the unfenced brokers.
fn place(
    image: &MetadataImage,
    first_partition: i32,
    partitions: i32,
    replication_factor: i16,
    seed: u32,
) -> Result<Vec<Vec<NodeId>>, OpError> {
    let brokers: Vec<NodeId> = image.unfenced_brokers().map(|broker| broker.broker_id).collect();
    let count = brokers.len();
    if replication_factor < 1 || replication_factor as usize > count {
        return Err(OpError::InvalidReplicationFactor(format!(
            "Replication factor: {replication_factor} larger than available brokers: {count}."
        )));
    }
    let start = seed as usize % count;
    let first_shift = (seed as usize / count) % count;
    let placed = (first_partition..first_partition + partitions)
        .map(|partition| {
            let partition = partition as usize;
            let first = (start + partition) % count;
            let shift = first_shift + partition / count;
            let mut replicas = vec![brokers[first]];
            for follower in 0..replication_factor as usize - 1 {
                replicas.push(brokers[(first + 1 + (shift + follower) % (count - 1)) % count]);
            }
            replicas
        })
        .collect();
    Ok(placed)
}

/// Records for new partitions: the unfenced replicas form the ISR, the first of them leads.
fn new_partitions(
    image: &MetadataImage,
    topic_id: TopicId,
    first_partition: i32,
    assignments: Vec<Vec<NodeId>>,
) -> impl Iterator<Item = MetadataRecord> + '_ {
    assignments.into_iter().zip(first_partition..).map(move |(replicas, partition)| {
        let isr: Vec<NodeId> = replicas.iter().copied().filter(|replica| image.is_unfenced(*replica)).collect();
        MetadataRecord::Partition {
            topic_id,
            partition,
            leader: isr.first().copied().unwrap_or(NO_LEADER),
            isr,
            replicas,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
        }
    })
}

/// A partition record for a change from `before` to `after`: the partition epoch always
/// advances, the leader epoch when the leader changes.
fn changed(topic_id: TopicId, partition: i32, before: &PartitionState, after: PartitionState) -> MetadataRecord {
    let leader_epoch =
        if after.leader == before.leader { before.leader_epoch } else { LeaderEpoch(before.leader_epoch.0 + 1) };
    MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: after.replicas,
        isr: after.isr,
        leader: after.leader,
        leader_epoch,
        partition_epoch: PartitionEpoch(before.partition_epoch.0 + 1),
        adding_replicas: after.adding_replicas,
        removing_replicas: after.removing_replicas,
        elr: after.elr,
    }
}

/// Checks a reassignment of one partition to `target` (`None` cancels the one in progress).
///
/// # Errors
/// `UnknownTopic`, `UnknownPartition`; `InvalidReplicaAssignment` for an empty target, one
/// naming a broker twice or an unregistered broker, or a cancellation that would leave no
/// original replica in sync; `NoReassignmentInProgress` for a cancellation with none.
pub fn check_reassignment(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: i32,
    target: Option<&[NodeId]>,
) -> Result<(), OpError> {
    let topic = image.topic_by_id(topic_id).ok_or(OpError::UnknownTopic)?;
    let state = topic.partitions.get(&partition).ok_or(OpError::UnknownPartition { partition })?;
    match target {
        Some(target) => {
            check_assignments(image, &[target.to_vec()], None)?;
            Ok(())
        }
        None if !state.reassigning() => Err(OpError::NoReassignmentInProgress),
        None => {
            let original = state.original_replicas();
            if state.isr.iter().any(|member| original.contains(member)) {
                Ok(())
            } else {
                Err(OpError::InvalidReplicaAssignment(format!(
                    "cannot cancel the reassignment of partition {partition}: none of the original replicas {original:?} is in sync"
                )))
            }
        }
    }
}

/// The state after starting a reassignment of `state` to `target` (replacing any in
/// progress), or cancelling it (`None`: back to the original replicas, without the ones being
/// added). Kafka's order: `replicas` is the target followed by the replicas being removed. A
/// reassignment whose target is already in sync completes at once.
fn reassigned(image: &MetadataImage, state: &PartitionState, target: Option<&[NodeId]>) -> PartitionState {
    let original = state.original_replicas();
    let mut next = state.clone();
    match target {
        Some(target) => {
            next.adding_replicas = target.iter().copied().filter(|replica| !original.contains(replica)).collect();
            next.removing_replicas = original.iter().copied().filter(|replica| !target.contains(replica)).collect();
            next.replicas = target.iter().chain(&next.removing_replicas).copied().collect();
            next.isr.retain(|member| next.replicas.contains(member));
            if next.adding_replicas.is_empty() && next.removing_replicas.is_empty() {
                // Only the order (the preferred leader) changes.
                next.replicas = target.to_vec();
            }
        }
        None => {
            next.replicas = original;
            next.isr.retain(|member| next.replicas.contains(member));
            next.adding_replicas.clear();
            next.removing_replicas.clear();
        }
    }
    let replicas = next.replicas.clone();
    next.elr.retain(|member| replicas.contains(member));
    if !next.isr.contains(&next.leader) {
        next.leader = first_live_member(image, &next);
    }
    completed(image, next)
}

/// `state` with its reassignment completed if every target replica is in the ISR: the
/// replicas being removed leave the replicas and the ISR, and leadership moves to the first
/// live target replica if the leader was one of them.
fn completed(image: &MetadataImage, state: PartitionState) -> PartitionState {
    let target = state.target_replicas();
    if !state.reassigning() || !target.iter().all(|replica| state.isr.contains(replica)) {
        return state;
    }
    let mut next = state;
    next.isr = target.iter().copied().filter(|replica| next.isr.contains(replica)).collect();
    next.elr.retain(|member| target.contains(member));
    next.replicas = target;
    next.adding_replicas.clear();
    next.removing_replicas.clear();
    if !next.replicas.contains(&next.leader) {
        next.leader = first_live_member(image, &next);
    }
    next
}

/// The first replica (in replica order) that is an unfenced ISR member, or no leader.
fn first_live_member(image: &MetadataImage, state: &PartitionState) -> NodeId {
    state
        .replicas
        .iter()
        .copied()
        .find(|replica| state.isr.contains(replica) && image.is_unfenced(*replica))
        .unwrap_or(NO_LEADER)
}

fn registered(image: &MetadataImage, broker_id: NodeId, broker_epoch: i64) -> Result<bool, OpError> {
    image
        .broker(broker_id)
        .filter(|broker| broker.broker_epoch == broker_epoch)
        .map(|broker| broker.fenced)
        .ok_or(OpError::StaleBrokerEpoch { broker_id, broker_epoch })
}

fn fence(image: &MetadataImage, broker_id: NodeId, broker_epoch: i64) -> Result<Vec<MetadataRecord>, OpError> {
    if registered(image, broker_id, broker_epoch)? {
        return Ok(Vec::new());
    }
    let mut records = vec![MetadataRecord::BrokerFence { broker_id, broker_epoch, fenced: true }];
    records.extend(move_away(image, broker_id));
    Ok(records)
}

/// The partition changes that take `broker_id` out of service: it leaves every ISR it is not
/// the last member of, and each leadership it held moves by [`elect`]; the members leaving an
/// ISR below `min.insync.replicas` join its ELR ([`with_elr`]).
fn move_away(image: &MetadataImage, broker_id: NodeId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for (partition, state) in &topic.partitions {
            if state.leader != broker_id && !(state.isr.contains(&broker_id) && state.isr.len() > 1) {
                continue;
            }
            let mut next = state.clone();
            if next.isr.len() > 1 {
                next.isr.retain(|member| *member != broker_id);
            }
            let next = with_elr(image, &topic.name, state, next);
            let next = if state.leader == broker_id {
                elect(image, &topic.name, next, |replica| replica != broker_id && image.is_unfenced(replica))
            } else {
                next
            };
            records.push(changed(topic.topic_id, *partition, state, next));
        }
    }
    records
}

/// The effective `min.insync.replicas` of a topic as the controller sees it (the topic's
/// override, else 1), capped at the replica count.
fn min_insync_replicas(image: &MetadataImage, topic: &str, replicas: usize) -> usize {
    image
        .configs(&ConfigResource::Topic(topic.to_owned()))
        .and_then(|configs| configs.get("min.insync.replicas"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, replicas.max(1))
}

/// `next` (a change of `before`) with its ELR (KIP-966) brought up to date: empty while the
/// ISR has at least `min.insync.replicas` members; otherwise the ELR so far plus the members
/// that just left the ISR. While the ISR is below the minimum the high watermark does not
/// move, so everything committed is on each of them. Never overlaps the ISR; only replicas.
fn with_elr(image: &MetadataImage, topic: &str, before: &PartitionState, mut next: PartitionState) -> PartitionState {
    if next.isr.len() >= min_insync_replicas(image, topic, next.replicas.len()) {
        next.elr.clear();
        return next;
    }
    for member in &before.isr {
        if !next.isr.contains(member) && !next.elr.contains(member) {
            next.elr.push(*member);
        }
    }
    let (isr, replicas) = (next.isr.clone(), next.replicas.clone());
    next.elr.retain(|member| !isr.contains(member) && replicas.contains(member));
    next
}

/// `next` (a partition whose leader is gone) with a new leader, in Kafka's order
/// (`brief/replication.md` §3 rule 3): the first live ISR member; else the first live ELR
/// member, which becomes the whole ISR (the old ISR members move to the ELR: they too hold
/// everything committed); else, if the topic allows unclean election, the first live replica;
/// else no leader.
fn elect(
    image: &MetadataImage,
    topic: &str,
    mut next: PartitionState,
    live: impl Fn(NodeId) -> bool,
) -> PartitionState {
    let first = |eligible: &dyn Fn(NodeId) -> bool| {
        next.replicas.iter().copied().find(|replica| eligible(*replica) && live(*replica))
    };
    if let Some(leader) = first(&|replica| next.isr.contains(&replica)) {
        next.leader = leader;
        return next;
    }
    if let Some(leader) = first(&|replica| next.elr.contains(&replica)) {
        let shrunk = PartitionState { isr: vec![leader], leader, ..next.clone() };
        let mut elected = with_elr(image, topic, &next, shrunk);
        elected.elr.retain(|member| *member != leader);
        return elected;
    }
    if unclean_election_enabled(image, topic) {
        if let Some(leader) = first(&|_| true) {
            elect_uncleanly(&mut next, leader);
            return next;
        }
    }
    next.leader = NO_LEADER;
    next
}

/// Whether the topic sets `unclean.leader.election.enable=true`. (The controller sees topic
/// overrides only; a broker-wide default does not reach it.)
pub fn unclean_election_enabled(image: &MetadataImage, topic: &str) -> bool {
    image
        .configs(&ConfigResource::Topic(topic.to_owned()))
        .and_then(|configs| configs.get("unclean.leader.election.enable"))
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// Makes `replica`, which is not in the ISR, the leader and the whole ISR: records committed
/// only on the old ISR may be lost (the topic chose availability).
fn elect_uncleanly(state: &mut PartitionState, replica: NodeId) {
    state.leader = replica;
    state.isr = vec![replica];
    state.elr.clear();
}

/// Whether an unclean election could give the partition a leader: it has none, no ISR member
/// is unfenced, and some replica is.
pub fn unclean_election_possible(image: &MetadataImage, state: &PartitionState) -> Option<NodeId> {
    if state.leader != NO_LEADER || state.isr.iter().any(|member| image.is_unfenced(*member)) {
        return None;
    }
    state.replicas.iter().copied().find(|replica| image.is_unfenced(*replica))
}

#[allow(clippy::too_many_arguments)] // the fields of the request, checked one by one
fn alter_partition(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: i32,
    broker_id: NodeId,
    broker_epoch: i64,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    new_isr: &[NodeId],
) -> Result<Vec<MetadataRecord>, OpError> {
    if image.broker(broker_id).is_none_or(|broker| broker.broker_epoch != broker_epoch) {
        return Err(OpError::StaleBrokerEpoch { broker_id, broker_epoch });
    }
    let topic = image.topic_by_id(topic_id).ok_or(OpError::UnknownTopic)?;
    let state = topic.partitions.get(&partition).ok_or(OpError::UnknownPartition { partition })?;
    if state.leader != broker_id {
        return Err(OpError::NotLeader { broker_id, leader: state.leader });
    }
    if leader_epoch != state.leader_epoch {
        return Err(OpError::FencedLeaderEpoch { requested: leader_epoch, current: state.leader_epoch });
    }
    if partition_epoch != state.partition_epoch {
        return Err(OpError::InvalidUpdateVersion { requested: partition_epoch, current: state.partition_epoch });
    }
    let distinct: std::collections::BTreeSet<NodeId> = new_isr.iter().copied().collect();
    if new_isr.is_empty() || distinct.len() != new_isr.len() || !distinct.contains(&broker_id) {
        return Err(OpError::InvalidIsr(format!(
            "ISR {new_isr:?} must list the leader {broker_id} and each member once"
        )));
    }
    for member in new_isr {
        if !state.replicas.contains(member) {
            return Err(OpError::IneligibleReplica(format!(
                "broker {member} is not a replica of partition {partition}"
            )));
        }
        // Members already in the ISR may stay; only additions must be live.
        if !state.isr.contains(member) && !image.is_unfenced(*member) {
            return Err(OpError::IneligibleReplica(format!("broker {member} is fenced or not registered")));
        }
    }
    let mut next = state.clone();
    next.isr = new_isr.to_vec();
    if next.isr == state.isr {
        return Ok(Vec::new());
    }
    // The ISR change that brings the last target replica in completes a reassignment.
    let next = with_elr(image, &topic.name, state, completed(image, next));
    Ok(vec![changed(topic_id, partition, state, next)])
}

fn unfence(image: &MetadataImage, broker_id: NodeId, broker_epoch: i64) -> Result<Vec<MetadataRecord>, OpError> {
    if !registered(image, broker_id, broker_epoch)? {
        return Ok(Vec::new());
    }
    let mut records = vec![MetadataRecord::BrokerFence { broker_id, broker_epoch, fenced: false }];
    let live = |replica: NodeId| replica == broker_id || image.is_unfenced(replica);
    for topic in image.topics() {
        for (partition, state) in &topic.partitions {
            // A leaderless partition this broker can lead: as an ISR member, an ELR member,
            // or a replica of a topic allowing unclean election.
            if state.leader != NO_LEADER || !state.replicas.contains(&broker_id) {
                continue;
            }
            let next = elect(image, &topic.name, state.clone(), live);
            if next.leader != NO_LEADER {
                records.push(changed(topic.topic_id, *partition, state, next));
            }
        }
    }
    Ok(records)
}

/// After a registration that found an unclean shutdown: the broker leaves every ELR (it may
/// have lost what made it eligible).
fn forget_unclean(image: &MetadataImage, broker_id: NodeId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for (partition, state) in &topic.partitions {
            if state.elr.contains(&broker_id) {
                let mut next = state.clone();
                next.elr.retain(|member| *member != broker_id);
                records.push(changed(topic.topic_id, *partition, state, next));
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn apply(image: &mut MetadataImage, op: &MetadataOp) -> Vec<MetadataRecord> {
        let records = plan(image, op).expect("plans");
        for record in &records {
            image.apply(record).expect("fits");
        }
        records
    }

    fn cluster(brokers: i32) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=brokers {
            let _ = apply(
                &mut image,
                &MetadataOp::RegisterBroker {
                    broker_id: NodeId(id),
                    host: "localhost".into(),
                    port: 9092,
                    rack: None,
                    previous_broker_epoch: -1,
                    fenced: true,
                },
            );
            let epoch = image.broker(NodeId(id)).expect("registered").broker_epoch;
            let _ = apply(&mut image, &MetadataOp::UnfenceBroker { broker_id: NodeId(id), broker_epoch: epoch });
        }
        image
    }

    fn create(image: &mut MetadataImage, name: &str, partitions: i32, factor: i16, seed: u32) -> TopicId {
        let topic_id = TopicId([name.len() as u8; 16]);
        let _ = apply(
            image,
            &MetadataOp::CreateTopic {
                name: name.into(),
                topic_id,
                partitions,
                replication_factor: factor,
                assignments: Vec::new(),
                configs: Vec::new(),
                placement_seed: seed,
            },
        );
        topic_id
    }

    fn epoch(image: &MetadataImage, broker: i32) -> i64 {
        image.broker(NodeId(broker)).expect("registered").broker_epoch
    }

    #[test]
    fn placement_spreads_leaders_and_replicas_evenly() {
        for seed in [0, 1, 7, 1234] {
            let mut image = cluster(3);
            let topic_id = create(&mut image, "spread", 6, 3, seed);
            let topic = image.topic_by_id(topic_id).expect("created");
            let mut leaders = BTreeMap::new();
            for state in topic.partitions.values() {
                *leaders.entry(state.leader).or_insert(0) += 1;
                let distinct: std::collections::BTreeSet<_> = state.replicas.iter().collect();
                assert_eq!(distinct.len(), 3, "replicas are distinct: {:?}", state.replicas);
                assert_eq!(state.isr, state.replicas);
                assert_eq!(state.leader, state.replicas[0]);
            }
            assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2], "seed {seed}");
        }
    }

    #[test]
    fn a_replication_factor_above_the_live_brokers_is_refused() {
        let mut image = cluster(2);
        let error = plan(
            &image,
            &MetadataOp::CreateTopic {
                name: "t".into(),
                topic_id: TopicId([1; 16]),
                partitions: 1,
                replication_factor: 3,
                assignments: Vec::new(),
                configs: Vec::new(),
                placement_seed: 0,
            },
        );
        assert!(matches!(error, Err(OpError::InvalidReplicationFactor(_))));
        let broker_epoch = epoch(&image, 2);
        let _ = apply(&mut image, &MetadataOp::FenceBroker { broker_id: NodeId(2), broker_epoch });
        let error = plan(
            &image,
            &MetadataOp::CreateTopic {
                name: "t".into(),
                topic_id: TopicId([1; 16]),
                partitions: 1,
                replication_factor: 2,
                assignments: Vec::new(),
                configs: Vec::new(),
                placement_seed: 0,
            },
        );
        assert!(matches!(error, Err(OpError::InvalidReplicationFactor(_))), "fenced brokers do not count");
    }

    #[test]
    fn fencing_moves_leadership_to_a_live_isr_member_and_keeps_the_last_one() {
        let mut image = cluster(3);
        let replicated = create(&mut image, "replicated", 3, 2, 0);
        let single = create(&mut image, "single-replica", 3, 1, 0);
        let broker_epoch = epoch(&image, 1);
        let _ = apply(&mut image, &MetadataOp::FenceBroker { broker_id: NodeId(1), broker_epoch });
        for state in image.topic_by_id(replicated).expect("exists").partitions.values() {
            assert!(!state.isr.contains(&NodeId(1)));
            assert_ne!(state.leader, NodeId(1));
            assert!(state.isr.contains(&state.leader));
        }
        for state in image.topic_by_id(single).expect("exists").partitions.values() {
            if state.replicas == [NodeId(1)] {
                assert_eq!(state.leader, NO_LEADER, "no other replica may lead");
                assert_eq!(state.isr, [NodeId(1)], "the last ISR member stays");
                assert_eq!(state.leader_epoch, LeaderEpoch(1));
            }
        }
        // Unfencing gives the leaderless partitions their leader back.
        let broker_epoch = epoch(&image, 1);
        let _ = apply(&mut image, &MetadataOp::UnfenceBroker { broker_id: NodeId(1), broker_epoch });
        for state in image.topic_by_id(single).expect("exists").partitions.values() {
            assert_eq!(state.leader, state.replicas[0]);
        }
        // Fencing twice, or with an old epoch, changes nothing / is refused.
        let stale = plan(&image, &MetadataOp::FenceBroker { broker_id: NodeId(1), broker_epoch: 99 });
        assert!(matches!(stale, Err(OpError::StaleBrokerEpoch { .. })));
    }

    #[test]
    fn preferred_election_moves_leadership_back_only_to_a_live_isr_member() {
        let mut image = cluster(3);
        let topic_id = create(&mut image, "preferred", 1, 3, 0);
        let preferred = image.topic_by_id(topic_id).expect("exists").partitions[&0].replicas[0];
        let tail = image.topic_by_id(topic_id).expect("exists").partitions[&0].replicas[2];
        // Make the tail replica lead by hand, as after a failover.
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        let mut moved = state.clone();
        moved.leader = tail;
        image.apply(&changed(topic_id, 0, &state, moved)).expect("fits");
        assert_eq!(preferred_election(&image, topic_id, 0), PreferredElection::Elect);
        let _ = apply(&mut image, &MetadataOp::ElectPreferredLeaders { partitions: vec![(topic_id, 0)] });
        assert_eq!(image.topic_by_id(topic_id).expect("exists").partitions[&0].leader, preferred);
        assert_eq!(preferred_election(&image, topic_id, 0), PreferredElection::NotNeeded);
        assert_eq!(preferred_election(&image, topic_id, 5), PreferredElection::UnknownPartition);
        // Named twice, elected once.
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        let mut moved = state.clone();
        moved.leader = tail;
        image.apply(&changed(topic_id, 0, &state, moved)).expect("fits");
        let twice = MetadataOp::ElectPreferredLeaders { partitions: vec![(topic_id, 0), (topic_id, 0)] };
        assert_eq!(plan(&image, &twice).expect("plans").len(), 1);
    }

    #[test]
    fn an_operation_larger_than_one_entry_is_refused() {
        // The most partitions a topic may have, plus the topic record and two overrides: one
        // record over what one entry holds (a single node used to assert on it).
        let image = cluster(1);
        let wide = |configs: usize| MetadataOp::CreateTopic {
            name: "wide".into(),
            topic_id: TopicId([7; 16]),
            partitions: TOPIC_PARTITIONS_MAX,
            replication_factor: 1,
            assignments: Vec::new(),
            configs: (0..configs).map(|index| (format!("c{index}"), "1".into())).collect(),
            placement_seed: 0,
        };
        assert!(plan(&image, &wide(0)).is_ok());
        assert!(matches!(plan(&image, &wide(2)), Err(OpError::TooManyRecords { .. })));
    }

    /// The leader of partition 0 sets its ISR.
    fn set_isr(image: &mut MetadataImage, topic_id: TopicId, isr: &[i32]) -> Vec<MetadataRecord> {
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        apply(
            image,
            &MetadataOp::AlterPartition {
                topic_id,
                partition: 0,
                broker_id: state.leader,
                broker_epoch: epoch(image, state.leader.0),
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                new_isr: isr.iter().map(|id| NodeId(*id)).collect(),
            },
        )
    }

    fn reassign(image: &mut MetadataImage, topic_id: TopicId, target: Option<&[i32]>) -> Result<(), OpError> {
        let op = MetadataOp::ReassignPartitions {
            reassignments: vec![(topic_id, 0, target.map(|target| target.iter().map(|id| NodeId(*id)).collect()))],
        };
        for record in plan(image, &op)? {
            image.apply(&record).expect("fits");
        }
        Ok(())
    }

    #[test]
    fn a_reassignment_adds_catches_up_then_drops_and_moves_the_leader() {
        let mut image = cluster(4);
        let topic_id = create(&mut image, "moved", 1, 2, 0);
        let nodes = |ids: &[i32]| ids.iter().map(|id| NodeId(*id)).collect::<Vec<_>>();
        let before = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!((before.replicas.clone(), before.leader), (nodes(&[1, 2]), NodeId(1)));
        reassign(&mut image, topic_id, Some(&[3, 4])).expect("plans");
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!(state.replicas, nodes(&[3, 4, 1, 2]));
        assert_eq!((state.adding_replicas.clone(), state.removing_replicas.clone()), (nodes(&[3, 4]), nodes(&[1, 2])));
        assert_eq!(
            (state.isr.clone(), state.leader, state.leader_epoch),
            (nodes(&[1, 2]), NodeId(1), before.leader_epoch)
        );
        // One new replica catches up: still reassigning.
        let _ = set_isr(&mut image, topic_id, &[1, 2, 3]);
        assert!(image.topic_by_id(topic_id).expect("exists").partitions[&0].reassigning());
        // The last one does: the old replicas leave, and the leadership moves.
        let _ = set_isr(&mut image, topic_id, &[1, 2, 3, 4]);
        let done = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert!(!done.reassigning());
        assert_eq!((done.replicas.clone(), done.isr.clone(), done.leader), (nodes(&[3, 4]), nodes(&[3, 4]), NodeId(3)));
        assert_eq!(done.leader_epoch.0, before.leader_epoch.0 + 1);
        assert_eq!(reassign(&mut image, topic_id, None), Err(OpError::NoReassignmentInProgress));
    }

    #[test]
    fn a_reassignment_can_be_cancelled_and_a_shrink_completes_at_once() {
        let mut image = cluster(4);
        let topic_id = create(&mut image, "back", 1, 2, 0);
        let nodes = |ids: &[i32]| ids.iter().map(|id| NodeId(*id)).collect::<Vec<_>>();
        reassign(&mut image, topic_id, Some(&[1, 3])).expect("plans");
        let _ = set_isr(&mut image, topic_id, &[1, 2, 3]);
        // 3 caught up: the whole target (1, 3) is in sync, so the reassignment completes.
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!((state.replicas.clone(), state.isr.clone()), (nodes(&[1, 3]), nodes(&[1, 3])));
        reassign(&mut image, topic_id, Some(&[4, 1])).expect("plans");
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!(state.adding_replicas, nodes(&[4]));
        reassign(&mut image, topic_id, None).expect("cancels");
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!(
            (state.replicas.clone(), state.isr.clone(), state.reassigning()),
            (nodes(&[1, 3]), nodes(&[1, 3]), false)
        );
        // Dropping a replica needs no catching up.
        reassign(&mut image, topic_id, Some(&[3])).expect("plans");
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!((state.replicas.clone(), state.isr.clone(), state.leader), (nodes(&[3]), nodes(&[3]), NodeId(3)));
        // Bad targets.
        assert!(matches!(reassign(&mut image, topic_id, Some(&[])), Err(OpError::InvalidReplicaAssignment(_))));
        assert!(matches!(reassign(&mut image, topic_id, Some(&[2, 2])), Err(OpError::InvalidReplicaAssignment(_))));
        assert!(matches!(reassign(&mut image, topic_id, Some(&[9])), Err(OpError::InvalidReplicaAssignment(_))));
    }

    #[test]
    fn unclean_election_only_when_the_topic_allows_it_or_an_operator_asks() {
        let nodes = |ids: &[i32]| ids.iter().map(|id| NodeId(*id)).collect::<Vec<_>>();
        for allowed in [false, true] {
            let mut image = cluster(2);
            let topic_id = create(&mut image, "unclean", 1, 2, 0);
            if allowed {
                let _ = apply(
                    &mut image,
                    &MetadataOp::SetConfigs {
                        resource: ConfigResource::Topic("unclean".into()),
                        changes: vec![("unclean.leader.election.enable".into(), Some("true".into()))],
                        replace_all: false,
                    },
                );
            }
            // The follower falls out of the ISR, then the leader is fenced.
            let _ = set_isr(&mut image, topic_id, &[1]);
            let broker_epoch = epoch(&image, 1);
            let _ = apply(&mut image, &MetadataOp::FenceBroker { broker_id: NodeId(1), broker_epoch });
            let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
            if allowed {
                assert_eq!((state.leader, state.isr.clone()), (NodeId(2), nodes(&[2])), "unclean election");
            } else {
                assert_eq!((state.leader, state.isr.clone()), (NO_LEADER, nodes(&[1])), "waits for the ISR");
                assert_eq!(unclean_election_possible(&image, &state), Some(NodeId(2)));
                let _ = apply(&mut image, &MetadataOp::ElectUncleanLeaders { partitions: vec![(topic_id, 0)] });
                let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
                assert_eq!((state.leader, state.isr.clone()), (NodeId(2), nodes(&[2])), "an operator's election");
            }
        }
    }

    #[test]
    fn the_last_replica_standing_is_not_the_only_one_eligible() {
        // KIP-966's example: ISR {1, 2, 3}, min.insync.replicas 2.
        let nodes = |ids: &[i32]| ids.iter().map(|id| NodeId(*id)).collect::<Vec<_>>();
        let mut image = cluster(3);
        let topic_id = TopicId([9; 16]);
        let _ = apply(
            &mut image,
            &MetadataOp::CreateTopic {
                name: "standing".into(),
                topic_id,
                partitions: 1,
                replication_factor: 3,
                assignments: vec![nodes(&[1, 2, 3])],
                configs: vec![("min.insync.replicas".into(), "2".into())],
                placement_seed: 0,
            },
        );
        let state = |image: &MetadataImage| image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        let _ = set_isr(&mut image, topic_id, &[1, 2]);
        assert!(state(&image).elr.is_empty(), "the ISR is still at min.insync.replicas");
        let _ = set_isr(&mut image, topic_id, &[1]);
        assert_eq!(state(&image).elr, nodes(&[2]), "2 left below the minimum: it holds everything committed");
        // Both 1 and 2 go down; 1 stays the ISR's last member, nothing is electable.
        for broker in [2, 1] {
            let broker_epoch = epoch(&image, broker);
            let _ = apply(&mut image, &MetadataOp::FenceBroker { broker_id: NodeId(broker), broker_epoch });
        }
        assert_eq!((state(&image).leader, state(&image).isr), (NO_LEADER, nodes(&[1])));
        // 2 comes back first: elected from the ELR; 1 moves to the ELR.
        let before = state(&image);
        let broker_epoch = epoch(&image, 2);
        let _ = apply(&mut image, &MetadataOp::UnfenceBroker { broker_id: NodeId(2), broker_epoch });
        let after = state(&image);
        assert_eq!((after.leader, after.isr.clone(), after.elr.clone()), (NodeId(2), nodes(&[2]), nodes(&[1])));
        assert_eq!(after.leader_epoch.0, before.leader_epoch.0 + 1);
        // 1 restarts after an unclean shutdown: no longer eligible.
        let _ = apply(
            &mut image,
            &MetadataOp::RegisterBroker {
                broker_id: NodeId(1),
                host: "h".into(),
                port: 1,
                rack: None,
                previous_broker_epoch: -1,
                fenced: true,
            },
        );
        assert!(state(&image).elr.is_empty());
        // Once the ISR is back at the minimum the ELR is empty anyway.
        let _ = set_isr(&mut image, topic_id, &[2, 3]);
        assert!(state(&image).elr.is_empty());
    }

    #[test]
    fn registration_detects_an_unclean_shutdown() {
        let mut image = cluster(1);
        let first = epoch(&image, 1);
        let register = |previous| MetadataOp::RegisterBroker {
            broker_id: NodeId(1),
            host: "h".into(),
            port: 1,
            rack: None,
            previous_broker_epoch: previous,
            fenced: true,
        };
        let _ = apply(&mut image, &register(first));
        let broker = image.broker(NodeId(1)).expect("registered");
        assert!(broker.clean_shutdown && broker.fenced && broker.broker_epoch == first + 1);
        let _ = apply(&mut image, &register(-1));
        assert!(!image.broker(NodeId(1)).expect("registered").clean_shutdown);
    }

    #[test]
    fn a_new_incarnation_of_a_live_broker_gives_up_its_leaderships_first() {
        let mut image = cluster(2);
        let topic_id = create(&mut image, "restarted", 4, 2, 0);
        let led_by_1: Vec<i32> = image
            .topic_by_id(topic_id)
            .expect("exists")
            .partitions
            .iter()
            .filter(|(_, state)| state.leader == NodeId(1))
            .map(|(partition, _)| *partition)
            .collect();
        assert!(!led_by_1.is_empty());
        let register = |fenced| MetadataOp::RegisterBroker {
            broker_id: NodeId(1),
            host: "h".into(),
            port: 1,
            rack: None,
            previous_broker_epoch: -1,
            fenced,
        };
        let records = apply(&mut image, &register(true));
        assert!(matches!(records.last(), Some(MetadataRecord::RegisterBroker { fenced: true, .. })));
        for state in image.topic_by_id(topic_id).expect("exists").partitions.values() {
            assert_eq!(state.leader, NodeId(2), "{state:?}");
            assert_eq!(state.isr, [NodeId(2)]);
        }
        // A single node re-registers unfenced and keeps what it leads.
        let mut single = cluster(1);
        let topic_id = create(&mut single, "single", 2, 1, 0);
        let records = apply(&mut single, &register(false));
        assert_eq!(records.len(), 1);
        assert!(single
            .topic_by_id(topic_id)
            .expect("exists")
            .partitions
            .values()
            .all(|state| state.leader == NodeId(1)));
    }

    #[test]
    fn alter_partition_is_a_compare_and_set_by_the_leader() {
        let mut image = cluster(3);
        let topic_id = create(&mut image, "isr", 1, 3, 0);
        let state = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        let leader = state.leader;
        let follower = *state.replicas.iter().find(|replica| **replica != leader).expect("a follower");
        let alter = |image: &MetadataImage, broker: NodeId, leader_epoch, partition_epoch, new_isr: Vec<NodeId>| {
            plan(
                image,
                &MetadataOp::AlterPartition {
                    topic_id,
                    partition: 0,
                    broker_id: broker,
                    broker_epoch: image.broker(broker).expect("registered").broker_epoch,
                    leader_epoch,
                    partition_epoch,
                    new_isr,
                },
            )
        };
        let shrunk = vec![leader];
        let records = alter(&image, leader, state.leader_epoch, state.partition_epoch, shrunk.clone()).expect("fits");
        for record in &records {
            image.apply(record).expect("applies");
        }
        let after = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        assert_eq!(after.isr, shrunk);
        assert_eq!(after.leader_epoch, state.leader_epoch, "an ISR change keeps the leader epoch");
        assert_eq!(after.partition_epoch.0, state.partition_epoch.0 + 1);

        // The old partition epoch is refused: the compare-and-set failed.
        let stale = alter(&image, leader, state.leader_epoch, state.partition_epoch, vec![leader, follower]);
        assert!(matches!(stale, Err(OpError::InvalidUpdateVersion { .. })), "{stale:?}");
        let fenced = alter(&image, leader, LeaderEpoch(state.leader_epoch.0 + 7), after.partition_epoch, vec![leader]);
        assert!(matches!(fenced, Err(OpError::FencedLeaderEpoch { .. })), "{fenced:?}");
        let not_leader = alter(&image, follower, after.leader_epoch, after.partition_epoch, vec![follower]);
        assert!(matches!(not_leader, Err(OpError::NotLeader { .. })), "{not_leader:?}");
        for bad in [vec![], vec![follower], vec![leader, leader]] {
            let refused = alter(&image, leader, after.leader_epoch, after.partition_epoch, bad);
            assert!(matches!(refused, Err(OpError::InvalidIsr(_))), "{refused:?}");
        }
        let outsider = alter(&image, leader, after.leader_epoch, after.partition_epoch, vec![leader, NodeId(9)]);
        assert!(matches!(outsider, Err(OpError::IneligibleReplica(_))), "{outsider:?}");
        // A fenced broker may not rejoin.
        let follower_epoch = epoch(&image, follower.0);
        let _ = apply(&mut image, &MetadataOp::FenceBroker { broker_id: follower, broker_epoch: follower_epoch });
        let after = image.topic_by_id(topic_id).expect("exists").partitions[&0].clone();
        let fenced_member = alter(&image, leader, after.leader_epoch, after.partition_epoch, vec![leader, follower]);
        assert!(matches!(fenced_member, Err(OpError::IneligibleReplica(_))), "{fenced_member:?}");
        // Asking for the ISR it already has changes nothing.
        let same = alter(&image, leader, after.leader_epoch, after.partition_epoch, after.isr.clone());
        assert_eq!(same, Ok(Vec::new()));
    }

    #[test]
    fn explicit_assignments_are_checked() {
        let image = cluster(2);
        let create = |assignments: Vec<Vec<NodeId>>| {
            plan(
                &image,
                &MetadataOp::CreateTopic {
                    name: "t".into(),
                    topic_id: TopicId([1; 16]),
                    partitions: -1,
                    replication_factor: -1,
                    assignments,
                    configs: Vec::new(),
                    placement_seed: 0,
                },
            )
        };
        assert!(create(vec![vec![NodeId(2), NodeId(1)], vec![NodeId(1), NodeId(2)]]).is_ok());
        for bad in [vec![vec![NodeId(1), NodeId(1)]], vec![vec![NodeId(3)]], vec![vec![NodeId(1)], vec![]]] {
            assert!(matches!(create(bad), Err(OpError::InvalidReplicaAssignment(_))));
        }
    }
}
