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
//! * `nonmonotonic-send`: a process's later acknowledged send to a key landed at a lower offset;
//! * `log-start-regressed`: a log start offset observed (ListOffsets earliest, or returned by
//!   DeleteRecords) lower than one observed by an operation that completed before it began;
//! * `deleted-read`: a poll that began after a log start offset was observed read below it;
//! * `short-delete`: an acknowledged DeleteRecords returned a log start offset below the offset
//!   it was asked to delete before;
//! * `over-delete` (only when the broker runs no retention of its own): a log start offset above
//!   every offset DeleteRecords was asked to delete before.
//!
//! Deleted prefixes: the *trim point* of a key is the highest log start offset observed. An
//! acknowledged record below it that no poll read may have been deleted before anyone read it,
//! so it is counted as trimmed, not as `lost-write` or `unseen`. Final reads must start at the
//! log start offset they observe, so everything at or above the final trim point is checked.
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
    /// DeleteRecords on `key` below `before`; on success, the log start offset it returned.
    DeleteRecords {
        /// Key (partition).
        key: u32,
        /// Delete the records below this offset.
        before: i64,
        /// The new log start offset, when acknowledged.
        log_start_offset: Option<i64>,
    },
    /// The log start offset of `key` as observed (ListOffsets earliest).
    LogStart {
        /// Key (partition).
        key: u32,
        /// The observed log start offset.
        offset: i64,
    },
}

/// What the checker may assume about the system under test.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// The broker may raise log start offsets by itself (retention by time or size), so a log
    /// start offset above every DeleteRecords offset is not `over-delete`.
    pub retention: bool,
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
    /// Acknowledged (acks=all) sends below their key's trim point that no poll read.
    pub trimmed: u64,
    /// Each key's trim point: the highest log start offset observed.
    pub trim_points: BTreeMap<u32, i64>,
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
            "history: {} acknowledged sends ({} deleted unread), {} distinct offsets observed",
            self.acknowledged, self.trimmed, self.observed_offsets
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

/// Checks a history of a broker that runs no retention of its own.
pub fn check(history: &[Op]) -> Report {
    check_with(history, CheckOptions::default())
}

