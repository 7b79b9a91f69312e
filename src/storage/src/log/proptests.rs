//! Property test of the partition log against an in-memory model.
//!
//! Goal: any sequence of appends (with size and time rolls on tiny segments), reopens,
//! truncations (KIP-101) and DeleteRecords (KIP-107) leaves the log serving exactly the
//! batches the model holds, with the same log start and end offsets. The model is a list of
//! `(base offset, batch bytes as stored)` plus the two offsets.

use bytes::Bytes;
use proptest::prelude::*;
use protocol::batch::Batches;
use protocol::ids::{LeaderEpoch, Offset};

use crate::tester::{batch, open_log, small_config};
use crate::{LogConfig, PartitionLog};

#[derive(Debug, Clone)]
enum Step {
    /// Append `batches` batches with the given record counts in one call; `later_ms` moves the
    /// clock (a large jump rolls by time).
    Append { records: Vec<usize>, later_ms: i64 },
    /// Close and reopen the log.
    Reopen,
    /// Truncate at this fraction (per mille) of the way from 0 to the log end offset.
    TruncateTo { per_mille: i64 },
    /// Delete records below this fraction (per mille) of the log end offset.
    DeleteRecordsBefore { per_mille: i64 },
    /// Flush.
    Flush,
    /// Read from this fraction of the way from the log start to the log end offset.
    Read { per_mille: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (proptest::collection::vec(1usize..4, 1..4), prop_oneof![Just(0i64), Just(1i64), Just(1_000i64)])
            .prop_map(|(records, later_ms)| Step::Append { records, later_ms }),
        1 => Just(Step::Reopen),
        1 => (0i64..=1000).prop_map(|per_mille| Step::TruncateTo { per_mille }),
        1 => (0i64..=1000).prop_map(|per_mille| Step::DeleteRecordsBefore { per_mille }),
        1 => Just(Step::Flush),
        2 => (0i64..=1000).prop_map(|per_mille| Step::Read { per_mille }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// Every batch still in the log (some may lie below the log start offset).
    batches: Vec<(Offset, Offset, Bytes)>,
    log_start_offset: Offset,
    log_end_offset: Offset,
}

impl Model {
    fn truncate_to(&mut self, offset: Offset) {
        if offset >= self.log_end_offset {
            return;
        }
        if offset <= self.log_start_offset {
            self.batches.clear();
            self.log_start_offset = offset;
            self.log_end_offset = offset;
            return;
        }
        let at = self.batches.iter().position(|(_, next, _)| *next > offset).expect("offset is inside the log");
        let cut = self.batches[at].0;
        if cut < self.log_start_offset {
            self.batches.clear();
            self.log_end_offset = self.log_start_offset;
        } else {
            self.batches.truncate(at);
            self.log_end_offset = cut;
        }
    }

    /// The bytes a read from `from` to the end with no size limit returns.
    fn read_from(&self, from: Offset) -> Vec<u8> {
        self.batches.iter().filter(|(_, next, _)| *next > from).flat_map(|(_, _, bytes)| bytes.to_vec()).collect()
    }
}

async fn check(log: &PartitionLog, model: &Model) {
    assert_eq!(log.log_start_offset(), model.log_start_offset);
    assert_eq!(log.log_end_offset(), model.log_end_offset);
    assert!(log.durable_end_offset() <= log.log_end_offset());
    let all = log.read(model.log_start_offset, model.log_end_offset, usize::MAX, true).await.expect("read all");
    assert_eq!(all.bytes.to_vec(), model.read_from(model.log_start_offset));
}

async fn run(index_interval_bytes: u64, steps: Vec<Step>) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for two or three small batches per segment; segment.ms of 100 so jumps roll.
    let config = LogConfig { segment_ms: 100, index_interval_bytes, ..small_config(300) };
    let mut log = open_log(dir.path(), config, 0).await;
    let mut model = Model::default();
    let mut now_ms = 0;
    for step in steps {
        match step {
            Step::Append { records, later_ms } => {
                now_ms += later_ms;
                let mut produce = bytes::BytesMut::new();
                for count in &records {
                    produce.extend_from_slice(&batch(*count, now_ms));
                }
                let info = log.append(produce, LeaderEpoch(1), false, now_ms).await.expect("append");
                assert_eq!(info.base_offset, model.log_end_offset);
                let stored =
                    log.read(info.base_offset, info.log_end_offset, usize::MAX, true).await.expect("read back");
                for item in Batches::new(&stored.bytes) {
                    let (header, range) = item.expect("stored batches are valid");
                    model.batches.push((header.base_offset, header.next_offset(), stored.bytes.slice(range)));
                }
                model.log_end_offset = info.log_end_offset;
            }
            Step::Reopen => {
                drop(log);
                log = open_log(dir.path(), config, now_ms).await;
                assert_eq!(log.durable_end_offset(), model.log_end_offset);
            }
            Step::TruncateTo { per_mille } => {
                let offset = Offset(model.log_end_offset.0 * per_mille / 1000);
                log.truncate_to(offset).await.expect("truncate");
                model.truncate_to(offset);
            }
            Step::DeleteRecordsBefore { per_mille } => {
                let offset = Offset(model.log_end_offset.0 * per_mille / 1000);
                let start = log.delete_records_before(offset).await.expect("delete records");
                model.log_start_offset = model.log_start_offset.max(offset);
                assert_eq!(start, model.log_start_offset);
            }
            Step::Flush => {
                assert_eq!(log.flush().await.expect("flush"), model.log_end_offset);
            }
            Step::Read { per_mille } => {
                let span = model.log_end_offset.0 - model.log_start_offset.0;
                let from = model.log_start_offset.plus(span * per_mille / 1000);
                let result = log.read(from, model.log_end_offset, usize::MAX, true).await.expect("read");
                assert_eq!(
                    result.bytes.to_vec(),
                    if from == model.log_end_offset { Vec::new() } else { model.read_from(from) }
                );
            }
        }
        check(&log, &model).await;
    }
    drop(log);
    let log = open_log(dir.path(), config, now_ms).await;
    check(&log, &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_a_model_under_random_operations(
        index_interval_bytes in prop_oneof![Just(0u64), Just(50), Just(4096)],
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(index_interval_bytes, steps));
    }
}

/// What the `recovery` fuzz target checks, on stable `cargo test`: a segment made of valid
/// batches, random byte changes and a random tail recovers without panicking to a readable
/// prefix of whole batches.
async fn recover_arbitrary_segment(valid_batches: i64, changes: Vec<(usize, u8)>, tail: Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut contents = Vec::new();
    for base_offset in 0..valid_batches {
        let mut produced = batch(1, base_offset);
        protocol::batch::set_base_offset(&mut produced, Offset(base_offset));
        contents.extend_from_slice(&produced);
    }
    contents.extend_from_slice(&tail);
    if !contents.is_empty() {
        for (position, value) in changes {
            let at = position % contents.len();
            contents[at] = value;
        }
    }
    std::fs::write(dir.path().join("00000000000000000000.log"), &contents).expect("write segment");
    let log = open_log(dir.path(), LogConfig::default(), 0).await;
    let end = log.log_end_offset();
    assert!(end.0 <= valid_batches + contents.len() as i64);
    let all = log.read(Offset(0), end, usize::MAX, true).await.expect("read recovered log");
    assert_eq!(all.bytes.len() as u64, log.size_bytes());
    assert_eq!(all.bytes[..], contents[..all.bytes.len()], "recovery keeps a prefix");
    let _ = log.offset_for_timestamp(0).await.expect("lookup");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn recovery_never_panics_on_arbitrary_segment_bytes(
        valid_batches in 0i64..4,
        changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(recover_arbitrary_segment(valid_batches, changes, tail));
    }
}
