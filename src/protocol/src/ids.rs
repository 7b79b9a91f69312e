//! Newtypes for Kafka identifiers and positions, so offsets, epochs and ids cannot be mixed up.

use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                $name(value)
            }
        }
    };
}

newtype!(
    /// A record's position in a partition log. Dense, ordered, never reused for different data.
    Offset(i64)
);
newtype!(
    /// The epoch of a partition's leadership; bumped on every leader change.
    LeaderEpoch(i32)
);
newtype!(
    /// The epoch of a partition's state (leader, ISR, replicas); bumped on every change.
    PartitionEpoch(i32)
);
newtype!(
    /// A node (broker and/or controller) id, Kafka's `node.id`.
    NodeId(i32)
);
newtype!(
    /// A partition index within a topic.
    PartitionIndex(i32)
);
newtype!(
    /// An idempotent producer's id (InitProducerId); -1 in a batch that has none.
    ProducerId(i64)
);
newtype!(
    /// An idempotent producer's epoch; bumped when the producer restarts its sequences.
    ProducerEpoch(i16)
);

impl Offset {
    /// The offset `count` records after this one.
    #[must_use]
    pub fn plus(self, count: i64) -> Offset {
        Offset(self.0 + count)
    }
}

/// A topic name and partition index: the unit of ordering and replication.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: PartitionIndex,
}

impl TopicPartition {
    /// Builds a topic-partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition: PartitionIndex(partition) }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition.0)
    }
}
