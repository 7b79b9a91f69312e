//! Partition replicas against each other, checked continuously as brokers report what their
//! replicas do ([`broker::observe::ReplicaEvent`]).
//!
//! The check keeps a model of every replica's log, batch by batch (offsets, leader epoch,
//! CRC), rebuilt from the reports: opened after recovery, appended (as leader or copied from
//! the leader), truncated, restarted empty, removed. It also keeps, per partition, the
//! **committed** batches: those below some leader's high watermark, the first content seen at
//! each offset defining it. The invariants (`brief/replication.md` §3):
//!
//! * `two-leaders-in-epoch`: two brokers lead one partition in one leader epoch;
//! * `leader-not-in-isr`: a broker leads with an ISR it is not in;
//! * `leader-epoch-went-back`: within one incarnation, a broker leads a partition in an epoch
//!   below one it led before;
//! * `high-watermark-went-back`: within one incarnation, a replica's high watermark moved
//!   back;
//! * `log-epoch-went-back`: a log holds a batch of a lower leader epoch after a higher one;
//! * `high-watermark-below-min-isr`: a leader advanced its high watermark with an ISR smaller
//!   than `min.insync.replicas` (KIP-966 part 1);
//! * `committed-diverged`: a replica holds, below its own high watermark, a batch other than
//!   the committed one at that offset (the committed prefixes must be identical everywhere;
//!   above its high watermark a replica may hold a deposed leader's uncommitted writes);
//! * `committed-truncated`: a replica cut a committed batch from its log (truncation by epoch
//!   never does; truncating to the high watermark can);
//! * `leader-lacks-committed`: a broker became leader without every committed batch (StrongIsr:
//!   every ISR member holds every committed record, so any elected one does); a deposed leader
//!   acting on a superseded image, in an epoch older than one the controllers committed since,
//!   is exempt (nothing it writes can commit);
//! * `follower-high-watermark-ahead`: a follower's high watermark passed everything committed;
//! * `isr-expanded-behind-committed`: a leader proposed a follower into the ISR before it held
//!   everything committed (it must reach the high watermark and the start of the leader's
//!   epoch, which is past anything an earlier leader committed);
//! * `isr-member-lacks-committed`: a member of a committed ISR (the controller's, the true
//!   ISR) holds less than everything committed: StrongIsr, checked by the scenario each time
//!   the controllers commit a metadata entry ([`ReplicaCheck::strong_isr`]);
//! * `model-mismatch`: a report contradicts the model (an append not at the log end, a
//!   recovery past what was written, a leader's log end other than the model's): the storage
//!   engine or the reports are wrong.
//!
//! A crash loses a replica's unsynced tail; its recovery report (`Opened`) cuts the model to
//! what survived. Records below a log start moved by retention or DeleteRecords are not
//! reported; the scenarios using this check delete no records.

use std::collections::BTreeMap;

use broker::observe::{BatchSummary, ReplicaEvent};
use metadata::record::TopicId;
use protocol::ids::{NodeId, TopicPartition};

/// Violations kept in full; later ones are only counted.
const VIOLATIONS_KEPT_MAX: usize = 50;

/// The model of one replica's log.
#[derive(Debug, Default)]
struct Replica {
    log_start: i64,
    /// Offsets below this are held but their content is unknown to the check (a log that
    /// existed before it was first reported); they are not compared.
    known_from: i64,
    end: i64,
    /// Base offset -> batch.
    batches: BTreeMap<i64, BatchSummary>,
    /// Batches below this were compared with the committed ones.
    checked_to: i64,
    /// The highest epoch led in this incarnation.
    led_epoch: Option<i32>,
    /// The high watermark last reported in this incarnation.
    high_watermark: i64,
}

impl Replica {
    /// Cuts everything from `end` on.
    fn cut(&mut self, end: i64) {
        let _ = self.batches.split_off(&end);
        self.end = end;
        self.checked_to = self.checked_to.min(end);
    }
}

