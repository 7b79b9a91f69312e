//! Unit tests of the partition log on the OS disk, in a temporary directory.
//!
//! Recovery tests follow Kafka's log recovery (`LogLoader`): keep the longest valid prefix of
//! the active segment, validated batch by batch with CRC-32C (KIP-98 record batch format), and
//! drop everything after it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;
use protocol::batch::{BatchHeader, Batches};
use protocol::ids::{LeaderEpoch, Offset};

use crate::checkpoint::CHECKPOINT_NAME;
use crate::disk::{OsDisk, SharedDisk};
use crate::error::StorageError;
use crate::limits::SEGMENT_BYTES_MIN;
use crate::tester::{
    batch, encoded_batch, idempotent_batch, open_log, read_all, segment_files, small_config, FaultDisk,
};
use crate::{LogConfig, PartitionLog, SpaceGuard};

const EPOCH: LeaderEpoch = LeaderEpoch(5);

/// Appends `count` batches of `records` records each, one append per batch.
async fn append_batches(log: &PartitionLog, count: usize, records: usize, now_ms: i64) {
    for _ in 0..count {
        let _ = log.append(batch(records, now_ms), EPOCH, false, now_ms).await.expect("append");
    }
}

/// Headers of the batches in `bytes`.
fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    Batches::new(bytes).map(|item| item.expect("valid batch").0).collect()
}

fn base_offsets(bytes: &[u8]) -> Vec<i64> {
    headers(bytes).iter().map(|header| header.base_offset.0).collect()
}

fn batch_bytes(records: usize) -> u64 {
    batch(records, 0).len() as u64
}

#[tokio::test]
async fn append_assigns_offsets_stamps_the_epoch_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(0), Offset(0)));

    let mut produce = BytesMut::new();
    for records in [2, 3, 1] {
        produce.extend_from_slice(&batch(records, 1_000));
    }
    let total = produce.len() as u64;
    let info = log.append(produce, EPOCH, false, 1_000).await.expect("append");
    assert_eq!(info.base_offset, Offset(0));
    assert_eq!(info.last_offset, Offset(5));
    assert_eq!(info.log_end_offset, Offset(6));
    assert_eq!((info.batches.len(), info.record_count, info.bytes), (3, 6, total));
    assert_eq!(log.size_bytes(), total);

    let bytes = read_all(&log).await;
    assert_eq!(bytes.len() as u64, total);
    let headers = headers(&bytes);
    assert_eq!(headers.iter().map(|header| header.base_offset.0).collect::<Vec<_>>(), vec![0, 2, 5]);
    assert!(headers.iter().all(|header| header.partition_leader_epoch == EPOCH && !header.is_log_append_time()));

    let info = log.append(batch(4, 1_000), LeaderEpoch(6), false, 1_000).await.expect("append");
    assert_eq!((info.base_offset, info.log_end_offset), (Offset(6), Offset(10)));
}

#[tokio::test]
async fn log_append_time_is_stamped_with_a_valid_crc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    let _ = log.append(batch(3, 1_000), EPOCH, true, 77_000).await.expect("append");
    let bytes = read_all(&log).await;
    let header = headers(&bytes)[0];
    assert!(header.is_log_append_time());
    assert_eq!(header.max_timestamp, 77_000);
    assert_eq!(log.max_timestamp(), Some((Offset(0), 77_000)));
}

#[tokio::test]
async fn malformed_appends_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    assert!(matches!(log.append(BytesMut::new(), EPOCH, false, 0).await, Err(StorageError::EmptyAppend)));
    let whole = batch(2, 0);
    let torn = BytesMut::from(&whole[..whole.len() - 1]);
    assert!(matches!(log.append(torn, EPOCH, false, 0).await, Err(StorageError::InvalidBatch { .. })));
    let mut trailing = whole.clone();
    trailing.extend_from_slice(b"junk");
    assert!(matches!(log.append(trailing, EPOCH, false, 0).await, Err(StorageError::InvalidBatch { .. })));
    assert!(matches!(
        log.append(BytesMut::from(&[0u8; 100][..]), EPOCH, false, 0).await,
        Err(StorageError::InvalidBatch { .. })
    ));
    assert_eq!(log.log_end_offset(), Offset(0));
    assert_eq!(log.size_bytes(), 0);
}

/// `segment.bytes`: a segment takes appends while they fit and rolls before one that would
/// overflow it; an append bigger than a segment still goes whole into an empty one.
#[tokio::test]
async fn segments_roll_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(3 * batch_bytes(2));
    let log = open_log(dir.path(), config, 0).await;
    append_batches(&log, 7, 2, 0).await;
    let files = segment_files(dir.path());
    let names: Vec<String> =
        files.iter().map(|path| path.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["00000000000000000000.log", "00000000000000000006.log", "00000000000000000012.log"]);
    assert!(dir.path().join("00000000000000000000.index").exists());
    assert!(dir.path().join("00000000000000000006.timeindex").exists());
    assert!(!dir.path().join("00000000000000000012.index").exists(), "the active segment's index is in memory");
    let big = batch(40, 0);
    let _ = log.append(big.clone(), EPOCH, false, 0).await.expect("oversized append");
    let _ = log.append(batch(1, 0), EPOCH, false, 0).await.expect("append");
    assert_eq!(segment_files(dir.path()).len(), 5, "the big batch got a segment of its own");
    assert_eq!(base_offsets(&read_all(&log).await), vec![0, 2, 4, 6, 8, 10, 12, 14, 54]);
    assert_eq!(log.durable_end_offset(), Offset(54), "rolled segments are durable");
}

