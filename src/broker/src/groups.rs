//! The group coordinators this broker runs: one [`coordinator::GroupCoordinator`] per
//! `__consumer_offsets` partition it leads, driven as the state machine asks.
//!
//! # Design
//!
//! * **Placement.** A group lives on partition `abs(hash(group)) % partitions` of
//!   `__consumer_offsets` (Kafka's rule), and its coordinator is that partition's leader. The
//!   topic is created on the first FindCoordinator, with `offsets.topic.num.partitions`
//!   partitions and `offsets.topic.replication.factor` replicas (fewer when fewer brokers are
//!   up), and it is replicated like any other topic.
//! * **A slot** per led partition and leader epoch holds the coordinator. It is loaded on
//!   first use by replaying the partition from its log start to its log end (a leader never
//!   cuts its own log, so all of it becomes committed), and dropped as soon as the broker is
//!   seen not to lead the partition in that epoch any more; waiting requests are then told
//!   NOT_COORDINATOR and clients find the new coordinator.
//! * **Order.** One async lock per slot serialises every call into the coordinator and the
//!   carrying out of its outputs: records are appended to the partition as the leader, and a
//!   request is answered only after the records before its answer reached the high watermark
//!   (acks=all). If a write fails, the slot is dropped (the in-memory state may hold what the
//!   log does not), so the next request reloads from the log: the state is always the log's.
//! * **Waiting requests.** JoinGroup and SyncGroup answers may come from a later call (another
//!   member's join, or the tick task's deadlines); each waits on a oneshot keyed by a request id.
//! * **Time.** A task per slot ticks every [`GROUP_TICK_INTERVAL_MS`]; deadlines run on the
//!   node's coordinator clock (`Node::coordinator_now_ms`: wall time at start, advanced by the
//!   monotonic clock), so wall-clock steps do not expire sessions; record timestamps are the
//!   wall clock's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use coordinator::{GroupCoordinator, GroupRecord, Output, RequestId, CONSUMER_OFFSETS_TOPIC};
use protocol::batch::Batches;
use protocol::ids::LeaderEpoch;
use protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use protocol::ResponseError;
use rt::sync::oneshot;

use crate::node::Node;
use crate::partition::Partition;

/// How often a coordinator checks its deadlines (sessions, join and sync phases).
pub(crate) const GROUP_TICK_INTERVAL_MS: u64 = 100;
/// Longest wait for a coordinator write to reach the high watermark.
pub(crate) const GROUP_WRITE_TIMEOUT_MS: u64 = 15_000;
/// Bytes read per step while loading a partition.
const LOAD_CHUNK_BYTES: usize = 1024 * 1024;

/// The coordinators of this broker.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    slots: Mutex<BTreeMap<i32, Arc<Slot>>>,
    next_request: AtomicU64,
}

