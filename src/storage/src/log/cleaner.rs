//! Log compaction (`cleanup.policy=compact`): keeps the latest record of each key.
//!
//! # What a pass does
//!
//! [`PartitionLog::clean`] looks at the *cleanable* segments: sealed, entirely below the
//! caller's upper bound (the high watermark: a record that could still be truncated must never
//! hide an older, committed value of its key), holding no record younger than
//! `min.compaction.lag.ms`, and not entirely below the log start offset. The part from the
//! first dirty offset on (what no pass has compacted yet; a pass sets it to the end of what it
//! mapped) is *dirty*; a pass runs only when dirty bytes are at least
//! `min.cleanable.dirty.ratio` of the cleanable bytes.
//!
//! 1. **Map.** Walk the dirty segments and note, per key, the offset of its latest record. The
//!    map is bounded by [`KEY_MAP_BYTES_MAX`]: when a segment takes it past the bound, the
//!    mapping stops after that segment and the rest stays dirty for the next pass.
//! 2. **Copy.** Rewrite each cleanable segment up to the end of the mapped part into
//!    `{base}.log.cleaned`. A record stays if its key has no later record in the map; records
//!    without a key go (a compacted topic refuses them at produce); a tombstone (null value)
//!    also goes once it lies in the part a previous pass cleaned and its batch is older than
//!    `delete.retention.ms`. A batch keeps its base offset, last offset delta, timestamps,
//!    producer fields and codec; only its records, count, length and CRC change (records are
//!    copied byte for byte, see [`protocol::record`]). A batch with no record left goes,
//!    unless it is one of the last batches the producer table retains for its producer: it
//!    stays, empty, so a table rebuilt from the log after a restart still knows the producer's
//!    sequence (Kafka keeps such batches too).
//! 3. **Fill.** Offsets are never reused or renumbered: each run of removed batches becomes
//!    one empty batch with no producer that spans exactly their offsets (split where the
//!    leader epoch changes, so a follower's epoch cache stays exact). Batches therefore stay
//!    contiguous, which every reader, the recovery walk and the follower's append rely on;
//!    clients skip empty batches and continue after their last offset, as they do with
//!    Kafka's emptied batches. The fillers cost one 61-byte header per run of removed
//!    batches, bounded by the number of batches that stay.
//! 4. **Swap.** With the append lock and the files lock held (briefly: no copying happens
//!    under them) the cleaner checks the segment is unchanged (same base, size and end; a
//!    truncation or retention may have moved it), deletes the old index files, renames the
//!    fsynced `.cleaned` file over the segment, fsyncs the directory, and then writes the new
//!    index files. A segment the pass would not change is not rewritten.
//!
//! # Crash safety
//!
//! At every point a crash leaves, for each segment, either the old file or the new one, both
//! complete and both holding the same offsets: the `.cleaned` file is fsynced before the
//! rename, and a missing index makes recovery scan the segment (CRC-checking every batch).
//! Recovery deletes leftover `.cleaned` files. The first dirty offset lives in memory only: a
//! restarted log treats everything as dirty and its first pass compacts the whole log again.
//!
//! # Concurrency
//!
//! One pass at a time per log (`clean_lock`). Produce and fetch go on throughout: the copy
//! reads sealed segment files, which appends never touch, without any lock, and fetches see
//! either the old or the new segment, never a mix (the swap holds the files lock exclusively).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use protocol::batch::BatchHeader;
use protocol::ids::{LeaderEpoch, Offset, ProducerId};
use protocol::record::{self, RawRecord};

use super::{read, PartitionLog};
use crate::disk::{DiskFile, OpenMode};
use crate::error::{IoOperation, StorageError};
use crate::limits::{CLEAN_WRITE_BYTES, KEY_MAP_BYTES_MAX, KEY_MAP_ENTRY_OVERHEAD_BYTES, SCAN_CHUNK_BYTES};
use crate::segment::{
    write_error, write_small_file, ChunkReader, Segment, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION,
};

/// Suffix of a segment's copy while the cleaner writes it.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// What a cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten.
    pub segments_cleaned: u32,
    /// Records removed (superseded, keyless, or expired tombstones).
    pub records_removed: u64,
    /// Bytes of the rewritten segments before the pass.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after the pass.
    pub bytes_after: u64,
    /// Where the dirty part of the log now starts.
    pub first_dirty_offset: Offset,
}