/// `segment.ms`: the active segment rolls once its first append is older than segment.ms; after
/// a restart the clock restarts from the first batch's timestamp.
#[tokio::test]
async fn segments_roll_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { segment_ms: 100, ..LogConfig::default() };
    let log = open_log(dir.path(), config, 1_000).await;
    let _ = log.append(batch(1, 1_000), EPOCH, false, 1_000).await.expect("append");
    let _ = log.append(batch(1, 1_100), EPOCH, false, 1_100).await.expect("append");
    assert_eq!(segment_files(dir.path()).len(), 1, "exactly segment.ms old does not roll");
    let _ = log.append(batch(1, 1_101), EPOCH, false, 1_101).await.expect("append");
    assert_eq!(segment_files(dir.path()).len(), 2);
    drop(log);
    let log = open_log(dir.path(), config, 1_150).await;
    let _ = log.append(batch(1, 1_150), EPOCH, false, 1_150).await.expect("append");
    assert_eq!(segment_files(dir.path()).len(), 2);
    let _ = log.append(batch(1, 1_300), EPOCH, false, 1_300).await.expect("append");
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert_eq!(log.log_end_offset(), Offset(5));
}

/// Reopening after many rolls serves the same bytes, whether sealed segments load from their
/// index files, rebuild a missing index, or reject a garbage one.
#[tokio::test]
async fn reopen_after_rolls_keeps_all_data_and_rebuilds_bad_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(5 * batch_bytes(3));
    let log = open_log(dir.path(), config, 0).await;
    for round in 0..23 {
        let _ = log.append(batch(1 + round % 3, round as i64), EPOCH, false, 0).await.expect("append");
    }
    let before = read_all(&log).await;
    let end = log.log_end_offset();
    drop(log);

    let log = open_log(dir.path(), config, 0).await;
    assert_eq!(read_all(&log).await, before);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.max_timestamp(), Some((Offset(43), 22)));
    drop(log);

    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    std::fs::remove_file(files[0].with_extension("index")).expect("remove index");
    std::fs::write(files[1].with_extension("timeindex"), b"not an index").expect("garbage");
    std::fs::write(files[2].with_extension("index"), [0u8; 16]).expect("zeros");
    let log = open_log(dir.path(), config, 0).await;
    assert_eq!(read_all(&log).await, before);
    // Every offset reads from the batch that holds it.
    for offset in 0..end.0 {
        let result = log.read(Offset(offset), end, 1, true).await.expect("read");
        let header = headers(&result.bytes)[0];
        assert!(header.base_offset.0 <= offset && offset < header.next_offset().0, "offset {offset}");
    }
    let _ = log.append(batch(1, 99), EPOCH, false, 0).await.expect("append after reopen");
    assert_eq!(log.log_end_offset(), end.plus(1));
}

/// Builds a log with a sealed segment and an active one of three batches; returns the active
/// segment's bytes, the position of its last batch and the log's contents.
async fn log_with_three_active_batches(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize, Bytes) {
    let config = small_config(4 * batch_bytes(1));
    let log = open_log(dir, config, 0).await;
    append_batches(&log, 7, 1, 0).await;
    assert_eq!(log.log_end_offset(), Offset(7));
    let contents = read_all(&log).await;
    drop(log);
    let files = segment_files(dir);
    assert_eq!(files.len(), 2);
    let active = files[1].clone();
    let bytes = std::fs::read(&active).expect("read segment");
    let last_batch_position = bytes.len() - batch_bytes(1) as usize;
    (active, bytes, last_batch_position, contents)
}

/// A crash can leave any prefix of the last write: for every cut inside the last batch, the
/// log recovers to the batch before it, truncates the file there, and appends continue.
#[tokio::test]
async fn recovery_cuts_a_torn_last_batch_at_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (active, bytes, last_position, contents) = log_with_three_active_batches(dir.path()).await;
    let kept = contents.slice(..contents.len() - (bytes.len() - last_position));
    let config = small_config(4 * batch_bytes(1));
    for cut in last_position..bytes.len() {
        std::fs::write(&active, &bytes[..cut]).expect("cut");
        let log = open_log(dir.path(), config, 0).await;
        assert_eq!(log.log_end_offset(), Offset(6), "cut at {cut}");
        assert_eq!(log.durable_end_offset(), Offset(6));
        assert_eq!(read_all(&log).await, kept, "cut at {cut}");
        assert_eq!(std::fs::metadata(&active).expect("stat").len(), last_position as u64);
    }
    let log = open_log(dir.path(), config, 0).await;
    let info = log.append(batch(1, 0), EPOCH, false, 0).await.expect("append after recovery");
    assert_eq!(info.base_offset, Offset(6));
}

