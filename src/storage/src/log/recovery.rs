//! Opening a partition log: finding its segments, recovering the tail after a crash, and
//! loading or rebuilding indexes.
//!
//! Sealed segments were fsynced with their index files before the next segment was created, so
//! they load from their index files after a consistency check (and a validating walk of the
//! batches after the last index entry). The active segment may end in a torn, corrupt or
//! unsynced batch: it is scanned batch by batch with CRC validation and contiguous offsets, and
//! cut at the first bad batch. Any segment after a cut (or not continuing its predecessor's
//! offsets) is deleted. Nothing here may panic on arbitrary file contents.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use protocol::ids::Offset;

use super::{LogState, PartitionLog};
use crate::checkpoint::{self, CHECKPOINT_TEMP_NAME};
use crate::config::LogConfig;
use crate::disk::{OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::segment::{
    load_sealed_segment, parse_segment_name, remove_segment_files, scan_segment, segment_path, Segment, LOG_EXTENSION,
};
use crate::space::SpaceGuard;

/// Creates an empty segment file at `base_offset` (replacing debris of that name) and makes
/// its directory entry durable.
pub(super) async fn create_segment(
    disk: &SharedDisk,
    dir: &Path,
    base_offset: Offset,
    now_ms: i64,
) -> Result<Segment, StorageError> {
    let path = segment_path(dir, base_offset, LOG_EXTENSION);
    let file =
        disk.open_file(&path, OpenMode::CreateOrOpen).await.map_err(StorageError::io(&path, IoOperation::Open))?;
    file.set_len(0).await.map_err(StorageError::io(&path, IoOperation::SetLen))?;
    disk.sync_dir(dir).await.map_err(StorageError::fsync(dir))?;
    Ok(Segment::new(base_offset, file, path, now_ms))
}

/// Opens every segment in order, loading sealed ones from their indexes and scanning the rest.
/// Returns the recovered segments and the base offsets of segment files to delete.
async fn recover_segments(
    disk: &SharedDisk,
    dir: &Path,
    base_offsets: &[Offset],
    interval_bytes: u64,
    now_ms: i64,
) -> Result<(Vec<Segment>, Vec<Offset>), StorageError> {
    let mut segments: Vec<Segment> = Vec::new();
    for (at, &base_offset) in base_offsets.iter().enumerate() {
        if segments.last().is_some_and(|previous| previous.next_offset != base_offset) {
            tracing::warn!(
                dir = %dir.display(),
                %base_offset,
                "segment does not continue the log; deleting it and later ones"
            );
            return Ok((segments, base_offsets[at..].to_vec()));
        }
        let path = segment_path(dir, base_offset, LOG_EXTENSION);
        let file =
            disk.open_file(&path, OpenMode::Existing).await.map_err(StorageError::io(&path, IoOperation::Open))?;
        let file_bytes = file.len().await.map_err(StorageError::io(&path, IoOperation::Length))?;
        let segment = Segment::new(base_offset, file, path, now_ms);
        let next_base_offset = base_offsets.get(at + 1).copied();
        let mut segment = match next_base_offset {
            Some(next_base_offset) => match load_sealed_segment(disk, segment, file_bytes, next_base_offset).await? {
                Ok(loaded) => {
                    segments.push(loaded);
                    continue;
                }
                Err(segment) => segment,
            },
            None => segment,
        };
        let walk = scan_segment(&mut segment, file_bytes, interval_bytes).await?;
        if !walk.clean {
            tracing::warn!(
                path = %segment.log_path.display(),
                valid_bytes = walk.position,
                file_bytes,
                "recovery: truncating a torn or corrupt segment tail"
            );
            segment
                .file
                .set_len(walk.position)
                .await
                .map_err(StorageError::io(&segment.log_path, IoOperation::SetLen))?;
            segment.file.sync_data().await.map_err(StorageError::fsync(&segment.log_path))?;
            segments.push(segment);
            return Ok((segments, base_offsets[at + 1..].to_vec()));
        }
        if next_base_offset.is_some() {
            let max_timestamp = segment.max_timestamp;
            segment.index.seal(max_timestamp);
        }
        segments.push(segment);
    }
    Ok((segments, Vec::new()))
}

impl PartitionLog {
    /// Opens the partition log in `dir` (creating the directory if missing) and recovers it;
    /// see the module docs of `recovery`. Afterwards everything in the log is durable.
    ///
    /// # Errors
    /// `InvalidConfig`; `CorruptCheckpoint`; `Io` and `FsyncFailed` from the disk. Torn or
    /// corrupt segment data is not an error: it is cut off.
    pub async fn open(
        disk: SharedDisk,
        dir: PathBuf,
        config: LogConfig,
        space: Arc<SpaceGuard>,
        now_ms: i64,
    ) -> Result<PartitionLog, StorageError> {
        config.validate()?;
        let existed = disk.exists(&dir).await.map_err(StorageError::io(&dir, IoOperation::Exists))?;
        if !existed {
            disk.create_dir_all(&dir).await.map_err(StorageError::io(&dir, IoOperation::CreateDir))?;
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                disk.sync_dir(parent).await.map_err(StorageError::fsync(parent))?;
            }
        }
        let names = disk.list_dir(&dir).await.map_err(StorageError::io(&dir, IoOperation::ListDir))?;
        if names.iter().any(|name| name == super::epochs::EPOCH_CHECKPOINT_TEMP_NAME) {
            let temporary = dir.join(super::epochs::EPOCH_CHECKPOINT_TEMP_NAME);
            match disk.remove_file(&temporary).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(StorageError::io(&temporary, IoOperation::Remove)(error)),
            }
        }
        if names.iter().any(|name| name == super::producers::SNAPSHOT_TEMP_NAME) {
            let temporary = dir.join(super::producers::SNAPSHOT_TEMP_NAME);
            match disk.remove_file(&temporary).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(StorageError::io(&temporary, IoOperation::Remove)(error)),
            }
        }
        if names.iter().any(|name| name == CHECKPOINT_TEMP_NAME) {
            let temporary = dir.join(CHECKPOINT_TEMP_NAME);
            match disk.remove_file(&temporary).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(StorageError::io(&temporary, IoOperation::Remove)(error)),
            }
        }
        for name in names.iter().filter(|name| super::cleaner::is_cleaned_name(name)) {
            // A compaction copy that was never swapped in (the segment itself is whole).
            let debris = dir.join(name);
            match disk.remove_file(&debris).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(StorageError::io(&debris, IoOperation::Remove)(error)),
            }
        }
        let checkpoint = checkpoint::read_checkpoint(&disk, &dir).await?;
        let mut base_offsets: Vec<Offset> = names.iter().filter_map(|name| parse_segment_name(name)).collect();
        base_offsets.sort();

        let (mut segments, discarded) =
            recover_segments(&disk, &dir, &base_offsets, config.index_interval_bytes, now_ms).await?;
        for base_offset in discarded.iter().rev() {
            remove_segment_files(&disk, &dir, *base_offset).await?;
        }
        if !discarded.is_empty() {
            disk.sync_dir(&dir).await.map_err(StorageError::fsync(&dir))?;
        }

        let first_base_offset = segments.first().map_or(Offset(0), |segment| segment.base_offset);
        let mut log_start_offset = checkpoint.unwrap_or(first_base_offset).max(first_base_offset);
        let log_end_offset = segments.last().map_or(log_start_offset, |segment| segment.next_offset);
        if segments.is_empty() || log_start_offset > log_end_offset {
            // The checkpoint can be ahead of the recovered end if DeleteRecords covered batches
            // that were never fsynced: nothing below it may be served, so start empty there.
            for segment in segments.iter().rev() {
                remove_segment_files(&disk, &dir, segment.base_offset).await?;
            }
            segments = vec![create_segment(&disk, &dir, log_start_offset, now_ms).await?];
        }
        log_start_offset = log_start_offset.max(segments[0].base_offset);

        // Whatever recovery adopts must be durable before it is served or appended to: a
        // process that was killed mid-roll may have left segment files whose data or names
        // were never fsynced, and a later power failure would take them, with any records
        // acknowledged on top of them. Fsyncing a clean file costs next to nothing.
        for segment in &segments {
            segment.file.sync_data().await.map_err(StorageError::fsync(&segment.log_path))?;
        }
        disk.sync_dir(&dir).await.map_err(StorageError::fsync(&dir))?;
        let active = segments.last_mut().expect("recovery leaves at least one segment");
        if !active.is_empty() {
            let first_timestamp_ms = active.first_timestamp_ms.filter(|timestamp_ms| *timestamp_ms >= 0);
            active.rolling_base_ms = Some(first_timestamp_ms.map_or(now_ms, |timestamp_ms| timestamp_ms.min(now_ms)));
        }
        let log_end_offset = active.next_offset;
        // The epoch checkpoint was written before any batch of its newest epoch, so it covers
        // everything recovered; entries past the recovered end are dropped (one starting right
        // at it is an epoch that has written nothing yet, or lost what it wrote: kept).
        let (mut epochs, rebuilt) = match super::epochs::read(&disk, &dir).await? {
            Some(epochs) => (epochs, false),
            None => (super::epochs::rebuild(&segments, log_start_offset).await?, true),
        };
        let cut = epochs.truncate_from_end(log_end_offset.plus(1));
        if cut || (rebuilt && !epochs.entries().is_empty()) {
            super::epochs::write(&disk, &dir, &epochs).await?;
        }
        let views: Vec<super::producers::SegmentView> =
            segments.iter().map(super::producers::SegmentView::of).collect();
        let producer_snapshot = super::producers::read_snapshot(&disk, &dir).await?;
        let producers = super::producers::rebuild(
            &views,
            &producer_snapshot,
            log_start_offset,
            config.producer_id_expiration_ms,
            now_ms,
        )
        .await?;
        let state = LogState {
            segments,
            log_start_offset,
            durable_end_offset: log_end_offset,
            truncations: 0,
            deleted: false,
            epochs,
            producers,
            producer_snapshot,
            clock_ms: now_ms,
            first_dirty_offset: log_start_offset,
        };
        state.assert_invariants();
        tracing::debug!(
            dir = %dir.display(),
            %log_start_offset,
            %log_end_offset,
            segments = state.segments.len(),
            producers = state.producers.len(),
            "opened partition log"
        );
        Ok(PartitionLog {
            disk,
            dir,
            space,
            config: Mutex::new(config),
            append_lock: rt::sync::Mutex::new(()),
            files_lock: rt::sync::RwLock::new(()),
            state: RwLock::new(state),
            clean_lock: rt::sync::Mutex::new(()),
        })
    }
}
