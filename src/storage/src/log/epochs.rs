//! The partition's leader-epoch cache on disk: `leader-epoch-checkpoint`, in Kafka's text
//! format ([`replication::epoch_cache`]), replaced atomically (temporary file, fsync,
//! rename, directory fsync).
//!
//! It is written *before* the first batch of a new epoch is appended, so every batch that
//! becomes durable has its epoch in a durable checkpoint. Recovery then only has to drop the
//! entries that start at or past the recovered log end. A missing or unreadable checkpoint
//! (a data directory from before epochs were recorded, or a damaged file) is rebuilt by
//! walking every segment's batch headers.

use std::io;
use std::path::Path;

use protocol::ids::Offset;
use replication::epoch_cache::LeaderEpochCache;

use crate::disk::{OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::segment::{walk_batches, write_small_file, Segment};

/// File name of the cache inside a partition directory.
pub(crate) const EPOCH_CHECKPOINT_NAME: &str = "leader-epoch-checkpoint";
/// File name the next checkpoint is written to before the rename.
pub(crate) const EPOCH_CHECKPOINT_TEMP_NAME: &str = "leader-epoch-checkpoint.tmp";
/// Largest checkpoint file read (about 16 bytes an epoch).
const EPOCH_CHECKPOINT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Reads the checkpoint of `dir`: `None` if it is missing or does not parse (the caller then
/// rebuilds the cache from the segments).
///
/// # Errors
/// [`StorageError::Io`] if it exists but cannot be read.
pub(crate) async fn read(disk: &SharedDisk, dir: &Path) -> Result<Option<LeaderEpochCache>, StorageError> {
    let path = dir.join(EPOCH_CHECKPOINT_NAME);
    let file = match disk.open_file(&path, OpenMode::Existing).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io(&path, IoOperation::Open)(error)),
    };
    let bytes =
        file.read_at(0, EPOCH_CHECKPOINT_BYTES_MAX).await.map_err(StorageError::io(&path, IoOperation::Read))?;
    match LeaderEpochCache::from_checkpoint(&String::from_utf8_lossy(&bytes)) {
        Ok(cache) => Ok(Some(cache)),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "unreadable leader-epoch checkpoint; rebuilding it from the log");
            Ok(None)
        }
    }
}

/// Durably replaces the checkpoint of `dir` with `cache`.
///
/// # Errors
/// `FsyncFailed`, `DiskFull` or `Io`.
pub(crate) async fn write(disk: &SharedDisk, dir: &Path, cache: &LeaderEpochCache) -> Result<(), StorageError> {
    let temporary = dir.join(EPOCH_CHECKPOINT_TEMP_NAME);
    let path = dir.join(EPOCH_CHECKPOINT_NAME);
    write_small_file(disk, &temporary, cache.to_checkpoint().into_bytes()).await?;
    disk.rename(&temporary, &path).await.map_err(StorageError::io(&temporary, IoOperation::Rename))?;
    disk.sync_dir(dir).await.map_err(StorageError::fsync(dir))
}

/// The cache of the batches in `segments` (every header walked), from `log_start_offset`.
///
/// # Errors
/// `Io` from reading the segments.
pub(crate) async fn rebuild(segments: &[Segment], log_start_offset: Offset) -> Result<LeaderEpochCache, StorageError> {
    let mut cache = LeaderEpochCache::new();
    for segment in segments {
        let _ = walk_batches(
            segment.file.as_ref(),
            &segment.log_path,
            segment.base_offset,
            0,
            segment.size_bytes,
            segment.base_offset,
            |header| {
                let _ = cache.assign(header.partition_leader_epoch, header.base_offset);
            },
        )
        .await?;
    }
    let _ = cache.truncate_from_start(log_start_offset);
    Ok(cache)
}