/// Any flipped byte of the last batch covered by its CRC, length or base offset makes recovery
/// drop that batch. (The partition leader epoch, bytes 12..16, lies outside the CRC by design
/// and is not checked.)
#[tokio::test]
async fn recovery_drops_a_last_batch_with_a_flipped_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (active, bytes, last_position, _) = log_with_three_active_batches(dir.path()).await;
    let config = small_config(4 * batch_bytes(1));
    for position in (last_position..bytes.len()).filter(|position| !(12..16).contains(&(position - last_position))) {
        let mut flipped = bytes.clone();
        flipped[position] ^= 0x20;
        std::fs::write(&active, &flipped).expect("flip");
        let log = open_log(dir.path(), config, 0).await;
        assert_eq!(log.log_end_offset(), Offset(6), "flipped byte {}", position - last_position);
    }
}

/// Garbage after the last batch (zeros of a preallocated tail, random bytes, or a valid batch
/// that does not continue the offsets) is cut off.
#[tokio::test]
async fn recovery_cuts_garbage_after_the_last_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (active, bytes, last_position, contents) = log_with_three_active_batches(dir.path()).await;
    let config = small_config(4 * batch_bytes(1));
    let repeated_batch = bytes[last_position..].to_vec();
    let noise: Vec<u8> = (0..1000u32).map(|at| (at.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for garbage in [vec![0u8; 4096], noise, repeated_batch] {
        let mut dirty = bytes.clone();
        dirty.extend_from_slice(&garbage);
        std::fs::write(&active, &dirty).expect("write");
        let log = open_log(dir.path(), config, 0).await;
        assert_eq!(log.log_end_offset(), Offset(7));
        assert_eq!(read_all(&log).await, contents);
        assert_eq!(std::fs::metadata(&active).expect("stat").len(), bytes.len() as u64);
    }
}

/// A sealed segment that turns out corrupt (scanned because its index is gone) becomes the end
/// of the log: it is cut at the bad batch and every later segment is deleted, so the log stays
/// contiguous.
#[tokio::test]
async fn recovery_deletes_segments_after_a_corrupt_sealed_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(2 * batch_bytes(1));
    let log = open_log(dir.path(), config, 0).await;
    append_batches(&log, 6, 1, 0).await;
    drop(log);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    let mut middle = std::fs::read(&files[1]).expect("read");
    let last = middle.len() - 1;
    middle[last] ^= 1;
    std::fs::write(&files[1], &middle).expect("corrupt");
    std::fs::remove_file(files[1].with_extension("index")).expect("remove index");
    let log = open_log(dir.path(), config, 0).await;
    assert_eq!(log.log_end_offset(), Offset(3));
    assert_eq!(segment_files(dir.path()).len(), 2);
    let info = log.append(batch(1, 0), EPOCH, false, 0).await.expect("append");
    assert_eq!(info.base_offset, Offset(3));
}

#[tokio::test]
async fn retention_by_bytes_deletes_the_oldest_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch_bytes(2);
    let config = small_config(2 * one);
    let log = open_log(dir.path(), config, 0).await;
    append_batches(&log, 9, 2, 0).await; // segments of 2 batches: [0,4) [4,8) [8,12) [12,16) [16,18)
    assert_eq!(log.size_bytes(), 9 * one);
    assert_eq!(log.apply_retention(0).await.expect("retention"), 0, "unlimited by default");

    log.set_config(LogConfig { retention_bytes: (5 * one) as i64, ..config });
    // 9 -> 7 -> 5 batches: two segments go, a third would leave 3 < 5.
    assert_eq!(log.apply_retention(0).await.expect("retention"), 2);
    assert_eq!(log.log_start_offset(), Offset(8));
    assert_eq!(log.size_bytes(), 5 * one);
    assert_eq!(base_offsets(&read_all(&log).await), vec![8, 10, 12, 14, 16]);

    log.set_config(LogConfig { retention_bytes: 0, ..config });
    assert_eq!(log.apply_retention(0).await.expect("retention"), 2, "never the active segment");
    assert_eq!(log.log_start_offset(), Offset(16));
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(log);
    let log = open_log(dir.path(), config, 0).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(16), Offset(18)));
}

#[tokio::test]
async fn retention_by_time_deletes_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { retention_ms: 500, ..small_config(SEGMENT_BYTES_MIN) };
    let log = open_log(dir.path(), config, 0).await;
    for timestamp_ms in [1_000, 2_000, 3_000] {
        let _ = log.append(batch(1, timestamp_ms), EPOCH, false, timestamp_ms).await.expect("append");
    }
    assert_eq!(segment_files(dir.path()).len(), 3, "one batch per segment");
    assert_eq!(log.apply_retention(1_500).await.expect("retention"), 0, "1000 is exactly 500 old");
    assert_eq!(log.apply_retention(2_400).await.expect("retention"), 1);
    assert_eq!(log.log_start_offset(), Offset(1));
    assert_eq!(log.apply_retention(100_000).await.expect("retention"), 1, "the active segment stays");
    assert_eq!(log.log_start_offset(), Offset(2));
    assert_eq!(base_offsets(&read_all(&log).await), vec![2]);
}

