//! Unit tests of log compaction on the OS disk (the simulator crashes it mid-pass).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use protocol::batch::{BatchHeader, Batches};
use protocol::ids::{LeaderEpoch, Offset};

use crate::error::StorageError;
use crate::tester::{open_log, read_all, small_config};
use crate::{LogConfig, PartitionLog};

const EPOCH: LeaderEpoch = LeaderEpoch(3);

/// One keyed record: `(key, value)`; `None` value is a tombstone, `None` key a keyless record.
type Entry<'a> = (Option<&'a str>, Option<&'a str>);

fn keyed_batch(
    entries: &[Entry<'_>],
    timestamp_ms: i64,
    producer: Option<(i64, i32)>,
    compression: Compression,
) -> BytesMut {
    let (producer_id, base_sequence) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(at, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: at as i64,
            sequence: if producer_id >= 0 { base_sequence + at as i32 } else { at as i32 - 1 },
            timestamp: timestamp_ms,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(&mut buffer, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode test batch");
    buffer
}

fn compact_config() -> LogConfig {
    LogConfig { compact: true, delete: false, min_cleanable_dirty_ratio: 0.0, ..small_config(400) }
}

async fn put(log: &PartitionLog, entries: &[Entry<'_>], now_ms: i64) -> Offset {
    log.append(keyed_batch(entries, now_ms, None, Compression::None), EPOCH, false, now_ms)
        .await
        .expect("append")
        .base_offset
}

/// Every record readable: offset → (key, value).
async fn records(log: &PartitionLog) -> BTreeMap<i64, (Option<String>, Option<String>)> {
    let bytes = read_all(log).await;
    let mut expected_next = log.log_start_offset();
    let mut out = BTreeMap::new();
    for item in Batches::new(&bytes) {
        let (header, range) = item.expect("every batch valid");
        assert!(header.base_offset <= expected_next.max(header.base_offset), "batches go forward");
        if expected_next > log.log_start_offset() {
            assert_eq!(header.base_offset, expected_next, "batches stay contiguous");
        }
        expected_next = header.next_offset();
        let decoded = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(&bytes[range])).expect("decode");
        for record in decoded.records {
            let text = |bytes: Option<Bytes>| bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            let _ = out.insert(record.offset, (text(record.key), text(record.value)));
        }
    }
    assert_eq!(expected_next, log.log_end_offset(), "the batches cover the log to its end");
    out
}

/// Appends records of fresh keys until everything appended before lies in sealed segments.
async fn seal(log: &PartitionLog, now_ms: i64) {
    let before = log.log_end_offset();
    let mut pad = 0;
    while log.size_bytes() < 2 * 400 || pad < 8 {
        let _ = put(log, &[(Some(&format!("pad-{}-{pad}", before.0)), Some("p"))], now_ms).await;
        pad += 1;
    }
}

fn kv(key: &str, value: &str) -> (Option<String>, Option<String>) {
    (Some(key.to_owned()), Some(value.to_owned()))
}

#[tokio::test]
async fn compaction_keeps_the_latest_record_of_each_key_at_its_original_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), compact_config(), 0).await;
    let mut offsets = BTreeMap::new();
    for round in 0..10 {
        for key in ["a", "b", "c"] {
            let value = format!("{key}{round}");
            let _ = offsets.insert((key, round), put(&log, &[(Some(key), Some(&value))], 1_000).await);
        }
    }
    let _ = put(&log, &[(None, Some("keyless"))], 1_000).await;
    let end = log.log_end_offset();
    let before = records(&log).await;
    let stats = log.clean(2_000, end).await.expect("clean").expect("a pass ran");
    assert!(stats.segments_cleaned > 0 && stats.records_removed > 0, "{stats:?}");
    assert!(stats.bytes_after < stats.bytes_before, "{stats:?}");
    assert_eq!(log.log_end_offset(), end, "the log end never moves");
    let after = records(&log).await;
    // Each key keeps its last record at its original offset; the active segment is untouched.
    for key in ["a", "b", "c"] {
        let last = offsets[&(key, 9)];
        assert_eq!(after.get(&last.0), Some(&kv(key, &format!("{key}9"))));
        assert_eq!(after.get(&offsets[&(key, 0)].0), None, "{key}0 is superseded and in a sealed segment");
    }
    assert!(after.values().any(|(_, value)| value.as_deref() == Some("keyless")), "the active segment stays");
    for (offset, record) in &after {
        assert_eq!(before.get(offset), Some(record), "a kept record is unchanged at offset {offset}");
    }
    // Reading from any offset, even one whose record went, finds the next record.
    for from in 0..end.0 {
        let read = log.read(Offset(from), end, usize::MAX, true).await.expect("read from a gap");
        let first = Batches::new(&read.bytes).next().expect("a batch").expect("valid").0;
        assert!(first.base_offset.0 <= from && from < first.next_offset().0, "the batch holding {from}");
    }
    // A second pass finds nothing dirty; new writes make it dirty again.
    assert_eq!(log.clean(2_000, end).await.expect("clean"), None);
}

