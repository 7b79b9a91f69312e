//! Fetch reads and timestamp lookups.
//!
//! Both find a start position through a segment's sparse index (floor entry), read a chunk from
//! there and walk batch headers in memory. Only the header is parsed; batches were validated
//! when they were appended or recovered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;
use protocol::batch::{BatchHeader, BATCH_HEADER_BYTES};
use protocol::ids::Offset;

use super::{PartitionLog, ReadResult};
use crate::disk::DiskFile;
use crate::error::StorageError;
use crate::limits::READ_CHUNK_BYTES;
use crate::segment::ChunkReader;

/// The part of one segment a read may look at, captured under the state lock.
struct SegmentView {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    start_position: u64,
    end_position: u64,
}

/// Parses the batch header at `position`, which the log believes is a batch boundary.
pub(super) async fn read_header(
    reader: &mut ChunkReader<'_>,
    path: &Path,
    position: u64,
) -> Result<BatchHeader, StorageError> {
    let corrupt = || StorageError::CorruptSegment { path: path.to_owned(), position };
    let bytes = reader.bytes(position, BATCH_HEADER_BYTES).await?.ok_or_else(corrupt)?;
    let header = BatchHeader::parse(&bytes).map_err(|_| corrupt())?;
    // The whole batch must lie within the segment's committed bytes.
    let end = position.checked_add(header.total_bytes() as u64).ok_or_else(corrupt)?;
    if end > reader.end_position() {
        return Err(corrupt());
    }
    Ok(header)
}

/// How much a read may still return.
struct ReadBudget {
    from: Offset,
    upper: Offset,
    max_bytes: usize,
    min_one_batch: bool,
    taken_bytes: usize,
}

impl ReadBudget {
    /// True if the batch may be added.
    fn admits(&self, header: &BatchHeader) -> bool {
        let batch_bytes = header.total_bytes();
        let first = self.taken_bytes == 0;
        self.taken_bytes.saturating_add(batch_bytes) <= self.max_bytes || (first && self.min_one_batch)
    }
}

/// Reads the batches of one segment the budget admits. Returns them (if any) and whether the
/// read is finished.
async fn read_segment(view: &SegmentView, budget: &mut ReadBudget) -> Result<(Option<Bytes>, bool), StorageError> {
    let chunk_bytes = budget.max_bytes.saturating_add(READ_CHUNK_BYTES).max(READ_CHUNK_BYTES);
    let mut reader = ChunkReader::new(view.file.as_ref(), &view.path, view.end_position, chunk_bytes);
    let mut position = view.start_position;
    let mut first_position = None;
    let mut finished = false;
    while position < view.end_position {
        let header = read_header(&mut reader, &view.path, position).await?;
        let batch_bytes = header.total_bytes();
        if header.next_offset() <= budget.from {
            position += batch_bytes as u64;
            continue;
        }
        if header.base_offset >= budget.upper || !budget.admits(&header) {
            finished = true;
            break;
        }
        let _ = first_position.get_or_insert(position);
        budget.taken_bytes = budget.taken_bytes.saturating_add(batch_bytes);
        position += batch_bytes as u64;
    }
    let Some(first_position) = first_position else { return Ok((None, finished)) };
    let length = usize::try_from(position - first_position).unwrap_or(usize::MAX);
    let bytes = reader
        .bytes(first_position, length)
        .await?
        .ok_or(StorageError::CorruptSegment { path: view.path.clone(), position: first_position })?;
    Ok((Some(bytes), finished))
}

