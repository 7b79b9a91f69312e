//! The history checker: finds the anomalies of Jepsen's Kafka workload in a recorded history.
//!
//! Shared by the simulator and the fault harness. A history is a list of operations by
//! processes, each with an outcome. Keys map one-to-one to partitions; values are unique per
//! history. The checks (named as in `brief/testing.md`):
//!
//! * `lost-write`: an acknowledged send at (key, offset) that no poll saw, although polls saw
//!   a higher offset of that key;
//! * `unseen`: an acknowledged send no poll saw, with nothing later seen either (final reads
//!   should make this impossible);
//! * `duplicate`: a value at more than one offset;
//! * `inconsistent-offsets`: one (key, offset) observed with more than one value;
//! * `G1a`: a value from a definitely failed send seen by a poll;
//! * `nonmonotonic-poll` / `poll-skip`: a process's next poll of a key starts at or before
//!   where its previous poll ended, or skips offsets known to hold values (assign mode only:
//!   between polls the process did not seek);
//! * `int-nonmonotonic-poll` / `int-poll-skip`: the same within one poll;
//! * `nonmonotonic-send`: a process's later acknowledged send to a key landed at a lower offset.
//!
//! Sends are *durable* (acks=all: an acknowledgement promises the record survives any crash)
//! or not (acks=1: the leader appended it, a crash may take it back and reuse its offset).
//! A non-durable acknowledgement is exempt from `lost-write`, `unseen` and `nonmonotonic-send`
//! and does not claim its offset, but if its value is read at all it must be read at the
//! acknowledged offset (`inconsistent-offsets`), exactly once (`duplicate`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown (timeout, lost connection).
    Info,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Operation {
    /// Send `value` to `key`; on success, the offset it landed at.
    Send {
        /// Key (partition).
        key: u32,
        /// Unique value.
        value: u64,
        /// Offset, when acknowledged.
        offset: Option<i64>,
        /// True for acks=all (an acknowledged record must survive crashes); false for acks=1.
        durable: bool,
    },
    /// Records read per key, in the order returned: (offset, value).
    Poll {
        /// Reads by key.
        reads: BTreeMap<u32, Vec<(i64, u64)>>,
    },
    /// The process moved its read positions (assign, seek, subscribe, restart): monotonicity
    /// across this point is not required.
    Reposition,
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Op {
    /// The client process.
    pub process: u64,
    /// Invocation time (simulated or wall ms).
    pub invoke_ms: u64,
    /// Completion time.
    pub complete_ms: u64,
    /// What it did.
    pub operation: Operation,
    /// How it ended.
    pub outcome: Outcome,
}

/// The anomalies found, by name, each with human-readable instances.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Anomaly name -> instances.
    pub anomalies: BTreeMap<&'static str, Vec<String>>,
    /// Acknowledged sends.
    pub acknowledged: u64,
    /// Distinct (key, offset) observed.
    pub observed_offsets: u64,
}

impl Report {
    /// True if no anomaly was found.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    fn add(&mut self, name: &'static str, detail: String) {
        const INSTANCES_SHOWN_MAX: usize = 20;
        let instances = self.anomalies.entry(name).or_default();
        if instances.len() < INSTANCES_SHOWN_MAX {
            instances.push(detail);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history: {} acknowledged sends, {} distinct offsets observed",
            self.acknowledged, self.observed_offsets
        )?;
        if self.anomalies.is_empty() {
            return writeln!(f, "no anomalies");
        }
        for (name, instances) in &self.anomalies {
            writeln!(f, "ANOMALY {name}:")?;
            for instance in instances {
                writeln!(f, "  {instance}")?;
            }
        }
        Ok(())
    }
}