/// DeleteRecords (KIP-107): the log start offset moves up durably, whole segments below it go,
/// reads below it are out of range, and it never moves back.
#[tokio::test]
async fn delete_records_before_raises_the_log_start_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(SEGMENT_BYTES_MIN);
    let log = open_log(dir.path(), config, 0).await;
    append_batches(&log, 4, 3, 0).await; // [0,3) [3,6) [6,9) [9,12), one per segment
    assert_eq!(log.delete_records_before(Offset(4)).await.expect("delete records"), Offset(4));
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert!(dir.path().join(CHECKPOINT_NAME).exists());
    assert_eq!(log.delete_records_before(Offset(2)).await.expect("no-op"), Offset(4), "never moves back");
    assert!(matches!(
        log.delete_records_before(Offset(13)).await,
        Err(StorageError::OffsetOutOfRange { offset: Offset(13), .. })
    ));
    drop(log);

    let log = open_log(dir.path(), config, 0).await;
    assert_eq!(log.log_start_offset(), Offset(4));
    assert!(matches!(log.read(Offset(3), Offset(12), 1000, true).await, Err(StorageError::OffsetOutOfRange { .. })));
    let result = log.read(Offset(4), Offset(12), 1_000_000, true).await.expect("read");
    assert_eq!(base_offsets(&result.bytes), vec![3, 6, 9], "the batch holding the log start is served whole");
    assert_eq!(result.log_start_offset, Offset(4));

    assert_eq!(log.delete_records_before(Offset(12)).await.expect("delete all"), Offset(12));
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(log.read(Offset(12), Offset(12), 1000, true).await.expect("read at end").bytes.is_empty());
    assert_eq!(log.offset_for_timestamp(0).await.expect("lookup"), None);
    drop(log);
    let log = open_log(dir.path(), config, 0).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(12), Offset(12)));
}

/// If DeleteRecords covered batches that were never fsynced and a crash lost them, the
/// recovered end is below the checkpoint: the log restarts empty at the checkpoint.
#[tokio::test]
async fn a_checkpoint_beyond_the_recovered_end_empties_the_log_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    append_batches(&log, 2, 2, 0).await;
    assert_eq!(log.delete_records_before(Offset(4)).await.expect("delete"), Offset(4));
    drop(log);
    let segment = &segment_files(dir.path())[0];
    std::fs::write(segment, &std::fs::read(segment).expect("read")[..batch_bytes(2) as usize]).expect("lose a batch");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(4), Offset(4)));
    assert_eq!(log.size_bytes(), 0);
    let info = log.append(batch(1, 0), EPOCH, false, 0).await.expect("append");
    assert_eq!(info.base_offset, Offset(4));
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[tokio::test]
async fn read_respects_max_bytes_upper_bound_and_offset_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(3 * batch_bytes(3));
    let log = open_log(dir.path(), config, 0).await;
    append_batches(&log, 5, 3, 0).await; // [0,3) [3,6) [6,9) | [9,12) [12,15)
    let one = batch_bytes(3) as usize;
    let end = Offset(15);

    let read = |from: i64, upper: i64, max_bytes: usize, min_one_batch: bool| {
        let log = &log;
        async move { log.read(Offset(from), Offset(upper), max_bytes, min_one_batch).await }
    };
    let offsets = |result: Result<crate::ReadResult, StorageError>| base_offsets(&result.expect("read").bytes);

    assert_eq!(offsets(read(0, 15, 10, true).await), vec![0], "min_one_batch returns a batch over max_bytes");
    assert_eq!(offsets(read(0, 15, 10, false).await), Vec::<i64>::new());
    assert_eq!(offsets(read(0, 15, 2 * one, false).await), vec![0, 3]);
    assert_eq!(offsets(read(0, 15, 2 * one + 1, true).await), vec![0, 3]);
    assert_eq!(offsets(read(4, 15, 10 * one, true).await), vec![3, 6, 9, 12], "from mid-batch, across segments");
    assert_eq!(offsets(read(7, 12, 10 * one, true).await), vec![6, 9], "upper is exclusive on base offsets");
    assert_eq!(offsets(read(7, 10, 10 * one, true).await), vec![6, 9], "a batch starting below upper is whole");
    assert_eq!(offsets(read(7, 9, 10 * one, true).await), vec![6]);
    assert_eq!(offsets(read(9, 9, 10 * one, true).await), Vec::<i64>::new(), "from == upper");
    let at_end = log.read(end, end, 1000, true).await.expect("read at end");
    assert!(at_end.bytes.is_empty());
    assert_eq!((at_end.log_start_offset, at_end.log_end_offset), (Offset(0), end));
    assert_eq!(offsets(read(0, 100, 100 * one, true).await).len(), 5, "upper past the end is clamped");
    assert!(matches!(
        read(16, 20, 1000, true).await,
        Err(StorageError::OffsetOutOfRange {
            offset: Offset(16),
            log_start_offset: Offset(0),
            log_end_offset: Offset(15)
        })
    ));
    let _ = log.delete_records_before(Offset(3)).await.expect("delete records");
    assert!(matches!(read(2, 15, 1000, true).await, Err(StorageError::OffsetOutOfRange { .. })));
}

