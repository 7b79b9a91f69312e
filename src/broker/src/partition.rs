//! One partition on this node: its log, its replica role, its high watermark and its
//! group-commit flusher.
//!
//! As leader, the partition feeds a [`replication::leader::Leader`] state machine: appends
//! and fsyncs (and, in a cluster, followers' fetches) move the high watermark, which by
//! default counts only durable data. Appends go to the log at once; a flusher task fsyncs
//! whatever has been appended since its last fsync (one fsync covers every batch that arrived
//! meanwhile: group commit). acks=all produces complete when the high watermark passes their
//! last offset; fetches read only below it. With `write.caching=true` appended data counts at
//! once, and fsyncs happen on `flush.ms` / `flush.messages`. A single node is the leader of
//! every partition with itself as the whole ISR, so its high watermark is its durable end.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use metadata::config::TopicSettings;
use metadata::image::PartitionState;
use metadata::record::TopicId;
use protocol::ids::{LeaderEpoch, NodeId, Offset, TopicPartition};
use replication::leader::{Durability, Leader, LeaderConfig};
use replication::ReplicationError;
use rt::sync::{watch, Notify};
use rt::time::SharedClock;
use storage::AppendInfo;
use storage::{LogConfig, PartitionLog, StorageError};

use crate::observe::{BatchSummary, ReplicaEvent, ReplicaObserver};

/// What this broker is for the partition.
#[derive(Debug)]
pub(crate) enum Role {
    /// Opened, and not yet told its role by the metadata image.
    Unassigned,
    /// The leader in this epoch.
    Leader(Leader),
    /// A follower of `leader` in `leader_epoch`.
    Follower {
        /// The leader.
        leader: NodeId,
        /// Its epoch.
        leader_epoch: LeaderEpoch,
    },
}

/// A partition replica hosted here (single node: always the leader).
#[derive(Debug)]
pub(crate) struct Partition {
    /// Which partition.
    pub(crate) topic_partition: TopicPartition,
    /// The topic's id, to tell a re-created topic from the old one.
    pub(crate) topic_id: TopicId,
    /// The segment log.
    pub(crate) log: PartitionLog,
    /// The topic configs in force, refreshed on every config change.
    settings: RwLock<TopicSettings>,
    /// Offsets below this are durable and visible to consumers. Monotonic.
    high_watermark: watch::Sender<Offset>,
    /// Wakes the flusher; a stored permit coalesces many appends into one fsync.
    flush_wanted: Notify,
    /// Records appended since the last fsync (for `flush.messages`).
    unflushed_records: AtomicU64,
    /// Wall time of the last fsync (for `flush.ms`).
    last_flush_ms: AtomicI64,
    /// Set when the partition is deleted; the flusher exits.
    closed: AtomicBool,
    /// The replica role; never held across an await.
    role: Mutex<Role>,
    /// Held across every change of role and every write (a follower's replicated append, a
    /// leader's produce), so no write lands in an epoch other than the one it was checked in:
    /// a new leader's epoch starts at the log end it saw.
    replica_io: rt::sync::Mutex<()>,
    /// What the node shares with its partitions.
    env: PartitionEnv,
}

/// What every partition of a node shares.
#[derive(Clone)]
pub(crate) struct PartitionEnv {
    /// Bumped whenever any high watermark advances (wakes long polls).
    pub(crate) any_high_watermark_changed: watch::Sender<u64>,
    /// Bumped on every append (wakes replica long polls).
    pub(crate) any_append: watch::Sender<u64>,
    /// The node's wall clock, for `flush.ms`.
    pub(crate) clock: SharedClock,
    /// `replica.lag.time.max.ms`.
    pub(crate) replica_lag_time_max_ms: i64,
    /// `producer.id.expiration.ms`.
    pub(crate) producer_id_expiration_ms: i64,
    /// Told of every change to the replica (the simulator's replica check).
    pub(crate) observer: Option<ReplicaObserver>,
}

