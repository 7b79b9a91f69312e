//! An append-only file of framed opaque records, fsynced on every append: the node's local
//! metadata log.
//!
//! Frame: record length as a big-endian `u32`, then the CRC-32C (big-endian `u32`) of the
//! length bytes followed by the record, then the record. A crash can tear only the tail (the
//! last append was never acknowledged), so [`RecordLog::open`] replays every whole frame and
//! truncates the file at the first one that is short, too long or fails its checksum.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::disk::{DiskFile, OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::limits::RECORD_LOG_RECORD_BYTES_MAX;
use crate::segment::write_error;

/// Bytes of a frame before the record: length and CRC.
const FRAME_HEADER_BYTES: usize = 8;

/// An append-only, always-fsynced log of opaque records.
#[derive(Debug)]
pub struct RecordLog {
    disk: SharedDisk,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// End of the last whole frame: where the next append goes. The lock also serialises
    /// appends.
    end_position: rt::sync::Mutex<u64>,
}

fn frame_crc(length: [u8; 4], record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&length), record)
}

/// Splits `bytes` into whole valid frames; returns the records and the length of the valid
/// prefix.
fn parse_frames(bytes: &Bytes) -> (Vec<Bytes>, usize) {
    let mut records = Vec::new();
    let mut position = 0usize;
    while bytes.len() - position >= FRAME_HEADER_BYTES {
        let length_bytes = [bytes[position], bytes[position + 1], bytes[position + 2], bytes[position + 3]];
        let length = u32::from_be_bytes(length_bytes);
        let crc =
            u32::from_be_bytes([bytes[position + 4], bytes[position + 5], bytes[position + 6], bytes[position + 7]]);
        let start = position + FRAME_HEADER_BYTES;
        if u64::from(length) > RECORD_LOG_RECORD_BYTES_MAX || bytes.len() - start < length as usize {
            break;
        }
        let record = bytes.slice(start..start + length as usize);
        if frame_crc(length_bytes, &record) != crc {
            break;
        }
        records.push(record);
        position = start + length as usize;
    }
    (records, position)
}

impl RecordLog {
    /// Opens (creating if missing) the record log at `path` and replays it. A torn or corrupt
    /// tail is cut off durably before returning.
    ///
    /// # Errors
    /// [`StorageError::Io`] or [`StorageError::FsyncFailed`] from the disk.
    pub async fn open(disk: SharedDisk, path: PathBuf) -> Result<(RecordLog, Vec<Bytes>), StorageError> {
        let existed = disk.exists(&path).await.map_err(StorageError::io(&path, IoOperation::Exists))?;
        let file =
            disk.open_file(&path, OpenMode::CreateOrOpen).await.map_err(StorageError::io(&path, IoOperation::Open))?;
        if !existed {
            let parent = path.parent().unwrap_or(Path::new("."));
            disk.sync_dir(parent).await.map_err(StorageError::fsync(parent))?;
        }
        let length = file.len().await.map_err(StorageError::io(&path, IoOperation::Length))?;
        let read_length = usize::try_from(length).unwrap_or(usize::MAX);
        let bytes = file.read_at(0, read_length).await.map_err(StorageError::io(&path, IoOperation::Read))?;
        let (records, valid_bytes) = parse_frames(&bytes);
        let valid_bytes = valid_bytes as u64;
        if valid_bytes != length {
            tracing::warn!(path = %path.display(), valid_bytes, length, "record log: truncating a torn tail");
            file.set_len(valid_bytes).await.map_err(StorageError::io(&path, IoOperation::SetLen))?;
            file.sync_data().await.map_err(StorageError::fsync(&path))?;
        }
        let log = RecordLog { disk, path, file, end_position: rt::sync::Mutex::new(valid_bytes) };
        Ok((log, records))
    }

