//! The leader's side of a partition: follower progress, the high watermark, ISR shrink and
//! expand proposals, and the outcome of acks=all produces (`brief/replication.md` §3, rules
//! 5-8).
//!
//! The state machine does no I/O and reads no clock: the broker feeds it the log's end and
//! durable end offsets, follower fetches with the time they arrived, and the partition state
//! from the metadata image; it answers with high-watermark advances and AlterPartition
//! proposals to send.
//!
//! * **High watermark.** The minimum over the maximal ISR (the committed ISR plus members of an
//!   expansion still in flight, KIP-497) of each member's end offset: the leader's own durable
//!   end under [`Durability::Fsync`] (its log end under [`Durability::Append`]) and each
//!   follower's fetch offset (a follower fetches from its durable end under `Fsync`). It counts
//!   only members that fetched in the current leader epoch, never moves back, and does not move
//!   while the ISR is smaller than the effective `min.insync.replicas` (KIP-966 part 1).
//! * **Shrink.** An ISR follower whose end is not the leader's log end and that has not caught
//!   up for `replica.lag.time.max.ms` is proposed out.
//! * **Expand.** A replica outside the ISR whose fetch offset reached both the high watermark
//!   and the start of the leader's current epoch, and whose broker may join (registered,
//!   unfenced, not shutting down: the caller says), is proposed in.
//! * One AlterPartition is in flight at a time; it is a compare-and-set on the partition epoch
//!   and resolves when the metadata image shows a newer partition epoch (or fails).

use std::collections::BTreeMap;

pub use metadata::image::PartitionState;
use protocol::ids::{LeaderEpoch, NodeId, Offset, PartitionEpoch};

use crate::ReplicationError;

/// How the leader counts an offset as replicated (rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Only fsynced data counts: the leader's durable end, followers' durable ends. acks=all
    /// then means "on stable storage on every ISR member". weir's default.
    Fsync,
    /// Appended data counts, as in Kafka; safety after power loss rests on unclean-shutdown
    /// detection.
    Append,
}

/// The leader's settings for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// What counts as replicated.
    pub durability: Durability,
    /// Planted bug: admit a follower to the ISR once it reached the high watermark, without
    /// waiting for it to reach the start of this leader's epoch. A new leader's high watermark
    /// can lag what the old leader committed, so such a member may lack committed records and
    /// then be elected.
    #[cfg(feature = "planted-bugs")]
    pub planted_expand_before_epoch_start: bool,
    /// Planted bug "ack-before-replication": the high watermark follows the leader's own
    /// durable end alone, so acks=all completes before any follower has the batch.
    #[cfg(feature = "planted-bugs")]
    pub planted_ack_before_replication: bool,
}

/// An ISR change to send to the controller (AlterPartition): applied only if the partition
/// epoch is still `partition_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    /// The proposed ISR.
    pub new_isr: Vec<NodeId>,
    /// The leader epoch it was decided in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch it expects.
    pub partition_epoch: PartitionEpoch,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// Its end offset as of its last fetch in this leader epoch; `None` before one.
    pub end_offset: Option<Offset>,
    /// When it last fetched.
    pub last_fetch_ms: i64,
    /// When it was last known to have caught up with the leader's log end.
    pub last_caught_up_ms: i64,
    /// The leader's log end at its last fetch.
    last_fetch_leader_end: Offset,
}

/// What a follower fetch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The new high watermark, if it advanced.
    pub high_watermark: Option<Offset>,
    /// An ISR expansion to send.
    pub alter: Option<AlterIsr>,
}

/// The leader of one partition in one leader epoch.
#[derive(Debug, Clone)]
pub struct Leader {
    me: NodeId,
    config: LeaderConfig,
    state: PartitionState,
    /// The ISR of the AlterPartition in flight.
    pending_isr: Option<Vec<NodeId>>,
    /// The offset of this epoch's first batch (the log end when it became leader).
    epoch_start_offset: Offset,
    log_end_offset: Offset,
    durable_end_offset: Offset,
    high_watermark: Offset,
    followers: BTreeMap<NodeId, FollowerProgress>,
}

impl Leader {
    /// Becomes leader of `state` (which must name `me` as leader and ISR member) with the log
    /// as it is: its end and durable end, and the high watermark it had (a follower's, or the
    /// checkpointed one; never above the log end).
    ///
    /// # Errors
    /// `NotLeader` if `state` does not make `me` the leader in its ISR.
    pub fn new(
        me: NodeId,
        state: PartitionState,
        config: LeaderConfig,
        log_end_offset: Offset,
        durable_end_offset: Offset,
        high_watermark: Offset,
        now_ms: i64,
    ) -> Result<Leader, ReplicationError> {
        if state.leader != me || !state.isr.contains(&me) {
            return Err(ReplicationError::NotLeader { leader: state.leader, isr: state.isr.clone() });
        }
        // Read one after the other, the two may straddle an append.
        let log_end_offset = log_end_offset.max(durable_end_offset);
        let followers = state
            .replicas
            .iter()
            .filter(|replica| **replica != me)
            .map(|replica| {
                // ISR members get a full lag period to show up in the new epoch.
                let progress = FollowerProgress {
                    end_offset: None,
                    last_fetch_ms: now_ms,
                    last_caught_up_ms: now_ms,
                    last_fetch_leader_end: log_end_offset,
                };
                (*replica, progress)
            })
            .collect();
        let mut leader = Leader {
            me,
            config,
            state,
            pending_isr: None,
            epoch_start_offset: log_end_offset,
            log_end_offset,
            durable_end_offset,
            high_watermark: high_watermark.min(log_end_offset),
            followers,
        };
        let _ = leader.advance_high_watermark();
        Ok(leader)
    }

