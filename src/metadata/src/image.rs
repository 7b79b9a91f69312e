//! The metadata image: the state that metadata records build.

use std::collections::BTreeMap;

use protocol::ids::{LeaderEpoch, NodeId, PartitionEpoch};

use crate::record::{ConfigResource, DecodeError, MetadataRecord, TopicId};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerRegistration {
    /// Node id.
    pub broker_id: NodeId,
    /// Registration epoch.
    pub broker_epoch: i64,
    /// Advertised host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: u16,
    /// Rack.
    pub rack: Option<String>,
    /// Fenced: leads nothing and is left out of Metadata responses.
    pub fenced: bool,
    /// Whether the run before this registration ended with a clean shutdown.
    pub clean_shutdown: bool,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Leader, or -1 if none.
    pub leader: NodeId,
    /// Leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Partition epoch.
    pub partition_epoch: PartitionEpoch,
    /// Replicas a reassignment in progress adds (they are in `replicas` too); empty when none
    /// is in progress.
    pub adding_replicas: Vec<NodeId>,
    /// Replicas a reassignment in progress removes (still in `replicas`).
    pub removing_replicas: Vec<NodeId>,
    /// Eligible leader replicas (KIP-966): replicas that left the ISR while it was below
    /// `min.insync.replicas` (the high watermark did not move since, so they hold everything
    /// committed) and have not shut down uncleanly since; electable when no ISR member is
    /// live. Disjoint from the ISR.
    pub elr: Vec<NodeId>,
}

impl PartitionState {
    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas a reassignment in progress moves to (all replicas when none is).
    pub fn target_replicas(&self) -> Vec<NodeId> {
        self.replicas.iter().copied().filter(|replica| !self.removing_replicas.contains(replica)).collect()
    }

    /// The replicas before the reassignment in progress (all replicas when none is).
    pub fn original_replicas(&self) -> Vec<NodeId> {
        self.replicas.iter().copied().filter(|replica| !self.adding_replicas.contains(replica)).collect()
    }
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    /// The name.
    pub name: String,
    /// The id.
    pub topic_id: TopicId,
    /// Partitions by index; dense from 0.
    pub partitions: BTreeMap<i32, PartitionState>,
}

/// Why a record could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApplyError {
    /// A topic record for a name or id that exists.
    #[error("topic {name} already exists")]
    TopicExists {
        /// The name.
        name: String,
    },
    /// A record refers to a topic that does not exist.
    #[error("unknown topic id {topic_id:?}")]
    UnknownTopic {
        /// The id.
        topic_id: TopicId,
    },
    /// A config record for a topic name that does not exist.
    #[error("unknown topic {name}")]
    UnknownTopicName {
        /// The name.
        name: String,
    },
    /// A producer-id block that starts below ids already handed out.
    #[error("producer id block at {first_producer_id} overlaps ids up to {next_producer_id}")]
    ProducerIdBlockOverlaps {
        /// The block's first id.
        first_producer_id: i64,
        /// The first free id.
        next_producer_id: i64,
    },
    /// A fence record for a broker that is not registered, or for an older registration.
    #[error("broker {broker_id} has no registration with epoch {broker_epoch}")]
    StaleBrokerEpoch {
        /// The broker.
        broker_id: NodeId,
        /// The epoch the record named.
        broker_epoch: i64,
    },
    /// A new partition index that would leave a gap.
    #[error("partition {partition} would leave a gap after {count} partitions")]
    PartitionGap {
        /// The index.
        partition: i32,
        /// Partitions present.
        count: usize,
    },
}

/// The snapshot format's version byte.
const SNAPSHOT_VERSION_0: u8 = 0;

/// Why a snapshot could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes did not decode.
    #[error("metadata snapshot does not decode: {0}")]
    Decode(DecodeError),
    /// An unknown format version.
    #[error("metadata snapshot has unknown version {version}")]
    UnknownVersion {
        /// The version byte.
        version: u8,
    },
    /// The records did not fit together.
    #[error("metadata snapshot records do not fit: {0}")]
    Apply(ApplyError),
}

/// All cluster metadata, as of the last applied record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    brokers: BTreeMap<NodeId, BrokerRegistration>,
    topics: BTreeMap<String, TopicImage>,
    names_by_id: BTreeMap<TopicId, String>,
    configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    /// First producer id not yet handed out in any block.
    next_producer_id: i64,
    /// Records applied so far: the image's position in the metadata log.
    records_applied: u64,
}