/// One partition's history across its replicas.
#[derive(Debug, Default)]
struct History {
    name: String,
    /// The partition is compacted (in the scenarios, only `__consumer_offsets` is), so each
    /// replica's cleaner may rewrite committed batches (see [`compaction_compatible`]).
    compacted: bool,
    /// Base offset -> committed batch.
    committed: BTreeMap<i64, BatchSummary>,
    /// The highest high watermark any leader reported.
    committed_end: i64,
    /// Leader epoch -> the broker that led in it.
    leaders: BTreeMap<i32, u64>,
    /// The highest leader epoch the controllers committed for the partition.
    committed_epoch: i32,
    replicas: BTreeMap<u64, Replica>,
}

impl History {
    /// The committed batch covering `offset`, if known.
    fn committed_at(&self, offset: i64) -> Option<&BatchSummary> {
        self.committed
            .range(..=offset)
            .next_back()
            .map(|(_, batch)| batch)
            .filter(|batch| batch.last_offset.0 >= offset)
    }

    /// Compares `batch`, held by `broker` below the committed end, with the committed one at
    /// its offset; records it as committed when none is known (`define`).
    fn compare(&mut self, broker: u64, batch: &BatchSummary, define: bool, violations: &mut Vec<String>) {
        match self.committed_at(batch.base_offset.0) {
            Some(committed) if committed == batch => {}
            Some(committed) if self.compacted && compaction_compatible(committed, batch) => {}
            Some(committed) => violations.push(format!(
                "committed-diverged: {}: broker {broker} holds {} where {} is committed",
                self.name,
                describe(batch),
                describe(committed)
            )),
            None if define => {
                let _ = self.committed.insert(batch.base_offset.0, *batch);
            }
            None => {}
        }
    }
}

/// True if two batches at overlapping offsets of a compacted partition may be the same data
/// before and after a replica's cleaner rewrote it: the same leader epoch, and either the same
/// offset range (a batch that lost records keeps its range) or one is an empty filler covering
/// the other (a run of emptied batches becomes one filler). The records themselves are not
/// compared here: `single_node_durability` checks compaction's content record by record.
fn compaction_compatible(a: &BatchSummary, b: &BatchSummary) -> bool {
    if a.leader_epoch != b.leader_epoch {
        return false;
    }
    if a.base_offset == b.base_offset && a.last_offset == b.last_offset {
        return true;
    }
    let span = |batch: &BatchSummary| batch.last_offset.0 - batch.base_offset.0;
    let (outer, inner) = if span(a) >= span(b) { (a, b) } else { (b, a) };
    outer.record_count == 0 && outer.base_offset <= inner.base_offset && inner.last_offset <= outer.last_offset
}

fn describe(batch: &BatchSummary) -> String {
    format!("[{}..={}] epoch {} crc {:08x}", batch.base_offset.0, batch.last_offset.0, batch.leader_epoch.0, batch.crc)
}

/// The checker's state.
#[derive(Debug, Default)]
pub struct ReplicaCheck {
    partitions: BTreeMap<(TopicId, i32), History>,
    violations: Vec<String>,
    violations_dropped: u64,
    events: u64,
}

/// What the check knows of a partition's leader, for the liveness phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderView {
    /// Its high watermark.
    pub high_watermark: i64,
    /// Its log end.
    pub log_end_offset: i64,
}

impl ReplicaCheck {
    /// A fresh check.
    pub fn new() -> ReplicaCheck {
        ReplicaCheck::default()
    }

    /// `broker` starts a new incarnation: its replicas' per-incarnation bounds reset.
    pub fn restarted(&mut self, broker: u64) {
        for history in self.partitions.values_mut() {
            if let Some(replica) = history.replicas.get_mut(&broker) {
                replica.led_epoch = None;
                replica.high_watermark = 0;
            }
        }
    }

