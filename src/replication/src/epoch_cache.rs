//! The leader-epoch cache: for each leader epoch that wrote to this log, the offset its first
//! batch got (KIP-101). It answers "where does epoch E end in this log", which both sides of
//! the truncation protocol need, and it is kept in the partition directory as
//! `leader-epoch-checkpoint` (Kafka's text format: version `0`, the entry count, then one
//! `epoch start_offset` line per entry).
//!
//! Invariants (checked by [`LeaderEpochCache::assign`] and the parser): epochs strictly
//! increase and start offsets strictly increase along the cache.

use protocol::ids::{LeaderEpoch, Offset};

/// "No epoch" in OffsetForLeaderEpoch answers and `LastFetchedEpoch`.
pub const UNDEFINED_EPOCH: LeaderEpoch = LeaderEpoch(-1);
/// "No offset" in OffsetForLeaderEpoch answers.
pub const UNDEFINED_OFFSET: Offset = Offset(-1);
/// The checkpoint format version written and read.
const CHECKPOINT_VERSION: u32 = 0;
/// Entries accepted from a checkpoint file (a bound on what a corrupt file can make us hold).
pub const CHECKPOINT_ENTRIES_MAX: usize = 1 << 20;

/// An epoch and the offset where it ends in some log (the start of the next epoch, or the log
/// end offset for the latest epoch): the answer to OffsetForLeaderEpoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the one asked about, or [`UNDEFINED_EPOCH`].
    pub epoch: LeaderEpoch,
    /// Where it ends, or [`UNDEFINED_OFFSET`].
    pub end_offset: Offset,
}

impl EpochEnd {
    /// "This log knows no epoch at or below the one asked about."
    pub const UNDEFINED: EpochEnd = EpochEnd { epoch: UNDEFINED_EPOCH, end_offset: UNDEFINED_OFFSET };
}

/// A checkpoint file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader-epoch-checkpoint line {line}: {reason}")]
pub struct CheckpointError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl LeaderEpochCache {
    /// An empty cache (an empty log, or one written before epochs were recorded).
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    /// The start offset of `epoch`, if it wrote to this log.
    pub fn start_offset(&self, epoch: LeaderEpoch) -> Option<Offset> {
        self.entries.iter().find(|(known, _)| *known == epoch).map(|(_, start)| *start)
    }

    /// The epoch that wrote `offset` (the latest entry starting at or before it).
    pub fn epoch_for_offset(&self, offset: Offset) -> Option<LeaderEpoch> {
        self.entries.iter().rev().find(|(_, start)| *start <= offset).map(|(epoch, _)| *epoch)
    }