/// ListOffsets by timestamp (KIP-79): the first offset whose record timestamp is at or after
/// the target, found through the time index and then by decoding the one candidate batch
/// (compressed or not); LogAppendTime batches use their append time for every record.
#[tokio::test]
async fn offset_for_timestamp_finds_the_exact_record() {
    for config in [small_config(SEGMENT_BYTES_MIN), LogConfig { index_interval_bytes: 0, ..LogConfig::default() }] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path(), config, 0).await;
        let batches = [
            encoded_batch(&[100, 300, 200], 10, Compression::None),
            encoded_batch(&[250, 400, 500], 10, Compression::None),
            encoded_batch(&[600, 650, 700], 10, Compression::Gzip),
            encoded_batch(&[710, 720], 10, Compression::Lz4),
            encoded_batch(&[730, 740], 10, Compression::Zstd),
            encoded_batch(&[750, 760], 10, Compression::Snappy),
        ];
        for produced in batches {
            let _ = log.append(produced, EPOCH, false, 0).await.expect("append");
        }
        let _ = log.append(batch(2, 10), EPOCH, true, 900).await.expect("append with log append time");
        let lookups = [
            (50, Some((0, 100))),
            (100, Some((0, 100))),
            (150, Some((1, 300))),
            (301, Some((4, 400))),
            (620, Some((7, 650))),
            (715, Some((10, 720))),
            (735, Some((12, 740))),
            (755, Some((14, 760))),
            (800, Some((15, 900))),
            (900, Some((15, 900))),
            (901, None),
        ];
        for (target, expected) in lookups {
            let found = log.offset_for_timestamp(target).await.expect("lookup");
            assert_eq!(found, expected.map(|(offset, timestamp)| (Offset(offset), timestamp)), "target {target}");
        }
        assert_eq!(log.max_timestamp(), Some((Offset(15), 900)));
        let _ = log.delete_records_before(Offset(1)).await.expect("delete records");
        assert_eq!(log.offset_for_timestamp(50).await.expect("lookup"), Some((Offset(1), 300)));
        drop(log);
        let log = open_log(dir.path(), config, 0).await;
        assert_eq!(log.offset_for_timestamp(620).await.expect("lookup after reopen"), Some((Offset(7), 650)));
        assert_eq!(log.max_timestamp(), Some((Offset(15), 900)));
    }
}

#[tokio::test]
async fn disk_full_from_the_space_guard_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = OsDisk::shared();
    let space = Arc::new(SpaceGuard::new(Arc::clone(&disk), dir.path().to_owned(), u64::MAX / 2));
    let log = PartitionLog::open(disk, dir.path().join("p-0"), LogConfig::default(), space, 0).await.expect("open");
    let error = log.append(batch(1, 0), EPOCH, false, 0).await.expect_err("no space above the reserve");
    assert!(matches!(error, StorageError::DiskFull { needed_bytes, .. } if needed_bytes == batch_bytes(1)));
    assert_eq!(log.log_end_offset(), Offset(0));
    assert_eq!(std::fs::metadata(&segment_files(&dir.path().join("p-0"))[0]).expect("stat").len(), 0);
    assert!(log.read(Offset(0), Offset(0), 100, true).await.expect("reads still work").bytes.is_empty());
}

/// ENOSPC in the middle of a write: the partial batch is cut off, the append fails with
/// DiskFull, and the next append and a reopen see a clean log.
#[tokio::test]
async fn enospc_during_an_append_leaves_no_partial_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault_disk = Arc::new(FaultDisk::default());
    let faults = Arc::clone(&fault_disk.faults);
    let disk: SharedDisk = fault_disk;
    let space = Arc::new(SpaceGuard::new(Arc::clone(&disk), dir.path().to_owned(), 0));
    let log = PartitionLog::open(Arc::clone(&disk), dir.path().to_owned(), LogConfig::default(), space, 0)
        .await
        .expect("open");
    let _ = log.append(batch(2, 0), EPOCH, false, 0).await.expect("append");
    *faults.enospc_after_bytes.lock().expect("faults") = Some(30);
    let error = log.append(batch(2, 0), EPOCH, false, 0).await.expect_err("ENOSPC");
    assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
    let segment = &segment_files(dir.path())[0];
    assert_eq!(std::fs::metadata(segment).expect("stat").len(), batch_bytes(2));
    assert_eq!(log.log_end_offset(), Offset(2));
    let info = log.append(batch(2, 0), EPOCH, false, 0).await.expect("append after ENOSPC");
    assert_eq!(info.base_offset, Offset(2));
    drop(log);
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    assert_eq!(base_offsets(&read_all(&log).await), vec![0, 2]);
}

