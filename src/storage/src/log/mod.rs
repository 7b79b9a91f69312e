//! The partition log: an ordered run of segments holding one partition's record batches.
//!
//! # Locking
//!
//! * `append_lock` (async) serialises appends and every structural change (roll, retention,
//!   DeleteRecords, truncation, deletion). An append holds it across its disk write, so appends
//!   go one at a time, in offset order.
//! * `files_lock` (async read-write) is held shared by reads while they touch segment files and
//!   exclusively while files are removed or truncated, so a read never sees a file change under
//!   it. Appends do not take it: they only add bytes past what readers may look at.
//! * `state` (std, never held across an await) holds the segment list, offsets and indexes.
//!   An append publishes its batches here only after the write returned, so readers never see
//!   a half-written batch.
//! * `flush` takes no async lock at all: it snapshots the active segment and the end offset,
//!   fsyncs, and publishes the new durable end. Appends continue meanwhile (group commit).
//!
//! Lock order: `append_lock`, then `files_lock`, then `state`.

mod cleaner;
mod epochs;
mod producers;
mod read;
mod recovery;

#[cfg(test)]
mod cleaner_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use protocol::batch::{self, BatchHeader};
use protocol::ids::{LeaderEpoch, Offset};
use replication::epoch_cache::{EpochEnd, LeaderEpochCache};
use replication::producer_state::{ProducerBatch, ProducerStateTable, SequenceCheck};

pub use cleaner::CleanStats;

use crate::checkpoint;
use crate::config::LogConfig;
use crate::disk::{OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::limits::{APPEND_BYTES_MAX, READ_CHUNK_BYTES, RELATIVE_OFFSET_MAX};
use crate::segment::{
    remove_segment_files, scan_segment, segment_path, write_error, write_small_file, ChunkReader, Segment,
    INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION,
};
use crate::space::SpaceGuard;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record of the first batch.
    pub base_offset: Offset,
    /// Offset of the last record of the last batch.
    pub last_offset: Offset,
    /// The log end offset after the append (`last_offset + 1`).
    pub log_end_offset: Offset,
    /// The headers of the batches appended, as stored (offsets and leader epochs assigned).
    pub batches: Vec<BatchHeader>,
    /// Records appended (sum of the batches' record counts).
    pub record_count: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// True when nothing was appended because an idempotent producer's batch was already in
    /// the log: `base_offset` and `last_offset` are then the original batch's.
    pub duplicate: bool,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, concatenated, exactly as stored.
    pub bytes: Bytes,
    /// The log start offset when the read started.
    pub log_start_offset: Offset,
    /// The log end offset when the read started.
    pub log_end_offset: Offset,
}

/// One partition's log on disk. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct PartitionLog {
    /// All file I/O goes through here.
    disk: SharedDisk,
    /// The partition directory.
    dir: PathBuf,
    /// The node-wide free-space reserve.
    space: Arc<SpaceGuard>,
    /// Current config; read at the start of each operation.
    config: Mutex<LogConfig>,
    /// Serialises appends and structural changes (see the module docs).
    append_lock: rt::sync::Mutex<()>,
    /// Shared by reads, exclusive while files are removed or truncated.
    files_lock: rt::sync::RwLock<()>,
    /// Segments and offsets.
    state: RwLock<LogState>,
    /// One compaction pass at a time.
    clean_lock: rt::sync::Mutex<()>,
}