    /// Records that `epoch` starts at `start_offset` (called by a new leader at its log end,
    /// and for every batch appended, by a leader or a follower; only a new epoch changes the
    /// cache).
    ///
    /// An epoch not newer than the latest is ignored. A newer epoch starting where a recorded
    /// one starts (or before) replaces it and any after it, as Kafka's cache does: that epoch
    /// holds nothing in this log any more (it was assigned at the log end and never wrote, or
    /// what it wrote was lost in a crash), and a leader whose cache kept it would answer its
    /// followers' fetches in the new epoch as diverging, forever. Returns whether the cache
    /// changed (so the caller writes the checkpoint).
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        if self.entries.last().is_some_and(|(latest, _)| epoch <= *latest) {
            return false;
        }
        self.entries.retain(|(_, start)| *start < start_offset);
        self.entries.push((epoch, start_offset));
        true
    }

    /// Appends an entry read from a checkpoint, which must follow the one before it.
    fn push_checked(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        let follows =
            self.entries.last().is_none_or(|(latest, latest_start)| epoch > *latest && start_offset > *latest_start);
        if follows {
            self.entries.push((epoch, start_offset));
        }
        follows
    }

    /// The log was truncated to `end_offset` (everything at or after it is gone): epochs that
    /// start there or later are forgotten. Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < end_offset);
        self.entries.len() != before
    }

    /// The log start moved to `start_offset` (retention, DeleteRecords): epochs that ended
    /// before it are forgotten, and the one containing it now starts there. Returns whether
    /// the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let Some(keep) = self.entries.iter().rposition(|(_, start)| *start <= start_offset) else {
            return false;
        };
        let before = self.entries.clone();
        let _ = self.entries.drain(..keep);
        self.entries[0].1 = start_offset;
        self.entries != before
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that this log knows, and
    /// where it ends: the start of the next epoch, or `log_end_offset` for the latest.
    /// [`EpochEnd::UNDEFINED`] if every known epoch is above `epoch` (or none is known).
    pub fn end_offset_for(&self, epoch: LeaderEpoch, log_end_offset: Offset) -> EpochEnd {
        let Some(position) = self.entries.iter().rposition(|(known, _)| *known <= epoch) else {
            return EpochEnd::UNDEFINED;
        };
        let end_offset = self.entries.get(position + 1).map_or(log_end_offset, |(_, next_start)| *next_start);
        EpochEnd { epoch: self.entries[position].0, end_offset }
    }

    /// The checkpoint file's text.
    pub fn to_checkpoint(&self) -> String {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{} {}\n", epoch.0, start.0));
        }
        text
    }

    /// Parses a checkpoint file.
    ///
    /// # Errors
    /// A wrong version, a count that does not match the lines, a malformed line, more than
    /// [`CHECKPOINT_ENTRIES_MAX`] entries, or entries that do not strictly increase.
    pub fn from_checkpoint(text: &str) -> Result<LeaderEpochCache, CheckpointError> {
        let mut lines = text.lines().enumerate().map(|(index, line)| (index + 1, line.trim()));
        let mut next =
            |what: &str| lines.next().ok_or_else(|| CheckpointError { line: 0, reason: format!("missing {what}") });
        let (line, version) = next("the version")?;
        if version != CHECKPOINT_VERSION.to_string() {
            return Err(CheckpointError {
                line,
                reason: format!("version {version:?}, expected {CHECKPOINT_VERSION}"),
            });
        }
        let (line, count) = next("the entry count")?;
        let count: usize = count
            .parse()
            .ok()
            .filter(|count| *count <= CHECKPOINT_ENTRIES_MAX)
            .ok_or_else(|| CheckpointError { line, reason: format!("bad entry count {count:?}") })?;
        let mut cache = LeaderEpochCache::new();
        for _ in 0..count {
            let (line, entry) = next("an entry")?;
            let parsed = entry
                .split_once(' ')
                .and_then(|(epoch, start)| Some((epoch.parse::<i32>().ok()?, start.trim().parse::<i64>().ok()?)));
            let Some((epoch, start)) = parsed.filter(|(epoch, start)| *epoch >= 0 && *start >= 0) else {
                return Err(CheckpointError { line, reason: format!("bad entry {entry:?}") });
            };
            if !cache.push_checked(LeaderEpoch(epoch), Offset(start)) {
                return Err(CheckpointError {
                    line,
                    reason: format!("entry {entry:?} does not follow the one before"),
                });
            }
        }
        if let Some((line, extra)) = lines.find(|(_, line)| !line.is_empty()) {
            return Err(CheckpointError { line, reason: format!("unexpected line {extra:?} after {count} entries") });
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for (epoch, start) in entries {
            assert!(cache.assign(LeaderEpoch(*epoch), Offset(*start)));
        }
        cache
    }

    fn end(epoch: i32, end_offset: i64) -> EpochEnd {
        EpochEnd { epoch: LeaderEpoch(epoch), end_offset: Offset(end_offset) }
    }

    #[test]
    fn epochs_end_where_the_next_begins() {
        let cache = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(cache.end_offset_for(LeaderEpoch(1), Offset(40)), end(1, 10));
        // An epoch that never wrote here answers with the largest one below it.
        assert_eq!(cache.end_offset_for(LeaderEpoch(2), Offset(40)), end(1, 10));
        assert_eq!(cache.end_offset_for(LeaderEpoch(5), Offset(40)), end(3, 25));
        assert_eq!(cache.end_offset_for(LeaderEpoch(6), Offset(40)), end(6, 40));
        assert_eq!(cache.end_offset_for(LeaderEpoch(9), Offset(40)), end(6, 40));
        assert_eq!(cache.end_offset_for(LeaderEpoch(0), Offset(40)), EpochEnd::UNDEFINED);
        assert_eq!(LeaderEpochCache::new().end_offset_for(LeaderEpoch(3), Offset(0)), EpochEnd::UNDEFINED);
        assert_eq!(cache.epoch_for_offset(Offset(9)), Some(LeaderEpoch(1)));
        assert_eq!(cache.epoch_for_offset(Offset(10)), Some(LeaderEpoch(3)));
        assert_eq!(cache.start_offset(LeaderEpoch(6)), Some(Offset(25)));
    }

    #[test]
    fn a_newer_epoch_replaces_one_that_holds_nothing() {
        // Epoch 3 was assigned at offset 10 and lost everything it wrote in a crash; epoch 5
        // starts at the same offset.
        let mut cache = cache(&[(1, 0), (3, 10)]);
        assert!(cache.assign(LeaderEpoch(5), Offset(10)));
        assert_eq!(cache.entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(5), Offset(10))]);
        assert_eq!(cache.end_offset_for(LeaderEpoch(5), Offset(12)), end(5, 12));
        // A follower asking in epoch 3 learns it ends where epoch 1 does.
        assert_eq!(cache.end_offset_for(LeaderEpoch(3), Offset(12)), end(1, 10));
        assert!(cache.assign(LeaderEpoch(6), Offset(0)));
        assert_eq!(cache.entries(), &[(LeaderEpoch(6), Offset(0))]);
    }

    #[test]
    fn assign_ignores_what_goes_backwards_and_truncation_trims() {
        let mut cache = cache(&[(1, 0), (3, 10)]);
        assert!(!cache.assign(LeaderEpoch(3), Offset(12)), "same epoch");
        assert!(!cache.assign(LeaderEpoch(2), Offset(20)), "older epoch");
        assert!(cache.assign(LeaderEpoch(4), Offset(15)));
        assert!(cache.truncate_from_end(Offset(15)));
        assert_eq!(cache.entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(10))]);
        assert!(!cache.truncate_from_end(Offset(11)));
        assert!(cache.truncate_from_start(Offset(12)));
        assert_eq!(cache.entries(), &[(LeaderEpoch(3), Offset(12))]);
        assert!(!cache.truncate_from_start(Offset(12)));
    }

    #[test]
    fn the_checkpoint_round_trips_and_bad_files_are_refused() {
        let cache = cache(&[(0, 0), (2, 7), (5, 100)]);
        let text = cache.to_checkpoint();
        assert_eq!(text, "0\n3\n0 0\n2 7\n5 100\n");
        assert_eq!(LeaderEpochCache::from_checkpoint(&text), Ok(cache));
        for (bad, line) in [
            ("", 0),
            ("1\n0\n", 1),
            ("0\nx\n", 2),
            ("0\n2\n0 0\n", 0),
            ("0\n1\n0\n", 3),
            ("0\n1\n-1 0\n", 3),
            ("0\n2\n3 5\n2 9\n", 4),
            ("0\n2\n3 5\n4 5\n", 4),
            ("0\n1\n3 5\n4 9\n", 4),
            ("0\n99999999999\n", 2),
        ] {
            let error = LeaderEpochCache::from_checkpoint(bad).expect_err(bad);
            assert_eq!(error.line, line, "{bad:?}: {error}");
        }
    }

    proptest! {
        /// The answer for any epoch agrees with a scan of a log whose batches the cache
        /// describes: the answered epoch is the largest at or below the one asked about, and
        /// its end is the first offset written by a later epoch (or the log end).
        #[test]
        fn end_offset_for_agrees_with_the_log(
            steps in proptest::collection::vec((0i32..4, 1i64..5), 0..20),
            asked in 0i32..60,
        ) {
            let mut cache = LeaderEpochCache::new();
            let mut log: Vec<LeaderEpoch> = Vec::new();
            let mut epoch = 0;
            for (bump, records) in steps {
                epoch += bump;
                let _ = cache.assign(LeaderEpoch(epoch), Offset(log.len() as i64));
                log.extend(std::iter::repeat_n(LeaderEpoch(epoch), records as usize));
            }
            let answer = cache.end_offset_for(LeaderEpoch(asked), Offset(log.len() as i64));
            let below: Vec<LeaderEpoch> = log.iter().copied().filter(|e| e.0 <= asked).collect();
            match below.iter().max() {
                None => prop_assert_eq!(answer, EpochEnd::UNDEFINED),
                Some(largest) => {
                    prop_assert_eq!(answer.epoch, *largest);
                    let end = log.iter().position(|e| e > largest).unwrap_or(log.len());
                    prop_assert_eq!(answer.end_offset, Offset(end as i64));
                }
            }
        }
    }
}