/// Group commit: while an append's write is stalled, reads of earlier data and a flush still
/// complete (neither waits for the append lock).
#[tokio::test]
async fn reads_and_flushes_proceed_while_an_append_write_is_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault_disk = Arc::new(FaultDisk::default());
    let faults = Arc::clone(&fault_disk.faults);
    let disk: SharedDisk = fault_disk;
    let space = Arc::new(SpaceGuard::new(Arc::clone(&disk), dir.path().to_owned(), 0));
    let log =
        Arc::new(PartitionLog::open(disk, dir.path().to_owned(), LogConfig::default(), space, 0).await.expect("open"));
    let _ = log.append(batch(1, 0), EPOCH, false, 0).await.expect("append");
    assert_eq!(log.durable_end_offset(), Offset(0));

    let gate = faults.write_gate.write().await;
    let appender = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { log.append(batch(1, 0), EPOCH, false, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!appender.is_finished(), "the append is stalled in its write");
    let limit = Duration::from_secs(5);
    let flushed = tokio::time::timeout(limit, log.flush()).await.expect("flush is not blocked").expect("flush");
    assert_eq!(flushed, Offset(1));
    let read = tokio::time::timeout(limit, log.read(Offset(0), Offset(1), 1000, true))
        .await
        .expect("read is not blocked")
        .expect("read");
    assert_eq!(base_offsets(&read.bytes), vec![0]);
    assert_eq!(log.log_end_offset(), Offset(1), "the stalled batch is not visible yet");

    drop(gate);
    let info = appender.await.expect("join").expect("append");
    assert_eq!(info.base_offset, Offset(1));
    assert_eq!(log.flush().await.expect("flush"), Offset(2));
}

/// Truncation for replication (KIP-101): everything at and after the offset goes, whole
/// batches only, across segment boundaries, durably.
#[tokio::test]
async fn truncate_to_removes_the_tail_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(3 * batch_bytes(3));
    let log = open_log(dir.path(), config, 0).await;
    append_batches(&log, 7, 3, 0).await; // [0,3) [3,6) [6,9) | [9,12) [12,15) [15,18) | [18,21)
    assert_eq!(log.flush().await.expect("flush"), Offset(21));
    assert_eq!(segment_files(dir.path()).len(), 3);

    log.truncate_to(Offset(30)).await.expect("beyond the end is a no-op");
    assert_eq!(log.log_end_offset(), Offset(21));
    log.truncate_to(Offset(16)).await.expect("mid-batch");
    assert_eq!(log.log_end_offset(), Offset(15), "the batch holding 16 goes whole");
    assert_eq!(log.durable_end_offset(), Offset(15));
    assert_eq!(segment_files(dir.path()).len(), 2);
    log.truncate_to(Offset(9)).await.expect("at a segment boundary");
    assert_eq!(log.log_end_offset(), Offset(9));
    assert_eq!(segment_files(dir.path()).len(), 1);
    let info = log.append(batch(3, 0), EPOCH, false, 0).await.expect("append after truncation");
    assert_eq!(info.base_offset, Offset(9));
    assert_eq!(segment_files(dir.path()).len(), 2, "the reopened full segment rolls");
    let expected = read_all(&log).await;
    drop(log);

    let log = open_log(dir.path(), config, 0).await;
    assert_eq!(read_all(&log).await, expected);
    assert_eq!(base_offsets(&expected), vec![0, 3, 6, 9]);

    let _ = log.delete_records_before(Offset(4)).await.expect("delete records");
    log.truncate_to(Offset(5)).await.expect("cut below the log start");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(4), Offset(4)));
    log.truncate_to(Offset(2)).await.expect("below the log start");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(2), Offset(2)));
    assert_eq!(log.size_bytes(), 0);
    drop(log);
    let log = open_log(dir.path(), config, 0).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(2), Offset(2)));
    let info = log.append(batch(1, 0), EPOCH, false, 0).await.expect("append");
    assert_eq!(info.base_offset, Offset(2));
}

#[tokio::test]
async fn delete_removes_the_directory_and_fences_later_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = dir.path().join("t-3");
    let log = open_log(&partition, LogConfig::default(), 0).await;
    append_batches(&log, 2, 1, 0).await;
    log.delete().await.expect("delete");
    assert!(!partition.exists());
    assert!(matches!(log.read(Offset(0), Offset(2), 100, true).await, Err(StorageError::LogDeleted { .. })));
    assert!(matches!(log.append(batch(1, 0), EPOCH, false, 0).await, Err(StorageError::LogDeleted { .. })));
    log.delete().await.expect("deleting twice is fine");
}

#[test]
fn the_log_and_its_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<PartitionLog>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = runtime.block_on(open_log(dir.path(), LogConfig::default(), 0));
    let append = log.append(batch(1, 0), EPOCH, false, 0);
    assert_send(&append);
    let read = log.read(Offset(0), Offset(0), 1, true);
    assert_send(&read);
    let flush = log.flush();
    assert_send(&flush);
    let truncate = log.truncate_to(Offset(0));
    assert_send(&truncate);
    let retention = log.apply_retention(0);
    assert_send(&retention);
    let lookup = log.offset_for_timestamp(0);
    assert_send(&lookup);
}

/// `count` records written by `epoch` at `base_offset`, as a leader would have stored them.
fn stored_batch(records: usize, base_offset: i64, epoch: LeaderEpoch) -> BytesMut {
    let mut bytes = batch(records, 1_000);
    protocol::batch::set_base_offset(&mut bytes, Offset(base_offset));
    protocol::batch::set_partition_leader_epoch(&mut bytes, epoch);
    bytes
}

fn epoch_entries(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.leader_epoch_cache().entries().iter().map(|(epoch, start)| (epoch.0, start.0)).collect()
}

