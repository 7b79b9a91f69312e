//! What a partition replica does, reported to an observer as it happens: the simulator's
//! replica check rebuilds every replica's log from these reports (batch by batch, by offset,
//! leader epoch and CRC) and checks the replication invariants against them as they arrive
//! (`sim/src/replica_check.rs`). Outside the simulator no observer is set and nothing is
//! built.
//!
//! Every report is made right after the change it describes, with no await in between, and
//! log changes are made under the partition's replica lock, so one partition's reports arrive
//! in the order its log changed.

use std::sync::Arc;

use metadata::record::TopicId;
use protocol::batch::BatchHeader;
use protocol::ids::{LeaderEpoch, NodeId, Offset, TopicPartition};

/// One stored batch, as the replica check compares them: equal summaries at equal offsets
/// mean equal data (the CRC covers everything in a batch but its offset and leader epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// The leader epoch it was appended in.
    pub leader_epoch: LeaderEpoch,
    /// Its CRC-32C.
    pub crc: u32,
    /// Records it holds (fewer after compaction; none in a compaction filler).
    pub record_count: i32,
}

impl From<&BatchHeader> for BatchSummary {
    fn from(header: &BatchHeader) -> BatchSummary {
        BatchSummary {
            base_offset: header.base_offset,
            last_offset: header.base_offset.plus(i64::from(header.last_offset_delta)),
            leader_epoch: header.partition_leader_epoch,
            crc: header.crc,
            record_count: header.record_count,
        }
    }
}

/// What happened to one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// The log was opened (recovered after a restart, or created) and holds
    /// `[log_start_offset, log_end_offset)`.
    Opened {
        /// Its start.
        log_start_offset: Offset,
        /// Its end.
        log_end_offset: Offset,
    },
    /// Batches were appended, as the leader (`as_leader`) or copied from the leader.
    Appended {
        /// Appended in a produce by this replica as leader.
        as_leader: bool,
        /// The batches, in offset order.
        batches: Vec<BatchSummary>,
    },
    /// Everything from `log_end_offset` on was cut (a follower's truncation by epoch).
    Truncated {
        /// The new log end.
        log_end_offset: Offset,
    },
    /// Everything was removed and the log restarts empty at `log_start_offset` (a follower
    /// below its leader's log start).
    Restarted {
        /// The new log start (and end).
        log_start_offset: Offset,
    },
    /// This replica became leader in `leader_epoch` with `isr`, holding its log up to
    /// `log_end_offset`.
    Leading {
        /// The epoch.
        leader_epoch: LeaderEpoch,
        /// The ISR it leads with.
        isr: Vec<NodeId>,
        /// Its log end.
        log_end_offset: Offset,
    },
    /// The high watermark advanced.
    HighWatermark {
        /// The new high watermark.
        high_watermark: Offset,
        /// As leader: its epoch, the ISR size the advance was decided with, and the effective
        /// `min.insync.replicas`; `None` as a follower (which takes its leader's).
        leader: Option<(LeaderEpoch, usize, usize)>,
    },
    /// As leader, this replica proposed `replica` into the ISR after a fetch from
    /// `fetch_offset` (it holds everything below that).
    IsrExpansion {
        /// The joining follower.
        replica: NodeId,
        /// Its fetch offset.
        fetch_offset: Offset,
    },
    /// The replica was removed from this broker (topic deleted or replica moved away).
    Removed,
}

/// Receives every [`ReplicaEvent`] of every partition a broker hosts.
pub type ReplicaObserver = Arc<dyn Fn(&TopicPartition, TopicId, &ReplicaEvent) + Send + Sync>;
