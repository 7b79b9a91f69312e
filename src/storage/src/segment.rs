//! One segment of a partition log: a file of contiguous record batches plus its in-memory
//! indexes, and the helpers that read, scan, seal and load segments.
//!
//! A segment is named after its base offset, `{base_offset:020}.log`, and its first batch
//! starts at that offset. Batches follow each other with no gaps: each one's base offset is the
//! previous one's last offset + 1.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use protocol::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use protocol::ids::Offset;

use crate::disk::{DiskFile, OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::index::{SegmentIndex, TimeIndexEntry};
use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, RELATIVE_OFFSET_MAX, SCAN_CHUNK_BYTES, TIME_INDEX_ENTRY_BYTES};

/// Extension of segment files.
pub(crate) const LOG_EXTENSION: &str = "log";
/// Extension of offset-index files.
pub(crate) const INDEX_EXTENSION: &str = "index";
/// Extension of time-index files.
pub(crate) const TIME_INDEX_EXTENSION: &str = "timeindex";
/// Digits in a segment file name.
const SEGMENT_NAME_DIGITS: usize = 20;

/// The path of a segment's file with `extension` in `dir`.
pub(crate) fn segment_path(dir: &Path, base_offset: Offset, extension: &str) -> PathBuf {
    dir.join(format!("{:020}.{extension}", base_offset.0))
}

/// The base offset of a segment file name, or `None` if the name is not one.
pub(crate) fn parse_segment_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(Offset)
}

/// One segment. Lives inside the log's state lock; the file handle is shared so reads can use
/// it after the lock is dropped.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first batch; also the file name.
    pub(crate) base_offset: Offset,
    /// The open segment file.
    pub(crate) file: Arc<dyn DiskFile>,
    /// Path of the segment file.
    pub(crate) log_path: PathBuf,
    /// Bytes of whole batches written; readers never look past it. The file may be longer only
    /// while an append is in flight or after a failed write.
    pub(crate) size_bytes: u64,
    /// The offset after the last batch.
    pub(crate) next_offset: Offset,
    /// Sparse offset and time indexes.
    pub(crate) index: SegmentIndex,
    /// Largest batch max timestamp and the relative offset of that batch.
    pub(crate) max_timestamp: Option<TimeIndexEntry>,
    /// Max timestamp of the first batch, when known (for the time-based roll after a restart).
    pub(crate) first_timestamp_ms: Option<i64>,
    /// When the first batch was appended (`now_ms`), the start of the `segment.ms` clock; `None`
    /// while the segment is empty.
    pub(crate) rolling_base_ms: Option<i64>,
    /// `now_ms` of the last append (or of the open that loaded the segment); the retention clock
    /// for segments whose batches carry no timestamps.
    pub(crate) last_append_ms: i64,
}

