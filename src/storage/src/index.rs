//! The sparse offset and time indexes of one segment.
//!
//! Both live in memory while a segment is active and are written (and fsynced) when it is
//! sealed, as `{base_offset:020}.index` and `{base_offset:020}.timeindex`, big-endian:
//!
//! * offset index entry: relative offset `u32` of a batch's base offset, file position `u32` of
//!   that batch. A lookup takes the floor entry and walks batch headers forward from there.
//! * time index entry: timestamp `i64`, relative offset `u32`. Entry `(T, O)` says "the batch at
//!   relative offset `O` has max timestamp `T`, and no batch before it has a larger one". The
//!   timestamps strictly increase, and a sealed segment's last entry is its maximum.
//!
//! An entry pair is added before a batch once more than `index.interval.bytes` were appended
//! since the previous one (Kafka's rule), so a lookup walks at most about that many bytes.

use protocol::batch::BATCH_HEADER_BYTES;

use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetIndexEntry {
    /// Base offset of a batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of that batch in the segment file.
    pub(crate) position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeIndexEntry {
    /// The max timestamp of the batch at `relative_offset`, the largest so far in the segment.
    pub(crate) timestamp_ms: i64,
    /// Base offset of that batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
}

/// Both indexes of a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// Strictly increasing in both fields.
    offsets: Vec<OffsetIndexEntry>,
    /// Strictly increasing in both fields.
    times: Vec<TimeIndexEntry>,
    /// Batch bytes appended since the last offset entry.
    bytes_since_entry: u64,
}

