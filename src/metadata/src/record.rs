//! Metadata records and their binary encoding.
//!
//! Encoding (all integers big-endian): `type: u8, version: u8`, then the fields of that type
//! in declaration order. Strings are `u16` length + UTF-8, optional strings use length
//! `0xFFFF` for none, lists are `u32` count + items, topic ids are 16 raw bytes. A decoder
//! refuses unknown types, unknown versions, truncated input and trailing bytes. The schema of
//! every type is listed in `docs/architecture.md`; a change to a type's fields gets a new
//! version, and old versions stay decodable.

use protocol::ids::{LeaderEpoch, NodeId, PartitionEpoch};

/// A topic's 128-bit id (Kafka's topic UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct TopicId(pub [u8; 16]);

/// What a config record applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum ConfigResource {
    /// A topic's configs, by name.
    Topic(String),
    /// One broker's dynamic configs.
    Broker(NodeId),
}

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetadataRecord {
    /// A broker joined (or rejoined) with these endpoints.
    RegisterBroker {
        /// The broker's node id.
        broker_id: NodeId,
        /// Epoch of this registration; a restart registers with a new epoch.
        broker_epoch: i64,
        /// Advertised host.
        host: String,
        /// Advertised Kafka port.
        port: u16,
        /// Rack, if configured.
        rack: Option<String>,
        /// A fenced broker leads nothing and is not in Metadata responses. A broker joining a
        /// cluster registers fenced and is unfenced once it has caught up with the metadata log;
        /// a single node registers unfenced. (Version 0 records are unfenced.)
        fenced: bool,
        /// Whether the broker's previous run ended with a clean shutdown (its previous epoch
        /// matched the registered one). Version 0 records say true.
        clean_shutdown: bool,
    },
    /// A registered broker was fenced or unfenced (Kafka's BrokerRegistrationChangeRecord).
    BrokerFence {
        /// The broker.
        broker_id: NodeId,
        /// The registration this applies to; a record for an older epoch is refused.
        broker_epoch: i64,
        /// The new state.
        fenced: bool,
    },
    /// A topic was created.
    Topic {
        /// The topic name.
        name: String,
        /// Its id.
        topic_id: TopicId,
    },
    /// A partition was created, or its whole state replaced.
    Partition {
        /// The topic.
        topic_id: TopicId,
        /// The partition index.
        partition: i32,
        /// Assigned replicas, preferred leader first.
        replicas: Vec<NodeId>,
        /// In-sync replicas.
        isr: Vec<NodeId>,
        /// Current leader, or -1.
        leader: NodeId,
        /// Leader epoch.
        leader_epoch: LeaderEpoch,
        /// Partition epoch.
        partition_epoch: PartitionEpoch,
        /// Replicas being added by a reassignment in progress (empty when none is).
        /// (Version 0 records have none.)
        adding_replicas: Vec<NodeId>,
        /// Replicas being removed by a reassignment in progress (empty when none is).
        removing_replicas: Vec<NodeId>,
        /// Eligible leader replicas (KIP-966): replicas that left the ISR while it was below
        /// `min.insync.replicas`, so they hold everything committed, electable when no ISR
        /// member is live.
        elr: Vec<NodeId>,
    },
    /// A config was set (`Some`) or removed (`None`).
    Config {
        /// What it applies to.
        resource: ConfigResource,
        /// Kafka config name.
        name: String,
        /// New value, or `None` to fall back to the default.
        value: Option<String>,
    },
    /// A topic and all its partitions and configs were deleted.
    RemoveTopic {
        /// The topic.
        topic_id: TopicId,
    },
    /// A broker took a block of producer ids `[first_producer_id, first_producer_id + count)`.
    /// Blocks never overlap, so ids stay unique across restarts and brokers.
    AllocateProducerIds {
        /// The broker that owns the block.
        broker_id: NodeId,
        /// First id of the block.
        first_producer_id: i64,
        /// Ids in the block.
        count: i32,
    },
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Input ended inside a field.
    #[error("metadata record truncated")]
    Truncated,
    /// An unknown record type.
    #[error("unknown metadata record type {record_type}")]
    UnknownType {
        /// The type byte.
        record_type: u8,
    },
    /// A known type at an unknown version.
    #[error("metadata record type {record_type} has unknown version {version}")]
    UnknownVersion {
        /// The type byte.
        record_type: u8,
        /// The version byte.
        version: u8,
    },
    /// A string was not UTF-8.
    #[error("metadata record string is not UTF-8")]
    InvalidUtf8,
    /// Bytes left after the record.
    #[error("metadata record has {remaining} trailing bytes")]
    TrailingBytes {
        /// How many.
        remaining: usize,
    },
    /// A boolean byte other than 0 or 1.
    #[error("metadata record boolean byte is {value}")]
    InvalidBool {
        /// The byte.
        value: u8,
    },
    /// A list count larger than the input could hold.
    #[error("metadata record list of {count} items exceeds the input")]
    ListTooLong {
        /// The count.
        count: u32,
    },
}

