//! Recovery must survive any segment contents: arbitrary bytes written as the active segment
//! open without panicking into a log whose every batch reads back. The first input byte picks
//! whether a valid segment of three batches precedes the fuzzed one, so contiguity checks
//! across segments are fuzzed too.

#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::batch::{compute_crc, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES};
use protocol::ids::{LeaderEpoch, Offset};
use storage::{LogConfig, OsDisk, PartitionLog, SpaceGuard};

/// Batches in the valid segment written before the fuzzed one.
const SEALED_BATCHES: i64 = 3;

/// The smallest valid v2 batch: a header with no records, one offset.
fn empty_batch() -> BytesMut {
    let mut batch = vec![0u8; BATCH_HEADER_BYTES];
    let length = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[16] = 2;
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    BytesMut::from(&batch[..])
}

async fn recover(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (with_sealed, contents) = match data.split_first() {
        Some((selector, rest)) => (selector & 1 == 1, rest),
        None => (false, data),
    };
    let disk = OsDisk::shared();
    let space = Arc::new(SpaceGuard::new(disk.clone(), dir.path().to_owned(), 0));
    let config = LogConfig { index_interval_bytes: 0, ..LogConfig::default() };
    let mut active_base_offset = 0;
    if with_sealed {
        let log = PartitionLog::open(disk.clone(), dir.path().to_owned(), config, space.clone(), 0)
            .await
            .expect("open an empty log");
        for _ in 0..SEALED_BATCHES {
            let _ = log.append(empty_batch(), LeaderEpoch(0), false, 0).await.expect("append");
        }
        active_base_offset = SEALED_BATCHES;
    }
    let active = dir.path().join(format!("{active_base_offset:020}.log"));
    std::fs::write(active, contents).expect("write the fuzzed segment");

    let log = PartitionLog::open(disk, dir.path().to_owned(), config, space, 0)
        .await
        .expect("recovery cuts bad data instead of failing");
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    assert!(start <= end);
    if with_sealed {
        assert!(end >= Offset(SEALED_BATCHES), "valid batches before the fuzzed segment survive");
    }
    let all = log.read(start, end, usize::MAX, true).await.expect("the recovered log reads back");
    assert_eq!(all.bytes.len() as u64, log.size_bytes());
    let _ = log.offset_for_timestamp(0).await.expect("timestamp lookup");
    let _ = log.max_timestamp();
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(recover(data));
});
