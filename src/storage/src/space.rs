//! The free-space guard shared by every partition log of a node.
//!
//! A full disk is an operating error, not a crash: produces are refused before the filesystem
//! runs out, so that segment rolls, index files, checkpoints and the metadata log still have
//! room. Asking the filesystem (`statvfs`) on every append would cost a syscall per batch, so
//! the guard keeps an estimate, subtracts what it lets through, and asks again only every
//! [`SPACE_REFRESH_BYTES`] or when the estimate comes near the reserve.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use crate::disk::SharedDisk;
use crate::error::{IoOperation, StorageError};
use crate::limits::{SPACE_REFRESH_BYTES, SPACE_REFRESH_MARGIN_BYTES};

/// Refuses writes that would leave less than `reserve_bytes` free on the data directory's
/// filesystem. Shared by all partitions of a node through an `Arc`.
#[derive(Debug)]
pub struct SpaceGuard {
    /// Where free space is measured.
    disk: SharedDisk,
    /// Any path on the data filesystem; the node's data directory.
    data_dir: PathBuf,
    /// Free bytes that writes must leave untouched (`log.disk.reserve.bytes`).
    reserve_bytes: u64,
    /// The running estimate; held only for arithmetic, never across an await.
    estimate: Mutex<SpaceEstimate>,
}

#[derive(Debug, Default)]
struct SpaceEstimate {
    /// Free bytes as last measured minus what was reserved since; `None` before the first
    /// measurement.
    available_bytes: Option<u64>,
    /// Bytes reserved since the last measurement.
    reserved_since_refresh_bytes: u64,
    /// How many times the filesystem was asked (for tests and metrics).
    refreshes: u64,
}

impl SpaceGuard {
    /// A guard for the filesystem holding `data_dir`. Does no I/O: the first
    /// [`SpaceGuard::reserve`] measures.
    pub fn new(disk: SharedDisk, data_dir: PathBuf, reserve_bytes: u64) -> SpaceGuard {
        SpaceGuard { disk, data_dir, reserve_bytes, estimate: Mutex::new(SpaceEstimate::default()) }
    }

    /// The configured reserve.
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// How many times the guard has asked the filesystem for its free space.
    pub fn refreshes(&self) -> u64 {
        self.estimate.lock().unwrap_or_else(PoisonError::into_inner).refreshes
    }

    /// Claims `bytes` of free space for a write about to happen.
    ///
    /// # Errors
    /// [`StorageError::DiskFull`] if the write would leave less than the reserve free;
    /// [`StorageError::Io`] if the free space cannot be measured.
    pub async fn reserve(&self, bytes: u64) -> Result<(), StorageError> {
        if self.needs_refresh(bytes) {
            let available_bytes = self
                .disk
                .available_bytes(&self.data_dir)
                .await
                .map_err(StorageError::io(&self.data_dir, IoOperation::AvailableBytes))?;
            let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
            estimate.available_bytes = Some(available_bytes);
            estimate.reserved_since_refresh_bytes = 0;
            estimate.refreshes += 1;
        }
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let available_bytes = estimate.available_bytes.unwrap_or(0);
        if available_bytes < bytes.saturating_add(self.reserve_bytes) {
            return Err(StorageError::DiskFull { needed_bytes: bytes, available_bytes });
        }
        estimate.available_bytes = Some(available_bytes - bytes);
        estimate.reserved_since_refresh_bytes = estimate.reserved_since_refresh_bytes.saturating_add(bytes);
        Ok(())
    }

    /// Returns space to the estimate: a reserved write that did not happen, or deleted
    /// segments.
    pub fn release(&self, bytes: u64) {
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(available_bytes) = estimate.available_bytes.as_mut() {
            *available_bytes = available_bytes.saturating_add(bytes);
        }
    }

    fn needs_refresh(&self, bytes: u64) -> bool {
        let estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        match estimate.available_bytes {
            None => true,
            Some(available_bytes) => {
                estimate.reserved_since_refresh_bytes >= SPACE_REFRESH_BYTES
                    || available_bytes
                        < bytes.saturating_add(self.reserve_bytes).saturating_add(SPACE_REFRESH_MARGIN_BYTES)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::tester::FaultDisk;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn guard(available_bytes: u64, reserve_bytes: u64) -> (SpaceGuard, Arc<crate::tester::Faults>) {
        let disk = Arc::new(FaultDisk::default());
        *disk.faults.available_bytes.lock().expect("faults") = Some(available_bytes);
        let faults = Arc::clone(&disk.faults);
        (SpaceGuard::new(disk, PathBuf::from("/"), reserve_bytes), faults)
    }

    /// The guard measures once, then runs on its estimate until SPACE_REFRESH_BYTES were
    /// reserved.
    #[tokio::test]
    async fn free_space_is_measured_rarely_while_far_from_the_reserve() {
        let (guard, faults) = guard(10 * GIB, GIB);
        for _ in 0..1000 {
            guard.reserve(1024).await.expect("plenty of space");
        }
        assert_eq!(faults.available_calls.load(Ordering::SeqCst), 1);
        guard.reserve(SPACE_REFRESH_BYTES).await.expect("reserve");
        guard.reserve(1).await.expect("reserve");
        assert_eq!(guard.refreshes(), 2, "a refresh after SPACE_REFRESH_BYTES");
    }

    /// Near the reserve every reservation measures again, and one that would cut into the
    /// reserve is refused with the bytes measured.
    #[tokio::test]
    async fn reservations_near_the_reserve_measure_and_are_refused_inside_it() {
        let reserve_bytes = GIB;
        let (guard, faults) = guard(reserve_bytes + 1024 * 1024, reserve_bytes);
        guard.reserve(1024).await.expect("above the reserve");
        guard.reserve(1024).await.expect("above the reserve");
        assert_eq!(faults.available_calls.load(Ordering::SeqCst), 2);
        let error = guard.reserve(2 * 1024 * 1024).await.expect_err("would eat into the reserve");
        assert!(matches!(
            error,
            StorageError::DiskFull { needed_bytes, available_bytes }
                if needed_bytes == 2 * 1024 * 1024 && available_bytes == reserve_bytes + 1024 * 1024
        ));
        *faults.available_bytes.lock().expect("faults") = Some(10 * GIB);
        guard.reserve(2 * 1024 * 1024).await.expect("space was freed");
    }
}