    /// Appends one record and fsyncs it; when this returns `Ok` the record survives a crash.
    ///
    /// # Errors
    /// [`StorageError::RecordTooLarge`] over [`RECORD_LOG_RECORD_BYTES_MAX`];
    /// [`StorageError::DiskFull`] or [`StorageError::Io`] if the write fails (the file is cut
    /// back to its previous end); [`StorageError::FsyncFailed`] if the fsync fails (fatal).
    pub async fn append(&self, record: &[u8]) -> Result<(), StorageError> {
        let length =
            u32::try_from(record.len()).ok().filter(|length| u64::from(*length) <= RECORD_LOG_RECORD_BYTES_MAX).ok_or(
                StorageError::RecordTooLarge { bytes: record.len() as u64, bytes_max: RECORD_LOG_RECORD_BYTES_MAX },
            )?;
        let length_bytes = length.to_be_bytes();
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + record.len());
        frame.extend_from_slice(&length_bytes);
        frame.extend_from_slice(&frame_crc(length_bytes, record).to_be_bytes());
        frame.extend_from_slice(record);
        let frame_bytes = frame.len() as u64;

        let mut end_position = self.end_position.lock().await;
        if let Err(source) = self.file.write_at(*end_position, Bytes::from(frame)).await {
            if let Err(truncate_error) = self.file.set_len(*end_position).await {
                tracing::warn!(path = %self.path.display(), %truncate_error, "record log: cannot cut a failed write");
            }
            return Err(write_error(&self.disk, &self.path, frame_bytes, source).await);
        }
        self.file.sync_data().await.map_err(StorageError::fsync(&self.path))?;
        *end_position += frame_bytes;
        Ok(())
    }

    /// Bytes of whole records in the file.
    pub async fn size_bytes(&self) -> u64 {
        *self.end_position.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::OsDisk;

    #[tokio::test]
    async fn records_replay_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata.log");
        let (log, records) = RecordLog::open(OsDisk::shared(), path.clone()).await.expect("open");
        assert!(records.is_empty());
        for record in [&b"first"[..], b"", b"third record"] {
            log.append(record).await.expect("append");
        }
        drop(log);
        let (log, records) = RecordLog::open(OsDisk::shared(), path).await.expect("reopen");
        assert_eq!(records, vec![Bytes::from_static(b"first"), Bytes::new(), Bytes::from_static(b"third record")]);
        log.append(b"fourth").await.expect("append after reopen");
        assert_eq!(log.size_bytes().await, 5 + 12 + 6 + 4 * 8);
    }

    /// Cutting the file at every byte, or flipping any byte of the last frame, loses exactly
    /// the last record and nothing before it; the tail is truncated so appends continue.
    #[tokio::test]
    async fn a_torn_or_corrupt_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata.log");
        let (log, _) = RecordLog::open(OsDisk::shared(), path.clone()).await.expect("open");
        log.append(b"kept").await.expect("append");
        log.append(b"torn record").await.expect("append");
        drop(log);
        let whole = std::fs::read(&path).expect("read");
        let first_frame = FRAME_HEADER_BYTES + 4;
        for cut in first_frame..whole.len() {
            std::fs::write(&path, &whole[..cut]).expect("write");
            let (_, records) = RecordLog::open(OsDisk::shared(), path.clone()).await.expect("open");
            assert_eq!(records, vec![Bytes::from_static(b"kept")], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), first_frame as u64);
        }
        for flipped in first_frame..whole.len() {
            let mut bytes = whole.clone();
            bytes[flipped] ^= 0x40;
            std::fs::write(&path, &bytes).expect("write");
            let (log, records) = RecordLog::open(OsDisk::shared(), path.clone()).await.expect("open");
            assert_eq!(records, vec![Bytes::from_static(b"kept")], "flipped byte {flipped}");
            log.append(b"next").await.expect("append");
        }
        let (_, records) = RecordLog::open(OsDisk::shared(), path).await.expect("open");
        assert_eq!(records, vec![Bytes::from_static(b"kept"), Bytes::from_static(b"next")]);
    }

    #[tokio::test]
    async fn oversized_records_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = RecordLog::open(OsDisk::shared(), dir.path().join("m.log")).await.expect("open");
        let record = vec![0u8; RECORD_LOG_RECORD_BYTES_MAX as usize + 1];
        assert!(matches!(log.append(&record).await, Err(StorageError::RecordTooLarge { .. })));
    }
}
