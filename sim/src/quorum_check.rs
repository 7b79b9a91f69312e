//! Invariants of the controller quorum, checked as events arrive (Kafka's
//! `RaftEventSimulationTest` checks the same ones: single leader, consistent committed data).
//!
//! * `two-leaders`: two controllers led the same term;
//! * `applied-out-of-order`: a controller applied an index other than the one after its last
//!   (within one incarnation; a restart starts again from its snapshot);
//! * `committed-changed`: two controllers applied different entries (term or data) at one
//!   index, or a snapshot's term disagrees with the entry applied at its index: committed
//!   metadata was lost or rewritten;
//! * `acknowledged-lost`: a proposal answered `Ok(index)` whose entry is not the one applied
//!   at that index (checked at the end).

use std::collections::BTreeMap;

/// The checker's state.
#[derive(Debug, Default)]
pub struct QuorumCheck {
    leaders: BTreeMap<u64, u64>,
    /// Index -> (term, data hash) of the first entry applied there by anyone.
    committed: BTreeMap<u64, (u64, u64)>,
    /// Node -> last index it applied in its current incarnation.
    positions: BTreeMap<u64, u64>,
    /// Index -> data hash of acknowledged proposals.
    acknowledged: BTreeMap<u64, u64>,
    violations: Vec<String>,
}

impl QuorumCheck {
    /// An empty checker.
    pub fn new() -> QuorumCheck {
        QuorumCheck::default()
    }

    /// `node` became leader of `term`.
    pub fn leader(&mut self, term: u64, node: u64) {
        match self.leaders.get(&term) {
            Some(other) if *other != node => {
                self.violations.push(format!("two-leaders: nodes {other} and {node} both led term {term}"))
            }
            _ => {
                let _ = self.leaders.insert(term, node);
            }
        }
    }

    /// `node` (re)started: it applies again from its snapshot.
    pub fn restarted(&mut self, node: u64) {
        let _ = self.positions.insert(node, 0);
    }

    /// `node` applied the entry at `index` (or restored a snapshot covering up to it).
    pub fn applied(&mut self, node: u64, index: u64, term: u64, data_hash: u64, from_snapshot: bool) {
        let position = self.positions.get(&node).copied().unwrap_or(0);
        if from_snapshot {
            if let Some((known_term, _)) = self.committed.get(&index) {
                if *known_term != term {
                    self.violations.push(format!(
                        "committed-changed: node {node} restored a snapshot at index {index} term {term}, but term {known_term} was applied there"
                    ));
                }
            }
            let _ = self.positions.insert(node, index);
            return;
        }
        if index != position + 1 {
            self.violations
                .push(format!("applied-out-of-order: node {node} applied index {index} after index {position}"));
        }
        let _ = self.positions.insert(node, index);
        match self.committed.get(&index) {
            Some(known) if *known != (term, data_hash) => self.violations.push(format!(
                "committed-changed: node {node} applied (term {term}, data {data_hash:016x}) at index {index}, but (term {}, data {:016x}) was applied there before",
                known.0, known.1
            )),
            Some(_) => {}
            None => {
                let _ = self.committed.insert(index, (term, data_hash));
            }
        }
    }

    /// A proposal whose entry data hashes to `data_hash` was acknowledged at `index`.
    pub fn acknowledged(&mut self, index: u64, data_hash: u64) {
        if let Some(previous) = self.acknowledged.insert(index, data_hash) {
            if previous != data_hash {
                self.violations.push(format!("acknowledged-lost: two proposals acknowledged at index {index}"));
            }
        }
    }

    /// Highest index applied by anyone.
    pub fn highest_applied(&self) -> u64 {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Terms with a known leader.
    pub fn terms_led(&self) -> usize {
        self.leaders.len()
    }

    /// Every violation so far, plus acknowledged proposals whose entry is not the one applied.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = self.violations.clone();
        for (index, hash) in &self.acknowledged {
            match self.committed.get(index) {
                Some((_, applied)) if applied == hash => {}
                Some((term, applied)) => violations.push(format!(
                    "acknowledged-lost: the proposal acknowledged at index {index} (data {hash:016x}) was replaced by (term {term}, data {applied:016x})"
                )),
                None => violations.push(format!("acknowledged-lost: the proposal acknowledged at index {index} was never applied by anyone")),
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consistent_history_passes_and_each_violation_is_found() {
        let mut check = QuorumCheck::new();
        check.leader(1, 1);
        check.leader(1, 1);
        for node in [1, 2] {
            check.restarted(node);
            check.applied(node, 1, 1, 0, false);
            check.applied(node, 2, 1, 7, false);
        }
        check.acknowledged(2, 7);
        check.restarted(2);
        check.applied(2, 2, 1, 0, true);
        check.applied(2, 3, 2, 9, false);
        assert!(check.violations().is_empty(), "{:?}", check.violations());

        let cases: Vec<(&str, Box<dyn Fn(&mut QuorumCheck)>)> = vec![
            ("two-leaders", Box::new(|check| check.leader(1, 2))),
            ("applied-out-of-order", Box::new(|check| check.applied(1, 5, 2, 1, false))),
            ("committed-changed", Box::new(|check| check.applied(1, 3, 2, 8, false))),
            ("committed-changed", Box::new(|check| check.applied(1, 2, 3, 0, true))),
            ("acknowledged-lost", Box::new(|check| check.acknowledged(3, 1))),
            ("acknowledged-lost", Box::new(|check| check.acknowledged(9, 1))),
        ];
        for (name, inject) in cases {
            let mut copy = QuorumCheck {
                leaders: check.leaders.clone(),
                committed: check.committed.clone(),
                positions: check.positions.clone(),
                acknowledged: check.acknowledged.clone(),
                violations: Vec::new(),
            };
            inject(&mut copy);
            assert!(
                copy.violations().iter().any(|violation| violation.starts_with(name)),
                "{name}: {:?}",
                copy.violations()
            );
        }
    }
}