/// Checks a history.
pub fn check(history: &[Op]) -> Report {
    let mut report = Report::default();
    // (key, offset) -> values observed there; value -> (key, offsets) observed.
    let mut at: BTreeMap<(u32, i64), BTreeSet<u64>> = BTreeMap::new();
    let mut seen_values: BTreeMap<u64, BTreeSet<(u32, i64)>> = BTreeMap::new();
    let mut polled_values: BTreeSet<u64> = BTreeSet::new();
    let mut max_polled: BTreeMap<u32, i64> = BTreeMap::new();
    // Non-durable acknowledgements: value -> (key, offset).
    let mut leader_acks: BTreeMap<u64, (u32, i64)> = BTreeMap::new();
    for op in history {
        match (&op.operation, op.outcome) {
            (Operation::Send { key, value, offset: Some(offset), durable: false }, Outcome::Ok) => {
                let _ = leader_acks.insert(*value, (*key, *offset));
            }
            (Operation::Send { key, value, offset: Some(offset), durable: true }, Outcome::Ok) => {
                report.acknowledged += 1;
                let _ = at.entry((*key, *offset)).or_default().insert(*value);
                let _ = seen_values.entry(*value).or_default().insert((*key, *offset));
            }
            (Operation::Poll { reads }, Outcome::Ok) => {
                for (key, records) in reads {
                    for (offset, value) in records {
                        let _ = at.entry((*key, *offset)).or_default().insert(*value);
                        let _ = seen_values.entry(*value).or_default().insert((*key, *offset));
                        let _ = polled_values.insert(*value);
                        let highest = max_polled.entry(*key).or_insert(*offset);
                        *highest = (*highest).max(*offset);
                    }
                }
            }
            _ => {}
        }
    }
    report.observed_offsets = at.len() as u64;
    for ((key, offset), values) in &at {
        if values.len() > 1 {
            report.add("inconsistent-offsets", format!("key {key} offset {offset} holds values {values:?}"));
        }
    }
    for (value, places) in &seen_values {
        if places.len() > 1 {
            report.add("duplicate", format!("value {value} at {places:?}"));
        }
    }
    for (value, (key, offset)) in &leader_acks {
        if let Some(places) = seen_values.get(value) {
            if places.iter().any(|place| place != &(*key, *offset)) {
                report.add(
                    "inconsistent-offsets",
                    format!("value {value} acknowledged (acks=1) at key {key} offset {offset}, read at {places:?}"),
                );
            }
        }
    }
    for op in history {
        match (&op.operation, op.outcome) {
            (Operation::Send { key, value, offset, durable: true }, Outcome::Ok) if !polled_values.contains(value) => {
                let offset = offset.unwrap_or(-1);
                if max_polled.get(key).is_some_and(|highest| *highest > offset) {
                    report.add("lost-write", format!("process {} sent value {value} to key {key}, acknowledged at offset {offset}, never read though offset {} was", op.process, max_polled[key]));
                } else {
                    report.add(
                        "unseen",
                        format!("value {value} to key {key} (offset {offset}) acknowledged but never read"),
                    );
                }
            }
            (Operation::Send { value, key, .. }, Outcome::Fail) if polled_values.contains(value) => {
                report.add("G1a", format!("value {value} to key {key} was refused, yet read"));
            }
            _ => {}
        }
    }
    check_process_order(history, &at, &mut report);
    report
}

/// True if some offset strictly between `low` and `high` of `key` is known to hold a value.
fn known_between(at: &BTreeMap<(u32, i64), BTreeSet<u64>>, key: u32, low: i64, high: i64) -> bool {
    low + 1 < high && at.range((key, low + 1)..(key, high)).next().is_some()
}