const TYPE_REGISTER_BROKER: u8 = 1;
const TYPE_TOPIC: u8 = 2;
const TYPE_PARTITION: u8 = 3;
const TYPE_CONFIG: u8 = 4;
const TYPE_REMOVE_TOPIC: u8 = 5;
const TYPE_ALLOCATE_PRODUCER_IDS: u8 = 6;
const TYPE_BROKER_FENCE: u8 = 7;
const VERSION_0: u8 = 0;
const VERSION_1: u8 = 1;
const NONE_STRING: u16 = u16::MAX;
const RESOURCE_TOPIC: u8 = 0;
const RESOURCE_BROKER: u8 = 1;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn bool(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }
    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn string(&mut self, value: &str) {
        // Names are bounded far below 64 KiB by validation; truncation would be a bug.
        let length = u16::try_from(value.len()).expect("metadata strings are validated to fit u16");
        assert!(length != NONE_STRING, "metadata string length collides with the none marker");
        self.u16(length);
        self.0.extend_from_slice(value.as_bytes());
    }
    fn optional_string(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.string(value),
            None => self.u16(NONE_STRING),
        }
    }
    fn nodes(&mut self, nodes: &[NodeId]) {
        self.0.extend_from_slice(&(nodes.len() as u32).to_be_bytes());
        for node in nodes {
            self.i32(node.0);
        }
    }
    fn topic_id(&mut self, id: TopicId) {
        self.0.extend_from_slice(&id.0);
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < count {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let raw = self.take(2)?;
        Ok(u16::from_be_bytes([raw[0], raw[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let raw = self.take(4)?;
        Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidBool { value: other }),
        }
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        let raw = self.take(8)?;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(raw);
        Ok(i64::from_be_bytes(bytes))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let length = self.u16()?;
        self.string_of(length)
    }
    fn string_of(&mut self, length: u16) -> Result<String, DecodeError> {
        let raw = self.take(usize::from(length))?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }
    fn optional_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u16()? {
            NONE_STRING => Ok(None),
            length => self.string_of(length).map(Some),
        }
    }
    fn nodes(&mut self) -> Result<Vec<NodeId>, DecodeError> {
        let count = self.u32()?;
        if count as usize > self.0.len() / 4 {
            return Err(DecodeError::ListTooLong { count });
        }
        (0..count).map(|_| self.i32().map(NodeId)).collect()
    }
    fn topic_id(&mut self) -> Result<TopicId, DecodeError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16)?);
        Ok(TopicId(id))
    }
}