/// Checks a history.
pub fn check_with(history: &[Op], options: CheckOptions) -> Report {
    let mut report = Report::default();
    let trim_points = check_log_start(history, options, &mut report);
    report.trim_points = trim_points.clone();
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
                if trim_points.get(key).is_some_and(|trim_point| offset < *trim_point) {
                    report.trimmed += 1;
                } else if max_polled.get(key).is_some_and(|highest| *highest > offset) {
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

/// An observation of a log start offset: (invoke, complete, offset).
type LogStartObservation = (u64, u64, i64);

/// The log start offset checks; returns each key's trim point (highest observed log start).
fn check_log_start(history: &[Op], options: CheckOptions, report: &mut Report) -> BTreeMap<u32, i64> {
    let mut observed: BTreeMap<u32, Vec<LogStartObservation>> = BTreeMap::new();
    // Highest offset DeleteRecords was asked to delete before, counting requests that may
    // have taken effect (acknowledged or indeterminate).
    let mut requested: BTreeMap<u32, i64> = BTreeMap::new();
    for op in history {
        let (key, offset) = match (&op.operation, op.outcome) {
            (Operation::LogStart { key, offset }, Outcome::Ok) => (*key, *offset),
            (Operation::DeleteRecords { key, before, log_start_offset }, outcome) => {
                if outcome != Outcome::Fail {
                    let highest = requested.entry(*key).or_insert(*before);
                    *highest = (*highest).max(*before);
                }
                match (outcome, log_start_offset) {
                    (Outcome::Ok, Some(log_start_offset)) => {
                        if log_start_offset < before {
                            report.add("short-delete", format!("process {} deleted key {key} before {before}, acknowledged with log start offset {log_start_offset}", op.process));
                        }
                        (*key, *log_start_offset)
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        observed.entry(key).or_default().push((op.invoke_ms, op.complete_ms, offset));
    }
    // Per key: observations sorted by completion, with the running maximum of their offsets,
    // so "the highest log start known before time t" is a binary search.
    let mut known: BTreeMap<u32, (Vec<u64>, Vec<(i64, u64)>)> = BTreeMap::new();
    for (key, observations) in &mut observed {
        observations.sort_by_key(|(_, complete_ms, _)| *complete_ms);
        let mut running: Vec<(i64, u64)> = Vec::with_capacity(observations.len());
        for (_, complete_ms, offset) in observations.iter() {
            let best = match running.last() {
                Some((highest, at)) if highest >= offset => (*highest, *at),
                _ => (*offset, *complete_ms),
            };
            running.push(best);
        }
        let completions = observations.iter().map(|(_, complete_ms, _)| *complete_ms).collect();
        let _ = known.insert(*key, (completions, running));
    }
    let known_before = |key: u32, invoke_ms: u64| -> Option<(i64, u64)> {
        let (completions, running) = known.get(&key)?;
        let count = completions.partition_point(|complete_ms| *complete_ms < invoke_ms);
        count.checked_sub(1).map(|index| running[index])
    };
    for (key, observations) in &observed {
        for (invoke_ms, _, offset) in observations {
            if let Some((highest, at)) = known_before(*key, *invoke_ms) {
                if *offset < highest {
                    report.add("log-start-regressed", format!("key {key} log start offset {offset} observed from {invoke_ms} ms, after {highest} was observed by {at} ms"));
                }
            }
        }
    }
    for op in history {
        let (Operation::Poll { reads }, Outcome::Ok) = (&op.operation, op.outcome) else { continue };
        for (key, records) in reads {
            let Some(lowest) = records.iter().map(|(offset, _)| *offset).min() else { continue };
            if let Some((highest, at)) = known_before(*key, op.invoke_ms) {
                if lowest < highest {
                    report.add("deleted-read", format!("process {} read key {key} offset {lowest} in a poll from {} ms, after the log start offset was {highest} by {at} ms", op.process, op.invoke_ms));
                }
            }
        }
    }
    let trim_points: BTreeMap<u32, i64> =
        known.iter().filter_map(|(key, (_, running))| running.last().map(|(highest, _)| (*key, *highest))).collect();
    if !options.retention {
        for (key, trim_point) in &trim_points {
            let requested = requested.get(key).copied().unwrap_or(0);
            if *trim_point > requested {
                report.add("over-delete", format!("key {key} log start offset reached {trim_point}, but DeleteRecords asked for at most {requested} and there is no retention"));
            }
        }
    }
    trim_points
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

    fn op(process: u64, invoke_ms: u64, complete_ms: u64, operation: Operation, outcome: Outcome) -> Op {
        Op { process, invoke_ms, complete_ms, operation, outcome }
    }

    fn delete(time: u64, key: u32, before: i64, log_start_offset: Option<i64>, outcome: Outcome) -> Op {
        op(4, time, time, Operation::DeleteRecords { key, before, log_start_offset }, outcome)
    }

    fn log_start(time: u64, key: u32, offset: i64) -> Op {
        op(5, time, time, Operation::LogStart { key, offset }, Outcome::Ok)
    }

    #[test]
    fn records_deleted_before_anyone_read_them_are_not_lost() {
        let history = vec![
            send(1, 1, 0, 10, Some(0), Outcome::Ok),
            send(1, 2, 0, 11, Some(1), Outcome::Ok),
            send(1, 3, 0, 12, Some(2), Outcome::Ok),
            delete(4, 0, 2, Some(2), Outcome::Ok),
            log_start(5, 0, 2),
            poll(2, 6, 0, &[(2, 12)]),
        ];
        let report = check(&history);
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.trimmed, 2);
        // Without the deletion the same reads lose two writes.
        let report = check(&[history[0].clone(), history[1].clone(), history[2].clone(), history[5].clone()]);
        assert!(report.anomalies.contains_key("lost-write"), "{report}");
    }

    #[test]
    fn each_log_start_anomaly_is_found() {
        let cases: Vec<(&str, Vec<Op>, CheckOptions)> = vec![
            (
                "log-start-regressed",
                vec![delete(1, 0, 5, Some(5), Outcome::Ok), log_start(2, 0, 3)],
                CheckOptions::default(),
            ),
            (
                "deleted-read",
                vec![delete(1, 0, 5, Some(5), Outcome::Ok), poll(2, 2, 0, &[(4, 10), (5, 11)])],
                CheckOptions::default(),
            ),
            ("short-delete", vec![delete(1, 0, 5, Some(4), Outcome::Ok)], CheckOptions::default()),
            ("over-delete", vec![delete(1, 0, 5, Some(5), Outcome::Ok), log_start(2, 0, 7)], CheckOptions::default()),
            ("over-delete", vec![delete(1, 0, 5, None, Outcome::Fail), log_start(2, 0, 5)], CheckOptions::default()),
        ];
        for (name, history, options) in cases {
            let report = check_with(&history, options);
            assert!(report.anomalies.contains_key(name), "expected {name}, got {report}");
        }
    }

    #[test]
    fn retention_and_indeterminate_deletes_may_raise_the_log_start() {
        let history = vec![delete(1, 0, 5, None, Outcome::Info), log_start(2, 0, 5)];
        assert!(check(&history).is_valid());
        let history = vec![log_start(2, 0, 9)];
        assert!(!check(&history).is_valid());
        assert!(check_with(&history, CheckOptions { retention: true }).is_valid());
        // Overlapping operations are not ordered: a read that began before the deletion
        // completed may still see the old records.
        let history = vec![
            op(4, 1, 5, Operation::DeleteRecords { key: 0, before: 5, log_start_offset: Some(5) }, Outcome::Ok),
            op(2, 4, 6, Operation::Poll { reads: BTreeMap::from([(0, vec![(4, 10), (5, 11)])]) }, Outcome::Ok),
        ];
        assert!(check(&history).is_valid(), "{}", check(&history));
    }
}