    /// Reports checked.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Everything broken so far.
    pub fn violations(&self) -> Vec<String> {
        let mut all = self.violations.clone();
        if self.violations_dropped > 0 {
            all.push(format!("replica check: {} more violations not listed", self.violations_dropped));
        }
        all
    }

    /// What `broker`'s replica of the partition reports, if it has one.
    pub fn view(&self, topic_id: TopicId, partition: i32, broker: u64) -> Option<LeaderView> {
        let replica = self.partitions.get(&(topic_id, partition))?.replicas.get(&broker)?;
        Some(LeaderView { high_watermark: replica.high_watermark, log_end_offset: replica.end })
    }

    /// The controllers committed `leader_epoch` for the partition: a broker that leads an
    /// older epoch after this acts on a superseded image (a deposed leader that has not heard
    /// of its successor). Its followers have moved on, so nothing it writes commits; it is not
    /// held to the new leader's duties (holding everything committed).
    pub fn committed_epoch(&mut self, topic_id: TopicId, partition: i32, leader_epoch: i32) {
        let history = self.partitions.entry((topic_id, partition)).or_default();
        history.committed_epoch = history.committed_epoch.max(leader_epoch);
    }

    /// StrongIsr against the true ISR: every member of a committed ISR of the partition holds
    /// everything below the highest high watermark any leader reached (a new member only joins
    /// once it reached the start of its leader's epoch, which is past that). Returns the
    /// violations found (also kept). Members whose replica the check has not seen are skipped.
    pub fn strong_isr(&mut self, topic_id: TopicId, partition: i32, isr: &[NodeId]) -> Vec<String> {
        let Some(history) = self.partitions.get(&(topic_id, partition)) else { return Vec::new() };
        let mut found = Vec::new();
        for member in isr {
            let Some(replica) = history.replicas.get(&(member.0 as u64)) else { continue };
            if replica.end < history.committed_end {
                found.push(format!(
                    "isr-member-lacks-committed: {}: broker {} is in the ISR {isr:?} with log end {}, below the committed {}",
                    history.name, member.0, replica.end, history.committed_end
                ));
            }
        }
        self.keep(&found);
        found
    }

    fn keep(&mut self, found: &[String]) {
        for violation in found {
            if self.violations.len() < VIOLATIONS_KEPT_MAX {
                self.violations.push(violation.clone());
            } else {
                self.violations_dropped += 1;
            }
        }
    }

    /// One report from `broker`; returns the violations it revealed (also kept).
    pub fn event(
        &mut self,
        broker: u64,
        topic_partition: &TopicPartition,
        topic_id: TopicId,
        event: &ReplicaEvent,
    ) -> Vec<String> {
        self.events += 1;
        let history = self.partitions.entry((topic_id, topic_partition.partition.0)).or_default();
        if history.name.is_empty() {
            history.name = topic_partition.to_string();
            history.compacted = topic_partition.topic == "__consumer_offsets";
        }
        let mut found = Vec::new();
        apply(history, broker, event, &mut found);
        self.keep(&found);
        found
    }
}