impl MetadataRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer(Vec::with_capacity(64));
        match self {
            MetadataRecord::RegisterBroker { broker_id, broker_epoch, host, port, rack, fenced, clean_shutdown } => {
                out.u8(TYPE_REGISTER_BROKER);
                out.u8(VERSION_1);
                out.i32(broker_id.0);
                out.i64(*broker_epoch);
                out.string(host);
                out.u16(*port);
                out.optional_string(rack.as_deref());
                out.bool(*fenced);
                out.bool(*clean_shutdown);
            }
            MetadataRecord::BrokerFence { broker_id, broker_epoch, fenced } => {
                out.u8(TYPE_BROKER_FENCE);
                out.u8(VERSION_0);
                out.i32(broker_id.0);
                out.i64(*broker_epoch);
                out.bool(*fenced);
            }
            MetadataRecord::Topic { name, topic_id } => {
                out.u8(TYPE_TOPIC);
                out.u8(VERSION_0);
                out.string(name);
                out.topic_id(*topic_id);
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
                // Version 0 while no reassignment is in progress and the ELR is empty: the
                // same bytes as before either existed.
                let extended = !adding_replicas.is_empty() || !removing_replicas.is_empty() || !elr.is_empty();
                out.u8(TYPE_PARTITION);
                out.u8(if extended { VERSION_1 } else { VERSION_0 });
                out.topic_id(*topic_id);
                out.i32(*partition);
                out.nodes(replicas);
                out.nodes(isr);
                out.i32(leader.0);
                out.i32(leader_epoch.0);
                out.i32(partition_epoch.0);
                if extended {
                    out.nodes(adding_replicas);
                    out.nodes(removing_replicas);
                    out.nodes(elr);
                }
            }
            MetadataRecord::Config { resource, name, value } => {
                out.u8(TYPE_CONFIG);
                out.u8(VERSION_0);
                match resource {
                    ConfigResource::Topic(topic) => {
                        out.u8(RESOURCE_TOPIC);
                        out.string(topic);
                    }
                    ConfigResource::Broker(broker) => {
                        out.u8(RESOURCE_BROKER);
                        out.i32(broker.0);
                    }
                }
                out.string(name);
                out.optional_string(value.as_deref());
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                out.u8(TYPE_REMOVE_TOPIC);
                out.u8(VERSION_0);
                out.topic_id(*topic_id);
            }
            MetadataRecord::AllocateProducerIds { broker_id, first_producer_id, count } => {
                out.u8(TYPE_ALLOCATE_PRODUCER_IDS);
                out.u8(VERSION_0);
                out.i32(broker_id.0);
                out.i64(*first_producer_id);
                out.i32(*count);
            }
        }
        out.0
    }

    /// Decodes one record that fills `bytes` exactly.
    ///
    /// # Errors
    /// Any [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, DecodeError> {
        let mut input = Reader(bytes);
        let record_type = input.u8()?;
        let version = input.u8()?;
        if !(TYPE_REGISTER_BROKER..=TYPE_BROKER_FENCE).contains(&record_type) {
            return Err(DecodeError::UnknownType { record_type });
        }
        let newest = if matches!(record_type, TYPE_REGISTER_BROKER | TYPE_PARTITION) { VERSION_1 } else { VERSION_0 };
        if version > newest {
            return Err(DecodeError::UnknownVersion { record_type, version });
        }
        let record = match record_type {
            TYPE_REGISTER_BROKER => MetadataRecord::RegisterBroker {
                broker_id: NodeId(input.i32()?),
                broker_epoch: input.i64()?,
                host: input.string()?,
                port: input.u16()?,
                rack: input.optional_string()?,
                fenced: version >= VERSION_1 && input.bool()?,
                clean_shutdown: version < VERSION_1 || input.bool()?,
            },
            TYPE_BROKER_FENCE => MetadataRecord::BrokerFence {
                broker_id: NodeId(input.i32()?),
                broker_epoch: input.i64()?,
                fenced: input.bool()?,
            },
            TYPE_TOPIC => MetadataRecord::Topic { name: input.string()?, topic_id: input.topic_id()? },
            TYPE_PARTITION => MetadataRecord::Partition {
                topic_id: input.topic_id()?,
                partition: input.i32()?,
                replicas: input.nodes()?,
                isr: input.nodes()?,
                leader: NodeId(input.i32()?),
                leader_epoch: LeaderEpoch(input.i32()?),
                partition_epoch: PartitionEpoch(input.i32()?),
                adding_replicas: if version >= VERSION_1 { input.nodes()? } else { Vec::new() },
                removing_replicas: if version >= VERSION_1 { input.nodes()? } else { Vec::new() },
                elr: if version >= VERSION_1 { input.nodes()? } else { Vec::new() },
            },
            TYPE_CONFIG => {
                let resource = match input.u8()? {
                    RESOURCE_TOPIC => ConfigResource::Topic(input.string()?),
                    RESOURCE_BROKER => ConfigResource::Broker(NodeId(input.i32()?)),
                    other => return Err(DecodeError::UnknownType { record_type: other }),
                };
                MetadataRecord::Config { resource, name: input.string()?, value: input.optional_string()? }
            }
            TYPE_REMOVE_TOPIC => MetadataRecord::RemoveTopic { topic_id: input.topic_id()? },
            _ => MetadataRecord::AllocateProducerIds {
                broker_id: NodeId(input.i32()?),
                first_producer_id: input.i64()?,
                count: input.i32()?,
            },
        };
        if !input.0.is_empty() {
            return Err(DecodeError::TrailingBytes { remaining: input.0.len() });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes() -> impl Strategy<Value = Vec<NodeId>> {
        proptest::collection::vec(any::<i32>().prop_map(NodeId), 0..6)
    }

    fn record() -> impl Strategy<Value = MetadataRecord> {
        prop_oneof![
            (
                any::<i32>(),
                any::<i64>(),
                "[a-z.]{0,20}",
                any::<u16>(),
                proptest::option::of("[a-z0-9]{0,8}"),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(id, epoch, host, port, rack, fenced, clean_shutdown)| {
                    MetadataRecord::RegisterBroker {
                        broker_id: NodeId(id),
                        broker_epoch: epoch,
                        host,
                        port,
                        rack,
                        fenced,
                        clean_shutdown,
                    }
                }),
            (any::<i32>(), any::<i64>(), any::<bool>()).prop_map(|(id, epoch, fenced)| MetadataRecord::BrokerFence {
                broker_id: NodeId(id),
                broker_epoch: epoch,
                fenced
            }),
            ("[a-zA-Z0-9._-]{1,40}", any::<[u8; 16]>())
                .prop_map(|(name, id)| MetadataRecord::Topic { name, topic_id: TopicId(id) }),
            (
                (any::<[u8; 16]>(), any::<i32>(), nodes(), nodes(), any::<i32>(), any::<i32>(), any::<i32>()),
                (nodes(), nodes(), nodes())
            )
                .prop_map(
                    |(
                        (id, partition, replicas, isr, leader, leader_epoch, partition_epoch),
                        (adding_replicas, removing_replicas, elr),
                    )| MetadataRecord::Partition {
                        topic_id: TopicId(id),
                        partition,
                        replicas,
                        isr,
                        leader: NodeId(leader),
                        leader_epoch: LeaderEpoch(leader_epoch),
                        partition_epoch: PartitionEpoch(partition_epoch),
                        adding_replicas,
                        removing_replicas,
                        elr,
                    }
                ),
            ("[a-z]{1,10}", "[a-z.]{1,30}", proptest::option::of("[ -~]{0,30}")).prop_map(|(topic, name, value)| {
                MetadataRecord::Config { resource: ConfigResource::Topic(topic), name, value }
            }),
            (any::<i32>(), "[a-z.]{1,30}").prop_map(|(broker, name)| MetadataRecord::Config {
                resource: ConfigResource::Broker(NodeId(broker)),
                name,
                value: None
            }),
            any::<[u8; 16]>().prop_map(|id| MetadataRecord::RemoveTopic { topic_id: TopicId(id) }),
            (any::<i32>(), any::<i64>(), any::<i32>()).prop_map(|(broker, first, count)| {
                MetadataRecord::AllocateProducerIds { broker_id: NodeId(broker), first_producer_id: first, count }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_record_round_trips(record in record()) {
            prop_assert_eq!(MetadataRecord::decode(&record.encode()), Ok(record));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = MetadataRecord::decode(&bytes);
        }

        #[test]
        fn every_strict_prefix_is_refused(record in record()) {
            let bytes = record.encode();
            for cut in 0..bytes.len() {
                prop_assert!(MetadataRecord::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn the_encoding_is_stable() {
        // Pinned bytes: changing the encoding of version 0 would break existing data dirs.
        let record = MetadataRecord::Topic { name: "t".into(), topic_id: TopicId([1; 16]) };
        let mut expected = vec![2, 0, 0, 1, b't'];
        expected.extend([1u8; 16]);
        assert_eq!(record.encode(), expected);
        assert_eq!(MetadataRecord::decode(&[9, 0]), Err(DecodeError::UnknownType { record_type: 9 }));
        assert_eq!(MetadataRecord::decode(&[2, 1]), Err(DecodeError::UnknownVersion { record_type: 2, version: 1 }));
    }

    #[test]
    fn version_0_broker_registrations_still_decode_as_unfenced_and_clean() {
        // A version 0 registration as single-node data dirs hold them.
        let mut bytes = vec![1, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, b'h', 0x23, 0x84, 0xff, 0xff];
        assert_eq!(
            MetadataRecord::decode(&bytes),
            Ok(MetadataRecord::RegisterBroker {
                broker_id: NodeId(7),
                broker_epoch: 2,
                host: "h".into(),
                port: 9092,
                rack: None,
                fenced: false,
                clean_shutdown: true,
            })
        );
        bytes[1] = 1;
        assert_eq!(MetadataRecord::decode(&bytes), Err(DecodeError::Truncated));
    }
}

/// Most records one metadata-log entry (a batch) may hold; a topic creation writes one record
/// per partition.
pub const BATCH_RECORDS_MAX: usize = 100_001;

/// Encodes records as one metadata-log entry: `count: u32`, then `length: u32` + record per
/// record (all big-endian). An entry is applied whole or not at all.
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut entry = Vec::new();
    entry.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        let encoded = record.encode();
        entry.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        entry.extend_from_slice(&encoded);
    }
    entry
}

/// Decodes an entry written by [`encode_batch`], allowing up to `records_max` records.
///
/// # Errors
/// [`DecodeError::Truncated`] for a short or over-long entry, [`DecodeError::TrailingBytes`],
/// [`DecodeError::ListTooLong`] for a count above `records_max`, and any record's own error.
pub fn decode_batch_bounded(bytes: &[u8], records_max: usize) -> Result<Vec<MetadataRecord>, DecodeError> {
    fn take_u32(bytes: &mut &[u8]) -> Result<u32, DecodeError> {
        let (head, rest) = bytes.split_first_chunk::<4>().ok_or(DecodeError::Truncated)?;
        *bytes = rest;
        Ok(u32::from_be_bytes(*head))
    }
    let mut rest = bytes;
    let count = take_u32(&mut rest)?;
    // Every record takes at least its 4-byte length: a count the input cannot hold is refused
    // before anything is allocated for it.
    if count as usize > records_max || count as usize > rest.len() / 4 {
        return Err(DecodeError::ListTooLong { count });
    }
    let mut records = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let length = take_u32(&mut rest)? as usize;
        if rest.len() < length {
            return Err(DecodeError::Truncated);
        }
        let (record, tail) = rest.split_at(length);
        records.push(MetadataRecord::decode(record)?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { remaining: rest.len() });
    }
    Ok(records)
}

/// Decodes an entry of at most [`BATCH_RECORDS_MAX`] records.
///
/// # Errors
/// See [`decode_batch_bounded`].
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    decode_batch_bounded(bytes, BATCH_RECORDS_MAX)
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_every_prefix_is_refused() {
        let records = vec![
            MetadataRecord::Topic { name: "orders".into(), topic_id: TopicId([3; 16]) },
            MetadataRecord::RemoveTopic { topic_id: TopicId([3; 16]) },
        ];
        let bytes = encode_batch(&records);
        assert_eq!(decode_batch(&bytes), Ok(records));
        for length in 0..bytes.len() {
            assert!(decode_batch(&bytes[..length]).is_err(), "prefix of {length} bytes");
        }
        assert_eq!(decode_batch(&[0xff, 0xff, 0xff, 0xff]), Err(DecodeError::ListTooLong { count: u32::MAX }));
    }
}
