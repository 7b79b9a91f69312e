//! The in-memory Raft log raft-rs reads ([`raft::Storage`]): the latest snapshot, the entries
//! after it, the hard state and the conf state.
//!
//! It mirrors what the raft-engine store holds (the driver writes both before it advances
//! raft-rs), so raft-rs never waits on a disk read. Snapshots keep it bounded.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

#[derive(Debug, Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot: its metadata names the last index it covers.
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl Core {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }
}

/// Shared handle to the in-memory log.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemLog {
    core: Arc<RwLock<Core>>,
}

impl MemLog {
    fn read(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the log from what the store recovered.
    pub(crate) fn restore(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> MemLog {
        let snapshot = snapshot.unwrap_or_default();
        if let Some(first) = entries.first() {
            assert_eq!(first.index, snapshot.get_metadata().index + 1, "recovered entries follow the snapshot");
        }
        MemLog { core: Arc::new(RwLock::new(Core { hard_state, conf_state, snapshot, entries })) }
    }

    /// Appends entries, replacing any stored entries from the first one's index on.
    pub(crate) fn append(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let mut core = self.write();
        assert!(
            first.index >= core.first_index(),
            "append below the snapshot: {} < {}",
            first.index,
            core.first_index()
        );
        assert!(
            first.index <= core.last_index() + 1,
            "append leaves a hole: {} > {} + 1",
            first.index,
            core.last_index()
        );
        let keep = (first.index - core.first_index()) as usize;
        core.entries.truncate(keep);
        core.entries.extend_from_slice(entries);
    }

    /// Sets the hard state.
    pub(crate) fn set_hard_state(&self, hard_state: HardState) {
        self.write().hard_state = hard_state;
    }

    /// Records a higher commit index in the hard state.
    pub(crate) fn set_commit(&self, commit: u64) {
        let mut core = self.write();
        core.hard_state.commit = core.hard_state.commit.max(commit);
    }

    /// The current hard state.
    #[cfg(test)]
    pub(crate) fn hard_state(&self) -> HardState {
        self.read().hard_state.clone()
    }

    /// Replaces the whole log with a snapshot restored from the leader.
    pub(crate) fn restore_snapshot(&self, snapshot: Snapshot) {
        let mut core = self.write();
        let metadata = snapshot.get_metadata();
        core.hard_state.term = core.hard_state.term.max(metadata.term);
        core.hard_state.commit = core.hard_state.commit.max(metadata.index);
        core.conf_state = metadata.get_conf_state().clone();
        core.entries.clear();
        core.snapshot = snapshot;
    }

    /// Installs a snapshot taken locally at an applied index and drops the entries it covers.
    pub(crate) fn compact(&self, snapshot: Snapshot) {
        let mut core = self.write();
        let index = snapshot.get_metadata().index;
        assert!(index <= core.last_index(), "a local snapshot covers only stored entries");
        if index <= core.snapshot_index() {
            return;
        }
        let drop = (index - core.snapshot_index()) as usize;
        let _ = core.entries.drain(..drop);
        core.snapshot = snapshot;
    }

    /// The latest snapshot's index.
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.read().snapshot_index()
    }

    /// The conf state.
    pub(crate) fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    /// The term of a stored entry (or of the snapshot's last entry).
    pub(crate) fn entry_term(&self, index: u64) -> Option<u64> {
        let core = self.read();
        if index == core.snapshot_index() {
            return Some(core.snapshot.get_metadata().term);
        }
        let first = core.first_index();
        if index < first || index > core.last_index() {
            return None;
        }
        Some(core.entries[(index - first) as usize].term)
    }
}

impl raft::Storage for MemLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.read();
        Ok(RaftState::new(core.hard_state.clone(), core.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.read();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = core.first_index();
        let mut entries = core.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let core = self.read();
        if index == core.snapshot_index() {
            return Ok(core.snapshot.get_metadata().term);
        }
        if index < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(index - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.read();
        if core.snapshot_index() < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(core.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.index = index;
        entry.term = term;
        entry
    }

    #[test]
    fn appends_replace_the_tail_and_snapshots_bound_the_log() {
        let log = MemLog::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!(log.last_index().expect("last"), 4);
        assert_eq!(log.term(3).expect("term"), 2);
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 2;
        snapshot.mut_metadata().term = 1;
        log.compact(snapshot);
        assert_eq!(log.first_index().expect("first"), 3);
        assert_eq!(log.term(2).expect("snapshot term"), 1);
        assert!(log.term(1).is_err());
        assert_eq!(log.entries(3, 5, None, GetEntriesContext::empty(false)).expect("entries").len(), 2);
        let mut restored = Snapshot::default();
        restored.mut_metadata().index = 10;
        restored.mut_metadata().term = 3;
        log.restore_snapshot(restored);
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (11, 10));
        assert_eq!(log.hard_state().commit, 10);
    }
}