/// One led `__consumer_offsets` partition in one leader epoch.
#[derive(Debug)]
pub(crate) struct Slot {
    index: i32,
    partition: Arc<Partition>,
    leader_epoch: LeaderEpoch,
    /// `None` until loaded.
    coordinator: rt::sync::Mutex<Option<GroupCoordinator>>,
    waiters: Mutex<BTreeMap<RequestId, oneshot::Sender<Output>>>,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Groups {
    /// A fresh request id for a JoinGroup or SyncGroup answer.
    pub(crate) fn request_id(&self) -> RequestId {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// The slot coordinating `group_id`.
    ///
    /// # Errors
    /// COORDINATOR_NOT_AVAILABLE while `__consumer_offsets` does not exist, NOT_COORDINATOR if
    /// another broker leads the group's partition.
    pub(crate) fn slot(&self, node: &Arc<Node>, group_id: &str) -> Result<Arc<Slot>, ResponseError> {
        let partitions = node
            .image()
            .topic(CONSUMER_OFFSETS_TOPIC)
            .map(|topic| topic.partitions.len())
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let index = coordinator::partition_for(group_id, i32::try_from(partitions).unwrap_or(i32::MAX));
        self.slot_at(node, index)
    }

    /// The slot of `__consumer_offsets` partition `index`.
    ///
    /// # Errors
    /// NOT_COORDINATOR if another broker leads it.
    pub(crate) fn slot_at(&self, node: &Arc<Node>, index: i32) -> Result<Arc<Slot>, ResponseError> {
        let partition =
            node.leader_partition(CONSUMER_OFFSETS_TOPIC, index).map_err(|_| ResponseError::NotCoordinator)?;
        let leader_epoch = partition.leader_epoch().ok_or(ResponseError::NotCoordinator)?;
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&index) {
            if slot.leader_epoch == leader_epoch && !slot.closed.load(Ordering::SeqCst) {
                return Ok(Arc::clone(slot));
            }
            slot.close();
        }
        let slot = Arc::new(Slot {
            index,
            partition,
            leader_epoch,
            coordinator: rt::sync::Mutex::new(None),
            waiters: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
        });
        let _ = slots.insert(index, Arc::clone(&slot));
        drop(slots);
        let (ticker, node) = (Arc::clone(&slot), Arc::clone(node));
        drop(rt::task::spawn(async move { ticker.run_ticks(&node).await }));
        Ok(slot)
    }
}

impl Slot {
    /// Drops the coordinator: waiting requests see their sender dropped (NOT_COORDINATOR).
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.waiters).clear();
    }

    /// True while this broker still leads the partition in the slot's epoch.
    fn still_leading(&self, node: &Node) -> bool {
        !self.closed.load(Ordering::SeqCst)
            && node
                .leader_partition(CONSUMER_OFFSETS_TOPIC, self.index)
                .is_ok_and(|partition| partition.leader_epoch() == Some(self.leader_epoch))
    }

    /// Registers a request whose answer may come later.
    pub(crate) fn wait_for(&self, request: RequestId) -> oneshot::Receiver<Output> {
        let (sender, receiver) = oneshot::channel();
        let _ = lock(&self.waiters).insert(request, sender);
        receiver
    }

    /// Forgets a waiter that gave up.
    pub(crate) fn forget(&self, request: RequestId) {
        let _ = lock(&self.waiters).remove(&request);
    }

    /// Runs `call` on the loaded coordinator and carries out its outputs.
    ///
    /// # Errors
    /// NOT_COORDINATOR when the leadership is gone or a write failed (the slot is dropped),
    /// COORDINATOR_NOT_AVAILABLE when the partition cannot be read.
    pub(crate) async fn call<T>(
        &self,
        node: &Arc<Node>,
        call: impl FnOnce(&mut GroupCoordinator, i64) -> (T, Vec<Output>),
    ) -> Result<T, ResponseError> {
        let mut guard = self.coordinator.lock().await;
        if !self.still_leading(node) {
            self.close();
            return Err(ResponseError::NotCoordinator);
        }
        if guard.is_none() {
            match self.load(node).await {
                Ok(loaded) => *guard = Some(loaded),
                Err(error) => {
                    tracing::warn!(partition = self.index, %error, "cannot load group coordinator");
                    self.close();
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
            }
        }
        let now_ms = node.coordinator_now_ms();
        let coordinator = guard.as_mut().expect("loaded above");
        let (value, outputs) = call(coordinator, now_ms);
        match self.carry_out(node, outputs).await {
            Ok(()) => Ok(value),
            Err(error) => {
                *guard = None;
                self.close();
                Err(error)
            }
        }
    }

    /// Replays the partition into a fresh coordinator.
    async fn load(&self, node: &Arc<Node>) -> Result<GroupCoordinator, String> {
        let config = node.config.groups;
        // Member ids must not repeat those of an earlier load (which the log may hold).
        let random = rt::rand::random_uuid_bytes();
        let nonce = u64::from_be_bytes(random[..8].try_into().expect("eight bytes")) >> 16;
        let mut coordinator = GroupCoordinator::new(config, nonce);
        let now_ms = node.coordinator_now_ms();
        let log = &self.partition.log;
        let end = log.log_end_offset();
        let mut position = log.log_start_offset();
        let mut records_read: u64 = 0;
        while position < end {
            let read = log.read(position, end, LOAD_CHUNK_BYTES, true).await.map_err(|error| error.to_string())?;
            if read.bytes.is_empty() {
                break;
            }
            for batch in Batches::new(&read.bytes) {
                let (header, range) = batch.map_err(|error| error.to_string())?;
                position = header.next_offset();
                if header.is_control() {
                    continue;
                }
                let mut bytes = read.bytes.slice(range);
                let decoded = RecordBatchDecoder::decode(&mut bytes).map_err(|error| error.to_string())?;
                for record in decoded.records {
                    let Some(key) = record.key else { continue };
                    match GroupRecord::decode(&key, record.value.as_deref()) {
                        Ok(Some(group_record)) => {
                            coordinator.replay(now_ms, &group_record);
                            records_read += 1;
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(partition = self.index, offset = record.offset, %error, "skipping")
                        }
                    }
                }
            }
        }
        tracing::info!(partition = self.index, records_read, groups = coordinator.groups().len(), "loaded groups");
        Ok(coordinator)
    }

    /// Carries out outputs in order: records are written (and committed) before any answer
    /// that follows them is delivered.
    async fn carry_out(&self, node: &Arc<Node>, outputs: Vec<Output>) -> Result<(), ResponseError> {
        let mut pending: Vec<GroupRecord> = Vec::new();
        for output in outputs {
            match output {
                Output::Persist(record) => pending.push(record),
                answer => {
                    if !pending.is_empty() {
                        self.write(node, std::mem::take(&mut pending)).await?;
                    }
                    let request = match &answer {
                        Output::Join { request, .. } | Output::Sync { request, .. } => *request,
                        Output::Persist(_) => unreachable!("persists are collected above"),
                    };
                    if let Some(sender) = lock(&self.waiters).remove(&request) {
                        let _ = sender.send(answer);
                    }
                }
            }
        }
        if !pending.is_empty() {
            self.write(node, pending).await?;
        }
        Ok(())
    }

    /// Appends `records` as one batch and waits until they are committed.
    async fn write(&self, node: &Arc<Node>, records: Vec<GroupRecord>) -> Result<(), ResponseError> {
        let now_ms = node.clock.now_ms();
        let encoded: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                let (key, value) = record.encode();
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: index as i64,
                    sequence: index as i32 - 1,
                    timestamp: now_ms,
                    key: Some(key.into()),
                    value: value.map(Into::into),
                    headers: Default::default(),
                }
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &encoded,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .map_err(|error| {
            tracing::error!(%error, "cannot encode coordinator records");
            ResponseError::UnknownServerError
        })?;
        let partition = &self.partition;
        let (required, leader_epoch) = {
            let _io = partition.replica_io().await;
            let leader_epoch = partition.check_append(true).map_err(|error| {
                tracing::debug!(partition = self.index, %error, "coordinator write refused");
                ResponseError::NotCoordinator
            })?;
            if leader_epoch != self.leader_epoch {
                return Err(ResponseError::NotCoordinator);
            }
            let settings = partition.settings();
            let info = partition.append_as_leader(batch, leader_epoch, false, now_ms).await.map_err(|error| {
                tracing::warn!(partition = self.index, %error, "coordinator write failed");
                ResponseError::NotCoordinator
            })?;
            partition.appended(info.record_count, info.log_end_offset, &settings);
            (info.last_offset.plus(1), leader_epoch)
        };
        if !partition.wait_for_high_watermark(required, GROUP_WRITE_TIMEOUT_MS).await {
            return Err(ResponseError::NotCoordinator);
        }
        partition.produce_outcome(required, leader_epoch).map_err(|_| ResponseError::NotCoordinator)
    }

    /// Ticks the coordinator until the leadership is gone.
    async fn run_ticks(self: Arc<Self>, node: &Arc<Node>) {
        loop {
            rt::time::sleep(rt::time::Duration::from_millis(GROUP_TICK_INTERVAL_MS)).await;
            if !self.still_leading(node) {
                self.close();
                return;
            }
            let now_ms = node.coordinator_now_ms();
            let due = {
                let guard = self.coordinator.lock().await;
                guard.as_ref().and_then(GroupCoordinator::next_deadline_ms).is_some_and(|at| at <= now_ms)
            };
            if due {
                let _ = self.call(node, |coordinator, now_ms| ((), coordinator.tick(now_ms))).await;
            }
        }
    }
}