fn check_process_order(history: &[Op], at: &BTreeMap<(u32, i64), BTreeSet<u64>>, report: &mut Report) {
    let mut last_polled: BTreeMap<(u64, u32), i64> = BTreeMap::new();
    let mut last_sent: BTreeMap<(u64, u32), i64> = BTreeMap::new();
    let mut ordered: Vec<&Op> = history.iter().collect();
    ordered.sort_by_key(|op| (op.process, op.complete_ms));
    for op in ordered {
        match (&op.operation, op.outcome) {
            (Operation::Reposition, _) => {
                last_polled.retain(|(process, _), _| *process != op.process);
            }
            (Operation::Poll { reads }, Outcome::Ok) => {
                for (key, records) in reads {
                    for pair in records.windows(2) {
                        let (previous, next) = (pair[0].0, pair[1].0);
                        if next <= previous {
                            report.add(
                                "int-nonmonotonic-poll",
                                format!(
                                    "process {} read key {key} offset {next} after {previous} in one poll",
                                    op.process
                                ),
                            );
                        } else if known_between(at, *key, previous, next) {
                            report.add(
                                "int-poll-skip",
                                format!(
                                    "process {} skipped key {key} offsets between {previous} and {next} in one poll",
                                    op.process
                                ),
                            );
                        }
                    }
                    let (Some(first), Some(last)) = (records.first(), records.last()) else { continue };
                    if let Some(previous) = last_polled.get(&(op.process, *key)) {
                        if first.0 <= *previous {
                            report.add(
                                "nonmonotonic-poll",
                                format!(
                                    "process {} polled key {key} from offset {} after reaching {previous}",
                                    op.process, first.0
                                ),
                            );
                        } else if known_between(at, *key, *previous, first.0) {
                            report.add("poll-skip", format!("process {} polled key {key} from offset {} after {previous}, skipping known offsets", op.process, first.0));
                        }
                    }
                    let _ = last_polled.insert((op.process, *key), last.0);
                }
            }
            (Operation::Send { key, offset: Some(offset), value, durable: true }, Outcome::Ok) => {
                if let Some(previous) = last_sent.get(&(op.process, *key)) {
                    if offset <= previous {
                        report.add("nonmonotonic-send", format!("process {} sent value {value} to key {key} at offset {offset}, after a send at {previous}", op.process));
                    }
                }
                let _ = last_sent.insert((op.process, *key), *offset);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(process: u64, time: u64, key: u32, value: u64, offset: Option<i64>, outcome: Outcome) -> Op {
        Op {
            process,
            invoke_ms: time,
            complete_ms: time,
            operation: Operation::Send { key, value, offset, durable: true },
            outcome,
        }
    }

    fn leader_send(process: u64, time: u64, key: u32, value: u64, offset: i64) -> Op {
        Op {
            process,
            invoke_ms: time,
            complete_ms: time,
            operation: Operation::Send { key, value, offset: Some(offset), durable: false },
            outcome: Outcome::Ok,
        }
    }

    fn poll(process: u64, time: u64, key: u32, records: &[(i64, u64)]) -> Op {
        Op {
            process,
            invoke_ms: time,
            complete_ms: time,
            operation: Operation::Poll { reads: BTreeMap::from([(key, records.to_vec())]) },
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let history = vec![
            send(1, 1, 0, 10, Some(0), Outcome::Ok),
            send(1, 2, 0, 11, Some(1), Outcome::Ok),
            send(1, 3, 0, 12, None, Outcome::Info),
            poll(2, 4, 0, &[(0, 10), (1, 11)]),
        ];
        let report = check(&history);
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.acknowledged, 2);
    }

    #[test]
    fn each_anomaly_is_found() {
        let cases: Vec<(&str, Vec<Op>)> = vec![
            (
                "lost-write",
                vec![
                    send(1, 1, 0, 10, Some(0), Outcome::Ok),
                    send(1, 2, 0, 11, Some(1), Outcome::Ok),
                    poll(2, 3, 0, &[(1, 11)]),
                ],
            ),
            ("unseen", vec![send(1, 1, 0, 10, Some(0), Outcome::Ok)]),
            ("duplicate", vec![poll(2, 3, 0, &[(0, 10), (1, 10)])]),
            ("inconsistent-offsets", vec![send(1, 1, 0, 10, Some(0), Outcome::Ok), poll(2, 3, 0, &[(0, 11)])]),
            ("G1a", vec![send(1, 1, 0, 10, None, Outcome::Fail), poll(2, 3, 0, &[(0, 10)])]),
            ("nonmonotonic-poll", vec![poll(2, 3, 0, &[(0, 10), (1, 11)]), poll(2, 4, 0, &[(1, 11)])]),
            (
                "poll-skip",
                vec![poll(3, 1, 0, &[(0, 10), (1, 11), (2, 12)]), poll(2, 3, 0, &[(0, 10)]), poll(2, 4, 0, &[(2, 12)])],
            ),
            ("int-nonmonotonic-poll", vec![poll(2, 3, 0, &[(1, 11), (0, 10)])]),
            ("int-poll-skip", vec![poll(3, 1, 0, &[(1, 11)]), poll(2, 3, 0, &[(0, 10), (2, 12)])]),
            (
                "nonmonotonic-send",
                vec![
                    send(1, 1, 0, 10, Some(5), Outcome::Ok),
                    send(1, 2, 0, 11, Some(4), Outcome::Ok),
                    poll(2, 3, 0, &[(4, 11), (5, 10)]),
                ],
            ),
        ];
        for (name, history) in cases {
            let report = check(&history);
            assert!(report.anomalies.contains_key(name), "expected {name}, got {report}");
        }
    }

    #[test]
    fn acks_one_sends_may_be_lost_but_not_moved_or_duplicated() {
        // Lost in a crash, offset reused by a durable send, later sends land lower: all fine.
        let history = vec![
            leader_send(3, 1, 0, 10, 0),
            leader_send(3, 2, 0, 11, 1),
            send(1, 3, 0, 20, Some(0), Outcome::Ok),
            leader_send(3, 4, 0, 12, 1),
            poll(2, 5, 0, &[(0, 20), (1, 12)]),
        ];
        let report = check(&history);
        assert!(report.is_valid(), "{report}");
        // Read at another offset than acknowledged.
        let report = check(&[leader_send(3, 1, 0, 10, 0), poll(2, 2, 0, &[(0, 11), (1, 10)])]);
        assert!(report.anomalies.contains_key("inconsistent-offsets"), "{report}");
        // Read twice.
        let report = check(&[leader_send(3, 1, 0, 10, 0), poll(2, 2, 0, &[(0, 10), (1, 10)])]);
        assert!(report.anomalies.contains_key("duplicate"), "{report}");
    }

    #[test]
    fn a_reposition_resets_poll_monotonicity() {
        let history = vec![
            poll(2, 3, 0, &[(0, 10), (1, 11)]),
            Op { process: 2, invoke_ms: 4, complete_ms: 4, operation: Operation::Reposition, outcome: Outcome::Ok },
            poll(2, 5, 0, &[(0, 10), (1, 11)]),
        ];
        assert!(check(&history).is_valid());
    }
}