#[tokio::test]
async fn the_epoch_cache_follows_appends_truncation_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_config(SEGMENT_BYTES_MIN), 0).await;
    let _ = log.append(batch(3, 1_000), LeaderEpoch(1), false, 1_000).await.expect("append");
    let _ = log.append(batch(2, 1_000), LeaderEpoch(1), false, 1_000).await.expect("append");
    let _ = log.append(batch(4, 1_000), LeaderEpoch(4), false, 1_000).await.expect("append");
    assert_eq!(epoch_entries(&log), [(1, 0), (4, 5)]);
    let answer = log.epoch_end_offset(LeaderEpoch(3));
    assert_eq!((answer.epoch, answer.end_offset), (LeaderEpoch(1), Offset(5)));
    let answer = log.epoch_end_offset(LeaderEpoch(4));
    assert_eq!((answer.epoch, answer.end_offset), (LeaderEpoch(4), Offset(9)));
    // A follower that fetched epoch 1 up to 5 matches; one claiming more of epoch 1, or an
    // epoch this log never had, diverges.
    assert_eq!(log.diverging_epoch(Offset(5), LeaderEpoch(1)), None);
    assert_eq!(log.diverging_epoch(Offset(7), LeaderEpoch(1)).map(|end| end.end_offset), Some(Offset(5)));
    assert_eq!(log.diverging_epoch(Offset(7), LeaderEpoch(3)).map(|end| end.epoch), Some(LeaderEpoch(1)));
    // A new leader records its epoch before appending anything.
    log.assign_epoch(LeaderEpoch(6)).await.expect("assign");
    assert_eq!(epoch_entries(&log), [(1, 0), (4, 5), (6, 9)]);
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(6)));
    drop(log);

    let log = open_log(dir.path(), small_config(SEGMENT_BYTES_MIN), 0).await;
    // Epoch 6 wrote nothing: after a restart it starts at the log end, which is still 9.
    assert_eq!(epoch_entries(&log), [(1, 0), (4, 5), (6, 9)]);
    // A cut at the log end removes no batch, but does remove the epoch that wrote nothing.
    log.truncate_to(Offset(9)).await.expect("truncate");
    assert_eq!(epoch_entries(&log), [(1, 0), (4, 5)]);
    assert_eq!(log.log_end_offset(), Offset(9));
    // The cut falls inside epoch 4's only batch, which goes whole: so does epoch 4.
    log.truncate_to(Offset(6)).await.expect("truncate");
    assert_eq!(epoch_entries(&log), [(1, 0)]);
    drop(log);
    let log = open_log(dir.path(), small_config(SEGMENT_BYTES_MIN), 0).await;
    assert_eq!(epoch_entries(&log), [(1, 0)]);
    assert_eq!(log.log_end_offset(), Offset(5));

    // Without the checkpoint (an older data directory, or a damaged file) the cache is rebuilt
    // from the batches.
    let _ = log.append(batch(1, 1_000), LeaderEpoch(7), false, 1_000).await.expect("append");
    drop(log);
    for damage in [None, Some("0\n9\nnonsense\n")] {
        let path = dir.path().join("leader-epoch-checkpoint");
        match damage {
            None => std::fs::remove_file(&path).expect("remove"),
            Some(text) => std::fs::write(&path, text).expect("write"),
        }
        let log = open_log(dir.path(), small_config(SEGMENT_BYTES_MIN), 0).await;
        assert_eq!(epoch_entries(&log), [(1, 0), (7, 5)], "rebuilt after {damage:?}");
    }
}

#[tokio::test]
async fn a_replicated_append_keeps_the_leaders_offsets_and_epochs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    let mut fetched = stored_batch(3, 0, LeaderEpoch(2));
    fetched.extend_from_slice(&stored_batch(2, 3, LeaderEpoch(5)));
    let expected = fetched.clone().freeze();
    let info = log.append_replicated(fetched, 2_000).await.expect("replicated append");
    assert_eq!((info.base_offset, info.log_end_offset, info.batches.len()), (Offset(0), Offset(5), 2));
    assert_eq!(read_all(&log).await, expected, "stored byte for byte");
    assert_eq!(epoch_entries(&log), [(2, 0), (5, 3)]);

    // Batches that do not continue the log are refused, and nothing is written.
    for (base_offset, what) in [(4, "overlapping"), (9, "leaving a gap")] {
        let error = log.append_replicated(stored_batch(1, base_offset, LeaderEpoch(5)), 2_000).await;
        assert!(
            matches!(error, Err(StorageError::ReplicatedOffsetMismatch { expected: Offset(5), .. })),
            "{what}: {error:?}"
        );
    }
    let mut gap_inside = stored_batch(1, 5, LeaderEpoch(5));
    gap_inside.extend_from_slice(&stored_batch(1, 7, LeaderEpoch(5)));
    assert!(matches!(
        log.append_replicated(gap_inside, 2_000).await,
        Err(StorageError::ReplicatedOffsetMismatch { expected: Offset(6), got: Offset(7) })
    ));
    assert_eq!(log.log_end_offset(), Offset(5));
    assert_eq!(log.size_bytes(), expected.len() as u64);
}

