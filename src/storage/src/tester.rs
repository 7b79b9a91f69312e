//! Test vocabulary: record batch builders, log openers, and a fault-injecting disk over the OS
//! disk.
//!
//! Fault model of [`FaultDisk`] (for unit tests only; the simulator's `SimDisk` is the real
//! one): it can report a chosen free-space figure and count how often it was asked, make the
//! next segment write stop after a prefix with ENOSPC, and hold segment writes at a gate so a
//! test can observe what runs while an append's write is in flight.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use crate::disk::{Disk, DiskFile, OpenMode, OsDisk, SharedDisk};
use crate::{LogConfig, PartitionLog, SpaceGuard};

/// A v2 batch with one record per timestamp, values of `value_bytes` bytes, offsets from 0.
/// Each record's sequence is `offset - 1` so the encoder keeps them in one batch.
pub(crate) fn encoded_batch(timestamps: &[i64], value_bytes: usize, compression: Compression) -> BytesMut {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(at, timestamp)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: at as i64,
            sequence: at as i32 - 1,
            timestamp: *timestamp,
            key: None,
            value: Some(Bytes::from(vec![b'v'; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(&mut buffer, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode test batch");
    buffer
}

/// An uncompressed batch of `records` records, all stamped `timestamp_ms`.
pub(crate) fn batch(records: usize, timestamp_ms: i64) -> BytesMut {
    encoded_batch(&vec![timestamp_ms; records], 10, Compression::None)
}

/// A config with small segments and a dense index, no retention.
pub(crate) fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        index_interval_bytes: 100,
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    }
}

/// A batch of `records` records from idempotent producer `producer_id` at `epoch`, starting
/// at `base_sequence`.
pub(crate) fn idempotent_batch(
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    records: usize,
    timestamp_ms: i64,
) -> BytesMut {
    let records: Vec<Record> = (0..records)
        .map(|at| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: at as i64,
            sequence: base_sequence + at as i32,
            timestamp: timestamp_ms,
            key: None,
            value: Some(Bytes::from_static(b"idempotent")),
            headers: Default::default(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        &records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("encode test batch");
    buffer
}

/// A space guard with no reserve over `disk`.
pub(crate) fn no_reserve(disk: &SharedDisk) -> Arc<SpaceGuard> {
    Arc::new(SpaceGuard::new(Arc::clone(disk), std::env::temp_dir(), 0))
}

/// Opens `dir` on the OS disk.
pub(crate) async fn open_log(dir: &Path, config: LogConfig, now_ms: i64) -> PartitionLog {
    let disk = OsDisk::shared();
    PartitionLog::open(Arc::clone(&disk), dir.to_owned(), config, no_reserve(&disk), now_ms)
        .await
        .expect("open partition log")
}

/// Everything readable from the log start offset.
pub(crate) async fn read_all(log: &PartitionLog) -> Bytes {
    log.read(log.log_start_offset(), log.log_end_offset(), usize::MAX, true).await.expect("read whole log").bytes
}

/// The segment files (`.log`) of a partition directory, sorted.
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

/// What the [`FaultDisk`] does wrong, shared with the test.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// If set, `available_bytes` reports this instead of asking the OS.
    pub(crate) available_bytes: Mutex<Option<u64>>,
    /// How many times `available_bytes` was called.
    pub(crate) available_calls: AtomicU64,
    /// If set, the next write to a `.log` file writes this many bytes and fails with ENOSPC.
    pub(crate) enospc_after_bytes: Mutex<Option<usize>>,
    /// Writes to `.log` files hold this shared; a test holding it exclusively stalls them.
    pub(crate) write_gate: tokio::sync::RwLock<()>,
}

/// The OS disk with the faults above.
#[derive(Debug, Default)]
pub(crate) struct FaultDisk {
    pub(crate) faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn DiskFile>,
    faults: Arc<Faults>,
    is_segment: bool,
}

#[async_trait]
impl Disk for FaultDisk {
    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.create_dir_all(path).await
    }
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        OsDisk.list_dir(path).await
    }
    async fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let inner = OsDisk.open_file(path, mode).await?;
        let is_segment = path.extension().is_some_and(|extension| extension == "log");
        Ok(Arc::new(FaultFile { inner, faults: Arc::clone(&self.faults), is_segment }))
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_file(path).await
    }
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_dir_all(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsDisk.rename(from, to).await
    }
    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OsDisk.sync_dir(path).await
    }
    async fn exists(&self, path: &Path) -> io::Result<bool> {
        OsDisk.exists(path).await
    }
    async fn available_bytes(&self, path: &Path) -> io::Result<u64> {
        let _ = self.faults.available_calls.fetch_add(1, Ordering::SeqCst);
        let forced = *self.faults.available_bytes.lock().expect("faults lock");
        match forced {
            Some(bytes) => Ok(bytes),
            None => OsDisk.available_bytes(path).await,
        }
    }
}

#[async_trait]
impl DiskFile for FaultFile {
    async fn read_at(&self, offset: u64, length: usize) -> io::Result<Bytes> {
        self.inner.read_at(offset, length).await
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> io::Result<()> {
        if !self.is_segment {
            return self.inner.write_at(offset, data).await;
        }
        let _gate = self.faults.write_gate.read().await;
        let enospc_after = self.faults.enospc_after_bytes.lock().expect("faults lock").take();
        match enospc_after {
            Some(prefix) => {
                self.inner.write_at(offset, data.slice(..prefix.min(data.len()))).await?;
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            None => self.inner.write_at(offset, data).await,
        }
    }
    async fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data().await
    }
    async fn set_len(&self, length: u64) -> io::Result<()> {
        self.inner.set_len(length).await
    }
    async fn len(&self) -> io::Result<u64> {
        self.inner.len().await
    }
}