impl Segment {
    /// An empty segment over `file`.
    pub(crate) fn new(base_offset: Offset, file: Arc<dyn DiskFile>, log_path: PathBuf, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            file,
            log_path,
            size_bytes: 0,
            next_offset: base_offset,
            index: SegmentIndex::default(),
            max_timestamp: None,
            first_timestamp_ms: None,
            rolling_base_ms: None,
            last_append_ms: now_ms,
        }
    }

    /// True if the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// `offset` relative to the base offset, clamped into the index's range.
    pub(crate) fn relative(&self, offset: Offset) -> u32 {
        let relative = offset.0.saturating_sub(self.base_offset.0).clamp(0, RELATIVE_OFFSET_MAX);
        u32::try_from(relative).unwrap_or(u32::MAX)
    }

    /// Path of this segment's file with another extension.
    pub(crate) fn sibling_path(&self, extension: &str) -> PathBuf {
        self.log_path.with_extension(extension)
    }

    /// Accounts for a batch that now sits at the end of the file.
    ///
    /// # Panics
    /// If the batch does not continue the segment (a bug in the caller).
    pub(crate) fn on_batch(&mut self, header: &BatchHeader, interval_bytes: u64) {
        assert_eq!(header.base_offset, self.next_offset, "batches of a segment are contiguous");
        let relative_offset = self.relative(header.base_offset);
        let position = u32::try_from(self.size_bytes).expect("segment positions fit u32 (see limits)");
        let batch_bytes = header.total_bytes() as u64;
        self.index.on_batch(relative_offset, position, batch_bytes, interval_bytes, self.max_timestamp);
        if self.max_timestamp.is_none_or(|max| header.max_timestamp > max.timestamp_ms) {
            self.max_timestamp = Some(TimeIndexEntry { timestamp_ms: header.max_timestamp, relative_offset });
        }
        if self.first_timestamp_ms.is_none() {
            self.first_timestamp_ms = Some(header.max_timestamp);
        }
        self.size_bytes += batch_bytes;
        self.next_offset = header.next_offset();
    }

    /// The segment's largest timestamp and the base offset of the batch holding it.
    pub(crate) fn max_timestamp_offset(&self) -> Option<(Offset, i64)> {
        self.max_timestamp.map(|max| (self.base_offset.plus(i64::from(max.relative_offset)), max.timestamp_ms))
    }

    /// The time retention compares against: the newest record timestamp, or, for batches
    /// without timestamps (-1), the last append (or open) time.
    pub(crate) fn retention_timestamp_ms(&self) -> i64 {
        match self.max_timestamp {
            Some(max) if max.timestamp_ms >= 0 => max.timestamp_ms,
            _ => self.last_append_ms,
        }
    }

    /// Where a read of `offset` starts: the floor index entry's position.
    pub(crate) fn position_floor(&self, offset: Offset) -> u64 {
        u64::from(self.index.position_floor(self.relative(offset)))
    }
}

/// Reads a region of a file in chunks and hands out zero-copy slices of whole ranges.
#[derive(Debug)]
pub(crate) struct ChunkReader<'a> {
    file: &'a dyn DiskFile,
    path: &'a Path,
    /// Never read at or past this position.
    end_position: u64,
    /// Bytes to read at least per disk read.
    chunk_bytes: usize,
    buffer: Bytes,
    buffer_position: u64,
}

impl<'a> ChunkReader<'a> {
    /// A reader of `file` up to `end_position`.
    pub(crate) fn new(file: &'a dyn DiskFile, path: &'a Path, end_position: u64, chunk_bytes: usize) -> Self {
        ChunkReader { file, path, end_position, chunk_bytes, buffer: Bytes::new(), buffer_position: 0 }
    }

    /// The position reads stop at.
    pub(crate) fn end_position(&self) -> u64 {
        self.end_position
    }

    /// The bytes `[position, position + length)`, or `None` if they lie past the end or the
    /// file is shorter than that.
    pub(crate) async fn bytes(&mut self, position: u64, length: usize) -> Result<Option<Bytes>, StorageError> {
        let Some(end) = position.checked_add(length as u64) else { return Ok(None) };
        if end > self.end_position {
            return Ok(None);
        }
        let buffer_end = self.buffer_position + self.buffer.len() as u64;
        if position < self.buffer_position || end > buffer_end {
            let remaining = usize::try_from(self.end_position - position).unwrap_or(usize::MAX);
            let want = length.max(self.chunk_bytes.min(remaining));
            self.buffer =
                self.file.read_at(position, want).await.map_err(StorageError::io(self.path, IoOperation::Read))?;
            self.buffer_position = position;
            if (self.buffer.len() as u64) < length as u64 {
                return Ok(None);
            }
        }
        let start = (position - self.buffer_position) as usize;
        Ok(Some(self.buffer.slice(start..start + length)))
    }
}

/// Where a scan of a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalkEnd {
    /// The position after the last valid batch.
    pub(crate) position: u64,
    /// The offset after the last valid batch.
    pub(crate) next_offset: Offset,
    /// True if the walk reached `end_position` exactly; false if it stopped at a torn, corrupt
    /// or non-contiguous batch.
    pub(crate) clean: bool,
}

