//! The storage crate's operating errors.
//!
//! Bugs are assertions, not variants. `FsyncFailed` is the one variant the broker must treat as
//! fatal (`rt::fatal(FatalReason::FsyncFailed, ..)`): after a failed fsync the page cache can no
//! longer be trusted to match the disk. `DiskFull` is an operating error: the broker answers
//! produces with an error and keeps serving reads.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use protocol::batch::BatchError;
use protocol::ids::Offset;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Writing would eat into the free-space reserve, or the filesystem said ENOSPC. Nothing of
    /// the failed write stays in the log.
    #[error("disk full: {needed_bytes} bytes needed, {available_bytes} bytes free")]
    DiskFull {
        /// Bytes the operation wanted to write.
        needed_bytes: u64,
        /// Bytes the filesystem reported free (the reserve included).
        available_bytes: u64,
    },
    /// An fsync (file data or directory) failed. Fatal for the node.
    #[error("fsync of {} failed: {source}", path.display())]
    FsyncFailed {
        /// The file or directory being synced.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Any other file operation failed.
    #[error("{operation} {} failed: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done.
        operation: IoOperation,
        /// The OS error.
        source: io::Error,
    },
    /// An offset outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: Offset,
        /// The log's start offset at the time.
        log_start_offset: Offset,
        /// The log's end offset at the time.
        log_end_offset: Offset,
    },
    /// An idempotent producer's batch was refused by the leader's sequence check; nothing of
    /// the append was written.
    #[error("{source}")]
    ProducerSequence {
        /// Which rule it broke (it carries the Kafka error code).
        #[from]
        source: replication::producer_state::SequenceError,
    },
    /// An appended buffer is not a sequence of whole v2 record batches.
    #[error("invalid record batch: {source}")]
    InvalidBatch {
        /// What was wrong with it.
        #[from]
        source: BatchError,
    },
    /// `append` was given no bytes.
    #[error("append holds no record batch")]
    EmptyAppend,
    /// A replicated append whose batches do not continue the log (a follower's append must
    /// start at its log end offset and keep the leader's offsets).
    #[error("replicated batch at offset {got} does not continue the log at {expected}")]
    ReplicatedOffsetMismatch {
        /// The offset the log expected.
        expected: Offset,
        /// The batch's base offset.
        got: Offset,
    },
    /// `append` was given more than [`crate::limits::APPEND_BYTES_MAX`] bytes.
    #[error("append of {bytes} bytes exceeds the limit of {bytes_max} bytes")]
    AppendTooLarge {
        /// Bytes in the append.
        bytes: u64,
        /// The limit.
        bytes_max: u64,
    },
    /// The batches of one append span more offsets than a segment can index.
    #[error("append spans {offsets} offsets, more than the limit of {offsets_max}")]
    AppendOffsetSpanTooLarge {
        /// Offsets the append would use.
        offsets: i64,
        /// The limit ([`crate::limits::RELATIVE_OFFSET_MAX`] + 1).
        offsets_max: i64,
    },
    /// A segment that recovery accepted no longer parses (a batch header is invalid or the file
    /// is shorter than the log believes). The node should restart and recover.
    #[error("segment {} is corrupt at byte {position}", path.display())]
    CorruptSegment {
        /// The segment file.
        path: PathBuf,
        /// Where parsing failed.
        position: u64,
    },
    /// The `log-start-offset` checkpoint exists but its length or checksum is wrong. It is only
    /// ever replaced by an atomic rename, so this is not a torn write.
    #[error("checkpoint {} is corrupt", path.display())]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// A [`crate::LogConfig`] value is outside its documented range.
    #[error("config {name} = {value} is outside [{min}, {max}]")]
    InvalidConfig {
        /// The Kafka property name.
        name: &'static str,
        /// The value given (saturated to `i64`).
        value: i64,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A [`crate::LogConfig`] ratio is outside [0, 1] (or not a number).
    #[error("config {name} = {value} is outside [0, 1]")]
    InvalidRatio {
        /// The Kafka property name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The controller's Raft log store (raft-engine) failed: an I/O error, corruption it
    /// could not tolerate, or its storage thread is gone.
    #[error("raft log store: {detail}")]
    RaftLog {
        /// What went wrong.
        detail: String,
    },
    /// The partition log was deleted; no operation is possible any more.
    #[error("partition log {} was deleted", dir.display())]
    LogDeleted {
        /// The partition directory.
        dir: PathBuf,
    },
    /// A record for the record log is longer than [`crate::limits::RECORD_LOG_RECORD_BYTES_MAX`].
    #[error("record of {bytes} bytes exceeds the limit of {bytes_max} bytes")]
    RecordTooLarge {
        /// Bytes in the record.
        bytes: u64,
        /// The limit.
        bytes_max: u64,
    },
}

/// The file operation an [`StorageError::Io`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOperation {
    /// Creating a directory.
    CreateDir,
    /// Listing a directory.
    ListDir,
    /// Opening or creating a file.
    Open,
    /// Reading a file.
    Read,
    /// Writing a file.
    Write,
    /// Truncating or extending a file.
    SetLen,
    /// Querying a file's length.
    Length,
    /// Removing a file or directory.
    Remove,
    /// Renaming a file.
    Rename,
    /// Checking whether a path exists.
    Exists,
    /// Querying free space.
    AvailableBytes,
}

impl fmt::Display for IoOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self {
            IoOperation::CreateDir => "creating directory",
            IoOperation::ListDir => "listing directory",
            IoOperation::Open => "opening",
            IoOperation::Read => "reading",
            IoOperation::Write => "writing",
            IoOperation::SetLen => "truncating",
            IoOperation::Length => "measuring",
            IoOperation::Remove => "removing",
            IoOperation::Rename => "renaming",
            IoOperation::Exists => "checking",
            IoOperation::AvailableBytes => "measuring free space of",
        };
        f.write_str(verb)
    }
}

impl StorageError {
    /// A `map_err` adapter producing [`StorageError::Io`] for `path`.
    pub(crate) fn io(path: &Path, operation: IoOperation) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.to_owned();
        move |source| StorageError::Io { path, operation, source }
    }

    /// A `map_err` adapter producing [`StorageError::FsyncFailed`] for `path`.
    pub(crate) fn fsync(path: &Path) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.to_owned();
        move |source| StorageError::FsyncFailed { path, source }
    }
}
