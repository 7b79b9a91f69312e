//! The partition's idempotent-producer table ([`replication::producer_state`]), derived from
//! the log, and the snapshot of the producers whose batches the log deleted.
//!
//! The table lives in memory only. It is rebuilt by walking the batches of the log when the
//! log opens and after a truncation, so it always describes exactly the batches the log
//! holds: a new leader has the old leader's table for every record they share, and a follower
//! that cut its log forgets the sequences it cut. A segment whose newest timestamp is older
//! than `producer.id.expiration.ms` is not walked (every producer seen only there has
//! expired), so the cost of an open is bounded by the data of the last expiration period
//! rather than the whole log. Kafka also snapshots the table at each segment roll; weir does
//! not yet, so opening a partition reads that period's batches once.
//!
//! **The snapshot** (`producer-snapshot`): before DeleteRecords or retention moves the log
//! start, the log writes the retained batches of every producer whose batches all lie below
//! the new log start ([`ProducerStateTable::producers_below`]; they are committed, so durable),
//! atomically (temporary file, fsync, rename, directory fsync). A rebuild applies them first,
//! then the log's batches, so a restart still recognises a retry of a deleted batch (Kafka
//! keeps such producers the same way since KIP-360). Format: `WPS1`, a `u32` count, per batch
//! producer id `i64`, epoch `i16`, base and last sequence `i32`, base and last offset `i64`,
//! last activity `i64`, all big-endian, then a CRC-32C of everything before it. A snapshot that
//! does not check out is ignored with a warning.

use std::path::PathBuf;
use std::sync::Arc;

use std::io;
use std::path::Path;

use protocol::ids::{Offset, ProducerEpoch, ProducerId};
use replication::producer_state::{ProducerBatch, ProducerStateTable};

use crate::disk::{DiskFile, OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::segment::{walk_batches, write_small_file, Segment};

/// File name of the snapshot inside a partition directory.
pub(crate) const SNAPSHOT_NAME: &str = "producer-snapshot";
/// File name the next snapshot is written to before the rename.
pub(crate) const SNAPSHOT_TEMP_NAME: &str = "producer-snapshot.tmp";
/// First bytes of a snapshot.
const SNAPSHOT_MAGIC: &[u8; 4] = b"WPS1";
/// Bytes of one batch in a snapshot.
const SNAPSHOT_BATCH_BYTES: usize = 8 + 2 + 4 + 4 + 8 + 8 + 8;
/// Largest snapshot read (about 160,000 retained batches).
const SNAPSHOT_BYTES_MAX: usize = 8 * 1024 * 1024;

fn encode_snapshot(batches: &[ProducerBatch]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + batches.len() * SNAPSHOT_BATCH_BYTES + 4);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&u32::try_from(batches.len()).unwrap_or(u32::MAX).to_be_bytes());
    for batch in batches {
        out.extend_from_slice(&batch.producer_id.0.to_be_bytes());
        out.extend_from_slice(&batch.producer_epoch.0.to_be_bytes());
        out.extend_from_slice(&batch.base_sequence.to_be_bytes());
        out.extend_from_slice(&batch.last_sequence.to_be_bytes());
        out.extend_from_slice(&batch.base_offset.0.to_be_bytes());
        out.extend_from_slice(&batch.last_offset.0.to_be_bytes());
        out.extend_from_slice(&batch.max_timestamp_ms.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<Vec<ProducerBatch>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_be_bytes() != crc || body.get(..4)? != SNAPSHOT_MAGIC {
        return None;
    }
    let count = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize;
    let records = body.get(8..)?;
    if records.len() != count.checked_mul(SNAPSHOT_BATCH_BYTES)? {
        return None;
    }
    let i64_at = |bytes: &[u8], at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let i32_at = |bytes: &[u8], at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    Some(
        records
            .chunks_exact(SNAPSHOT_BATCH_BYTES)
            .map(|record| ProducerBatch {
                producer_id: ProducerId(i64_at(record, 0)),
                producer_epoch: ProducerEpoch(i16::from_be_bytes([record[8], record[9]])),
                base_sequence: i32_at(record, 10),
                last_sequence: i32_at(record, 14),
                base_offset: Offset(i64_at(record, 18)),
                last_offset: Offset(i64_at(record, 26)),
                max_timestamp_ms: i64_at(record, 34),
            })
            .collect(),
    )
}

/// The snapshot of `dir` (empty if there is none, or it does not check out).
///
/// # Errors
/// `Io` from reading it.
pub(crate) async fn read_snapshot(disk: &SharedDisk, dir: &Path) -> Result<Vec<ProducerBatch>, StorageError> {
    let path = dir.join(SNAPSHOT_NAME);
    let file = match disk.open_file(&path, OpenMode::Existing).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(StorageError::io(&path, IoOperation::Open)(error)),
    };
    let bytes = file.read_at(0, SNAPSHOT_BYTES_MAX).await.map_err(StorageError::io(&path, IoOperation::Read))?;
    Ok(decode_snapshot(&bytes).unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "unreadable producer snapshot; producers of deleted batches are forgotten");
        Vec::new()
    }))
}