/// The in-memory view of the log.
#[derive(Debug)]
struct LogState {
    /// Sorted by base offset, contiguous (each segment's `next_offset` is the next one's base
    /// offset) and never empty; the last is the active segment, every other one is sealed and
    /// fully fsynced.
    segments: Vec<Segment>,
    /// The first offset readable. Invariant: first segment's base <= log start <= log end.
    log_start_offset: Offset,
    /// The end offset covered by the last successful fsync. Invariant: <= log end.
    durable_end_offset: Offset,
    /// Bumped by every truncation, so a flush that raced with one does not publish a stale
    /// durable end.
    truncations: u64,
    /// Set by `delete`; every later operation fails.
    deleted: bool,
    /// Which leader epoch wrote which offsets (persisted before a new epoch's first batch).
    epochs: LeaderEpochCache,
    /// Idempotent producers' sequences, derived from the batches in the log (and the
    /// snapshot).
    producers: ProducerStateTable,
    /// The producers whose batches the log deleted, as last written to `producer-snapshot`.
    producer_snapshot: Vec<ProducerBatch>,
    /// The newest `now_ms` an operation brought (the clock a rebuild after a truncation uses).
    clock_ms: i64,
    /// Where the part of the log no compaction pass has cleaned starts (in memory only; see
    /// the `cleaner` module).
    first_dirty_offset: Offset,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.last().expect("a partition log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a partition log always has an active segment")
    }

    fn log_end_offset(&self) -> Offset {
        self.active().next_offset
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }

    /// Index of the segment holding `offset` (the last one whose base is at or below it).
    fn segment_index_for(&self, offset: Offset) -> usize {
        self.segments.partition_point(|segment| segment.base_offset <= offset).saturating_sub(1)
    }

    fn assert_invariants(&self) {
        let first = self.segments.first().expect("a partition log always has an active segment");
        assert!(first.base_offset <= self.log_start_offset, "log start below the first segment");
        assert!(self.log_start_offset <= self.log_end_offset(), "log start beyond log end");
        assert!(self.durable_end_offset <= self.log_end_offset(), "durable end beyond log end");
        debug_assert!(
            self.segments.windows(2).all(|pair| pair[0].next_offset == pair[1].base_offset),
            "segments are contiguous"
        );
    }
}

/// Who is appending.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The leader: offsets are assigned here and batches stamped with its epoch.
    Leader { leader_epoch: LeaderEpoch, log_append_time: bool },
    /// A follower: batches keep the leader's offsets and epochs.
    Replica,
}

/// The byte ranges of the batches of one append, with their offset and record counts.
struct AppendPlan {
    ranges: Vec<Range<usize>>,
    offsets: i64,
    record_count: u64,
}

/// Splits an append buffer into batches by their headers.
fn plan_append(bytes: &[u8]) -> Result<AppendPlan, StorageError> {
    let mut plan = AppendPlan { ranges: Vec::new(), offsets: 0, record_count: 0 };
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..])?;
        let available = bytes.len() - position;
        let needed = header.total_bytes();
        if needed > available {
            return Err(batch::BatchError::Truncated { needed, available }.into());
        }
        plan.ranges.push(position..position + needed);
        plan.offsets += i64::from(header.last_offset_delta) + 1;
        plan.record_count += u64::try_from(header.record_count).unwrap_or(0);
        position += needed;
    }
    Ok(plan)
}

/// The leader's idempotence check of an append's batches (see
/// [`replication::producer_state`]): `Some` answer for a duplicate, which appends nothing.
fn check_producers(
    state: &LogState,
    batches: &[u8],
    plan: &AppendPlan,
    now_ms: i64,
) -> Result<Option<AppendInfo>, StorageError> {
    let mut producer_batches = Vec::new();
    for range in &plan.ranges {
        let header = BatchHeader::parse(&batches[range.clone()])?;
        producer_batches.extend(ProducerBatch::from_header(&header));
    }
    if producer_batches.is_empty() {
        return Ok(None);
    }
    match state.producers.check(&producer_batches, now_ms)? {
        SequenceCheck::Append => Ok(None),
        SequenceCheck::Duplicate { base_offset, last_offset } => Ok(Some(AppendInfo {
            base_offset,
            last_offset,
            log_end_offset: state.log_end_offset(),
            batches: Vec::new(),
            record_count: 0,
            bytes: 0,
            duplicate: true,
        })),
    }
}

/// True if the active segment must roll before an append of `bytes` spanning `offsets`.
fn roll_due(active: &Segment, config: &LogConfig, bytes: u64, offsets: i64, now_ms: i64) -> bool {
    if active.is_empty() {
        return false;
    }
    let size_due = active.size_bytes + bytes > config.segment_bytes;
    let time_due = active.rolling_base_ms.is_some_and(|base_ms| now_ms.saturating_sub(base_ms) > config.segment_ms);
    let offsets_due = active.next_offset.0 + offsets - 1 - active.base_offset.0 > RELATIVE_OFFSET_MAX;
    size_due || time_due || offsets_due
}