fn apply(history: &mut History, broker: u64, event: &ReplicaEvent, violations: &mut Vec<String>) {
    let name = history.name.clone();
    match event {
        ReplicaEvent::Opened { log_start_offset, log_end_offset } => {
            let (start, end) = (log_start_offset.0, log_end_offset.0);
            match history.replicas.get_mut(&broker) {
                Some(replica) => {
                    if end > replica.end {
                        violations.push(format!(
                            "model-mismatch: {name}: broker {broker} recovered its log up to {end}, but only {} was written",
                            replica.end
                        ));
                    }
                    if let Some((_, straddling)) = replica.batches.range(..end).next_back() {
                        if straddling.last_offset.0 >= end {
                            violations.push(format!(
                                "model-mismatch: {name}: broker {broker} recovered up to {end}, inside batch {}",
                                describe(straddling)
                            ));
                        }
                    }
                    replica.cut(end.min(replica.end));
                    replica.end = end;
                    if start > replica.log_start {
                        replica.batches = replica.batches.split_off(&start);
                        replica.log_start = start;
                    }
                }
                None => {
                    let replica =
                        Replica { log_start: start, known_from: end, end, checked_to: end, ..Replica::default() };
                    let _ = history.replicas.insert(broker, replica);
                }
            }
        }
        ReplicaEvent::Appended { as_leader, batches } => {
            // Appends may diverge from what is committed: a deposed leader that has not heard
            // of its successor goes on appending in its old epoch (its followers have moved on,
            // so none of it commits), and a follower with stale metadata copies from it; both
            // are cut later. Only a batch below the replica's own high watermark (reported
            // just before the append itself) must be the committed one.
            let own_high_watermark = history.replicas.get(&broker).map_or(0, |replica| replica.high_watermark);
            let leader_of_epoch = |epoch: i32| history.leaders.get(&epoch).copied();
            let mut to_compare = Vec::new();
            {
                let Some(replica) = history.replicas.get_mut(&broker) else {
                    violations.push(format!("model-mismatch: {name}: broker {broker} appended to a log never opened"));
                    return;
                };
                for batch in batches {
                    if batch.base_offset.0 != replica.end {
                        violations.push(format!(
                            "model-mismatch: {name}: broker {broker} appended {} at log end {}",
                            describe(batch),
                            replica.end
                        ));
                    }
                    if let Some((_, last)) = replica.batches.last_key_value() {
                        if last.leader_epoch > batch.leader_epoch {
                            violations.push(format!(
                                "log-epoch-went-back: {name}: broker {broker} appended {} after {}",
                                describe(batch),
                                describe(last)
                            ));
                        }
                    }
                    if *as_leader && leader_of_epoch(batch.leader_epoch.0) != Some(broker) {
                        violations.push(format!(
                            "two-leaders-in-epoch: {name}: broker {broker} appended as leader in epoch {}, led by {:?}",
                            batch.leader_epoch.0,
                            leader_of_epoch(batch.leader_epoch.0)
                        ));
                    }
                    replica.end = batch.last_offset.0 + 1;
                    let _ = replica.batches.insert(batch.base_offset.0, *batch);
                    if batch.base_offset.0 < own_high_watermark {
                        to_compare.push(*batch);
                    }
                }
            }
            for batch in to_compare {
                history.compare(broker, &batch, true, violations);
            }
        }
        ReplicaEvent::Truncated { log_end_offset } => {
            let end = log_end_offset.0;
            let removed: Vec<BatchSummary> = match history.replicas.get_mut(&broker) {
                Some(replica) => {
                    let removed = replica.batches.range(end..).map(|(_, batch)| *batch).collect();
                    replica.cut(end);
                    removed
                }
                None => Vec::new(),
            };
            for batch in removed {
                if batch.base_offset.0 < history.committed_end
                    && history.committed_at(batch.base_offset.0) == Some(&batch)
                {
                    violations.push(format!(
                        "committed-truncated: {name}: broker {broker} cut committed batch {} (committed up to {})",
                        describe(&batch),
                        history.committed_end
                    ));
                }
            }
        }
        ReplicaEvent::Restarted { log_start_offset } => {
            let start = log_start_offset.0;
            let replica = history.replicas.entry(broker).or_default();
            replica.batches.clear();
            replica.log_start = start;
            replica.known_from = start;
            replica.end = start;
            replica.checked_to = start;
        }
        ReplicaEvent::Leading { leader_epoch, isr, log_end_offset } => {
            let epoch = leader_epoch.0;
            match history.leaders.get(&epoch) {
                Some(other) if *other != broker => violations
                    .push(format!("two-leaders-in-epoch: {name}: brokers {other} and {broker} both led epoch {epoch}")),
                _ => {
                    let _ = history.leaders.insert(epoch, broker);
                }
            }
            if !isr.contains(&NodeId(broker as i32)) {
                violations
                    .push(format!("leader-not-in-isr: {name}: broker {broker} leads epoch {epoch} with ISR {isr:?}"));
            }
            let committed_end = history.committed_end;
            let compacted = history.compacted;
            let deposed = epoch < history.committed_epoch;
            let committed: Vec<BatchSummary> =
                if deposed { Vec::new() } else { history.committed.values().copied().collect() };
            let Some(replica) = history.replicas.get_mut(&broker) else {
                violations.push(format!("model-mismatch: {name}: broker {broker} leads a log never opened"));
                return;
            };
            if replica.led_epoch.is_some_and(|led| epoch < led) {
                violations.push(format!(
                    "leader-epoch-went-back: {name}: broker {broker} leads epoch {epoch} after epoch {:?}",
                    replica.led_epoch
                ));
            }
            replica.led_epoch = Some(epoch);
            if log_end_offset.0 != replica.end {
                violations.push(format!(
                    "model-mismatch: {name}: broker {broker} leads with log end {}, the model's is {}",
                    log_end_offset.0, replica.end
                ));
            }
            if !deposed && replica.end < committed_end {
                violations.push(format!(
                    "leader-lacks-committed: {name}: broker {broker} leads epoch {epoch} with log end {}, below the committed {committed_end}",
                    replica.end
                ));
            }
            let from = replica.log_start.max(replica.known_from);
            for batch in committed.iter().filter(|batch| batch.base_offset.0 >= from) {
                let held = replica
                    .batches
                    .range(..=batch.base_offset.0)
                    .next_back()
                    .map(|(_, held)| held)
                    .filter(|held| held.last_offset >= batch.base_offset);
                let holds = held.is_some_and(|held| held == batch || (compacted && compaction_compatible(held, batch)));
                if !holds {
                    violations.push(format!(
                        "leader-lacks-committed: {name}: broker {broker} leads epoch {epoch} without committed batch {} (it holds {:?})",
                        describe(batch),
                        held.map(describe)
                    ));
                    break;
                }
            }
        }
        ReplicaEvent::HighWatermark { high_watermark, leader } => {
            let high_watermark = high_watermark.0;
            let committed_end = history.committed_end;
            let led_by = |epoch: i32| history.leaders.get(&epoch).copied();
            let mut to_compare = Vec::new();
            {
                let Some(replica) = history.replicas.get_mut(&broker) else {
                    violations.push(format!(
                        "model-mismatch: {name}: broker {broker} moved the high watermark of a log never opened"
                    ));
                    return;
                };
                if high_watermark < replica.high_watermark {
                    violations.push(format!(
                        "high-watermark-went-back: {name}: broker {broker} from {} to {high_watermark}",
                        replica.high_watermark
                    ));
                }
                replica.high_watermark = high_watermark;
                match leader {
                    Some((leader_epoch, isr, min_isr)) => {
                        if isr < min_isr {
                            violations.push(format!(
                                "high-watermark-below-min-isr: {name}: broker {broker} advanced to {high_watermark} with ISR {isr} < min {min_isr}"
                            ));
                        }
                        if led_by(leader_epoch.0) != Some(broker) {
                            violations.push(format!(
                                "two-leaders-in-epoch: {name}: broker {broker} advanced the high watermark in epoch {}, led by {:?}",
                                leader_epoch.0,
                                led_by(leader_epoch.0)
                            ));
                        }
                    }
                    None if high_watermark > committed_end => violations.push(format!(
                        "follower-high-watermark-ahead: {name}: broker {broker} at {high_watermark}, committed only to {committed_end}"
                    )),
                    None => {}
                }
                let from = replica.checked_to.max(replica.known_from).max(replica.log_start);
                if high_watermark > from {
                    // The batch straddling `from`, if any, and every one starting below the
                    // high watermark.
                    let first = replica.batches.range(..=from).next_back().map_or(from, |(base, _)| *base);
                    to_compare.extend(
                        replica
                            .batches
                            .range(first..high_watermark)
                            .filter(|(_, batch)| batch.last_offset.0 >= from)
                            .map(|(_, batch)| *batch),
                    );
                    replica.checked_to = high_watermark.min(replica.end);
                }
            }
            let define = leader.is_some();
            for batch in to_compare {
                history.compare(broker, &batch, define, violations);
            }
            if define {
                history.committed_end = history.committed_end.max(high_watermark);
            }
        }
        ReplicaEvent::IsrExpansion { replica, fetch_offset } => {
            if fetch_offset.0 < history.committed_end {
                violations.push(format!(
                    "isr-expanded-behind-committed: {name}: broker {broker} proposed {} into the ISR at offset {}, below the committed {}",
                    replica.0, fetch_offset.0, history.committed_end
                ));
            }
        }
        ReplicaEvent::Removed => {
            let _ = history.replicas.remove(&broker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ids::{LeaderEpoch, Offset};

    fn batch(base: i64, last: i64, epoch: i32, crc: u32) -> BatchSummary {
        BatchSummary {
            base_offset: Offset(base),
            last_offset: Offset(last),
            leader_epoch: LeaderEpoch(epoch),
            crc,
            record_count: (last - base + 1) as i32,
        }
    }

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    const ID: TopicId = TopicId([7; 16]);

    fn open(check: &mut ReplicaCheck, broker: u64) {
        let _ = check.event(
            broker,
            &tp(),
            ID,
            &ReplicaEvent::Opened { log_start_offset: Offset(0), log_end_offset: Offset(0) },
        );
    }

    fn lead(check: &mut ReplicaCheck, broker: u64, epoch: i32, isr: &[i32], end: i64) {
        let isr = isr.iter().map(|id| NodeId(*id)).collect();
        let _ = check.event(
            broker,
            &tp(),
            ID,
            &ReplicaEvent::Leading { leader_epoch: LeaderEpoch(epoch), isr, log_end_offset: Offset(end) },
        );
    }

    fn append(check: &mut ReplicaCheck, broker: u64, as_leader: bool, batches: Vec<BatchSummary>) {
        let _ = check.event(broker, &tp(), ID, &ReplicaEvent::Appended { as_leader, batches });
    }

    fn high_watermark(check: &mut ReplicaCheck, broker: u64, offset: i64, leader: Option<(i32, usize, usize)>) {
        let leader = leader.map(|(epoch, isr, min)| (LeaderEpoch(epoch), isr, min));
        let _ = check.event(broker, &tp(), ID, &ReplicaEvent::HighWatermark { high_watermark: Offset(offset), leader });
    }

    #[test]
    fn compaction_may_empty_or_shrink_batches_but_not_move_them() {
        let original = batch(10, 12, 3, 0xa);
        let shrunk = BatchSummary { crc: 0xb, record_count: 1, ..original };
        let filler = BatchSummary { last_offset: Offset(20), crc: 0xc, record_count: 0, ..original };
        assert!(compaction_compatible(&original, &shrunk));
        assert!(compaction_compatible(&original, &filler) && compaction_compatible(&filler, &original));
        assert!(!compaction_compatible(&original, &BatchSummary { leader_epoch: LeaderEpoch(4), ..filler }));
        assert!(!compaction_compatible(&original, &BatchSummary { base_offset: Offset(11), ..shrunk }));
        assert!(
            !compaction_compatible(&original, &BatchSummary { record_count: 1, ..filler }),
            "only empty fillers span"
        );
    }

    #[test]
    fn a_clean_failover_passes() {
        let mut check = ReplicaCheck::new();
        open(&mut check, 1);
        open(&mut check, 2);
        lead(&mut check, 1, 0, &[1, 2], 0);
        append(&mut check, 1, true, vec![batch(0, 4, 0, 0xa)]);
        append(&mut check, 2, false, vec![batch(0, 4, 0, 0xa)]);
        high_watermark(&mut check, 1, 5, Some((0, 2, 2)));
        high_watermark(&mut check, 2, 5, None);
        lead(&mut check, 2, 1, &[2], 5);
        append(&mut check, 2, true, vec![batch(5, 5, 1, 0xb)]);
        high_watermark(&mut check, 2, 6, Some((1, 1, 1)));
        assert_eq!(check.violations(), Vec::<String>::new());
    }

    #[test]
    fn an_elected_replica_missing_committed_data_is_caught() {
        let mut check = ReplicaCheck::new();
        open(&mut check, 1);
        open(&mut check, 2);
        lead(&mut check, 1, 0, &[1, 2], 0);
        append(&mut check, 1, true, vec![batch(0, 4, 0, 0xa)]);
        high_watermark(&mut check, 1, 5, Some((0, 1, 1)));
        lead(&mut check, 2, 1, &[2], 0);
        let violations = check.violations();
        assert!(violations.iter().any(|v| v.starts_with("leader-lacks-committed")), "{violations:?}");
    }

    #[test]
    fn a_truncated_committed_batch_and_a_diverged_one_are_caught() {
        let mut check = ReplicaCheck::new();
        open(&mut check, 1);
        open(&mut check, 2);
        lead(&mut check, 1, 0, &[1, 2], 0);
        append(&mut check, 1, true, vec![batch(0, 4, 0, 0xa)]);
        append(&mut check, 2, false, vec![batch(0, 4, 0, 0xa)]);
        high_watermark(&mut check, 1, 5, Some((0, 2, 1)));
        let _ = check.event(2, &tp(), ID, &ReplicaEvent::Truncated { log_end_offset: Offset(0) });
        // A deposed leader's divergent write above the follower's high watermark is allowed
        // until the follower's high watermark covers it.
        append(&mut check, 2, false, vec![batch(0, 4, 0, 0xc)]);
        assert!(!check.violations().iter().any(|v| v.starts_with("committed-diverged")));
        high_watermark(&mut check, 2, 5, None);
        let violations = check.violations();
        assert!(violations.iter().any(|v| v.starts_with("committed-truncated")), "{violations:?}");
        assert!(violations.iter().any(|v| v.starts_with("committed-diverged")), "{violations:?}");
    }

    #[test]
    fn epochs_leaders_and_min_isr_are_checked() {
        let mut check = ReplicaCheck::new();
        open(&mut check, 1);
        open(&mut check, 2);
        lead(&mut check, 1, 3, &[1], 0);
        lead(&mut check, 2, 3, &[1], 0);
        lead(&mut check, 1, 2, &[1], 0);
        high_watermark(&mut check, 1, 0, Some((3, 1, 2)));
        let violations = check.violations();
        for kind in
            ["two-leaders-in-epoch", "leader-not-in-isr", "leader-epoch-went-back", "high-watermark-below-min-isr"]
        {
            assert!(violations.iter().any(|v| v.starts_with(kind)), "{kind}: {violations:?}");
        }
    }

    #[test]
    fn a_crash_cuts_the_model_and_a_recovery_past_the_writes_is_caught() {
        let mut check = ReplicaCheck::new();
        open(&mut check, 1);
        lead(&mut check, 1, 0, &[1], 0);
        append(&mut check, 1, true, vec![batch(0, 1, 0, 1), batch(2, 3, 0, 2)]);
        check.restarted(1);
        let _ =
            check.event(1, &tp(), ID, &ReplicaEvent::Opened { log_start_offset: Offset(0), log_end_offset: Offset(2) });
        append(&mut check, 1, true, vec![batch(2, 2, 0, 3)]);
        assert_eq!(check.violations(), Vec::<String>::new());
        check.restarted(1);
        let _ =
            check.event(1, &tp(), ID, &ReplicaEvent::Opened { log_start_offset: Offset(0), log_end_offset: Offset(9) });
        assert!(check.violations().iter().any(|v| v.starts_with("model-mismatch")));
    }
}
