//! A partition replica as a pure state machine: weir's replication protocol (Kafka's ISR
//! replication over the controller quorum, which is PacificA with a central failure
//! detector; `brief/replication.md` §3 lists the rules).
//!
//! # Design
//!
//! Nothing here does I/O, reads a clock or spawns: the broker owns the sockets, the log and
//! the timers, feeds events in (an append, a flush, a follower's fetch, the time, a new
//! partition state from the metadata image) and carries the answers out (a new high
//! watermark, an AlterPartition to send, a truncation point, an acks=all produce that may
//! complete). So every rule is unit- and property-tested here, and the simulator drives the
//! same code under faults.
//!
//! * [`epoch_cache`]: the leader-epoch cache (epoch -> start offset) and its checkpoint file.
//! * [`truncation`]: where a follower cuts its log (by epoch, the KIP-101/279 iteration, never
//!   at its high watermark), and the leader's diverging-epoch check of a fetch.
//! * [`leader`]: follower progress, the high watermark (minimum over the maximal ISR of durable
//!   ends, only from members that fetched in this epoch, frozen under `min.insync.replicas`),
//!   ISR shrink and expand proposals, and the outcome of acks=all produces.
//! * [`producer_state`]: idempotent producers' sequences and their last five batches per
//!   partition, the leader's duplicate and sequence checks (KIP-98).
//! * [`follower_high_watermark`]: a follower's high watermark from the leader's.
//!
//! Errors are typed and carry the Kafka error code they answer with
//! ([`ReplicationError::error_code`]).

pub mod epoch_cache;
pub mod leader;
pub mod producer_state;
pub mod truncation;

use protocol::ids::{NodeId, Offset};

/// Kafka's NOT_ENOUGH_REPLICAS.
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
/// Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND.
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
/// Kafka's OFFSET_OUT_OF_RANGE.
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Kafka's NOT_LEADER_OR_FOLLOWER.
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// What a replica refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// acks=all while the ISR is below `min.insync.replicas`; nothing was appended.
    #[error("the ISR has {isr} members, fewer than min.insync.replicas = {min_isr}")]
    NotEnoughReplicas {
        /// ISR size.
        isr: usize,
        /// The effective minimum.
        min_isr: usize,
    },
    /// The write is in the log and reached the high watermark, but the ISR shrank below
    /// `min.insync.replicas` meanwhile: the outcome is indeterminate for the client.
    #[error("written, but the ISR shrank to {isr} members, below min.insync.replicas = {min_isr}")]
    NotEnoughReplicasAfterAppend {
        /// ISR size.
        isr: usize,
        /// The effective minimum.
        min_isr: usize,
    },
    /// A fetch past the leader's log end.
    #[error("fetch offset {fetch_offset} is past the log end offset {log_end_offset}")]
    FetchOffsetOutOfRange {
        /// The offset asked for.
        fetch_offset: Offset,
        /// The leader's log end.
        log_end_offset: Offset,
    },
    /// A replica fetch from a broker that is not a replica of the partition.
    #[error("broker {replica} is not a replica of this partition")]
    NotAReplica {
        /// The broker.
        replica: NodeId,
    },
    /// This broker is not (or no longer) the partition's leader in this epoch.
    #[error("not the leader: the leader is {leader}, the ISR {isr:?}")]
    NotLeader {
        /// The leader the state names.
        leader: NodeId,
        /// Its ISR.
        isr: Vec<NodeId>,
    },
}

impl ReplicationError {
    /// The Kafka error code this answers with.
    pub fn error_code(&self) -> i16 {
        match self {
            ReplicationError::NotEnoughReplicas { .. } => NOT_ENOUGH_REPLICAS,
            ReplicationError::NotEnoughReplicasAfterAppend { .. } => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            ReplicationError::FetchOffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
            ReplicationError::NotAReplica { .. } | ReplicationError::NotLeader { .. } => NOT_LEADER_OR_FOLLOWER,
        }
    }
}

/// A follower's high watermark: the leader's, capped at what the follower holds.
pub fn follower_high_watermark(leader_high_watermark: Offset, log_end_offset: Offset) -> Offset {
    leader_high_watermark.min(log_end_offset)
}