impl PartitionLog {
    fn state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self) -> LogConfig {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_live(&self, state: &LogState) -> Result<(), StorageError> {
        if state.deleted {
            return Err(StorageError::LogDeleted { dir: self.dir.clone() });
        }
        Ok(())
    }

    /// Appends one or more v2 record batches (a Produce partition's `records` may hold
    /// several), assigning offsets from the log end offset in order, stamping `leader_epoch`
    /// and, if `log_append_time`, LogAppendTime = `now_ms`. The batches are written with one
    /// write. Rolls the active segment first if it is due (size, `segment.ms`, or offset range).
    /// Does not fsync: see [`PartitionLog::flush`].
    ///
    /// The batches must already be validated (CRC, sizes) by the caller; only their headers are
    /// parsed here.
    ///
    /// # Errors
    /// `EmptyAppend`, `AppendTooLarge`, `AppendOffsetSpanTooLarge`, `InvalidBatch` for a buffer
    /// that is not whole batches; `DiskFull` from the space guard or ENOSPC (nothing of the
    /// append stays in the segment); `Io`; `FsyncFailed` from a roll (fatal).
    pub async fn append(
        &self,
        batches: BytesMut,
        leader_epoch: LeaderEpoch,
        log_append_time: bool,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_batches(batches, Origin::Leader { leader_epoch, log_append_time }, now_ms).await
    }

    /// A follower's append: batches exactly as the leader stored them (offsets, leader epochs,
    /// timestamps untouched), which must start at this log's end offset and follow each other.
    /// Records each new epoch in the epoch cache (durably, before the data). Does not fsync.
    ///
    /// # Errors
    /// `ReplicatedOffsetMismatch` for batches that do not continue the log; otherwise as
    /// [`PartitionLog::append`].
    pub async fn append_replicated(&self, batches: BytesMut, now_ms: i64) -> Result<AppendInfo, StorageError> {
        self.append_batches(batches, Origin::Replica, now_ms).await
    }

    async fn append_batches(
        &self,
        mut batches: BytesMut,
        origin: Origin,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let bytes = batches.len() as u64;
        if bytes == 0 {
            return Err(StorageError::EmptyAppend);
        }
        if bytes > APPEND_BYTES_MAX {
            return Err(StorageError::AppendTooLarge { bytes, bytes_max: APPEND_BYTES_MAX });
        }
        let plan = plan_append(&batches)?;
        if plan.offsets - 1 > RELATIVE_OFFSET_MAX {
            return Err(StorageError::AppendOffsetSpanTooLarge {
                offsets: plan.offsets,
                offsets_max: RELATIVE_OFFSET_MAX + 1,
            });
        }

        let _append = self.append_lock.lock().await;
        let config = self.config();
        let due = {
            let mut state = self.state_mut();
            self.check_live(&state)?;
            state.clock_ms = state.clock_ms.max(now_ms);
            if let Origin::Leader { .. } = origin {
                if let Some(duplicate) = check_producers(&state, &batches, &plan, now_ms)? {
                    return Ok(duplicate);
                }
            }
            roll_due(state.active(), &config, bytes, plan.offsets, now_ms)
        };
        if due {
            self.roll(now_ms).await?;
        }
        self.space.reserve(bytes).await?;
        let (file, path, position, base_offset) = {
            let state = self.state();
            let active = state.active();
            (Arc::clone(&active.file), active.log_path.clone(), active.size_bytes, active.next_offset)
        };

        let mut next_offset = base_offset;
        let mut headers = Vec::with_capacity(plan.ranges.len());
        let latest_epoch = self.state().epochs.latest_epoch();
        for range in &plan.ranges {
            let batch_bytes = &mut batches[range.clone()];
            if let Origin::Leader { leader_epoch, log_append_time } = origin {
                batch::set_base_offset(batch_bytes, next_offset);
                batch::set_partition_leader_epoch(batch_bytes, leader_epoch);
                if log_append_time {
                    batch::set_log_append_time(batch_bytes, now_ms);
                }
            }
            let header = match BatchHeader::parse(batch_bytes) {
                Ok(header) if header.base_offset == next_offset => header,
                Ok(header) => {
                    self.space.release(bytes);
                    return Err(StorageError::ReplicatedOffsetMismatch {
                        expected: next_offset,
                        got: header.base_offset,
                    });
                }
                Err(error) => {
                    self.space.release(bytes);
                    return Err(error.into());
                }
            };
            next_offset = header.next_offset();
            headers.push(header);
        }
        if headers.iter().any(|header| Some(header.partition_leader_epoch) > latest_epoch) {
            let mut epochs = self.state().epochs.clone();
            for header in &headers {
                let _ = epochs.assign(header.partition_leader_epoch, header.base_offset);
            }
            // Before the data: every durable batch's epoch must be in a durable checkpoint.
            if let Err(error) = epochs::write(&self.disk, &self.dir, &epochs).await {
                self.space.release(bytes);
                return Err(error);
            }
            self.state_mut().epochs = epochs;
        }

        if let Err(source) = file.write_at(position, batches.freeze()).await {
            // No partial batch may stay behind: a later append writes at `position` anyway, but
            // recovery would otherwise find the torn bytes.
            if let Err(truncate_error) = file.set_len(position).await {
                tracing::warn!(path = %path.display(), %truncate_error, "cannot cut a failed append");
            }
            self.space.release(bytes);
            return Err(write_error(&self.disk, &path, bytes, source).await);
        }

        let mut state = self.state_mut();
        for batch in headers.iter().filter_map(ProducerBatch::from_header) {
            state.producers.apply(&batch);
        }
        let active = state.active_mut();
        for header in &headers {
            active.on_batch(header, config.index_interval_bytes);
        }
        let _ = active.rolling_base_ms.get_or_insert(now_ms);
        active.last_append_ms = now_ms;
        state.assert_invariants();
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset.plus(-1),
            log_end_offset: next_offset,
            batches: headers,
            record_count: plan.record_count,
            bytes,
            duplicate: false,
        })
    }

    /// Seals the active segment and starts a new one at the log end offset: fsync the segment,
    /// write and fsync its index files, create the new segment file, fsync the directory.
    /// Called with the append lock held.
    async fn roll(&self, now_ms: i64) -> Result<(), StorageError> {
        let (file, log_path, offsets, times, new_base_offset) = {
            let state = self.state();
            let active = state.active();
            let mut index = active.index.clone();
            index.seal(active.max_timestamp);
            (
                Arc::clone(&active.file),
                active.log_path.clone(),
                index.encode_offsets(),
                index.encode_times(),
                active.next_offset,
            )
        };
        self.space.reserve((offsets.len() + times.len()) as u64).await?;
        file.sync_data().await.map_err(StorageError::fsync(&log_path))?;
        write_small_file(&self.disk, &log_path.with_extension(INDEX_EXTENSION), offsets).await?;
        write_small_file(&self.disk, &log_path.with_extension(TIME_INDEX_EXTENSION), times).await?;
        let new_path = segment_path(&self.dir, new_base_offset, LOG_EXTENSION);
        let new_file = self
            .disk
            .open_file(&new_path, OpenMode::CreateOrOpen)
            .await
            .map_err(StorageError::io(&new_path, IoOperation::Open))?;
        // A file of that name can only be debris of an earlier life; it holds nothing valid.
        new_file.set_len(0).await.map_err(StorageError::io(&new_path, IoOperation::SetLen))?;
        self.disk.sync_dir(&self.dir).await.map_err(StorageError::fsync(&self.dir))?;

        let mut state = self.state_mut();
        let active = state.active_mut();
        let max_timestamp = active.max_timestamp;
        active.index.seal(max_timestamp);
        state.segments.push(Segment::new(new_base_offset, new_file, new_path, now_ms));
        state.durable_end_offset = state.durable_end_offset.max(new_base_offset);
        state.assert_invariants();
        tracing::debug!(dir = %self.dir.display(), base_offset = %new_base_offset, "rolled segment");
        Ok(())
    }

    /// Makes everything appended so far durable (fdatasync of the active segment; sealed
    /// segments were synced when they rolled) and returns the durable end offset. Holds no
    /// lock during the fsync, so appends go on and one fsync covers every batch appended before
    /// it started (group commit). Concurrent calls are fine; a call that finds everything
    /// durable returns without syncing.
    ///
    /// # Errors
    /// [`StorageError::FsyncFailed`] (fatal for the node); `LogDeleted`.
    pub async fn flush(&self) -> Result<Offset, StorageError> {
        let (file, path, end_offset, truncations) = {
            let state = self.state();
            self.check_live(&state)?;
            let end_offset = state.log_end_offset();
            if state.durable_end_offset >= end_offset {
                return Ok(state.durable_end_offset);
            }
            let active = state.active();
            (Arc::clone(&active.file), active.log_path.clone(), end_offset, state.truncations)
        };
        file.sync_data().await.map_err(StorageError::fsync(&path))?;
        let mut state = self.state_mut();
        if state.truncations == truncations && end_offset > state.durable_end_offset {
            state.durable_end_offset = end_offset;
        }
        Ok(state.durable_end_offset)
    }

    /// The first offset readable.
    pub fn log_start_offset(&self) -> Offset {
        self.state().log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> Offset {
        self.state().log_end_offset()
    }

    /// The end offset covered by the last successful fsync (after open: the recovered end).
    pub fn durable_end_offset(&self) -> Offset {
        self.state().durable_end_offset
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that wrote to this log,
    /// and where it ends (the next epoch's start, or the log end offset).
    pub fn epoch_end_offset(&self, epoch: LeaderEpoch) -> EpochEnd {
        let state = self.state();
        state.epochs.end_offset_for(epoch, state.log_end_offset())
    }

    /// The latest leader epoch that wrote to (or was assigned at the end of) this log.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.state().epochs.latest_epoch()
    }

    /// The leader's check of a follower's fetch ([`replication::truncation::diverging_epoch`])
    /// against this log, without copying the epoch cache.
    pub fn diverging_epoch(&self, fetch_offset: Offset, last_fetched_epoch: LeaderEpoch) -> Option<EpochEnd> {
        let state = self.state();
        replication::truncation::diverging_epoch(
            &state.epochs,
            state.log_end_offset(),
            fetch_offset,
            last_fetched_epoch,
        )
    }

    /// A copy of the leader-epoch cache.
    pub fn leader_epoch_cache(&self) -> LeaderEpochCache {
        self.state().epochs.clone()
    }

    /// Records that `epoch` starts at the current log end offset (a new leader does this before
    /// its first append, so it answers for its epoch at once). Durable before returning; a no-op
    /// for an epoch not newer than the latest.
    ///
    /// # Errors
    /// `FsyncFailed`, `DiskFull`, `Io` from the checkpoint; `LogDeleted`.
    pub async fn assign_epoch(&self, epoch: LeaderEpoch) -> Result<(), StorageError> {
        let _append = self.append_lock.lock().await;
        let mut epochs = {
            let state = self.state();
            self.check_live(&state)?;
            state.epochs.clone()
        };
        let log_end_offset = self.log_end_offset();
        if epochs.assign(epoch, log_end_offset) {
            epochs::write(&self.disk, &self.dir, &epochs).await?;
            self.state_mut().epochs = epochs;
        }
        Ok(())
    }

    /// Bytes of all segments (including batches below the log start offset that share a
    /// segment with readable ones).
    pub fn size_bytes(&self) -> u64 {
        self.state().size_bytes()
    }

    /// The largest batch max timestamp in the log and the base offset of the (first) batch
    /// carrying it (ListOffsets MAX_TIMESTAMP); `None` if the log holds no batch. For the exact
    /// record, ask [`PartitionLog::offset_for_timestamp`] with that timestamp.
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        let state = self.state();
        let mut best: Option<(Offset, i64)> = None;
        for candidate in state.segments.iter().filter_map(Segment::max_timestamp_offset) {
            if best.is_none_or(|(_, timestamp_ms)| candidate.1 > timestamp_ms) {
                best = Some(candidate);
            }
        }
        best
    }

    /// Replaces the config; takes effect at the next operation. Out-of-range values are
    /// clamped (see [`LogConfig::clamped`]); validate with [`LogConfig::validate`] first.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = config.clamped();
    }

    /// DeleteRecords: raises the log start offset to `offset`, makes that durable
    /// (checkpoint), then deletes the sealed segments entirely below it. Returns the new log
    /// start offset, which never moves back.
    ///
    /// # Errors
    /// `OffsetOutOfRange` if `offset` is beyond the log end offset; `FsyncFailed`, `Io`,
    /// `DiskFull` from the checkpoint and file removal.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, StorageError> {
        let _append = self.append_lock.lock().await;
        let (log_start_offset, log_end_offset) = {
            let state = self.state();
            self.check_live(&state)?;
            (state.log_start_offset, state.log_end_offset())
        };
        if offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        if offset <= log_start_offset {
            return Ok(log_start_offset);
        }
        self.keep_producers_below(offset).await?;
        if !planted_log_start_not_durable() {
            checkpoint::write_checkpoint(&self.disk, &self.dir, offset).await?;
        }
        let count = {
            let mut state = self.state_mut();
            state.log_start_offset = offset;
            let _ = state.epochs.truncate_from_start(offset);
            // Producers keep their sequences although their batches go (KIP-360): a retry of
            // a deleted batch must still be recognised.
            let sealed = &state.segments[..state.segments.len() - 1];
            sealed.iter().take_while(|segment| segment.next_offset <= offset).count()
        };
        self.remove_oldest_segments(count).await?;
        Ok(offset)
    }

    /// Retention: deletes the oldest sealed segments (never the active one) whose newest
    /// record is older than `now_ms - retention.ms`, then while the log would still hold at
    /// least `retention.bytes` without the oldest (both only with `cleanup.policy` holding
    /// `delete`), then any entirely below the log start offset.
    /// Raises the log start offset to the new first segment (durably). Returns how many
    /// segments were deleted.
    ///
    /// # Errors
    /// `FsyncFailed`, `Io`, `DiskFull` from the checkpoint and file removal.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<u32, StorageError> {
        let _append = self.append_lock.lock().await;
        let config = self.config();
        let (count, log_start_offset, new_log_start_offset) = {
            let mut state = self.state_mut();
            self.check_live(&state)?;
            state.clock_ms = state.clock_ms.max(now_ms);
            let _ = state.producers.remove_expired(now_ms);
            let sealed = &state.segments[..state.segments.len() - 1];
            let mut count = 0;
            if config.delete && config.retention_ms >= 0 {
                let limit_ms = now_ms.saturating_sub(config.retention_ms);
                count += sealed.iter().take_while(|segment| segment.retention_timestamp_ms() < limit_ms).count();
            }
            if config.delete && config.retention_bytes >= 0 {
                let retention_bytes = config.retention_bytes as u64;
                let mut size_bytes =
                    state.size_bytes() - sealed[..count].iter().map(|segment| segment.size_bytes).sum::<u64>();
                for segment in &sealed[count..] {
                    if size_bytes - segment.size_bytes < retention_bytes {
                        break;
                    }
                    size_bytes -= segment.size_bytes;
                    count += 1;
                }
            }
            count += sealed[count..].iter().take_while(|segment| segment.next_offset <= state.log_start_offset).count();
            let new_log_start_offset = state.log_start_offset.max(state.segments[count].base_offset);
            (count, state.log_start_offset, new_log_start_offset)
        };
        if count == 0 {
            return Ok(0);
        }
        if new_log_start_offset > log_start_offset {
            self.keep_producers_below(new_log_start_offset).await?;
            checkpoint::write_checkpoint(&self.disk, &self.dir, new_log_start_offset).await?;
            let mut state = self.state_mut();
            state.log_start_offset = new_log_start_offset;
            let _ = state.epochs.truncate_from_start(new_log_start_offset);
        }
        self.remove_oldest_segments(count).await?;
        tracing::debug!(dir = %self.dir.display(), count, "retention deleted segments");
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Before the log start moves to `offset`: durably keeps aside the producers whose batches
    /// all lie below it, so a restart still knows them. Called with the append lock held.
    async fn keep_producers_below(&self, offset: Offset) -> Result<(), StorageError> {
        let kept = self.state().producers.producers_below(offset);
        if kept != self.state().producer_snapshot {
            producers::write_snapshot(&self.disk, &self.dir, &kept).await?;
            self.state_mut().producer_snapshot = kept;
        }
        Ok(())
    }

    /// Drops the `count` oldest segments from the state, then deletes their files. The caller
    /// holds the append lock and has raised the log start offset past them.
    async fn remove_oldest_segments(&self, count: usize) -> Result<(), StorageError> {
        if count == 0 {
            return Ok(());
        }
        let _files = self.files_lock.write().await;
        let removed: Vec<(Offset, u64)> = {
            let mut state = self.state_mut();
            assert!(count < state.segments.len(), "the active segment is never removed");
            let removed =
                state.segments.drain(..count).map(|segment| (segment.base_offset, segment.size_bytes)).collect();
            state.assert_invariants();
            removed
        };
        for (base_offset, _) in &removed {
            remove_segment_files(&self.disk, &self.dir, *base_offset).await?;
        }
        self.disk.sync_dir(&self.dir).await.map_err(StorageError::fsync(&self.dir))?;
        self.space.release(removed.iter().map(|(_, size_bytes)| size_bytes).sum());
        Ok(())
    }

    /// Removes every batch at and after `offset`, and every leader epoch starting there or
    /// later (even when no batch goes). Batches are whole, so the batch holding
    /// `offset` goes entirely and the new log end offset is its base offset (`offset` itself
    /// when `offset` is a batch boundary). Truncating at or below the log start offset empties
    /// the log and sets log start = log end = `offset`; a cut that would fall below the log
    /// start offset empties the log at the log start offset. Durable before returning.
    ///
    /// # Errors
    /// `OffsetOutOfRange` for a negative offset; `FsyncFailed`, `Io`, `DiskFull`,
    /// `CorruptSegment`.
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), StorageError> {
        let _append = self.append_lock.lock().await;
        let _files = self.files_lock.write().await;
        let (log_start_offset, log_end_offset, at) = {
            let state = self.state();
            self.check_live(&state)?;
            (state.log_start_offset, state.log_end_offset(), state.segment_index_for(offset))
        };
        if offset.0 < 0 {
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        if offset >= log_end_offset {
            // No data goes, but an epoch that starts at the cut and wrote nothing (a leader
            // that appended nothing before it became a follower) does: the follower's last
            // fetched epoch must be one that wrote to its log.
            let mut epochs = self.state().epochs.clone();
            if epochs.truncate_from_end(offset) {
                epochs::write(&self.disk, &self.dir, &epochs).await?;
                self.state_mut().epochs = epochs;
            }
            return Ok(());
        }
        if offset <= log_start_offset {
            return self.truncate_fully(offset).await;
        }
        let (cut_position, cut_offset) = self.locate_batch(at, offset).await?;
        if cut_offset < log_start_offset {
            return self.truncate_fully(log_start_offset).await;
        }
        // A cut at the very start of a later segment removes that segment whole and reopens
        // the previous (sealed, whole) one for appends.
        let (keep, cut) = if cut_position == 0 && at > 0 { (at - 1, None) } else { (at, Some(cut_position)) };
        let doomed: Vec<(Offset, u64)> = {
            let state = self.state();
            state.segments[keep + 1..].iter().rev().map(|segment| (segment.base_offset, segment.size_bytes)).collect()
        };
        for (base_offset, _) in &doomed {
            remove_segment_files(&self.disk, &self.dir, *base_offset).await?;
        }
        if !doomed.is_empty() {
            self.disk.sync_dir(&self.dir).await.map_err(StorageError::fsync(&self.dir))?;
        }
        let mut freed_bytes: u64 = doomed.iter().map(|(_, size_bytes)| size_bytes).sum();
        let rebuilt = match cut {
            None => None,
            Some(position) => {
                let (file, path, base_offset, size_bytes, rolling_base_ms, last_append_ms) = {
                    let state = self.state();
                    let segment = &state.segments[keep];
                    (
                        Arc::clone(&segment.file),
                        segment.log_path.clone(),
                        segment.base_offset,
                        segment.size_bytes,
                        segment.rolling_base_ms,
                        segment.last_append_ms,
                    )
                };
                file.set_len(position).await.map_err(StorageError::io(&path, IoOperation::SetLen))?;
                file.sync_data().await.map_err(StorageError::fsync(&path))?;
                freed_bytes += size_bytes - position;
                let mut segment = Segment::new(base_offset, file, path, last_append_ms);
                let walk = scan_segment(&mut segment, position, self.config().index_interval_bytes).await?;
                if !walk.clean || walk.next_offset != cut_offset {
                    return Err(StorageError::CorruptSegment { path: segment.log_path, position: walk.position });
                }
                segment.rolling_base_ms = if segment.is_empty() { None } else { rolling_base_ms };
                Some(segment)
            }
        };
        let mut epochs = self.state().epochs.clone();
        if epochs.truncate_from_end(cut_offset) {
            epochs::write(&self.disk, &self.dir, &epochs).await?;
        }
        // The producer table must forget the sequences cut: rebuilt from what stays.
        let (views, snapshot, clock_ms) = {
            let state = self.state();
            let mut views: Vec<producers::SegmentView> =
                state.segments[..keep].iter().map(producers::SegmentView::of).collect();
            views.push(producers::SegmentView::of(rebuilt.as_ref().unwrap_or(&state.segments[keep])));
            (views, state.producer_snapshot.clone(), state.clock_ms)
        };
        let expiration_ms = self.config().producer_id_expiration_ms;
        let table = producers::rebuild(&views, &snapshot, log_start_offset, expiration_ms, clock_ms).await?;
        let mut state = self.state_mut();
        state.epochs = epochs;
        state.producers = table;
        state.segments.truncate(keep + 1);
        if let Some(segment) = rebuilt {
            state.segments[keep] = segment;
        }
        let active = state.active_mut();
        if active.rolling_base_ms.is_none() && !active.is_empty() {
            let reopened_ms = active.first_timestamp_ms.filter(|timestamp_ms| *timestamp_ms >= 0);
            active.rolling_base_ms = Some(reopened_ms.unwrap_or(active.last_append_ms));
        }
        let log_end_offset = state.log_end_offset();
        state.durable_end_offset = state.durable_end_offset.min(log_end_offset);
        state.first_dirty_offset = state.first_dirty_offset.min(log_end_offset);
        state.truncations += 1;
        state.assert_invariants();
        drop(state);
        self.space.release(freed_bytes);
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (log start = log end = `offset`), which may
    /// be past the current end: a follower whose leader no longer holds anything it has.
    /// Durable before returning.
    ///
    /// # Errors
    /// `OffsetOutOfRange` for a negative offset; `FsyncFailed`, `Io`, `DiskFull`.
    pub async fn truncate_fully_to(&self, offset: Offset) -> Result<(), StorageError> {
        let _append = self.append_lock.lock().await;
        let _files = self.files_lock.write().await;
        {
            let state = self.state();
            self.check_live(&state)?;
            if offset.0 < 0 {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.log_end_offset(),
                });
            }
        }
        self.truncate_fully(offset).await
    }

    /// The position and base offset of the batch holding `offset` in segment `at`.
    async fn locate_batch(&self, at: usize, offset: Offset) -> Result<(u64, Offset), StorageError> {
        let (file, path, start_position, end_position) = {
            let state = self.state();
            let segment = &state.segments[at];
            (Arc::clone(&segment.file), segment.log_path.clone(), segment.position_floor(offset), segment.size_bytes)
        };
        let mut reader = ChunkReader::new(file.as_ref(), &path, end_position, READ_CHUNK_BYTES);
        let mut position = start_position;
        while position < end_position {
            let header = read::read_header(&mut reader, &path, position).await?;
            if header.next_offset() > offset {
                return Ok((position, header.base_offset));
            }
            position += header.total_bytes() as u64;
        }
        Err(StorageError::CorruptSegment { path, position })
    }

    /// Empties the log: log start = log end = `offset`. Locks held by the caller.
    async fn truncate_fully(&self, offset: Offset) -> Result<(), StorageError> {
        producers::write_snapshot(&self.disk, &self.dir, &[]).await?;
        checkpoint::write_checkpoint(&self.disk, &self.dir, offset).await?;
        epochs::write(&self.disk, &self.dir, &LeaderEpochCache::new()).await?;
        let (doomed, last_append_ms): (Vec<Offset>, i64) = {
            let state = self.state();
            (state.segments.iter().rev().map(|segment| segment.base_offset).collect(), state.active().last_append_ms)
        };
        for base_offset in doomed {
            remove_segment_files(&self.disk, &self.dir, base_offset).await?;
        }
        let segment = recovery::create_segment(&self.disk, &self.dir, offset, last_append_ms).await?;
        let mut state = self.state_mut();
        let freed_bytes = state.size_bytes();
        state.segments = vec![segment];
        state.epochs = LeaderEpochCache::new();
        state.producers = producers::new_table(self.config().producer_id_expiration_ms);
        state.producer_snapshot = Vec::new();
        state.log_start_offset = offset;
        state.durable_end_offset = offset;
        state.first_dirty_offset = offset;
        state.truncations += 1;
        state.assert_invariants();
        drop(state);
        self.space.release(freed_bytes);
        tracing::debug!(dir = %self.dir.display(), %offset, "truncated the whole log");
        Ok(())
    }

    /// Deletes the partition directory and everything in it. Every later operation fails with
    /// `LogDeleted`.
    ///
    /// # Errors
    /// `Io` if the directory cannot be removed; `FsyncFailed` if its parent cannot be synced.
    pub async fn delete(&self) -> Result<(), StorageError> {
        let _append = self.append_lock.lock().await;
        let _files = self.files_lock.write().await;
        let freed_bytes = {
            let mut state = self.state_mut();
            if state.deleted {
                return Ok(());
            }
            state.deleted = true;
            state.size_bytes()
        };
        match self.disk.remove_dir_all(&self.dir).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io(&self.dir, IoOperation::Remove)(error)),
        }
        if let Some(parent) = self.dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            self.disk.sync_dir(parent).await.map_err(StorageError::fsync(parent))?;
        }
        self.space.release(freed_bytes);
        Ok(())
    }
}

/// Planted bug "log-start-not-durable": DeleteRecords raises the log start offset in memory
/// only, so a crash brings deleted records back. Only with the `planted-bugs` feature and
/// `WEIR_PLANTED_BUG=log-start-not-durable`; the simulator's deletion checks must catch it.
fn planted_log_start_not_durable() -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        std::env::var("WEIR_PLANTED_BUG").is_ok_and(|bug| bug == "log-start-not-durable")
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        false
    }
}