impl std::fmt::Debug for PartitionEnv {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PartitionEnv")
            .field("replica_lag_time_max_ms", &self.replica_lag_time_max_ms)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Maps topic settings onto the log's config.
pub(crate) fn log_config(settings: &TopicSettings, producer_id_expiration_ms: i64) -> LogConfig {
    LogConfig {
        producer_id_expiration_ms,
        segment_bytes: settings.segment_bytes,
        segment_ms: settings.segment_ms,
        index_interval_bytes: settings.index_interval_bytes,
        retention_ms: settings.retention_ms,
        retention_bytes: settings.retention_bytes,
        delete: settings.delete,
        compact: settings.compact,
        delete_retention_ms: settings.delete_retention_ms,
        min_cleanable_dirty_ratio: settings.min_cleanable_dirty_ratio,
        min_compaction_lag_ms: settings.min_compaction_lag_ms,
    }
}

impl Partition {
    /// Wraps an opened log and starts its flusher.
    pub(crate) fn start(
        topic_partition: TopicPartition,
        topic_id: TopicId,
        log: PartitionLog,
        settings: TopicSettings,
        env: PartitionEnv,
    ) -> Arc<Partition> {
        let now_ms = env.clock.now_ms();
        // What this log holds past its start is not known to be committed: a replica's tail
        // may be a dead leader's uncommitted writes. The role sets the high watermark: a
        // leader computes it from its ISR (a single node: its own durable end, at once), a
        // follower takes its leader's.
        let (high_watermark, _) = watch::channel(log.log_start_offset());
        let partition = Arc::new(Partition {
            topic_partition,
            topic_id,
            log,
            settings: RwLock::new(settings),
            high_watermark,
            flush_wanted: Notify::new(),
            unflushed_records: AtomicU64::new(0),
            last_flush_ms: AtomicI64::new(now_ms),
            closed: AtomicBool::new(false),
            role: Mutex::new(Role::Unassigned),
            replica_io: rt::sync::Mutex::new(()),
            env,
        });
        partition.observe(|| ReplicaEvent::Opened {
            log_start_offset: partition.log.log_start_offset(),
            log_end_offset: partition.log.log_end_offset(),
        });
        let flusher = Arc::clone(&partition);
        drop(rt::task::spawn(async move { flusher.run_flusher().await }));
        partition
    }

    /// The settings in force.
    pub(crate) fn settings(&self) -> TopicSettings {
        self.settings.read().expect("settings lock is never poisoned: no code panics holding it").clone()
    }

    /// Replaces the settings after a config change.
    pub(crate) fn set_settings(&self, settings: TopicSettings) {
        self.log.set_config(log_config(&settings, self.env.producer_id_expiration_ms));
        let config = self.leader_config(&settings);
        *self.settings.write().expect("settings lock is never poisoned") = settings;
        let advanced = match &mut *self.role() {
            Role::Leader(leader) => leader.set_config(config),
            _ => None,
        };
        if let Some(high_watermark) = advanced {
            self.advance_high_watermark(high_watermark);
        }
        // A switch from write caching to fsync-before-ack must not strand data below the end.
        self.flush_wanted.notify_one();
    }

    /// Reports a change to the observer, if there is one (`event` is built only then).
    fn observe(&self, event: impl FnOnce() -> ReplicaEvent) {
        if let Some(observer) = &self.env.observer {
            observer(&self.topic_partition, self.topic_id, &event());
        }
    }

    /// The leader's settings for this partition under `settings`.
    fn leader_config(&self, settings: &TopicSettings) -> LeaderConfig {
        LeaderConfig {
            min_insync_replicas: usize::try_from(settings.min_insync_replicas).unwrap_or(1).max(1),
            replica_lag_time_max_ms: self.env.replica_lag_time_max_ms,
            durability: durability(settings),
            #[cfg(feature = "planted-bugs")]
            planted_expand_before_epoch_start: crate::planted_bug("expand-isr-before-epoch-start", true),
            #[cfg(feature = "planted-bugs")]
            planted_ack_before_replication: crate::planted_bug("ack-before-replication", true),
        }
    }

    /// A leader's append of a produce's batches (the caller holds [`Partition::replica_io`]
    /// and checked the epoch): see [`PartitionLog::append`].
    ///
    /// # Errors
    /// As [`PartitionLog::append`].
    pub(crate) async fn append_as_leader(
        &self,
        batches: bytes::BytesMut,
        leader_epoch: LeaderEpoch,
        log_append_time: bool,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let info = self.log.append(batches, leader_epoch, log_append_time, now_ms).await?;
        self.observe(|| ReplicaEvent::Appended {
            as_leader: true,
            batches: info.batches.iter().map(BatchSummary::from).collect(),
        });
        Ok(info)
    }