/// A sealed segment as the pass found it.
#[derive(Debug, Clone)]
struct Source {
    base_offset: Offset,
    next_offset: Offset,
    size_bytes: u64,
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    last_append_ms: i64,
    first_timestamp_ms: Option<i64>,
}

impl Source {
    fn of(segment: &Segment) -> Source {
        Source {
            base_offset: segment.base_offset,
            next_offset: segment.next_offset,
            size_bytes: segment.size_bytes,
            file: Arc::clone(&segment.file),
            path: segment.log_path.clone(),
            last_append_ms: segment.last_append_ms,
            first_timestamp_ms: segment.first_timestamp_ms,
        }
    }
}

/// Walks the batches of a sealed segment file, handing out each with its bytes.
struct BatchWalk<'a> {
    reader: ChunkReader<'a>,
    path: &'a std::path::Path,
    position: u64,
}

impl<'a> BatchWalk<'a> {
    fn new(source: &'a Source) -> Self {
        BatchWalk {
            reader: ChunkReader::new(source.file.as_ref(), &source.path, source.size_bytes, SCAN_CHUNK_BYTES),
            path: &source.path,
            position: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<(BatchHeader, Bytes)>, StorageError> {
        if self.position >= self.reader.end_position() {
            return Ok(None);
        }
        let header = read::read_header(&mut self.reader, self.path, self.position).await?;
        let bytes = self
            .reader
            .bytes(self.position, header.total_bytes())
            .await?
            .ok_or(StorageError::CorruptSegment { path: self.path.to_owned(), position: self.position })?;
        self.position += header.total_bytes() as u64;
        Ok(Some((header, bytes)))
    }
}

/// The records of a batch the cleaner can look into; `None` for control batches and for a
/// batch whose records do not parse (kept whole, with a warning).
fn records_of(header: &BatchHeader, bytes: &Bytes, path: &std::path::Path) -> Option<Vec<RawRecord>> {
    if header.is_control() {
        return None;
    }
    match record::batch_records(header, bytes) {
        Ok(records) => Some(records),
        Err(error) => {
            tracing::warn!(path = %path.display(), base_offset = %header.base_offset, %error, "cleaner keeps a batch it cannot read");
            None
        }
    }
}

/// Latest offset of each key in the mapped part of the log.
#[derive(Debug, Default)]
struct KeyMap {
    latest: HashMap<Bytes, Offset>,
    bytes: usize,
}

impl KeyMap {
    fn insert(&mut self, key: &Bytes, offset: Offset) {
        match self.latest.get_mut(key) {
            Some(latest) => *latest = (*latest).max(offset),
            None => {
                self.bytes += key.len() + KEY_MAP_ENTRY_OVERHEAD_BYTES;
                // A copy, so the map does not pin the segment chunk the key was read from.
                let _ = self.latest.insert(Bytes::copy_from_slice(key), offset);
            }
        }
    }

    /// True if `key` has a record after `offset` in the mapped part.
    fn superseded(&self, key: &Bytes, offset: Offset) -> bool {
        self.latest.get(key).is_some_and(|latest| *latest > offset)
    }
}

/// The rules a pass applies to each record.
struct Retain<'a> {
    map: &'a KeyMap,
    /// Tombstones below this offset were seen by an earlier pass.
    previous_first_dirty: Offset,
    /// Tombstones in batches older than this go.
    tombstone_horizon_ms: i64,
}

impl Retain<'_> {
    fn keeps(&self, header: &BatchHeader, record: &RawRecord) -> bool {
        let Some(key) = &record.key else { return false };
        let offset = header.base_offset.plus(i64::from(record.offset_delta));
        if self.map.superseded(key, offset) {
            return false;
        }
        !(record.is_tombstone && offset < self.previous_first_dirty && header.max_timestamp < self.tombstone_horizon_ms)
    }
}

/// A run of removed batches, waiting to become one empty batch.
#[derive(Debug, Clone, Copy)]
struct Gap {
    base_offset: Offset,
    last_offset: Offset,
    leader_epoch: LeaderEpoch,
    base_timestamp: i64,
    max_timestamp: i64,
}

/// The cleaned copy of one segment, written as it is built.
struct CleanedCopy<'a> {
    log: &'a PartitionLog,
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    segment: Segment,
    pending: BytesMut,
    written_bytes: u64,
    gap: Option<Gap>,
    changed: bool,
    interval_bytes: u64,
}