#[tokio::test]
async fn superseded_records_go_but_records_of_the_active_segment_and_above_the_bound_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), compact_config(), 0).await;
    let mut first = Vec::new();
    for round in 0..6 {
        first.push(put(&log, &[(Some("k"), Some(&format!("v{round}")))], 1_000).await);
    }
    // Clean only below the second record (a high watermark there): nothing before it is
    // superseded by anything the pass may look at.
    let upper = first[1];
    assert_eq!(log.clean(2_000, upper).await.expect("clean"), None, "no sealed segment lies below the bound");
    let end = log.log_end_offset();
    let _ = log.clean(2_000, end).await.expect("clean");
    let after = records(&log).await;
    let values: Vec<_> = after.values().map(|(_, value)| value.clone().unwrap_or_default()).collect();
    assert_eq!(values.last().map(String::as_str), Some("v5"));
    assert!(values.len() < 6, "superseded values went: {values:?}");
}

#[tokio::test]
async fn compaction_lag_and_the_dirty_ratio_hold_a_pass_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { min_compaction_lag_ms: 10_000, ..compact_config() };
    let log = open_log(dir.path(), config, 0).await;
    for round in 0..12 {
        let _ = put(&log, &[(Some("k"), Some(&format!("v{round}")))], 1_000).await;
    }
    let end = log.log_end_offset();
    assert_eq!(log.clean(5_000, end).await.expect("clean"), None, "records younger than the lag stay");
    assert!(log.clean(11_000, end).await.expect("clean").is_some(), "once old enough they go");

    // Distinct keys: a pass removes nothing, so the clean part stays as large as it was.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), LogConfig { min_cleanable_dirty_ratio: 0.9, ..compact_config() }, 0).await;
    for round in 0..40 {
        let _ = put(&log, &[(Some(&format!("key-{round}")), Some("v"))], 1_000).await;
    }
    let end = log.log_end_offset();
    let first = log.clean(2_000, end).await.expect("clean").expect("all dirty at first");
    assert_eq!(first.segments_cleaned, 0, "nothing to remove: no segment rewritten");
    seal(&log, 3_000).await;
    let end = log.log_end_offset();
    assert_eq!(log.clean(4_000, end).await.expect("clean"), None, "a little dirt waits");
    log.set_config(LogConfig { min_cleanable_dirty_ratio: 0.1, ..compact_config() });
    assert!(log.clean(4_000, end).await.expect("clean").is_some());
}

#[tokio::test]
async fn tombstones_stay_delete_retention_ms_after_a_pass_saw_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { delete_retention_ms: 5_000, ..compact_config() };
    let log = open_log(dir.path(), config, 0).await;
    let _ = put(&log, &[(Some("gone"), Some("v"))], 1_000).await;
    let tombstone = put(&log, &[(Some("gone"), None)], 1_000).await;
    for round in 0..8 {
        let _ = put(&log, &[(Some("other"), Some(&format!("v{round}")))], 1_000).await;
    }
    let end = log.log_end_offset();
    let _ = log.clean(2_000, end).await.expect("clean");
    let after = records(&log).await;
    assert_eq!(after.get(&tombstone.0), Some(&(Some("gone".to_owned()), None)), "a fresh tombstone stays");
    assert!(!after.values().any(|record| *record == kv("gone", "v")), "the value it deletes goes");

    for round in 0..8 {
        let _ = put(&log, &[(Some("more"), Some(&format!("v{round}")))], 1_000).await;
    }
    let end = log.log_end_offset();
    let _ = log.clean(3_000, end).await.expect("clean");
    assert!(records(&log).await.contains_key(&tombstone.0), "not yet delete.retention.ms old");
    for round in 0..8 {
        let _ = put(&log, &[(Some("more"), Some(&format!("x{round}")))], 1_000).await;
    }
    let end = log.log_end_offset();
    let _ = log.clean(7_000, end).await.expect("clean");
    let after = records(&log).await;
    assert!(!after.contains_key(&tombstone.0), "an old tombstone goes");
    assert!(!after.values().any(|(key, _)| key.as_deref() == Some("gone")));
}

