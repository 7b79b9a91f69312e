//! Log-cleaner throughput: builds a partition log of keyed 1 KiB records whose keys repeat,
//! then times one compaction pass over it. Reported as MB/s of the whole log (every sealed
//! byte is read twice, once to map the keys and once to copy; the segments that change are
//! written and fsynced once), to set against `../shared/tools/machine-limits` from the same
//! run. Pass `cold` to drop the page cache before the pass (root only), so the reads come
//! from the disk as an old log's would.
//!
//! ```sh
//! cargo bench -p weir-storage --bench cleaner -- [LOG_MIB] [KEYS] [cold]
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use protocol::ids::LeaderEpoch;
use storage::{LogConfig, OsDisk, PartitionLog, SpaceGuard};

/// Records per appended batch.
const BATCH_RECORDS: usize = 16;
/// Bytes of each record's value.
const VALUE_BYTES: usize = 1024;

fn batch(first_key: usize, keys: usize, timestamp_ms: i64) -> BytesMut {
    let records: Vec<Record> = (0..BATCH_RECORDS)
        .map(|at| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: at as i64,
            sequence: at as i32 - 1,
            timestamp: timestamp_ms,
            key: Some(Bytes::from(format!("key-{:08}", (first_key + at * 7_919) % keys))),
            value: Some(Bytes::from(vec![b'v'; VALUE_BYTES])),
            headers: Default::default(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        &records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("encode");
    buffer
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--") && arg != "cold").collect();
    let log_mib: usize = args.first().and_then(|arg| arg.parse().ok()).unwrap_or(256);
    let keys: usize = args.get(1).and_then(|arg| arg.parse().ok()).unwrap_or(20_000);
    let runtime = rt::runtime::build(2).expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::Builder::new().prefix("weir-cleaner-bench-").tempdir().expect("tempdir");
        let disk = OsDisk::shared();
        let space = Arc::new(SpaceGuard::new(Arc::clone(&disk), dir.path().to_owned(), 0));
        let config = LogConfig {
            segment_bytes: 16 * 1024 * 1024,
            compact: true,
            delete: false,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(disk, dir.path().join("p-0"), config, space, 0).await.expect("open");
        let mut appended = 0;
        let mut first_key = 0;
        while appended < log_mib * 1024 * 1024 {
            let info = log.append(batch(first_key, keys, 1_000), LeaderEpoch(1), false, 1_000).await.expect("append");
            appended += info.bytes as usize;
            first_key += BATCH_RECORDS;
        }
        let _ = log.flush().await.expect("flush");
        let end = log.log_end_offset();
        let before = log.size_bytes();
        if std::env::args().any(|arg| arg == "cold") {
            let dropped = std::process::Command::new("sh").args(["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"]).status();
            assert!(dropped.is_ok_and(|status| status.success()), "dropping the page cache needs root");
        }
        let started = Instant::now();
        let stats = log.clean(2_000, end).await.expect("clean").expect("a pass ran");
        let elapsed = started.elapsed().as_secs_f64();
        let mb = |bytes: u64| bytes as f64 / 1_000_000.0;
        println!(
            "cleaner: log {:.0} MB ({} records over {keys} keys) cleaned in {elapsed:.2} s: {:.0} MB/s of log; {} segments rewritten, {} records removed, {:.1} MB -> {:.1} MB",
            mb(before),
            end.0,
            mb(before) / elapsed,
            stats.segments_cleaned,
            stats.records_removed,
            mb(stats.bytes_before),
            mb(stats.bytes_after),
        );
    });
}