impl SegmentIndex {
    /// Records a batch about to be counted at `position`. `max_so_far` is the segment's largest
    /// timestamp before this batch.
    pub(crate) fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        batch_bytes: u64,
        interval_bytes: u64,
        max_so_far: Option<TimeIndexEntry>,
    ) {
        if self.bytes_since_entry > interval_bytes {
            self.offsets.push(OffsetIndexEntry { relative_offset, position });
            if let Some(entry) = max_so_far {
                self.push_time(entry);
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(batch_bytes);
    }

    /// Adds the segment's final maximum when it is sealed, so the last time entry is the max.
    pub(crate) fn seal(&mut self, max_timestamp: Option<TimeIndexEntry>) {
        if let Some(entry) = max_timestamp {
            self.push_time(entry);
        }
    }

    fn push_time(&mut self, entry: TimeIndexEntry) {
        if self.times.last().is_none_or(|last| entry.timestamp_ms > last.timestamp_ms) {
            self.times.push(entry);
        }
    }

    /// The position of the batch at the floor entry for `relative_offset` (0 if none).
    pub(crate) fn position_floor(&self, relative_offset: u32) -> u32 {
        let after = self.offsets.partition_point(|entry| entry.relative_offset <= relative_offset);
        after.checked_sub(1).map_or(0, |at| self.offsets[at].position)
    }

    /// Where a search for the first record with timestamp `>= timestamp_ms` may start: the
    /// relative offset of the last entry whose timestamp is below it (0 if none). Every batch
    /// before that entry's batch has a smaller timestamp.
    pub(crate) fn time_floor(&self, timestamp_ms: i64) -> u32 {
        let after = self.times.partition_point(|entry| entry.timestamp_ms < timestamp_ms);
        after.checked_sub(1).map_or(0, |at| self.times[at].relative_offset)
    }

    /// The last offset entry.
    pub(crate) fn last_offset_entry(&self) -> Option<OffsetIndexEntry> {
        self.offsets.last().copied()
    }

    /// The last time entry: a sealed segment's max timestamp.
    pub(crate) fn last_time_entry(&self) -> Option<TimeIndexEntry> {
        self.times.last().copied()
    }

    /// The `.index` file contents.
    pub(crate) fn encode_offsets(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.offsets.len() * OFFSET_INDEX_ENTRY_BYTES);
        for entry in &self.offsets {
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&entry.position.to_be_bytes());
        }
        bytes
    }

    /// The `.timeindex` file contents.
    pub(crate) fn encode_times(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.times.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in &self.times {
            bytes.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        bytes
    }

    /// Most entries an index of a segment of `segment_bytes` can have: one per batch.
    pub(crate) fn entries_max(segment_bytes: u64) -> u64 {
        segment_bytes / BATCH_HEADER_BYTES as u64 + 1
    }

    /// Parses both index files of a sealed segment of `segment_bytes` bytes spanning
    /// `relative_end` offsets. `None` if anything is inconsistent: the caller then rebuilds the
    /// index by scanning the segment.
    pub(crate) fn decode(offsets: &[u8], times: &[u8], segment_bytes: u64, relative_end: u64) -> Option<SegmentIndex> {
        let entries_max = Self::entries_max(segment_bytes);
        let whole_entries = offsets.chunks_exact(OFFSET_INDEX_ENTRY_BYTES).remainder().is_empty()
            && times.chunks_exact(TIME_INDEX_ENTRY_BYTES).remainder().is_empty();
        if !whole_entries
            || (offsets.len() / OFFSET_INDEX_ENTRY_BYTES) as u64 > entries_max
            || (times.len() / TIME_INDEX_ENTRY_BYTES) as u64 > entries_max
            || (times.is_empty() && segment_bytes > 0)
        {
            return None;
        }
        let u32_at =
            |chunk: &[u8], at: usize| u32::from_be_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]]);
        let mut index = SegmentIndex::default();
        for chunk in offsets.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let entry = OffsetIndexEntry { relative_offset: u32_at(chunk, 0), position: u32_at(chunk, 4) };
            let increasing = index
                .offsets
                .last()
                .is_none_or(|last| entry.relative_offset > last.relative_offset && entry.position > last.position);
            if !increasing
                || u64::from(entry.relative_offset) >= relative_end
                || u64::from(entry.position) >= segment_bytes
            {
                return None;
            }
            index.offsets.push(entry);
        }
        for chunk in times.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&chunk[..8]);
            let entry =
                TimeIndexEntry { timestamp_ms: i64::from_be_bytes(timestamp), relative_offset: u32_at(chunk, 8) };
            let increasing = index.times.last().is_none_or(|last| {
                entry.timestamp_ms > last.timestamp_ms && entry.relative_offset > last.relative_offset
            });
            if !increasing || u64::from(entry.relative_offset) >= relative_end {
                return None;
            }
            index.times.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(timestamp_ms: i64, relative_offset: u32) -> Option<TimeIndexEntry> {
        Some(TimeIndexEntry { timestamp_ms, relative_offset })
    }

    #[test]
    fn entries_are_added_after_the_interval_and_looked_up_by_floor() {
        let mut index = SegmentIndex::default();
        // Batches of 100 bytes with one offset each, interval 150: entries before batches 2, 4.
        for batch in 0u32..5 {
            let max_so_far = batch.checked_sub(1).and_then(|previous| time(i64::from(previous) * 10, previous));
            index.on_batch(batch, batch * 100, 100, 150, max_so_far);
        }
        assert_eq!(
            index.offsets,
            vec![
                OffsetIndexEntry { relative_offset: 2, position: 200 },
                OffsetIndexEntry { relative_offset: 4, position: 400 }
            ]
        );
        assert_eq!(index.position_floor(0), 0);
        assert_eq!(index.position_floor(3), 200);
        assert_eq!(index.position_floor(9), 400);
        index.seal(time(40, 4));
        assert_eq!(index.last_time_entry(), time(40, 4));
        assert_eq!(index.time_floor(5), 0);
        assert_eq!(index.time_floor(11), 1);
        assert_eq!(index.time_floor(41), 4);
    }

    #[test]
    fn encoding_round_trips_and_inconsistent_files_are_refused() {
        let mut index = SegmentIndex::default();
        for batch in 0u32..6 {
            let max_so_far = batch.checked_sub(1).and_then(|previous| time(i64::from(previous), previous));
            index.on_batch(batch, batch * 70, 70, 0, max_so_far);
        }
        index.seal(time(5, 5));
        index.bytes_since_entry = 0;
        let (offsets, times) = (index.encode_offsets(), index.encode_times());
        let decoded = SegmentIndex::decode(&offsets, &times, 420, 6).expect("consistent");
        assert_eq!(decoded, index);
        assert_eq!(SegmentIndex::decode(&offsets[..7], &times, 420, 6), None);
        assert_eq!(SegmentIndex::decode(&offsets, &times, 300, 6), None, "position beyond the file");
        assert_eq!(SegmentIndex::decode(&offsets, &times, 420, 3), None, "offset beyond the segment");
        assert_eq!(SegmentIndex::decode(&offsets, &[], 420, 6), None, "a sealed segment has a max");
        let mut swapped = offsets.clone();
        swapped.rotate_left(OFFSET_INDEX_ENTRY_BYTES);
        assert_eq!(SegmentIndex::decode(&swapped, &times, 420, 6), None);
    }
}