impl CleanedCopy<'_> {
    async fn push(&mut self, batch: &[u8]) -> Result<(), StorageError> {
        self.close_gap().await?;
        self.append(batch).await
    }

    async fn append(&mut self, batch: &[u8]) -> Result<(), StorageError> {
        let header = BatchHeader::parse(batch)?;
        self.segment.on_batch(&header, self.interval_bytes);
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= CLEAN_WRITE_BYTES {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = self.pending.split().freeze();
        let length = bytes.len() as u64;
        self.log.space.reserve(length).await?;
        if let Err(source) = self.file.write_at(self.written_bytes, bytes).await {
            self.log.space.release(length);
            return Err(write_error(&self.log.disk, &self.path, length, source).await);
        }
        self.written_bytes += length;
        Ok(())
    }

    /// Adds a removed batch to the current gap (a new gap where the leader epoch changes).
    /// Only an earlier pass's filler standing alone leaves the segment unchanged.
    async fn remove(&mut self, header: &BatchHeader) -> Result<(), StorageError> {
        if header.record_count > 0 || header.producer_id >= 0 {
            self.changed = true;
        }
        if let Some(gap) = self.gap.as_mut() {
            if gap.leader_epoch == header.partition_leader_epoch && gap.last_offset.plus(1) == header.base_offset {
                self.changed = true;
                gap.last_offset = header.last_offset();
                gap.max_timestamp = gap.max_timestamp.max(header.max_timestamp);
                return Ok(());
            }
        }
        self.close_gap().await?;
        self.gap = Some(Gap {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            leader_epoch: header.partition_leader_epoch,
            base_timestamp: header.base_timestamp,
            max_timestamp: header.max_timestamp,
        });
        Ok(())
    }

    async fn close_gap(&mut self) -> Result<(), StorageError> {
        let Some(gap) = self.gap.take() else { return Ok(()) };
        let span = gap.last_offset.0 - gap.base_offset.0;
        let last_offset_delta = i32::try_from(span).expect("a gap lies within one segment's offset range");
        let filler = record::empty_batch(
            gap.base_offset,
            last_offset_delta,
            gap.leader_epoch,
            gap.base_timestamp,
            gap.max_timestamp,
        );
        self.append(&filler).await
    }
}

impl PartitionLog {
    /// One compaction pass (see the `cleaner` module docs), cleaning only below `upper` (the
    /// high watermark). `None` if the log is not compacted, or nothing is due (no sealed
    /// segment below `upper` old enough, or a dirty ratio below `min.cleanable.dirty.ratio`).
    ///
    /// # Errors
    /// `DiskFull` if the copy does not fit (nothing changes; the copy is removed); `Io`,
    /// `FsyncFailed`, `CorruptSegment`, `LogDeleted`.
    pub async fn clean(&self, now_ms: i64, upper: Offset) -> Result<Option<CleanStats>, StorageError> {
        let _cleaning = self.clean_lock.lock().await;
        let config = self.config();
        if !config.compact {
            return Ok(None);
        }
        let (sources, previous_first_dirty) = {
            let state = self.state();
            self.check_live(&state)?;
            let limit = upper.min(state.active().base_offset);
            let lag_limit_ms = now_ms.saturating_sub(config.min_compaction_lag_ms);
            let sources: Vec<Source> = state.segments[..state.segments.len() - 1]
                .iter()
                .take_while(|segment| segment.next_offset <= limit)
                .take_while(|segment| {
                    config.min_compaction_lag_ms == 0 || segment.retention_timestamp_ms() <= lag_limit_ms
                })
                .filter(|segment| segment.next_offset > state.log_start_offset)
                .map(Source::of)
                .collect();
            (sources, state.first_dirty_offset)
        };
        let dirty_at = sources.partition_point(|source| source.next_offset <= previous_first_dirty);
        let dirty_bytes: u64 = sources[dirty_at..].iter().map(|source| source.size_bytes).sum();
        let total_bytes: u64 = sources.iter().map(|source| source.size_bytes).sum();
        if dirty_bytes == 0 || (dirty_bytes as f64) < config.min_cleanable_dirty_ratio * total_bytes as f64 {
            return Ok(None);
        }

        let mut map = KeyMap::default();
        let mut mapped = dirty_at;
        while mapped < sources.len() && map.bytes < KEY_MAP_BYTES_MAX {
            let source = &sources[mapped];
            let mut walk = BatchWalk::new(source);
            while let Some((header, bytes)) = walk.next().await? {
                for record in records_of(&header, &bytes, &source.path).unwrap_or_default() {
                    if let Some(key) = &record.key {
                        map.insert(key, header.base_offset.plus(i64::from(record.offset_delta)));
                    }
                }
            }
            mapped += 1;
        }
        let first_dirty_offset = sources[mapped - 1].next_offset;
        let retain = Retain {
            map: &map,
            previous_first_dirty,
            tombstone_horizon_ms: now_ms.saturating_sub(config.delete_retention_ms),
        };

        let mut stats = CleanStats { first_dirty_offset, ..CleanStats::default() };
        for source in &sources[..mapped] {
            let Some((segment, removed)) = self.copy_segment(source, &retain, config.index_interval_bytes).await?
            else {
                continue;
            };
            let bytes_after = segment.size_bytes;
            if self.swap_segment(source, segment).await? {
                stats.segments_cleaned += 1;
                stats.records_removed += removed;
                stats.bytes_before += source.size_bytes;
                stats.bytes_after += bytes_after;
            }
        }
        {
            let mut state = self.state_mut();
            state.first_dirty_offset = state.first_dirty_offset.max(first_dirty_offset).min(state.log_end_offset());
        }
        tracing::debug!(dir = %self.dir.display(), ?stats, "cleaned log");
        Ok(Some(stats))
    }