/// Durably replaces the snapshot of `dir`.
///
/// # Errors
/// `Io`, `FsyncFailed`, `DiskFull`.
pub(crate) async fn write_snapshot(
    disk: &SharedDisk,
    dir: &Path,
    batches: &[ProducerBatch],
) -> Result<(), StorageError> {
    let temporary = dir.join(SNAPSHOT_TEMP_NAME);
    let path = dir.join(SNAPSHOT_NAME);
    write_small_file(disk, &temporary, encode_snapshot(batches)).await?;
    disk.rename(&temporary, &path).await.map_err(StorageError::io(&temporary, IoOperation::Rename))?;
    disk.sync_dir(dir).await.map_err(StorageError::fsync(dir))
}

/// What a rebuild needs of a segment, taken out of the log state so no lock is held while
/// the files are read.
pub(crate) struct SegmentView {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    base_offset: Offset,
    size_bytes: u64,
    /// The newest batch timestamp in the segment, if any batch has one.
    max_timestamp_ms: Option<i64>,
}

impl SegmentView {
    pub(crate) fn of(segment: &Segment) -> SegmentView {
        SegmentView {
            file: Arc::clone(&segment.file),
            path: segment.log_path.clone(),
            base_offset: segment.base_offset,
            size_bytes: segment.size_bytes,
            max_timestamp_ms: segment.max_timestamp.map(|max| max.timestamp_ms),
        }
    }
}

/// An empty table, with the planted bug when `WEIR_PLANTED_BUG=skip-sequence-check`.
pub(crate) fn new_table(expiration_ms: i64) -> ProducerStateTable {
    let table = ProducerStateTable::new(expiration_ms);
    #[cfg(feature = "planted-bugs")]
    let table = table.with_planted_skip_sequence_check(
        std::env::var("WEIR_PLANTED_BUG").is_ok_and(|bug| bug == "skip-sequence-check"),
    );
    table
}

/// The table of the `snapshot` (producers of deleted batches) and the batches in `segments`
/// at or after `log_start_offset`, with producers idle since `now_ms - expiration_ms` left out.
///
/// # Errors
/// `Io` from reading the segments.
pub(crate) async fn rebuild(
    segments: &[SegmentView],
    snapshot: &[ProducerBatch],
    log_start_offset: Offset,
    expiration_ms: i64,
    now_ms: i64,
) -> Result<ProducerStateTable, StorageError> {
    let mut table = new_table(expiration_ms);
    for batch in snapshot.iter().filter(|batch| batch.last_offset < log_start_offset) {
        table.apply(batch);
    }
    let horizon_ms = now_ms.saturating_sub(expiration_ms);
    for segment in segments {
        if segment.max_timestamp_ms.is_some_and(|max_ms| max_ms < horizon_ms) {
            continue;
        }
        let _ = walk_batches(
            segment.file.as_ref(),
            &segment.path,
            segment.base_offset,
            0,
            segment.size_bytes,
            segment.base_offset,
            |header| {
                if header.next_offset() > log_start_offset {
                    if let Some(batch) = ProducerBatch::from_header(header) {
                        table.apply(&batch);
                    }
                }
            },
        )
        .await?;
    }
    let _ = table.remove_expired(now_ms);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let batch = ProducerBatch {
            producer_id: ProducerId(7),
            producer_epoch: ProducerEpoch(2),
            base_sequence: 10,
            last_sequence: 12,
            base_offset: Offset(100),
            last_offset: Offset(102),
            max_timestamp_ms: 5_000,
        };
        let bytes = encode_snapshot(&[batch, ProducerBatch { producer_id: ProducerId(8), ..batch }]);
        assert_eq!(decode_snapshot(&bytes).map(|batches| batches.len()), Some(2));
        assert_eq!(decode_snapshot(&bytes).unwrap()[0], batch);
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            assert_eq!(decode_snapshot(&damaged), None, "a flip at {index} went unnoticed");
        }
        assert_eq!(decode_snapshot(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_snapshot(&[]), None);
    }
}
