//! [`GroupRecord`]s as the key and value of a `__consumer_offsets` record, in Kafka's own
//! schemas (`OffsetCommitKey` v1, `OffsetCommitValue` v3, `GroupMetadataKey` v2,
//! `GroupMetadataValue` v3), so tools that read the topic understand weir's records, and weir
//! reads what they expect. Strings are an `i16` length and UTF-8 (-1: null), bytes an `i32`
//! length, arrays an `i32` count; a deleted offset or group is a record with a null value.
//! Keys of other versions (transaction markers, newer group types) decode to `None` and are
//! skipped.

use protocol::ids::TopicPartition;

use crate::coordinator::{CommittedOffset, GroupRecord, GroupSnapshot, MemberDescription};

/// Key version of an offset commit (0 and 1 share the key layout).
const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of a group's metadata.
const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value version written for offsets (with the leader epoch, without an expiry time).
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Value version written for groups (with static instance ids).
const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct CodecError(pub &'static str);

struct Writer(Vec<u8>);

impl Writer {
    fn i16(&mut self, value: i16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn string(&mut self, value: &str) {
        let bytes = value.as_bytes();
        self.i16(i16::try_from(bytes.len()).unwrap_or(i16::MAX));
        self.0.extend_from_slice(&bytes[..bytes.len().min(i16::MAX as usize)]);
    }
    fn nullable_string(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.string(value),
            None => self.i16(-1),
        }
    }
    fn bytes(&mut self, value: &[u8]) {
        self.i32(i32::try_from(value.len()).expect("group metadata is far below 2 GiB"));
        self.0.extend_from_slice(value);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < count {
            return Err(CodecError("truncated"));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("two bytes")))
    }
    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("four bytes")))
    }
    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, CodecError> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        let bytes = self.take(length as usize)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| CodecError("a string is not UTF-8"))
    }
    fn string(&mut self) -> Result<String, CodecError> {
        self.nullable_string()?.ok_or(CodecError("a null string where one is required"))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, CodecError> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(length as usize)?.to_vec())
    }
}

