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
        MetadataOp::ElectPreferredLeaders { partitions } => {
            let mut records = Vec::new();
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
    }
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
/// the last member of, and each leadership moves to the first unfenced ISR replica, or to no
/// leader.
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
            if state.leader == broker_id {
                next.leader = state
                    .replicas
                    .iter()
                    .copied()
                    .find(|replica| *replica != broker_id && next.isr.contains(replica) && image.is_unfenced(*replica))
                    .unwrap_or(NO_LEADER);
            }
            records.push(changed(topic.topic_id, *partition, state, next));
        }
    }
    records
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
    Ok(vec![changed(topic_id, partition, state, next)])
}

fn unfence(image: &MetadataImage, broker_id: NodeId, broker_epoch: i64) -> Result<Vec<MetadataRecord>, OpError> {
    if !registered(image, broker_id, broker_epoch)? {
        return Ok(Vec::new());
    }
    let mut records = vec![MetadataRecord::BrokerFence { broker_id, broker_epoch, fenced: false }];
    for topic in image.topics() {
        for (partition, state) in &topic.partitions {
            if state.leader == NO_LEADER && state.isr.contains(&broker_id) {
                let mut next = state.clone();
                next.leader = broker_id;
                records.push(changed(topic.topic_id, *partition, state, next));
            }
        }
    }
    Ok(records)
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