    /// Replaces the settings (a topic config changed); returns the new high watermark if that
    /// let it advance (a smaller `min.insync.replicas`, or `Append` durability).
    pub fn set_config(&mut self, config: LeaderConfig) -> Option<Offset> {
        self.config = config;
        self.advance_high_watermark()
    }

    /// The leader epoch.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.state.leader_epoch
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// Where this leader epoch's data starts.
    pub fn epoch_start_offset(&self) -> Offset {
        self.epoch_start_offset
    }

    /// The partition state this leader acts on.
    pub fn state(&self) -> &PartitionState {
        &self.state
    }

    /// A follower's progress.
    pub fn follower(&self, replica: NodeId) -> Option<&FollowerProgress> {
        self.followers.get(&replica)
    }

    /// The ISR change in flight, if any.
    pub fn pending_isr(&self) -> Option<&[NodeId]> {
        self.pending_isr.as_deref()
    }

    /// `min.insync.replicas`, capped at the replication factor.
    pub fn effective_min_isr(&self) -> usize {
        self.config.min_insync_replicas.clamp(1, self.state.replicas.len().max(1))
    }

    /// The committed ISR plus members being added.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut isr = self.state.isr.clone();
        for member in self.pending_isr.iter().flatten() {
            if !isr.contains(member) {
                isr.push(*member);
            }
        }
        isr
    }

    /// Whether an append with `acks=all` may go ahead (checked before appending).
    ///
    /// # Errors
    /// `NotEnoughReplicas` while the ISR is smaller than the effective `min.insync.replicas`.
    pub fn check_append(&self, acks_all: bool) -> Result<(), ReplicationError> {
        let min_isr = self.effective_min_isr();
        if acks_all && self.state.isr.len() < min_isr {
            return Err(ReplicationError::NotEnoughReplicas { isr: self.state.isr.len(), min_isr });
        }
        Ok(())
    }

    /// The outcome of an acks=all produce that needs the high watermark at `required_offset`
    /// (its last offset + 1): `None` while it must wait.
    pub fn produce_outcome(&self, required_offset: Offset) -> Option<Result<(), ReplicationError>> {
        if self.high_watermark < required_offset {
            return None;
        }
        let min_isr = self.effective_min_isr();
        let isr = self.maximal_isr().len();
        Some(if isr >= min_isr { Ok(()) } else { Err(ReplicationError::NotEnoughReplicasAfterAppend { isr, min_isr }) })
    }

    /// The local log grew to `log_end_offset` (an append). Reports of concurrent appends may
    /// arrive out of order, and a flush may have reported a later end already: the log end
    /// only moves forward.
    pub fn on_append(&mut self, log_end_offset: Offset) -> Option<Offset> {
        self.log_end_offset = self.log_end_offset.max(log_end_offset);
        self.advance_high_watermark()
    }

    /// The local log is durable up to `durable_end_offset` (a flush). A flush can cover an
    /// append whose report has not arrived yet, so this also moves the log end.
    pub fn on_flush(&mut self, durable_end_offset: Offset) -> Option<Offset> {
        self.durable_end_offset = self.durable_end_offset.max(durable_end_offset);
        self.log_end_offset = self.log_end_offset.max(self.durable_end_offset);
        self.advance_high_watermark()
    }

    /// `replica` fetched from `fetch_offset` at `now_ms` in this leader epoch (the caller
    /// checked the fetch's epoch and divergence). `may_join_isr`: its broker is registered with
    /// the epoch it fetched with, unfenced and not shutting down.
    ///
    /// # Errors
    /// `NotAReplica` for a broker that is not a follower here; `FetchOffsetOutOfRange` for an
    /// offset past the log end.
    pub fn on_fetch(
        &mut self,
        replica: NodeId,
        fetch_offset: Offset,
        now_ms: i64,
        may_join_isr: bool,
    ) -> Result<FetchOutcome, ReplicationError> {
        if fetch_offset > self.log_end_offset {
            return Err(ReplicationError::FetchOffsetOutOfRange { fetch_offset, log_end_offset: self.log_end_offset });
        }
        let log_end_offset = self.log_end_offset;
        let progress = self.followers.get_mut(&replica).ok_or(ReplicationError::NotAReplica { replica })?;
        if fetch_offset >= log_end_offset {
            progress.last_caught_up_ms = now_ms;
        } else if fetch_offset >= progress.last_fetch_leader_end {
            // It reached what the leader had at its previous fetch.
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_ms = now_ms;
        progress.last_fetch_leader_end = log_end_offset;
        progress.end_offset = Some(fetch_offset);
        let mut outcome = FetchOutcome { high_watermark: self.advance_high_watermark(), alter: None };
        let joins = may_join_isr
            && self.pending_isr.is_none()
            && !self.state.isr.contains(&replica)
            && fetch_offset >= self.high_watermark
            && (fetch_offset >= self.epoch_start_offset || self.planted_expand_before_epoch_start());
        if joins {
            let mut new_isr = self.state.isr.clone();
            new_isr.push(replica);
            // ISR order follows the replica order, so equal sets compare equal.
            new_isr.sort_by_key(|member| self.state.replicas.iter().position(|replica| replica == member));
            outcome.alter = Some(self.propose(new_isr));
        }
        Ok(outcome)
    }

    /// Periodic check: an ISR shrink to send, if some follower has lagged too long.
    pub fn on_tick(&mut self, now_ms: i64) -> Option<AlterIsr> {
        if self.pending_isr.is_some() {
            return None;
        }
        let lagging: Vec<NodeId> = self
            .state
            .isr
            .iter()
            .filter(|member| **member != self.me)
            .filter(|member| {
                self.followers.get(member).is_none_or(|progress| {
                    progress.end_offset != Some(self.log_end_offset)
                        && now_ms - progress.last_caught_up_ms > self.config.replica_lag_time_max_ms
                })
            })
            .copied()
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let new_isr = self.state.isr.iter().copied().filter(|member| !lagging.contains(member)).collect();
        Some(self.propose(new_isr))
    }

    fn planted_ack_before_replication(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.config.planted_ack_before_replication
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    fn planted_expand_before_epoch_start(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.config.planted_expand_before_epoch_start
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    fn propose(&mut self, new_isr: Vec<NodeId>) -> AlterIsr {
        debug_assert!(new_isr.contains(&self.me), "the leader stays in its ISR");
        self.pending_isr = Some(new_isr.clone());
        AlterIsr { new_isr, leader_epoch: self.state.leader_epoch, partition_epoch: self.state.partition_epoch }
    }

    /// The AlterPartition `failed` was refused or lost: if it is the one in flight, a later
    /// fetch or tick may propose again. The failure of an older one (proposed against a
    /// partition epoch the image has since moved past, after which this leader proposed
    /// anew) changes nothing: dropping the newer proposal's members from the maximal ISR would
    /// let the high watermark pass a follower the controller is about to admit.
    pub fn on_alter_failed(&mut self, failed: &AlterIsr) {
        let current = failed.leader_epoch == self.state.leader_epoch
            && failed.partition_epoch == self.state.partition_epoch
            && self.pending_isr.as_deref() == Some(failed.new_isr.as_slice());
        if current {
            self.pending_isr = None;
        }
    }

    /// The metadata image shows the partition at `state` (seen at `now_ms`). An older or equal partition epoch
    /// is ignored (a stale update). A newer one with this leader epoch updates the ISR and
    /// replicas, ends the AlterPartition in flight, and may advance the high watermark.
    ///
    /// # Errors
    /// `NotLeader` if `state` moved leadership or bumped the leader epoch: the caller stops
    /// acting as this leader.
    pub fn on_partition_state(
        &mut self,
        state: PartitionState,
        now_ms: i64,
    ) -> Result<Option<Offset>, ReplicationError> {
        if state.partition_epoch <= self.state.partition_epoch {
            return Ok(None);
        }
        if state.leader != self.me || state.leader_epoch != self.state.leader_epoch || !state.isr.contains(&self.me) {
            return Err(ReplicationError::NotLeader { leader: state.leader, isr: state.isr });
        }
        for replica in &state.replicas {
            if *replica != self.me && !self.followers.contains_key(replica) {
                let progress = FollowerProgress {
                    end_offset: None,
                    last_fetch_ms: now_ms,
                    last_caught_up_ms: now_ms,
                    last_fetch_leader_end: self.log_end_offset,
                };
                let _ = self.followers.insert(*replica, progress);
            }
        }
        self.followers.retain(|replica, _| state.replicas.contains(replica));
        self.state = state;
        self.pending_isr = None;
        Ok(self.advance_high_watermark())
    }

    fn advance_high_watermark(&mut self) -> Option<Offset> {
        if self.state.isr.len() < self.effective_min_isr() {
            return None;
        }
        let own = match self.config.durability {
            Durability::Fsync => self.durable_end_offset,
            Durability::Append => self.log_end_offset,
        };
        let mut candidate = own;
        for member in self.maximal_isr() {
            if member == self.me || self.planted_ack_before_replication() {
                continue;
            }
            // Only members that acknowledged this epoch by fetching in it count.
            let end = self.followers.get(&member).and_then(|progress| progress.end_offset)?;
            candidate = candidate.min(end);
        }
        if candidate <= self.high_watermark {
            return None;
        }
        self.high_watermark = candidate;
        Some(candidate)
    }
}

#[cfg(test)]
mod tests;