    /// Writes the cleaned copy of `source`; `None` if cleaning would not change it. Returns the
    /// copy (as a segment over the `.cleaned` file, fsynced) and how many records it dropped.
    async fn copy_segment(
        &self,
        source: &Source,
        retain: &Retain<'_>,
        interval_bytes: u64,
    ) -> Result<Option<(Segment, u64)>, StorageError> {
        let path = cleaned_path(&source.path);
        let file = self
            .disk
            .open_file(&path, OpenMode::CreateOrOpen)
            .await
            .map_err(StorageError::io(&path, IoOperation::Open))?;
        file.set_len(0).await.map_err(StorageError::io(&path, IoOperation::SetLen))?;
        let mut copy = CleanedCopy {
            log: self,
            file: Arc::clone(&file),
            path: path.clone(),
            segment: Segment::new(source.base_offset, Arc::clone(&file), path.clone(), source.last_append_ms),
            pending: BytesMut::new(),
            written_bytes: 0,
            gap: None,
            changed: false,
            interval_bytes,
        };
        let result = self.fill_copy(source, retain, &mut copy).await;
        let reserved = copy.written_bytes;
        let outcome = match result {
            Ok(removed) if copy.changed && planted_cleaner_skips_fsync() => Ok(Some(removed)),
            Ok(removed) if copy.changed => match file.sync_data().await {
                Ok(()) => Ok(Some(removed)),
                Err(error) => Err(StorageError::fsync(&path)(error)),
            },
            Ok(_) => Ok(None),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(Some(removed)) => {
                let mut segment = copy.segment;
                assert_eq!(segment.next_offset, source.next_offset, "a cleaned segment covers the same offsets");
                segment.first_timestamp_ms = source.first_timestamp_ms;
                Ok(Some((segment, removed)))
            }
            other => {
                drop(copy);
                self.space.release(reserved);
                self.remove_copy(&path).await;
                other.map(|_| None)
            }
        }
    }

    async fn fill_copy(
        &self,
        source: &Source,
        retain: &Retain<'_>,
        copy: &mut CleanedCopy<'_>,
    ) -> Result<u64, StorageError> {
        let mut removed = 0;
        let mut walk = BatchWalk::new(source);
        while let Some((header, bytes)) = walk.next().await? {
            let Some(records) = records_of(&header, &bytes, &source.path) else {
                copy.push(&bytes).await?;
                continue;
            };
            let kept: Vec<RawRecord> = records.iter().filter(|record| retain.keeps(&header, record)).cloned().collect();
            removed += (records.len() - kept.len()) as u64;
            if kept.len() == records.len() && !kept.is_empty() {
                copy.push(&bytes).await?;
            } else if !kept.is_empty() || self.producer_retains(&header) {
                if kept.len() != records.len() {
                    copy.changed = true;
                }
                match record::rebuild_batch(&header, &bytes, &kept) {
                    Ok(rebuilt) => copy.push(&rebuilt).await?,
                    Err(error) => {
                        tracing::warn!(path = %source.path.display(), base_offset = %header.base_offset, %error, "cleaner keeps a batch it cannot rebuild");
                        removed -= (records.len() - kept.len()) as u64;
                        copy.push(&bytes).await?;
                    }
                }
            } else {
                copy.remove(&header).await?;
            }
        }
        copy.close_gap().await?;
        copy.write_pending().await?;
        Ok(removed)
    }