/// Walks and fully validates (CRC included) the batches of a segment between two positions,
/// calling `on_batch` for each valid one. Stops at the first batch that is torn, fails
/// validation, does not start at `expected_offset` (the previous batch's next offset), or would
/// leave the index's offset range. Never panics on arbitrary bytes.
///
/// # Errors
/// [`StorageError::Io`] if the file cannot be read.
pub(crate) async fn walk_batches(
    file: &dyn DiskFile,
    path: &Path,
    segment_base_offset: Offset,
    start_position: u64,
    end_position: u64,
    expected_offset: Offset,
    mut on_batch: impl FnMut(&BatchHeader),
) -> Result<WalkEnd, StorageError> {
    let mut reader = ChunkReader::new(file, path, end_position, SCAN_CHUNK_BYTES);
    let mut position = start_position;
    let mut next_offset = expected_offset;
    let stop = |position, next_offset, clean| Ok(WalkEnd { position, next_offset, clean });
    loop {
        if position >= end_position {
            return stop(position, next_offset, position == end_position);
        }
        if u32::try_from(position).is_err() {
            return stop(position, next_offset, false);
        }
        let Some(header_bytes) = reader.bytes(position, BATCH_HEADER_BYTES).await? else {
            return stop(position, next_offset, false);
        };
        let Ok(header) = BatchHeader::parse(&header_bytes) else {
            return stop(position, next_offset, false);
        };
        let Some(batch_bytes) = reader.bytes(position, header.total_bytes()).await? else {
            return stop(position, next_offset, false);
        };
        if batch::validate(&batch_bytes).is_err() || header.base_offset != next_offset {
            return stop(position, next_offset, false);
        }
        let Some(batch_next_offset) = header.base_offset.0.checked_add(i64::from(header.last_offset_delta) + 1) else {
            return stop(position, next_offset, false);
        };
        if batch_next_offset - 1 - segment_base_offset.0 > RELATIVE_OFFSET_MAX {
            return stop(position, next_offset, false);
        }
        on_batch(&header);
        position += header.total_bytes() as u64;
        next_offset = Offset(batch_next_offset);
    }
}

/// Scans a whole segment file from the start, building its index. Returns where the valid
/// prefix ends; the caller truncates the file if the scan was not clean.
///
/// # Errors
/// [`StorageError::Io`] if the file cannot be read.
pub(crate) async fn scan_segment(
    segment: &mut Segment,
    file_bytes: u64,
    interval_bytes: u64,
) -> Result<WalkEnd, StorageError> {
    let file = Arc::clone(&segment.file);
    let path = segment.log_path.clone();
    let base_offset = segment.base_offset;
    walk_batches(file.as_ref(), &path, base_offset, 0, file_bytes, base_offset, |header| {
        segment.on_batch(header, interval_bytes);
    })
    .await
}

/// Loads a sealed segment from its index files, checking them for consistency and walking the
/// batches after the last offset entry to confirm the segment ends exactly where the next one
/// begins. `None` if the files are missing or anything disagrees; the caller then scans.
///
/// # Errors
/// [`StorageError::Io`] if the segment file itself cannot be read.
pub(crate) async fn load_sealed_segment(
    disk: &SharedDisk,
    mut segment: Segment,
    file_bytes: u64,
    next_base_offset: Offset,
) -> Result<Result<Segment, Segment>, StorageError> {
    let relative_end = next_base_offset.0.saturating_sub(segment.base_offset.0);
    if relative_end <= 0 || relative_end - 1 > RELATIVE_OFFSET_MAX || file_bytes == 0 {
        return Ok(Err(segment));
    }
    let entries_max = SegmentIndex::entries_max(file_bytes);
    let offsets_bytes_max = entries_max * OFFSET_INDEX_ENTRY_BYTES as u64;
    let times_bytes_max = entries_max * TIME_INDEX_ENTRY_BYTES as u64;
    let offsets = read_index_file(disk, &segment.sibling_path(INDEX_EXTENSION), offsets_bytes_max).await;
    let times = read_index_file(disk, &segment.sibling_path(TIME_INDEX_EXTENSION), times_bytes_max).await;
    let (Some(offsets), Some(times)) = (offsets, times) else { return Ok(Err(segment)) };
    let Some(index) = SegmentIndex::decode(&offsets, &times, file_bytes, relative_end as u64) else {
        return Ok(Err(segment));
    };
    let (tail_position, tail_offset) = index.last_offset_entry().map_or((0, segment.base_offset), |entry| {
        (u64::from(entry.position), segment.base_offset.plus(i64::from(entry.relative_offset)))
    });
    let tail = walk_batches(
        segment.file.as_ref(),
        &segment.log_path,
        segment.base_offset,
        tail_position,
        file_bytes,
        tail_offset,
        |_| {},
    )
    .await?;
    if !tail.clean || tail.next_offset != next_base_offset {
        return Ok(Err(segment));
    }
    segment.size_bytes = file_bytes;
    segment.next_offset = next_base_offset;
    segment.max_timestamp = index.last_time_entry();
    segment.index = index;
    Ok(Ok(segment))
}