impl GroupRecord {
    /// The record's key and value (`None`: a tombstone).
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut key = Writer(Vec::new());
        match self {
            GroupRecord::Offset { group_id, topic_partition, value } => {
                key.i16(OFFSET_COMMIT_KEY_VERSION);
                key.string(group_id);
                key.string(&topic_partition.topic);
                key.i32(topic_partition.partition.0);
                let value = value.as_ref().map(|value| {
                    let mut out = Writer(Vec::new());
                    out.i16(OFFSET_COMMIT_VALUE_VERSION);
                    out.i64(value.offset);
                    out.i32(value.leader_epoch);
                    out.string(&value.metadata);
                    out.i64(value.commit_timestamp_ms);
                    out.0
                });
                (key.0, value)
            }
            GroupRecord::Group { group_id, value } => {
                key.i16(GROUP_METADATA_KEY_VERSION);
                key.string(group_id);
                let value = value.as_ref().map(|group| {
                    let mut out = Writer(Vec::new());
                    out.i16(GROUP_METADATA_VALUE_VERSION);
                    out.string(group.protocol_type.as_deref().unwrap_or(""));
                    out.i32(group.generation_id);
                    out.nullable_string(group.protocol_name.as_deref());
                    out.nullable_string(group.leader.as_deref());
                    out.i64(-1);
                    out.i32(i32::try_from(group.members.len()).expect("members are bounded"));
                    for member in &group.members {
                        out.string(&member.member_id);
                        out.nullable_string(member.group_instance_id.as_deref());
                        out.string(&member.client_id);
                        out.string(&member.client_host);
                        out.i32(member.rebalance_timeout_ms);
                        out.i32(member.session_timeout_ms);
                        out.bytes(&member.metadata);
                        out.bytes(&member.assignment);
                    }
                    out.0
                });
                (key.0, value)
            }
        }
    }

    /// Decodes a record of `__consumer_offsets`; `None` for key versions this coordinator
    /// does not keep.
    ///
    /// # Errors
    /// A key or value that does not follow its schema.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<GroupRecord>, CodecError> {
        let mut key = Reader(key);
        match key.i16()? {
            0 | 1 => {
                let group_id = key.string()?;
                let topic = key.string()?;
                let partition = key.i32()?;
                let value = value.map(decode_offset).transpose()?;
                Ok(Some(GroupRecord::Offset {
                    group_id,
                    topic_partition: TopicPartition::new(topic, partition),
                    value,
                }))
            }
            2 => {
                let group_id = key.string()?;
                let value = value.map(decode_group).transpose()?;
                Ok(Some(GroupRecord::Group { group_id, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset(value: &[u8]) -> Result<CommittedOffset, CodecError> {
    let mut value = Reader(value);
    let version = value.i16()?;
    if !(0..=4).contains(&version) {
        return Err(CodecError("unknown offset value version"));
    }
    let offset = value.i64()?;
    let leader_epoch = if version >= 3 { value.i32()? } else { -1 };
    let metadata = value.nullable_string()?.unwrap_or_default();
    let commit_timestamp_ms = value.i64()?;
    Ok(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms })
}

fn decode_group(value: &[u8]) -> Result<GroupSnapshot, CodecError> {
    let mut value = Reader(value);
    let version = value.i16()?;
    if !(0..=4).contains(&version) {
        return Err(CodecError("unknown group value version"));
    }
    let protocol_type = value.string()?;
    let generation_id = value.i32()?;
    let protocol_name = value.nullable_string()?;
    let leader = value.nullable_string()?;
    if version >= 2 {
        let _current_state_timestamp = value.i64()?;
    }
    let count = value.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = value.string()?;
        let group_instance_id = if version >= 3 { value.nullable_string()? } else { None };
        let client_id = value.string()?;
        let client_host = value.string()?;
        let rebalance_timeout_ms = if version >= 1 { value.i32()? } else { 0 };
        let session_timeout_ms = value.i32()?;
        let metadata = value.bytes()?;
        let assignment = value.bytes()?;
        members.push(MemberDescription {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms: if version >= 1 { rebalance_timeout_ms } else { session_timeout_ms },
            metadata,
            assignment,
        });
    }
    Ok(GroupSnapshot {
        generation_id,
        protocol_type: (!protocol_type.is_empty()).then_some(protocol_type),
        protocol_name,
        leader,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_kafkas_layout() {
        let offset = GroupRecord::Offset {
            group_id: "g".into(),
            topic_partition: TopicPartition::new("t", 3),
            value: Some(CommittedOffset { offset: 42, leader_epoch: 5, metadata: "m".into(), commit_timestamp_ms: 9 }),
        };
        let (key, value) = offset.encode();
        // OffsetCommitKey v1: version, group "g", topic "t", partition 3.
        assert_eq!(key, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(GroupRecord::decode(&key, value.as_deref()), Ok(Some(offset)));
        let group = GroupRecord::Group {
            group_id: "g".into(),
            value: Some(GroupSnapshot {
                generation_id: 4,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                leader: Some("m-1".into()),
                members: vec![MemberDescription {
                    member_id: "m-1".into(),
                    group_instance_id: Some("i".into()),
                    client_id: "c".into(),
                    client_host: "/10.0.0.1".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 300_000,
                    metadata: vec![1, 2],
                    assignment: vec![3],
                }],
            }),
        };
        let (key, value) = group.encode();
        assert_eq!(GroupRecord::decode(&key, value.as_deref()), Ok(Some(group)));
        let tombstone = GroupRecord::Group { group_id: "g".into(), value: None };
        let (key, value) = tombstone.encode();
        assert_eq!(value, None);
        assert_eq!(GroupRecord::decode(&key, None), Ok(Some(tombstone)));
    }

    #[test]
    fn other_keys_are_skipped_and_garbage_is_an_error() {
        assert_eq!(GroupRecord::decode(&[0, 9, 1, 2], None), Ok(None));
        assert!(GroupRecord::decode(&[0, 1, 0, 5, b'g'], None).is_err());
        assert!(GroupRecord::decode(&[0, 2, 0, 1, b'g'], Some(&[0, 3, 0])).is_err());
        assert!(GroupRecord::decode(&[], None).is_err());
    }
}