impl PartitionLog {
    /// Reads whole batches, as stored, starting with the batch that holds `from`. Stops before
    /// any batch whose base offset is at or past `upper` (exclusive; the high watermark), and
    /// before a batch that would take the result past `max_bytes`, except that with
    /// `min_one_batch` the first batch is returned whole whatever its size (Kafka's progress
    /// guarantee). Continues into later segments while the budget allows.
    ///
    /// Empty if `from` is the log end offset or at or past `upper`.
    ///
    /// # Errors
    /// [`StorageError::OffsetOutOfRange`] if `from` is below the log start offset or beyond
    /// the log end offset; `CorruptSegment`, `Io`, `LogDeleted`.
    pub async fn read(
        &self,
        from: Offset,
        upper: Offset,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult, StorageError> {
        let _files = self.files_lock.read().await;
        let (views, log_start_offset, log_end_offset) = {
            let state = self.state();
            self.check_live(&state)?;
            let (log_start_offset, log_end_offset) = (state.log_start_offset, state.log_end_offset());
            if from < log_start_offset || from > log_end_offset {
                return Err(StorageError::OffsetOutOfRange { offset: from, log_start_offset, log_end_offset });
            }
            let mut views = Vec::new();
            if from < log_end_offset && from < upper {
                let at = state.segment_index_for(from);
                for (ordinal, segment) in state.segments[at..].iter().enumerate() {
                    views.push(SegmentView {
                        file: Arc::clone(&segment.file),
                        path: segment.log_path.clone(),
                        start_position: if ordinal == 0 { segment.position_floor(from) } else { 0 },
                        end_position: segment.size_bytes,
                    });
                }
            }
            (views, log_start_offset, log_end_offset)
        };
        let mut budget =
            ReadBudget { from, upper: upper.min(log_end_offset), max_bytes, min_one_batch, taken_bytes: 0 };
        let mut pieces = Vec::new();
        for view in &views {
            let (piece, finished) = read_segment(view, &mut budget).await?;
            pieces.extend(piece);
            if finished {
                break;
            }
        }
        let bytes = match pieces.len() {
            0 => Bytes::new(),
            1 => pieces.swap_remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(budget.taken_bytes);
                for piece in &pieces {
                    joined.extend_from_slice(piece);
                }
                joined.freeze()
            }
        };
        Ok(ReadResult { bytes, log_start_offset, log_end_offset })
    }

    /// ListOffsets by timestamp: the earliest offset (at or after the log start offset) whose
    /// record timestamp is at or after `timestamp_ms`, with that record's timestamp; `None` if
    /// there is none. The time index picks the segment and a start position; the first batch
    /// whose max timestamp qualifies is decoded (decompressing if needed) to find the exact
    /// record. LogAppendTime batches give every record the batch's max timestamp; a batch that
    /// does not decode answers with its base offset and max timestamp.
    ///
    /// # Errors
    /// `CorruptSegment`, `Io`, `LogDeleted`.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        let _files = self.files_lock.read().await;
        let (views, log_start_offset) = {
            let state = self.state();
            self.check_live(&state)?;
            let log_start_offset = state.log_start_offset;
            let views: Vec<SegmentView> = state
                .segments
                .iter()
                .filter(|segment| segment.next_offset > log_start_offset)
                .filter(|segment| segment.max_timestamp.is_some_and(|max| max.timestamp_ms >= timestamp_ms))
                .map(|segment| {
                    let floor = segment.base_offset.plus(i64::from(segment.index.time_floor(timestamp_ms)));
                    SegmentView {
                        file: Arc::clone(&segment.file),
                        path: segment.log_path.clone(),
                        start_position: segment.position_floor(floor.max(log_start_offset)),
                        end_position: segment.size_bytes,
                    }
                })
                .collect();
            (views, log_start_offset)
        };
        for view in &views {
            let mut reader = ChunkReader::new(view.file.as_ref(), &view.path, view.end_position, READ_CHUNK_BYTES);
            let mut position = view.start_position;
            while position < view.end_position {
                let header = read_header(&mut reader, &view.path, position).await?;
                let batch_bytes = header.total_bytes();
                if header.next_offset() > log_start_offset && header.max_timestamp >= timestamp_ms {
                    let batch = reader
                        .bytes(position, batch_bytes)
                        .await?
                        .ok_or(StorageError::CorruptSegment { path: view.path.clone(), position })?;
                    if let Some(found) = find_record(&header, batch, timestamp_ms, log_start_offset) {
                        return Ok(Some(found));
                    }
                }
                position += batch_bytes as u64;
            }
        }
        Ok(None)
    }
}

/// The first record of `batch` at or after `log_start_offset` with a timestamp at or after
/// `timestamp_ms`.
fn find_record(
    header: &BatchHeader,
    batch: Bytes,
    timestamp_ms: i64,
    log_start_offset: Offset,
) -> Option<(Offset, i64)> {
    let whole_batch = (header.base_offset.max(log_start_offset), header.max_timestamp);
    if header.is_log_append_time() {
        return Some(whole_batch);
    }
    match RecordBatchDecoder::decode(&mut batch.clone()) {
        Ok(record_set) => record_set
            .records
            .iter()
            .find(|record| record.offset >= log_start_offset.0 && record.timestamp >= timestamp_ms)
            .map(|record| (Offset(record.offset), record.timestamp)),
        Err(error) => {
            tracing::debug!(%error, base_offset = %header.base_offset, "cannot decode batch for a timestamp lookup");
            Some(whole_batch)
        }
    }
}
