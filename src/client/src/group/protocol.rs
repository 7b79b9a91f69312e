//! The consumer protocol's subscription and assignment bytes (Kafka's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`), which ride opaquely in
//! JoinGroup and SyncGroup. Every client of a group must read what the others write, so these
//! are Kafka's layouts: version 1 (subscription: topics, user data, owned partitions;
//! assignment: partitions by topic, user data), read back from versions 0 to 3.

use std::collections::BTreeMap;

use protocol::ids::TopicPartition;

/// Version written.
const SUBSCRIPTION_VERSION: i16 = 1;
/// Version written.
const ASSIGNMENT_VERSION: i16 = 1;

/// A member's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Assignor-specific data (unused by weir's assignors).
    pub user_data: Vec<u8>,
    /// The partitions the member owns now (for the sticky assignors).
    pub owned_partitions: Vec<TopicPartition>,
}

struct Writer(Vec<u8>);

impl Writer {
    fn i16(&mut self, value: i16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn string(&mut self, value: &str) {
        self.i16(i16::try_from(value.len()).expect("topic names are short"));
        self.0.extend_from_slice(value.as_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.i32(i32::try_from(value.len()).expect("user data is small"));
        self.0.extend_from_slice(value);
    }
    fn partitions(&mut self, partitions: &[TopicPartition]) {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for partition in partitions {
            by_topic.entry(partition.topic.as_str()).or_default().push(partition.partition.0);
        }
        self.i32(i32::try_from(by_topic.len()).expect("few topics"));
        for (topic, indexes) in by_topic {
            self.string(topic);
            self.i32(i32::try_from(indexes.len()).expect("few partitions"));
            for index in indexes {
                self.i32(index);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Option<&[u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let length = usize::try_from(self.i16()?).ok()?;
        std::str::from_utf8(self.take(length)?).ok().map(str::to_owned)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let length = self.i32()?;
        if length < 0 {
            return Some(Vec::new());
        }
        self.take(usize::try_from(length).ok()?).map(<[u8]>::to_vec)
    }
    fn partitions(&mut self) -> Option<Vec<TopicPartition>> {
        let topics = self.i32()?;
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let topic = self.string()?;
            let count = self.i32()?;
            for _ in 0..count.max(0) {
                out.push(TopicPartition::new(topic.clone(), self.i32()?));
            }
        }
        Some(out)
    }
}

impl Subscription {
    /// The bytes of this subscription (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer(Vec::new());
        out.i16(SUBSCRIPTION_VERSION);
        out.i32(i32::try_from(self.topics.len()).expect("few topics"));
        for topic in &self.topics {
            out.string(topic);
        }
        out.bytes(&self.user_data);
        out.partitions(&self.owned_partitions);
        out.0
    }

    /// Reads a subscription of any version 0-3 (fields of later versions are ignored);
    /// `None` if the bytes do not parse.
    pub fn decode(bytes: &[u8]) -> Option<Subscription> {
        let mut input = Reader(bytes);
        let version = input.i16()?;
        let count = input.i32()?;
        let mut topics = Vec::new();
        for _ in 0..count.max(0) {
            topics.push(input.string()?);
        }
        let user_data = if input.0.is_empty() { Vec::new() } else { input.bytes()? };
        let owned_partitions = if version >= 1 && !input.0.is_empty() { input.partitions()? } else { Vec::new() };
        Some(Subscription { topics, user_data, owned_partitions })
    }
}

/// The bytes of an assignment (version 1, no user data).
pub fn encode_assignment(partitions: &[TopicPartition]) -> Vec<u8> {
    let mut out = Writer(Vec::new());
    out.i16(ASSIGNMENT_VERSION);
    out.partitions(partitions);
    out.bytes(&[]);
    out.0
}

/// Reads an assignment of any version; `None` if it does not parse (an empty buffer is an
/// empty assignment).
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut input = Reader(bytes);
    let _version = input.i16()?;
    input.partitions()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let subscription = Subscription {
            topics: vec!["a".into(), "b".into()],
            user_data: vec![],
            owned_partitions: vec![TopicPartition::new("a", 0), TopicPartition::new("a", 2)],
        };
        assert_eq!(Subscription::decode(&subscription.encode()), Some(subscription));
        // Version 0: topics and user data only.
        let v0 = [0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0];
        assert_eq!(Subscription::decode(&v0).map(|s| s.topics), Some(vec!["t".to_owned()]));
        let assignment = vec![TopicPartition::new("a", 1), TopicPartition::new("b", 0)];
        assert_eq!(decode_assignment(&encode_assignment(&assignment)), Some(assignment));
        assert_eq!(
            crate::groups::decode_consumer_assignment(&encode_assignment(&[TopicPartition::new("x", 3)])),
            Some(vec![TopicPartition::new("x", 3)])
        );
        assert_eq!(decode_assignment(&[0, 1, 0, 0, 0, 9]), None);
    }
}