/// Reads an index file whole, or `None` if it is missing, unreadable or longer than
/// `bytes_max` (any of which means "rebuild by scanning").
async fn read_index_file(disk: &SharedDisk, path: &Path, bytes_max: u64) -> Option<Bytes> {
    let file = disk.open_file(path, OpenMode::Existing).await.ok()?;
    let length = file.len().await.ok()?;
    if length > bytes_max {
        return None;
    }
    let bytes = file.read_at(0, usize::try_from(length).ok()?).await.ok()?;
    (bytes.len() as u64 == length).then_some(bytes)
}

/// Replaces the contents of an index (or any small) file and fsyncs it.
///
/// # Errors
/// [`StorageError::DiskFull`] on ENOSPC, [`StorageError::Io`] on another write error,
/// [`StorageError::FsyncFailed`] if the fsync fails.
pub(crate) async fn write_small_file(disk: &SharedDisk, path: &Path, contents: Vec<u8>) -> Result<(), StorageError> {
    let needed_bytes = contents.len() as u64;
    let file = disk.open_file(path, OpenMode::CreateOrOpen).await.map_err(StorageError::io(path, IoOperation::Open))?;
    file.set_len(0).await.map_err(StorageError::io(path, IoOperation::SetLen))?;
    if let Err(source) = file.write_at(0, Bytes::from(contents)).await {
        return Err(write_error(disk, path, needed_bytes, source).await);
    }
    file.sync_data().await.map_err(StorageError::fsync(path))
}

/// Turns a failed write into `DiskFull` (ENOSPC, asking the disk how much is left) or `Io`.
pub(crate) async fn write_error(disk: &SharedDisk, path: &Path, needed_bytes: u64, source: io::Error) -> StorageError {
    if source.kind() == io::ErrorKind::StorageFull {
        let directory = path.parent().unwrap_or(path);
        let available_bytes = disk.available_bytes(directory).await.unwrap_or(0);
        StorageError::DiskFull { needed_bytes, available_bytes }
    } else {
        StorageError::Io { path: path.to_owned(), operation: IoOperation::Write, source }
    }
}

/// Removes a segment's three files (missing ones are fine). Does not sync the directory.
///
/// # Errors
/// [`StorageError::Io`] for any error but `NotFound`.
pub(crate) async fn remove_segment_files(
    disk: &SharedDisk,
    dir: &Path,
    base_offset: Offset,
) -> Result<(), StorageError> {
    for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        let path = segment_path(dir, base_offset, extension);
        match disk.remove_file(&path).await {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io(&path, IoOperation::Remove)(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_junk_is_ignored() {
        let path = segment_path(Path::new("/d"), Offset(42), LOG_EXTENSION);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(Offset(42)));
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("9999999999999999999x.log"), None);
        assert_eq!(parse_segment_name("99999999999999999999.log"), None, "beyond i64");
    }
}
