//! The consumer-group checks of the cluster scenarios (`scenario::group_member` feeds them):
//!
//! * `two-owners`: at most one member holds a partition in one generation (assignments are
//!   reported after every poll, keyed by the generation the member is in; a member whose id was
//!   taken away holds only stale partitions and is not counted);
//! * `commit-went-back`: a successful commit that began after another successful commit of the
//!   same partition completed never names a lower offset: committed offsets never move back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use protocol::ids::{Offset, TopicPartition};

/// What a member commits after a poll: the next offset of every partition (key) of `topic` it
/// read, from a poll's reads by key (offset, value).
pub fn next_offsets(topic: &str, reads: &BTreeMap<u32, Vec<(i64, u64)>>) -> Vec<(TopicPartition, Offset)> {
    reads
        .iter()
        .filter_map(|(key, records)| {
            let partition = i32::try_from(*key).ok()?;
            records.last().map(|(offset, _)| (TopicPartition::new(topic, partition), Offset(offset + 1)))
        })
        .collect()
}

/// A successful commit.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The partition (key).
    pub key: u32,
    /// The offset committed.
    pub offset: i64,
    /// When the commit was sent.
    pub invoke_ms: u64,
    /// When it was acknowledged.
    pub complete_ms: u64,
    /// The member's process id.
    pub process: u64,
}

/// What the members report, and the group checks over it.
#[derive(Debug, Default)]
pub struct GroupChecks {
    owners: Mutex<BTreeMap<(i32, u32), String>>,
    commits: Mutex<Vec<Commit>>,
    violations: Mutex<Vec<String>>,
    rebalances: AtomicU64,
    generation_max: AtomicU64,
}

impl GroupChecks {
    /// A member `member_id` in `generation` holds `assignment`.
    pub fn owned(&self, generation: i32, member_id: &str, assignment: &[TopicPartition]) {
        if member_id.is_empty() || generation <= 0 {
            return;
        }
        let _ = self.generation_max.fetch_max(u64::try_from(generation).unwrap_or(0), Ordering::Relaxed);
        let mut owners = self.owners.lock().expect("owners lock");
        for partition in assignment {
            let key = u32::try_from(partition.partition.0).unwrap_or(u32::MAX);
            if let Some(other) = owners.insert((generation, key), member_id.to_owned()) {
                if other != member_id {
                    self.violations
                        .lock()
                        .expect("violations lock")
                        .push(format!("two-owners: k{key} held by {other} and {member_id} in generation {generation}"));
                }
            }
        }
    }

    /// A commit succeeded.
    pub fn committed(&self, commit: Commit) {
        self.commits.lock().expect("commits lock").push(commit);
    }

    /// A rebalance gave a member its partitions.
    pub fn rebalanced(&self) {
        let _ = self.rebalances.fetch_add(1, Ordering::Relaxed);
    }

    /// Every violation found: those seen as members reported, and `commit-went-back`.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = self.violations.lock().expect("violations lock").clone();
        let commits = self.commits.lock().expect("commits lock").clone();
        let mut by_key: BTreeMap<u32, Vec<Commit>> = BTreeMap::new();
        for commit in commits {
            by_key.entry(commit.key).or_default().push(commit);
        }
        for (key, commits) in by_key {
            // The highest offset among commits completed before each invocation.
            let mut completed: Vec<&Commit> = commits.iter().collect();
            completed.sort_by_key(|commit| commit.complete_ms);
            let mut invoked: Vec<&Commit> = commits.iter().collect();
            invoked.sort_by_key(|commit| commit.invoke_ms);
            let mut cursor = 0;
            let mut highest: Option<&Commit> = None;
            for commit in invoked {
                while cursor < completed.len() && completed[cursor].complete_ms < commit.invoke_ms {
                    if highest.is_none_or(|best| completed[cursor].offset > best.offset) {
                        highest = Some(completed[cursor]);
                    }
                    cursor += 1;
                }
                if let Some(best) = highest.filter(|best| commit.offset < best.offset) {
                    violations.push(format!(
                        "commit-went-back: k{key} committed {} by p{} at {} ms after {} by p{} completed at {} ms",
                        commit.offset, commit.process, commit.invoke_ms, best.offset, best.process, best.complete_ms
                    ));
                }
            }
        }
        violations
    }

    /// Rebalances that gave a member its partitions.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// `commits N rebalances N generation N` for the summary.
    pub fn summary(&self) -> String {
        format!(
            "commits {} rebalances {} generation {}",
            self.commits.lock().expect("commits lock").len(),
            self.rebalances.load(Ordering::Relaxed),
            self.generation_max.load(Ordering::Relaxed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(key: u32, offset: i64, invoke_ms: u64, complete_ms: u64) -> Commit {
        Commit { key, offset, invoke_ms, complete_ms, process: 100 }
    }

    #[test]
    fn a_commit_below_an_earlier_completed_one_is_reported() {
        let checks = GroupChecks::default();
        checks.commits.lock().expect("lock").extend([
            commit(0, 10, 0, 5),
            // Concurrent with the first: either order is fine.
            commit(0, 8, 3, 9),
            commit(0, 12, 10, 12),
            commit(1, 3, 0, 1),
        ]);
        assert!(checks.violations().is_empty(), "{:?}", checks.violations());
        checks.commits.lock().expect("lock").push(commit(0, 11, 13, 14));
        let violations = checks.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].starts_with("commit-went-back: k0 committed 11"), "{violations:?}");
    }

    #[test]
    fn two_members_holding_a_partition_in_one_generation_are_reported() {
        let checks = GroupChecks::default();
        let partitions = [TopicPartition::new("jepsen", 0), TopicPartition::new("jepsen", 1)];
        checks.owned(3, "a", &partitions[..1]);
        checks.owned(3, "b", &partitions[1..]);
        checks.owned(4, "b", &partitions[..1]);
        // A member that lost its id holds stale partitions: not an owner.
        checks.owned(4, "", &partitions);
        assert!(checks.violations().is_empty(), "{:?}", checks.violations());
        checks.owned(4, "a", &partitions[..1]);
        assert_eq!(checks.violations(), vec!["two-owners: k0 held by b and a in generation 4".to_owned()]);
    }
}