impl MetadataImage {
    /// Encodes the whole image as a snapshot: a version byte, `records_applied: u64`,
    /// `next_producer_id: i64`, then a record batch (`record::encode_batch`) that rebuilds the
    /// brokers, topics, partitions and configs.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut records = Vec::new();
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker {
                broker_id: broker.broker_id,
                broker_epoch: broker.broker_epoch,
                host: broker.host.clone(),
                port: broker.port,
                rack: broker.rack.clone(),
                fenced: broker.fenced,
                clean_shutdown: broker.clean_shutdown,
            });
        }
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic { name: topic.name.clone(), topic_id: topic.topic_id });
            for (partition, state) in &topic.partitions {
                records.push(MetadataRecord::Partition {
                    topic_id: topic.topic_id,
                    partition: *partition,
                    replicas: state.replicas.clone(),
                    isr: state.isr.clone(),
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    adding_replicas: state.adding_replicas.clone(),
                    removing_replicas: state.removing_replicas.clone(),
                    elr: state.elr.clone(),
                });
            }
        }
        for (resource, configs) in &self.configs {
            for (name, value) in configs {
                records.push(MetadataRecord::Config {
                    resource: resource.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        let mut bytes = vec![SNAPSHOT_VERSION_0];
        bytes.extend_from_slice(&self.records_applied.to_be_bytes());
        bytes.extend_from_slice(&self.next_producer_id.to_be_bytes());
        bytes.extend_from_slice(&crate::record::encode_batch(&records));
        bytes
    }

    /// Rebuilds an image from [`MetadataImage::to_snapshot`]'s bytes.
    ///
    /// # Errors
    /// [`SnapshotError`] if the bytes do not decode or the records do not fit together.
    pub fn from_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
        let (version, rest) = bytes.split_first().ok_or(SnapshotError::Decode(DecodeError::Truncated))?;
        if *version != SNAPSHOT_VERSION_0 {
            return Err(SnapshotError::UnknownVersion { version: *version });
        }
        let (records_applied, rest) =
            rest.split_first_chunk::<8>().ok_or(SnapshotError::Decode(DecodeError::Truncated))?;
        let (next_producer_id, rest) =
            rest.split_first_chunk::<8>().ok_or(SnapshotError::Decode(DecodeError::Truncated))?;
        let records = crate::record::decode_batch_bounded(rest, usize::MAX).map_err(SnapshotError::Decode)?;
        let mut image = MetadataImage::default();
        for record in &records {
            image.apply(record).map_err(SnapshotError::Apply)?;
        }
        image.records_applied = u64::from_be_bytes(*records_applied);
        image.next_producer_id = i64::from_be_bytes(*next_producer_id);
        Ok(image)
    }
    /// Applies one record.
    ///
    /// # Errors
    /// An [`ApplyError`] if the record does not fit; the image is then unchanged.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker { broker_id, broker_epoch, host, port, rack, fenced, clean_shutdown } => {
                let _ = self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        broker_epoch: *broker_epoch,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: *fenced,
                        clean_shutdown: *clean_shutdown,
                    },
                );
            }
            MetadataRecord::BrokerFence { broker_id, broker_epoch, fenced } => {
                let broker = self
                    .brokers
                    .get_mut(broker_id)
                    .filter(|broker| broker.broker_epoch == *broker_epoch)
                    .ok_or(ApplyError::StaleBrokerEpoch { broker_id: *broker_id, broker_epoch: *broker_epoch })?;
                broker.fenced = *fenced;
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topics.contains_key(name) || self.names_by_id.contains_key(topic_id) {
                    return Err(ApplyError::TopicExists { name: name.clone() });
                }
                let _ = self.names_by_id.insert(*topic_id, name.clone());
                let _ = self.topics.insert(
                    name.clone(),
                    TopicImage { name: name.clone(), topic_id: *topic_id, partitions: BTreeMap::new() },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding_replicas,
                removing_replicas,
                elr,
            } => {
                let name = self.names_by_id.get(topic_id).ok_or(ApplyError::UnknownTopic { topic_id: *topic_id })?;
                let topic = self.topics.get_mut(name).expect("names_by_id and topics agree");
                let count = topic.partitions.len();
                if *partition < 0 || (*partition as usize > count) {
                    return Err(ApplyError::PartitionGap { partition: *partition, count });
                }
                let _ = topic.partitions.insert(
                    *partition,
                    PartitionState {
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                        adding_replicas: adding_replicas.clone(),
                        removing_replicas: removing_replicas.clone(),
                        elr: elr.clone(),
                    },
                );
            }
            MetadataRecord::Config { resource, name, value } => {
                if let ConfigResource::Topic(topic) = resource {
                    if !self.topics.contains_key(topic) {
                        return Err(ApplyError::UnknownTopicName { name: topic.clone() });
                    }
                }
                let configs = self.configs.entry(resource.clone()).or_default();
                match value {
                    Some(value) => {
                        let _ = configs.insert(name.clone(), value.clone());
                    }
                    None => {
                        let _ = configs.remove(name);
                    }
                }
                if configs.is_empty() {
                    let _ = self.configs.remove(resource);
                }
            }
            MetadataRecord::AllocateProducerIds { first_producer_id, count, .. } => {
                if *first_producer_id < self.next_producer_id || *count <= 0 {
                    return Err(ApplyError::ProducerIdBlockOverlaps {
                        first_producer_id: *first_producer_id,
                        next_producer_id: self.next_producer_id,
                    });
                }
                self.next_producer_id = first_producer_id + i64::from(*count);
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = self.names_by_id.remove(topic_id).ok_or(ApplyError::UnknownTopic { topic_id: *topic_id })?;
                let _ = self.topics.remove(&name);
                let _ = self.configs.remove(&ConfigResource::Topic(name));
            }
        }
        self.records_applied += 1;
        Ok(())
    }

    /// Applies one metadata-log entry (a record batch) whole or not at all: every node folds
    /// the committed log with this, so all of them skip the same entries.
    ///
    /// # Errors
    /// [`SnapshotError::Decode`] or [`SnapshotError::Apply`]; the image is then unchanged.
    pub fn apply_entry(&mut self, entry: &[u8]) -> Result<(), SnapshotError> {
        let records = crate::record::decode_batch(entry).map_err(SnapshotError::Decode)?;
        let mut next = self.clone();
        for record in &records {
            next.apply(record).map_err(SnapshotError::Apply)?;
        }
        *self = next;
        Ok(())
    }

    /// Registered brokers that are not fenced, by id.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// Whether a broker is registered and unfenced.
    pub fn is_unfenced(&self, broker_id: NodeId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|broker| !broker.fenced)
    }

    /// First producer id not yet in any block.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// Records applied so far.
    pub fn records_applied(&self) -> u64 {
        self.records_applied
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, topic_id: TopicId) -> Option<&TopicImage> {
        self.names_by_id.get(&topic_id).and_then(|name| self.topics.get(name))
    }

    /// All topics, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    /// All registered brokers, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// One broker.
    pub fn broker(&self, broker_id: NodeId) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// The explicitly set configs of a resource (overrides only, no defaults).
    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u8) -> MetadataRecord {
        MetadataRecord::Topic { name: name.into(), topic_id: TopicId([id; 16]) }
    }

    fn partition(id: u8, index: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: TopicId([id; 16]),
            partition: index,
            replicas: vec![NodeId(1)],
            isr: vec![NodeId(1)],
            leader: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
        }
    }

    #[test]
    fn topics_partitions_and_configs_build_up_and_tear_down() {
        let mut image = MetadataImage::default();
        image.apply(&topic("a", 1)).expect("topic");
        image.apply(&partition(1, 0)).expect("p0");
        image.apply(&partition(1, 1)).expect("p1");
        let set = MetadataRecord::Config {
            resource: ConfigResource::Topic("a".into()),
            name: "retention.ms".into(),
            value: Some("10".into()),
        };
        image.apply(&set).expect("config");
        assert_eq!(image.topic("a").expect("a").partitions.len(), 2);
        assert_eq!(image.configs(&ConfigResource::Topic("a".into())).expect("set")["retention.ms"], "10");
        image.apply(&MetadataRecord::RemoveTopic { topic_id: TopicId([1; 16]) }).expect("remove");
        assert!(image.topic("a").is_none());
        assert!(image.configs(&ConfigResource::Topic("a".into())).is_none());
        assert_eq!(image.records_applied(), 5);
    }

    #[test]
    fn records_that_do_not_fit_are_refused_and_change_nothing() {
        let mut image = MetadataImage::default();
        image.apply(&topic("a", 1)).expect("topic");
        let before = image.clone();
        assert!(matches!(image.apply(&topic("a", 2)), Err(ApplyError::TopicExists { .. })));
        assert!(matches!(image.apply(&partition(9, 0)), Err(ApplyError::UnknownTopic { .. })));
        assert!(matches!(image.apply(&partition(1, 3)), Err(ApplyError::PartitionGap { .. })));
        assert_eq!(image, before);
    }

    #[test]
    fn an_image_round_trips_through_a_snapshot() {
        let mut image = MetadataImage::default();
        let topic_id = TopicId([9; 16]);
        let records = [
            MetadataRecord::RegisterBroker {
                broker_id: NodeId(1),
                broker_epoch: 4,
                host: "h".into(),
                port: 9092,
                rack: None,
                fenced: true,
                clean_shutdown: false,
            },
            MetadataRecord::BrokerFence { broker_id: NodeId(1), broker_epoch: 4, fenced: false },
            MetadataRecord::Topic { name: "t".into(), topic_id },
            MetadataRecord::Partition {
                topic_id,
                partition: 0,
                replicas: vec![NodeId(1)],
                isr: vec![NodeId(1)],
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(2),
                partition_epoch: PartitionEpoch(3),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                elr: Vec::new(),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                name: "retention.ms".into(),
                value: Some("5".into()),
            },
            MetadataRecord::AllocateProducerIds { broker_id: NodeId(1), first_producer_id: 0, count: 1000 },
        ];
        for record in &records {
            image.apply(record).expect("fits");
        }
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).expect("restores");
        assert_eq!(restored, image);
        let bytes = image.to_snapshot();
        for length in 0..bytes.len() {
            assert!(MetadataImage::from_snapshot(&bytes[..length]).is_err(), "prefix of {length} bytes");
        }
    }
}
