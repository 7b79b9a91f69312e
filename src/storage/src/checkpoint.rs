//! The `log-start-offset` checkpoint: the durable record of a log start offset raised by
//! DeleteRecords or retention (or lowered by a full truncation).
//!
//! Format: the offset as a big-endian `i64`, then the CRC-32C of those 8 bytes (big-endian
//! `u32`). It is replaced atomically: written to `log-start-offset.tmp`, fsynced, renamed over
//! the old one, and the directory fsynced, so a crash leaves either the old or the new value.

use std::io;
use std::path::Path;

use protocol::ids::Offset;

use crate::disk::{OpenMode, SharedDisk};
use crate::error::{IoOperation, StorageError};
use crate::segment::write_small_file;

/// File name of the checkpoint inside a partition directory.
pub(crate) const CHECKPOINT_NAME: &str = "log-start-offset";
/// File name the next checkpoint is written to before the rename.
pub(crate) const CHECKPOINT_TEMP_NAME: &str = "log-start-offset.tmp";
/// Size of the checkpoint file.
const CHECKPOINT_BYTES: usize = 12;

fn encode(offset: Offset) -> Vec<u8> {
    let mut bytes = offset.0.to_be_bytes().to_vec();
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<Offset> {
    if bytes.len() != CHECKPOINT_BYTES {
        return None;
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[..8]);
    // A negative offset cannot name a segment file: treat it like a bad checksum.
    let crc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let offset = i64::from_be_bytes(offset);
    (crc32c::crc32c(&offset.to_be_bytes()) == crc && offset >= 0).then_some(Offset(offset))
}

/// Reads the checkpoint of `dir`; `None` if there is none.
///
/// # Errors
/// [`StorageError::CorruptCheckpoint`] if it exists but does not decode; [`StorageError::Io`]
/// if it cannot be read.
pub(crate) async fn read_checkpoint(disk: &SharedDisk, dir: &Path) -> Result<Option<Offset>, StorageError> {
    let path = dir.join(CHECKPOINT_NAME);
    let file = match disk.open_file(&path, OpenMode::Existing).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io(&path, IoOperation::Open)(error)),
    };
    let bytes = file.read_at(0, CHECKPOINT_BYTES + 1).await.map_err(StorageError::io(&path, IoOperation::Read))?;
    decode(&bytes).map(Some).ok_or(StorageError::CorruptCheckpoint { path })
}

/// Durably replaces the checkpoint of `dir` with `offset`.
///
/// # Errors
/// [`StorageError::FsyncFailed`] if the file or directory sync fails; `DiskFull` or `Io` for
/// the write and rename.
pub(crate) async fn write_checkpoint(disk: &SharedDisk, dir: &Path, offset: Offset) -> Result<(), StorageError> {
    let temporary = dir.join(CHECKPOINT_TEMP_NAME);
    let path = dir.join(CHECKPOINT_NAME);
    write_small_file(disk, &temporary, encode(offset)).await?;
    disk.rename(&temporary, &path).await.map_err(StorageError::io(&temporary, IoOperation::Rename))?;
    disk.sync_dir(dir).await.map_err(StorageError::fsync(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::OsDisk;

    #[tokio::test]
    async fn checkpoint_round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = OsDisk::shared();
        assert_eq!(read_checkpoint(&disk, dir.path()).await.expect("read"), None);
        write_checkpoint(&disk, dir.path(), Offset(77)).await.expect("write");
        write_checkpoint(&disk, dir.path(), Offset(1234)).await.expect("rewrite");
        assert_eq!(read_checkpoint(&disk, dir.path()).await.expect("read"), Some(Offset(1234)));
        assert!(!disk.exists(&dir.path().join(CHECKPOINT_TEMP_NAME)).await.expect("exists"));
        let mut bytes = encode(Offset(5));
        bytes[3] ^= 0x10;
        std::fs::write(dir.path().join(CHECKPOINT_NAME), bytes).expect("write");
        assert!(matches!(read_checkpoint(&disk, dir.path()).await, Err(StorageError::CorruptCheckpoint { .. })));
    }
}