    /// A follower's append of its leader's batches (under [`Partition::replica_io`]): see
    /// [`PartitionLog::append_replicated`].
    ///
    /// # Errors
    /// As [`PartitionLog::append_replicated`].
    pub(crate) async fn append_replicated(
        &self,
        batches: bytes::BytesMut,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let info = self.log.append_replicated(batches, now_ms).await?;
        self.observe(|| ReplicaEvent::Appended {
            as_leader: false,
            batches: info.batches.iter().map(BatchSummary::from).collect(),
        });
        Ok(info)
    }

    /// A follower cuts its diverged tail (under [`Partition::replica_io`]).
    ///
    /// # Errors
    /// As [`PartitionLog::truncate_to`].
    pub(crate) async fn truncate_to(&self, offset: Offset) -> Result<(), StorageError> {
        self.log.truncate_to(offset).await?;
        self.observe(|| ReplicaEvent::Truncated { log_end_offset: self.log.log_end_offset() });
        Ok(())
    }

    /// A follower below its leader's log start empties its log (under
    /// [`Partition::replica_io`]).
    ///
    /// # Errors
    /// As [`PartitionLog::truncate_fully_to`].
    pub(crate) async fn truncate_fully_to(&self, offset: Offset) -> Result<(), StorageError> {
        self.log.truncate_fully_to(offset).await?;
        self.observe(|| ReplicaEvent::Restarted { log_start_offset: self.log.log_start_offset() });
        Ok(())
    }

    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().expect("role lock is never poisoned: no code panics holding it")
    }

    /// The leader epoch, if this broker leads the partition.
    pub(crate) fn leader_epoch(&self) -> Option<LeaderEpoch> {
        match &*self.role() {
            Role::Leader(leader) => Some(leader.leader_epoch()),
            _ => None,
        }
    }

    /// Becomes (or stays) the leader of the partition in `state`'s epoch. A new epoch is
    /// recorded in the log's epoch cache before anything is appended in it.
    ///
    /// # Errors
    /// Storage errors from recording the epoch; `NotLeader` if `state` does not make `me` lead.
    pub(crate) async fn lead(&self, me: NodeId, state: &PartitionState, now_ms: i64) -> Result<(), crate::BrokerError> {
        let same_epoch = matches!(&*self.role(), Role::Leader(leader) if leader.leader_epoch() == state.leader_epoch);
        if same_epoch {
            let advanced = match &mut *self.role() {
                Role::Leader(leader) => leader.on_partition_state(state.clone(), now_ms),
                _ => Ok(None),
            };
            return match advanced {
                Ok(high_watermark) => {
                    if let Some(high_watermark) = high_watermark {
                        self.advance_high_watermark(high_watermark);
                    }
                    Ok(())
                }
                Err(error) => {
                    *self.role() = Role::Unassigned;
                    Err(crate::BrokerError::Replication(error))
                }
            };
        }
        let _io = self.replica_io.lock().await;
        self.log.assign_epoch(state.leader_epoch).await?;
        let leader = Leader::new(
            me,
            state.clone(),
            self.leader_config(&self.settings()),
            self.log.log_end_offset(),
            self.log.durable_end_offset(),
            self.high_watermark(),
            now_ms,
        )
        .map_err(crate::BrokerError::Replication)?;
        let high_watermark = leader.high_watermark();
        tracing::debug!(partition = %self.topic_partition, leader_epoch = %state.leader_epoch, %high_watermark, "leading");
        *self.role() = Role::Leader(leader);
        self.observe(|| ReplicaEvent::Leading {
            leader_epoch: state.leader_epoch,
            isr: state.isr.clone(),
            log_end_offset: self.log.log_end_offset(),
        });
        self.advance_high_watermark(high_watermark);
        Ok(())
    }

    /// Follows `state.leader` in `state.leader_epoch` (or stops leading when there is no
    /// leader). Returns true when the role changed, so the caller starts a fetcher.
    pub(crate) fn follow(&self, state: &PartitionState) -> bool {
        let mut role = self.role();
        let same = matches!(&*role, Role::Follower { leader, leader_epoch }
            if *leader == state.leader && *leader_epoch == state.leader_epoch);
        if !same {
            tracing::debug!(partition = %self.topic_partition, leader = %state.leader, leader_epoch = %state.leader_epoch, "following");
            *role = Role::Follower { leader: state.leader, leader_epoch: state.leader_epoch };
        }
        !same && state.leader.0 >= 0
    }