#[tokio::test]
async fn a_cleaned_log_reopens_whole_and_debris_of_a_crashed_pass_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open_log(dir.path(), compact_config(), 0).await;
        for round in 0..10 {
            let _ = put(&log, &[(Some("a"), Some(&format!("a{round}"))), (Some("b"), Some("b"))], 1_000).await;
        }
        let end = log.log_end_offset();
        let _ = log.clean(2_000, end).await.expect("clean").expect("a pass ran");
    }
    let log = open_log(dir.path(), compact_config(), 3_000).await;
    let expected = records(&log).await;
    drop(log);
    // A copy the crash left behind, and a segment that lost its index files.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let first_log = names.iter().filter(|name| name.ends_with(".log")).min().expect("a segment").clone();
    std::fs::write(dir.path().join(format!("{first_log}.cleaned")), b"half a copy").expect("debris");
    let index = dir.path().join(first_log.replace(".log", ".index"));
    let _ = std::fs::remove_file(index);
    let log = open_log(dir.path(), compact_config(), 4_000).await;
    assert_eq!(records(&log).await, expected);
    assert!(!dir.path().join(format!("{first_log}.cleaned")).exists(), "recovery removes a stale copy");
}

#[tokio::test]
async fn compressed_batches_are_recompressed_with_their_codec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), compact_config(), 0).await;
    for round in 0..8 {
        let value = format!("v{round}");
        let batch = keyed_batch(
            &[(Some("a"), Some(&value)), (Some(&format!("k{round}")), Some("x"))],
            1_000,
            None,
            Compression::Gzip,
        );
        let _ = log.append(batch, EPOCH, false, 1_000).await.expect("append");
    }
    let compressed_end = log.log_end_offset();
    seal(&log, 1_000).await;
    let end = log.log_end_offset();
    let stats = log.clean(2_000, end).await.expect("clean").expect("a pass ran");
    assert!(stats.records_removed > 0);
    let bytes = read_all(&log).await;
    let headers: Vec<BatchHeader> = Batches::new(&bytes).map(|item| item.expect("valid").0).collect();
    assert!(headers
        .iter()
        .filter(|header| header.record_count > 0 && header.base_offset < compressed_end)
        .all(|header| header.compression() == protocol::batch::Compression::Gzip));
    let after = records(&log).await;
    assert_eq!(
        after.values().filter(|(key, _)| key.as_deref() == Some("a")).count(),
        1,
        "one value of the key shared by every batch"
    );
}

#[tokio::test]
async fn an_idempotent_producer_keeps_its_sequence_across_compaction_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open_log(dir.path(), compact_config(), 0).await;
        for sequence in 0..10 {
            let batch = keyed_batch(
                &[(Some("k"), Some(&format!("v{sequence}")))],
                1_000,
                Some((42, sequence)),
                Compression::None,
            );
            let _ = log.append(batch, EPOCH, false, 1_000).await.expect("append");
        }
        let _ = put(&log, &[(Some("k"), Some("last"))], 1_000).await;
        seal(&log, 1_000).await;
        let end = log.log_end_offset();
        let _ = log.clean(2_000, end).await.expect("clean").expect("a pass ran");
        assert!(!records(&log).await.values().any(|(_, value)| value.as_deref() == Some("v9")));
    }
    let log = open_log(dir.path(), compact_config(), 3_000).await;
    let retry = keyed_batch(&[(Some("k"), Some("v9"))], 1_000, Some((42, 9)), Compression::None);
    let info = log.append(retry, EPOCH, false, 3_000).await.expect("a retry of the last batch");
    assert!(info.duplicate, "the producer's last batch is still known after compaction and restart");
    let next = keyed_batch(&[(Some("k"), Some("v10"))], 1_000, Some((42, 10)), Compression::None);
    assert!(!log.append(next, EPOCH, false, 3_000).await.expect("the next sequence").duplicate);
    let gap = keyed_batch(&[(Some("k"), Some("v12"))], 1_000, Some((42, 12)), Compression::None);
    assert!(matches!(log.append(gap, EPOCH, false, 3_000).await, Err(StorageError::ProducerSequence { .. })));
}

#[tokio::test]
async fn a_compact_only_log_is_not_trimmed_by_retention_and_a_delete_log_is_not_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { retention_ms: 10, retention_bytes: 0, ..compact_config() };
    let log = open_log(dir.path(), config, 0).await;
    for round in 0..10 {
        let _ = put(&log, &[(Some("k"), Some(&format!("v{round}")))], 1_000).await;
    }
    assert_eq!(log.apply_retention(100_000).await.expect("retention"), 0);
    assert_eq!(log.log_start_offset(), Offset(0));
    log.set_config(LogConfig { compact: false, delete: true, ..config });
    let end = log.log_end_offset();
    assert_eq!(log.clean(100_000, end).await.expect("clean"), None);
    assert!(log.apply_retention(100_000).await.expect("retention") > 0);
}