#[tokio::test]
async fn idempotent_retries_get_the_original_offsets_across_reopen_and_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(SEGMENT_BYTES_MIN);
    let now_ms = 1_000;
    {
        let log = open_log(dir.path(), config, now_ms).await;
        let _ = log.append(batch(2, now_ms), EPOCH, false, now_ms).await.expect("plain batch");
        let first = log.append(idempotent_batch(7, 0, 0, 3, now_ms), EPOCH, false, now_ms).await.expect("seq 0");
        assert_eq!((first.base_offset, first.last_offset, first.duplicate), (Offset(2), Offset(4), false));
        let retry = log.append(idempotent_batch(7, 0, 0, 3, now_ms), EPOCH, false, now_ms).await.expect("retry");
        assert_eq!((retry.base_offset, retry.last_offset, retry.duplicate), (Offset(2), Offset(4), true));
        assert_eq!((retry.record_count, log.log_end_offset()), (0, Offset(5)), "a duplicate appends nothing");
        let gap = log.append(idempotent_batch(7, 0, 5, 1, now_ms), EPOCH, false, now_ms).await.unwrap_err();
        assert!(matches!(gap, StorageError::ProducerSequence { .. }), "{gap}");
        let next = log.append(idempotent_batch(7, 0, 3, 1, now_ms), EPOCH, false, now_ms).await.expect("seq 3");
        assert_eq!(next.base_offset, Offset(5));
        let _ = log.flush().await.expect("flush");
    }
    let log = open_log(dir.path(), config, now_ms + 10).await;
    let retry = log.append(idempotent_batch(7, 0, 0, 3, now_ms), EPOCH, false, now_ms).await.expect("retry");
    assert_eq!((retry.base_offset, retry.duplicate), (Offset(2), true), "rebuilt from the log on open");
    let next = log.append(idempotent_batch(7, 0, 4, 1, now_ms), EPOCH, false, now_ms).await.expect("seq 4");
    assert_eq!(next.base_offset, Offset(6));

    // Cutting the last two batches forgets their sequences: seq 3 is new again.
    log.truncate_to(Offset(5)).await.expect("truncate");
    let again = log.append(idempotent_batch(7, 0, 3, 1, now_ms), EPOCH, false, now_ms).await.expect("seq 3 again");
    assert_eq!((again.base_offset, again.duplicate), (Offset(5), false));

    // Past producer.id.expiration.ms the producer is forgotten and may start anywhere.
    let later_ms = now_ms + config.producer_id_expiration_ms;
    let _ = log.apply_retention(later_ms).await.expect("retention");
    let fresh = log.append(idempotent_batch(7, 0, 100, 1, later_ms), EPOCH, false, later_ms).await.expect("any seq");
    assert!(!fresh.duplicate);
}

#[tokio::test]
async fn a_replicated_copy_builds_the_same_producer_table() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::default();
    let leader = open_log(leader_dir.path(), config, 0).await;
    let follower = open_log(follower_dir.path(), config, 0).await;
    for sequence in [0, 2, 4] {
        let _ = leader.append(idempotent_batch(9, 1, sequence, 2, 50), EPOCH, false, 50).await.expect("append");
    }
    let _ = follower.append_replicated(BytesMut::from(&read_all(&leader).await[..]), 50).await.expect("copy");
    // The follower, once leader, answers a retry of the leader's batch from its own table.
    let retry = follower.append(idempotent_batch(9, 1, 2, 2, 50), EPOCH, false, 50).await.expect("retry");
    assert_eq!((retry.base_offset, retry.duplicate), (Offset(2), true));
    let old_epoch = follower.append(idempotent_batch(9, 0, 6, 1, 50), EPOCH, false, 50).await.unwrap_err();
    assert!(matches!(old_epoch, StorageError::ProducerSequence { .. }), "{old_epoch}");
}

#[tokio::test]
async fn a_retry_of_a_deleted_batch_is_still_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    let first = log.append(idempotent_batch(5, 0, 0, 2, 10), EPOCH, false, 10).await.expect("append");
    let _ = log.append(batch(3, 10), EPOCH, false, 10).await.expect("plain");
    let _ = log.delete_records_before(Offset(4)).await.expect("delete");
    // The batch is gone but its producer is remembered (KIP-360): the retry is not written.
    let retry = log.append(idempotent_batch(5, 0, 0, 2, 10), EPOCH, false, 10).await.expect("retry");
    assert_eq!((retry.duplicate, retry.base_offset), (true, first.base_offset));
    assert_eq!(log.log_end_offset(), Offset(5));
    // Also after a restart: the snapshot written before the deletion brings the producer back.
    let _ = log.flush().await.expect("flush");
    drop(log);
    let log = open_log(dir.path(), LogConfig::default(), 20).await;
    let retry = log.append(idempotent_batch(5, 0, 0, 2, 10), EPOCH, false, 20).await.expect("retry");
    assert_eq!((retry.duplicate, retry.base_offset), (true, first.base_offset));
    let next = log.append(idempotent_batch(5, 0, 2, 1, 10), EPOCH, false, 20).await.expect("next");
    assert_eq!((next.duplicate, next.base_offset), (false, Offset(5)));
}