    /// Whether this broker still follows `leader` in `leader_epoch`.
    pub(crate) fn follows(&self, leader: NodeId, leader_epoch: LeaderEpoch) -> bool {
        !self.closed.load(Ordering::Acquire)
            && matches!(&*self.role(), Role::Follower { leader: current, leader_epoch: epoch }
                if *current == leader && *epoch == leader_epoch)
    }

    /// The node's wall clock now.
    pub(crate) fn now_ms(&self) -> i64 {
        self.env.clock.now_ms()
    }

    /// The lock held while writing to the log (replicated data, or a produce).
    pub(crate) async fn replica_io(&self) -> rt::sync::MutexGuard<'_, ()> {
        self.replica_io.lock().await
    }

    /// A follower fetched from `fetch_offset` in this leader epoch: the leader's bookkeeping.
    /// Returns an ISR change to send to the controller, if one is due.
    ///
    /// # Errors
    /// `NotLeader`, `NotAReplica`, `FetchOffsetOutOfRange`.
    pub(crate) fn on_replica_fetch(
        &self,
        replica: NodeId,
        fetch_offset: Offset,
        now_ms: i64,
        may_join_isr: bool,
    ) -> Result<Option<replication::leader::AlterIsr>, ReplicationError> {
        let outcome = match &mut *self.role() {
            Role::Leader(leader) => leader.on_fetch(replica, fetch_offset, now_ms, may_join_isr)?,
            _ => return Err(ReplicationError::NotLeader { leader: NodeId(-1), isr: Vec::new() }),
        };
        if let Some(high_watermark) = outcome.high_watermark {
            self.advance_high_watermark(high_watermark);
        }
        if outcome.alter.as_ref().is_some_and(|alter| alter.new_isr.contains(&replica)) {
            self.observe(|| ReplicaEvent::IsrExpansion { replica, fetch_offset });
        }
        Ok(outcome.alter)
    }

    /// The leader's periodic check: an ISR shrink to send, if a follower lagged too long.
    pub(crate) fn replication_tick(&self, now_ms: i64) -> Option<replication::leader::AlterIsr> {
        match &mut *self.role() {
            Role::Leader(leader) => leader.on_tick(now_ms),
            _ => None,
        }
    }

    /// The ISR change `failed` was refused or lost; if it is the one in flight, a later fetch
    /// or tick may propose again.
    /// True while this broker leads in the epochs `alter` was proposed in and `alter` is still
    /// the ISR change in flight (so retrying it makes sense).
    pub(crate) fn alter_pending(&self, alter: &replication::leader::AlterIsr) -> bool {
        match &*self.role() {
            Role::Leader(leader) => {
                leader.leader_epoch() == alter.leader_epoch
                    && leader.state().partition_epoch == alter.partition_epoch
                    && leader.pending_isr() == Some(alter.new_isr.as_slice())
            }
            _ => false,
        }
    }

    pub(crate) fn alter_failed(&self, failed: &replication::leader::AlterIsr) {
        if let Role::Leader(leader) = &mut *self.role() {
            leader.on_alter_failed(failed);
        }
    }

    /// Whether an append with these acks may go ahead.
    ///
    /// # Errors
    /// `NotEnoughReplicas` for acks=all under `min.insync.replicas`; `NotLeader` if this broker
    /// does not lead.
    pub(crate) fn check_append(&self, acks_all: bool) -> Result<LeaderEpoch, ReplicationError> {
        match &*self.role() {
            Role::Leader(leader) => leader.check_append(acks_all).map(|()| leader.leader_epoch()),
            _ => Err(ReplicationError::NotLeader { leader: NodeId(-1), isr: Vec::new() }),
        }
    }

    /// The outcome of an acks=all produce appended in `leader_epoch` whose high watermark
    /// `required_offset` was reached. Only the leader of that epoch can tell: once leadership
    /// moved, the write may have been cut from this log, and the high watermark now follows
    /// another leader's log, so the answer is NOT_LEADER_OR_FOLLOWER (as Kafka fails a
    /// delayed produce whose partition it no longer leads).
    pub(crate) fn produce_outcome(
        &self,
        required_offset: Offset,
        leader_epoch: LeaderEpoch,
    ) -> Result<(), ReplicationError> {
        match &*self.role() {
            Role::Leader(leader) if leader.leader_epoch() == leader_epoch => {
                leader.produce_outcome(required_offset).unwrap_or(Ok(()))
            }
            Role::Leader(leader) => {
                Err(ReplicationError::NotLeader { leader: NodeId(-1), isr: leader.state().isr.clone() })
            }
            _ => Err(ReplicationError::NotLeader { leader: NodeId(-1), isr: Vec::new() }),
        }
    }

    /// The high watermark.
    pub(crate) fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// Records that `records` were appended ending at `log_end_offset`, and arranges for them
    /// to become durable and visible. `settings` are the ones the append was validated with.
    pub(crate) fn appended(&self, records: u64, log_end_offset: Offset, settings: &TopicSettings) {
        let unflushed = self.unflushed_records.fetch_add(records, Ordering::Relaxed) + records;
        self.env.any_append.send_modify(|counter| *counter = counter.wrapping_add(1));
        let advanced = match &mut *self.role() {
            Role::Leader(leader) => leader.on_append(log_end_offset),
            _ => None,
        };
        if let Some(high_watermark) = advanced {
            self.advance_high_watermark(high_watermark);
        }
        if durability(settings) == Durability::Append {
            if unflushed >= settings.flush_messages.max(1) as u64 {
                self.flush_wanted.notify_one();
            }
        } else {
            self.flush_wanted.notify_one();
        }
    }

    /// Called periodically: triggers a `flush.ms` fsync for write-caching topics.
    pub(crate) fn tick(&self, now_ms: i64) {
        let settings = self.settings();
        if settings.write_caching
            && self.unflushed_records.load(Ordering::Relaxed) > 0
            && now_ms.saturating_sub(self.last_flush_ms.load(Ordering::Relaxed)) >= settings.flush_ms
        {
            self.flush_wanted.notify_one();
        }
    }

    pub(crate) fn advance_high_watermark(&self, offset: Offset) {
        let advanced = self.high_watermark.send_if_modified(|current| {
            if offset > *current {
                *current = offset;
                true
            } else {
                false
            }
        });
        if advanced {
            self.env.any_high_watermark_changed.send_modify(|counter| *counter = counter.wrapping_add(1));
            self.observe(|| ReplicaEvent::HighWatermark {
                high_watermark: offset,
                leader: match &*self.role() {
                    Role::Leader(leader) => {
                        Some((leader.leader_epoch(), leader.state().isr.len(), leader.effective_min_isr()))
                    }
                    _ => None,
                },
            });
        }
    }

    /// Waits until the high watermark reaches `offset`, or the timeout passes.
    /// Returns true if it was reached.
    pub(crate) async fn wait_for_high_watermark(&self, offset: Offset, timeout_ms: u64) -> bool {
        let mut receiver = self.high_watermark.subscribe();
        let reached = rt::time::timeout(
            rt::time::Duration::from_millis(timeout_ms),
            receiver.wait_for(|high_watermark| *high_watermark >= offset),
        )
        .await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Stops the flusher (the partition is being deleted).
    pub(crate) fn close(&self) {
        self.observe(|| ReplicaEvent::Removed);
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
    }

    async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wanted.notified().await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if rt::buggify() {
                // Slow fsync: lets more appends pile into one group commit and stretches the
                // window in which a crash loses unsynced data.
                rt::time::sleep(rt::time::Duration::from_millis(20)).await;
            }
            let pending = self.unflushed_records.swap(0, Ordering::Relaxed);
            match self.log.flush().await {
                Ok(durable_end) => {
                    self.last_flush_ms.store(self.env.clock.now_ms(), Ordering::Relaxed);
                    let advanced = match &mut *self.role() {
                        Role::Leader(leader) => leader.on_flush(durable_end),
                        _ => None,
                    };
                    if let Some(high_watermark) = advanced {
                        self.advance_high_watermark(high_watermark);
                    }
                }
                Err(StorageError::FsyncFailed { .. }) => {
                    rt::fatal(rt::FatalReason::FsyncFailed, &format!("fsync failed for {}", self.topic_partition));
                }
                Err(error) => {
                    let _ = self.unflushed_records.fetch_add(pending, Ordering::Relaxed);
                    tracing::error!(partition = %self.topic_partition, %error, "flush failed; will retry");
                    rt::time::sleep(rt::time::Duration::from_millis(100)).await;
                    self.flush_wanted.notify_one();
                }
            }
        }
    }
}

/// What counts as replicated for a topic: durable data, unless it caches writes (or the
/// planted bug pretends appends are durable).
fn durability(settings: &TopicSettings) -> Durability {
    if settings.write_caching || crate::planted_bug("ack-before-fsync", true) {
        Durability::Append
    } else {
        Durability::Fsync
    }
}