    /// True if the batch is one of the last batches its producer's entry retains.
    fn producer_retains(&self, header: &BatchHeader) -> bool {
        header.producer_id >= 0 && self.state().producers.retains(ProducerId(header.producer_id), header.base_offset)
    }

    /// Replaces `source` with its cleaned copy if the segment is still as the pass found it;
    /// false (and the copy removed) if it changed meanwhile.
    async fn swap_segment(&self, source: &Source, mut segment: Segment) -> Result<bool, StorageError> {
        let copy_path = segment.log_path.clone();
        let _append = self.append_lock.lock().await;
        let _files = self.files_lock.write().await;
        let at = {
            let state = self.state();
            let live = self.check_live(&state).is_ok();
            let at = state.segments[..state.segments.len() - 1].iter().position(|segment| {
                segment.base_offset == source.base_offset
                    && segment.size_bytes == source.size_bytes
                    && segment.next_offset == source.next_offset
            });
            at.filter(|_| live)
        };
        let Some(at) = at else {
            self.space.release(segment.size_bytes);
            self.remove_copy(&copy_path).await;
            return Ok(false);
        };
        for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
            let index_path = source.path.with_extension(extension);
            match self.disk.remove_file(&index_path).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(StorageError::io(&index_path, IoOperation::Remove)(error)),
            }
        }
        self.disk.sync_dir(&self.dir).await.map_err(StorageError::fsync(&self.dir))?;
        self.disk.rename(&copy_path, &source.path).await.map_err(StorageError::io(&copy_path, IoOperation::Rename))?;
        self.disk.sync_dir(&self.dir).await.map_err(StorageError::fsync(&self.dir))?;
        let file = self
            .disk
            .open_file(&source.path, OpenMode::Existing)
            .await
            .map_err(StorageError::io(&source.path, IoOperation::Open))?;
        segment.file = file;
        segment.log_path = source.path.clone();
        let max_timestamp = segment.max_timestamp;
        segment.index.seal(max_timestamp);
        let (offsets, times) = (segment.index.encode_offsets(), segment.index.encode_times());
        {
            let mut state = self.state_mut();
            state.segments[at] = segment;
            state.assert_invariants();
        }
        self.space.release(source.size_bytes);
        // The log is whole without these (recovery scans a segment with no index files).
        write_small_file(&self.disk, &source.path.with_extension(INDEX_EXTENSION), offsets).await?;
        write_small_file(&self.disk, &source.path.with_extension(TIME_INDEX_EXTENSION), times).await?;
        Ok(true)
    }

    /// Removes a `.cleaned` copy that will not be used (a failure to do so only leaves debris
    /// that recovery removes).
    async fn remove_copy(&self, path: &std::path::Path) {
        if let Err(error) = self.disk.remove_file(path).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "cannot remove a cleaner copy");
            }
        }
    }
}

/// The path the cleaner writes the copy of the segment at `log_path` to.
pub(crate) fn cleaned_path(log_path: &std::path::Path) -> PathBuf {
    let mut name = log_path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(CLEANED_SUFFIX);
    log_path.with_file_name(name)
}

/// True for the name of a cleaner copy (`{base}.log.cleaned`), which recovery removes.
pub(crate) fn is_cleaned_name(name: &str) -> bool {
    name.strip_suffix(CLEANED_SUFFIX).is_some_and(|rest| rest.ends_with(&format!(".{LOG_EXTENSION}")))
}

/// Planted bug "cleaner-skips-fsync": the cleaned copy is renamed over its segment without
/// being fsynced, so a crash can leave the segment short of its records. Only with the
/// `planted-bugs` feature and `WEIR_PLANTED_BUG=cleaner-skips-fsync`; the simulator's
/// compaction checks must catch it.
fn planted_cleaner_skips_fsync() -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        std::env::var("WEIR_PLANTED_BUG").is_ok_and(|bug| bug == "cleaner-skips-fsync")
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        false
    }
}
