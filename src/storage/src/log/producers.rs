//! The partition's idempotent-producer table ([`replication::producer_state`]), derived from
//! the log.
//!
//! The table lives in memory only. It is rebuilt by walking the batches of the log when the
//! log opens and after a truncation, so it always describes exactly the batches the log
//! holds: a new leader has the old leader's table for every record they share, and a follower
//! that cut its log forgets the sequences it cut. A segment whose newest timestamp is older
//! than `producer.id.expiration.ms` is not walked (every producer seen only there has
//! expired), so the cost of an open is bounded by the data of the last expiration period
//! rather than the whole log. Kafka also snapshots the table at each segment roll; weir does
//! not yet, so opening a partition reads that period's batches once.

use std::path::PathBuf;
use std::sync::Arc;

use protocol::ids::Offset;
use replication::producer_state::{ProducerBatch, ProducerStateTable};

use crate::disk::DiskFile;
use crate::error::StorageError;
use crate::segment::{walk_batches, Segment};

/// What a rebuild needs of a segment, taken out of the log state so no lock is held while
/// the files are read.
pub(crate) struct SegmentView {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    base_offset: Offset,
    size_bytes: u64,
    /// The newest batch timestamp in the segment, if any batch has one.
    max_timestamp_ms: Option<i64>,
}

impl SegmentView {
    pub(crate) fn of(segment: &Segment) -> SegmentView {
        SegmentView {
            file: Arc::clone(&segment.file),
            path: segment.log_path.clone(),
            base_offset: segment.base_offset,
            size_bytes: segment.size_bytes,
            max_timestamp_ms: segment.max_timestamp.map(|max| max.timestamp_ms),
        }
    }
}

/// An empty table, with the planted bug when `WEIR_PLANTED_BUG=skip-sequence-check`.
pub(crate) fn new_table(expiration_ms: i64) -> ProducerStateTable {
    let table = ProducerStateTable::new(expiration_ms);
    #[cfg(feature = "planted-bugs")]
    let table = table.with_planted_skip_sequence_check(
        std::env::var("WEIR_PLANTED_BUG").is_ok_and(|bug| bug == "skip-sequence-check"),
    );
    table
}

/// The table of the batches in `segments` at or after `log_start_offset`, with producers idle
/// since `now_ms - expiration_ms` left out.
///
/// # Errors
/// `Io` from reading the segments.
pub(crate) async fn rebuild(
    segments: &[SegmentView],
    log_start_offset: Offset,
    expiration_ms: i64,
    now_ms: i64,
) -> Result<ProducerStateTable, StorageError> {
    let mut table = new_table(expiration_ms);
    let horizon_ms = now_ms.saturating_sub(expiration_ms);
    for segment in segments {
        if segment.max_timestamp_ms.is_some_and(|max_ms| max_ms < horizon_ms) {
            continue;
        }
        let _ = walk_batches(
            segment.file.as_ref(),
            &segment.path,
            segment.base_offset,
            0,
            segment.size_bytes,
            segment.base_offset,
            |header| {
                if header.next_offset() > log_start_offset {
                    if let Some(batch) = ProducerBatch::from_header(header) {
                        table.apply(&batch);
                    }
                }
            },
        )
        .await?;
    }
    let _ = table.remove_expired(now_ms);
    Ok(table)
}
