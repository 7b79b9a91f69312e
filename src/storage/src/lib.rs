//! Storage for weir: the [`Disk`] seam, the partition segment log ([`PartitionLog`]), the
//! node-wide free-space guard ([`SpaceGuard`]) and the metadata record log
//! ([`record_log::RecordLog`]).
//!
//! # Layout on disk
//!
//! A partition directory holds, for each segment, `{base_offset:020}.log` (record batches
//! exactly as produced, after the broker rewrote base offset and partition leader epoch),
//! `{base_offset:020}.index` (sparse: relative offset `u32` + file position `u32`) and
//! `{base_offset:020}.timeindex` (max timestamp `i64` + relative offset `u32`), plus a
//! `log-start-offset` checkpoint once DeleteRecords or retention moved the log start.
//!
//! # Design
//!
//! All file I/O goes through the async [`Disk`] trait, so the deterministic simulator can run
//! this exact code on a disk that loses unsynced writes, tears writes and fills up. The crate
//! reads no clock (time arrives as `now_ms`), spawns nothing and draws no randomness.
//!
//! Appends are serialised and written with one `write` per Produce partition, without
//! preallocating segment files (preallocated extents make fdatasync slow on ext4). They do not
//! fsync: [`PartitionLog::flush`] does, without holding the append lock, so one fsync covers
//! every batch appended before it (group commit), and reports the durable end offset the
//! high watermark may advance to. Reads and flushes run concurrently with appends; a read sees
//! only batches whose write finished. Indexes live in memory while a segment is active and are
//! written when it rolls; reads find a start position through the floor index entry and walk
//! batch headers from there.
//!
//! # Invariants
//!
//! * Segments are contiguous: each starts at its predecessor's next offset, and within a
//!   segment each batch starts at the previous batch's next offset.
//! * Every segment but the active (last) one is fully fsynced with its index files; a roll
//!   fsyncs the old segment and its indexes, then creates the new file and fsyncs the
//!   directory.
//! * `first segment base <= log_start_offset <= log_end_offset` and
//!   `durable_end_offset <= log_end_offset`.
//! * Recovery never panics on arbitrary bytes: it keeps the longest valid, contiguous prefix of
//!   the log and cuts the rest.
//! * A failed append leaves nothing of itself in the segment; a failed fsync is
//!   [`StorageError::FsyncFailed`], which the broker treats as fatal.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use bytes::{Bytes, BytesMut};
//! use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
//! use protocol::ids::{LeaderEpoch, Offset};
//! use storage::{LogConfig, OsDisk, PartitionLog, SpaceGuard};
//!
//! let data_dir = tempfile::tempdir()?;
//! let disk = OsDisk::shared();
//! let space = Arc::new(SpaceGuard::new(disk.clone(), data_dir.path().to_owned(), 0));
//! let dir = data_dir.path().join("orders-0");
//! let log = PartitionLog::open(disk.clone(), dir.clone(), LogConfig::default(), space.clone(), 1_000).await?;
//!
//! // A producer's batch: one record, offsets relative to 0 until the log assigns them.
//! let record = Record {
//!     transactional: false, control: false, delete_horizon: false, partition_leader_epoch: -1,
//!     producer_id: -1, producer_epoch: -1, timestamp_type: TimestampType::Creation,
//!     offset: 0, sequence: -1, timestamp: 1_000, key: None,
//!     value: Some(Bytes::from_static(b"hello")), headers: Default::default(),
//! };
//! let mut batch = BytesMut::new();
//! let options = RecordEncodeOptions { version: 2, compression: Compression::None };
//! RecordBatchEncoder::encode(&mut batch, [&record], &options)?;
//!
//! let appended = log.append(batch, LeaderEpoch(3), false, 1_000).await?;
//! assert_eq!(appended.base_offset, Offset(0));
//! assert_eq!(log.flush().await?, Offset(1)); // durable: the high watermark may move to 1
//!
//! let fetched = log.read(Offset(0), Offset(1), 1024 * 1024, true).await?;
//! assert_eq!(fetched.bytes.len() as u64, appended.bytes);
//!
//! // After a restart the log recovers to the same end.
//! drop(log);
//! let log = PartitionLog::open(disk, dir, LogConfig::default(), space, 2_000).await?;
//! assert_eq!(log.log_end_offset(), Offset(1));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod checkpoint;
pub mod config;
pub mod disk;
pub mod error;
mod index;
pub mod limits;
mod log;
pub mod raft_log;
pub mod record_log;
mod segment;
pub mod space;

#[cfg(test)]
mod tester;

pub use config::LogConfig;
pub use disk::{Disk, DiskFile, OpenMode, OsDisk, SharedDisk};
pub use error::{IoOperation, StorageError};
pub use log::{AppendInfo, CleanStats, PartitionLog, ReadResult};
pub use record_log::RecordLog;
pub use space::SpaceGuard;
