use proptest::prelude::*;

use super::*;

const LAG_MS: i64 = 10_000;

fn ids(ids: &[i32]) -> Vec<NodeId> {
    ids.iter().map(|id| NodeId(*id)).collect()
}

fn state(isr: &[i32], partition_epoch: i32) -> PartitionState {
    PartitionState {
        replicas: ids(&[1, 2, 3]),
        isr: ids(isr),
        leader: NodeId(1),
        leader_epoch: LeaderEpoch(4),
        partition_epoch: PartitionEpoch(partition_epoch),
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        elr: Vec::new(),
    }
}

fn config(min_insync_replicas: usize, durability: Durability) -> LeaderConfig {
    LeaderConfig {
        min_insync_replicas,
        replica_lag_time_max_ms: LAG_MS,
        durability,
        #[cfg(feature = "planted-bugs")]
        planted_expand_before_epoch_start: false,
        #[cfg(feature = "planted-bugs")]
        planted_ack_before_replication: false,
    }
}

/// Leader 1 of replicas 1-3, its log at `end` (all durable), high watermark 0.
fn leader(isr: &[i32], min_isr: usize, end: i64) -> Leader {
    Leader::new(NodeId(1), state(isr, 1), config(min_isr, Durability::Fsync), Offset(end), Offset(end), Offset(0), 0)
        .expect("leads")
}

#[test]
fn the_high_watermark_is_the_least_durable_end_over_the_isr_in_this_epoch() {
    let mut leader = leader(&[1, 2, 3], 1, 10);
    assert_eq!(leader.high_watermark(), Offset(0), "no follower fetched in this epoch yet");
    let fetched = leader.on_fetch(NodeId(2), Offset(10), 1, true).expect("fetch");
    assert_eq!(fetched.high_watermark, None, "follower 3 has not fetched in this epoch");
    assert_eq!(leader.on_fetch(NodeId(3), Offset(6), 2, true).expect("fetch").high_watermark, Some(Offset(6)));
    // Appended is not replicated under Fsync: the leader's own durable end counts.
    assert_eq!(leader.on_append(Offset(20)), None);
    assert_eq!(leader.on_fetch(NodeId(3), Offset(20), 3, true).expect("fetch").high_watermark, Some(Offset(10)));
    assert_eq!(leader.on_fetch(NodeId(2), Offset(20), 3, true).expect("fetch").high_watermark, None);
    assert_eq!(leader.on_flush(Offset(15)), Some(Offset(15)));
    assert_eq!(leader.on_flush(Offset(20)), Some(Offset(20)));
    // It never moves back, even if a follower reports less (it truncated, or restarted).
    assert_eq!(leader.on_fetch(NodeId(2), Offset(5), 4, true).expect("fetch").high_watermark, None);
    assert_eq!(leader.high_watermark(), Offset(20));

    // Reports of concurrent appends and flushes may come in any order.
    let _ = leader.on_append(Offset(25));
    let _ = leader.on_append(Offset(22));
    assert_eq!(leader.on_flush(Offset(30)), None, "follower ends hold it at 20");
    let _ = leader.on_fetch(NodeId(2), Offset(30), 5, true).expect("a flush moved the log end to 30");

    // Under Append, the leader's log end counts.
    let mut appended =
        Leader::new(NodeId(1), state(&[1, 2], 1), config(1, Durability::Append), Offset(10), Offset(0), Offset(0), 0)
            .expect("leads");
    assert_eq!(appended.on_fetch(NodeId(2), Offset(10), 1, true).expect("fetch").high_watermark, Some(Offset(10)));
}

#[test]
fn below_min_isr_the_high_watermark_stops_and_acks_all_is_refused() {
    let mut leader = leader(&[1, 2, 3], 2, 10);
    let _ = leader.on_fetch(NodeId(2), Offset(10), 1, true).expect("fetch");
    let _ = leader.on_fetch(NodeId(3), Offset(10), 1, true).expect("fetch");
    assert_eq!(leader.high_watermark(), Offset(10));
    assert_eq!(leader.produce_outcome(Offset(10)), Some(Ok(())));
    assert_eq!(leader.produce_outcome(Offset(11)), None, "waits for the high watermark");
    // The controller takes both followers out (fenced brokers): below min ISR.
    assert_eq!(leader.on_partition_state(state(&[1], 2), 5), Ok(None));
    assert_eq!(leader.check_append(true), Err(ReplicationError::NotEnoughReplicas { isr: 1, min_isr: 2 }));
    assert_eq!(leader.check_append(false), Ok(()), "acks=1 and acks=0 still append");
    // A write that had reached the high watermark answers "after append".
    assert_eq!(
        leader.produce_outcome(Offset(10)),
        Some(Err(ReplicationError::NotEnoughReplicasAfterAppend { isr: 1, min_isr: 2 }))
    );
    // Appends (acks=1) do not move the high watermark while under min ISR.
    assert_eq!(leader.on_append(Offset(30)), None);
    assert_eq!(leader.on_flush(Offset(30)), None);
    assert_eq!(leader.high_watermark(), Offset(10));
    // min.insync.replicas above the replication factor means all replicas.
    let capped =
        Leader::new(NodeId(1), state(&[1, 2, 3], 1), config(9, Durability::Fsync), Offset(0), Offset(0), Offset(0), 0)
            .expect("leads");
    assert_eq!(capped.effective_min_isr(), 3);
}

#[test]
fn a_lagging_follower_is_proposed_out_once_and_a_caught_up_one_stays() {
    let mut leader = leader(&[1, 2, 3], 1, 10);
    let _ = leader.on_fetch(NodeId(2), Offset(10), 1_000, true).expect("fetch");
    let _ = leader.on_fetch(NodeId(3), Offset(4), 1_000, true).expect("fetch");
    assert_eq!(leader.on_tick(LAG_MS), None, "within the lag time");
    let alter = leader.on_tick(LAG_MS + 1).expect("follower 3 lagged too long");
    assert_eq!(
        alter,
        AlterIsr { new_isr: ids(&[1, 2]), leader_epoch: LeaderEpoch(4), partition_epoch: PartitionEpoch(1) }
    );
    assert_eq!(leader.on_tick(LAG_MS + 2), None, "one AlterPartition at a time");
    // While the shrink is in flight the maximal ISR still has follower 3.
    assert_eq!(leader.maximal_isr(), ids(&[1, 2, 3]));
    leader.on_alter_failed(&alter);
    assert!(leader.on_tick(LAG_MS + 3).is_some(), "proposed again after a failure");
    // The controller applies it: the high watermark no longer waits for follower 3.
    assert_eq!(leader.on_partition_state(state(&[1, 2], 2), LAG_MS + 4), Ok(Some(Offset(10))));
    // A stale update is ignored.
    assert_eq!(leader.on_partition_state(state(&[1, 2, 3], 2), LAG_MS + 5), Ok(None));
    assert_eq!(leader.state().isr, ids(&[1, 2]));
}

#[test]
fn a_late_failure_of_an_older_proposal_keeps_the_newer_one_in_flight() {
    // Leader 1 with ISR {1, 2}; follower 3 rejoins in partition epoch 1.
    let mut leader = leader(&[1, 2], 1, 10);
    let _ = leader.on_fetch(NodeId(2), Offset(10), 1, true).expect("fetch");
    let older = leader.on_fetch(NodeId(3), Offset(10), 2, true).expect("fetch").alter.expect("3 joins");
    // The controller drops follower 2 meanwhile (partition epoch 2), which ends the proposal
    // in flight; 3 fetches again and is proposed anew, in epoch 2.
    let _ = leader.on_partition_state(state(&[1], 2), 3).expect("still leads");
    let newer = leader.on_fetch(NodeId(3), Offset(10), 4, true).expect("fetch").alter.expect("3 joins again");
    assert_eq!(newer.partition_epoch, PartitionEpoch(2));
    // The refusal of the older one arrives: the newer stays in flight, and the high watermark
    // still waits for 3.
    leader.on_alter_failed(&older);
    assert_eq!(leader.pending_isr(), Some(newer.new_isr.as_slice()));
    assert_eq!(leader.on_append(Offset(20)), None);
    assert_eq!(leader.on_flush(Offset(20)), None, "3 is at 10");
    leader.on_alter_failed(&newer);
    assert_eq!(leader.pending_isr(), None);
}

#[test]
fn a_follower_rejoins_only_at_the_high_watermark_and_the_epoch_start() {
    // Leader at 10 with high watermark 8 (from before): this epoch starts at 10.
    let mut leader =
        Leader::new(NodeId(1), state(&[1, 2], 3), config(1, Durability::Fsync), Offset(10), Offset(10), Offset(8), 0)
            .expect("leads");
    assert_eq!(leader.epoch_start_offset(), Offset(10));
    let outcome = leader.on_fetch(NodeId(3), Offset(9), 1, true).expect("fetch");
    assert_eq!(outcome.alter, None, "below the epoch start");
    let outcome = leader.on_fetch(NodeId(3), Offset(10), 2, false).expect("fetch");
    assert_eq!(outcome.alter, None, "its broker may not join (fenced or shutting down)");
    let outcome = leader.on_fetch(NodeId(3), Offset(10), 3, true).expect("fetch");
    assert_eq!(outcome.alter.map(|alter| alter.new_isr), Some(ids(&[1, 2, 3])));
    // The expansion in flight already counts for the high watermark (maximal ISR).
    assert_eq!(leader.on_fetch(NodeId(2), Offset(10), 4, true).expect("fetch").high_watermark, Some(Offset(10)));
    assert_eq!(leader.maximal_isr(), ids(&[1, 2, 3]));
}

#[test]
fn bad_fetches_and_lost_leadership_are_refused() {
    let mut leader = leader(&[1, 2, 3], 1, 10);
    assert_eq!(
        leader.on_fetch(NodeId(2), Offset(11), 1, true),
        Err(ReplicationError::FetchOffsetOutOfRange { fetch_offset: Offset(11), log_end_offset: Offset(10) })
    );
    assert_eq!(
        leader.on_fetch(NodeId(9), Offset(1), 1, true),
        Err(ReplicationError::NotAReplica { replica: NodeId(9) })
    );
    let mut moved = state(&[2, 3], 2);
    moved.leader = NodeId(2);
    moved.leader_epoch = LeaderEpoch(5);
    assert!(matches!(leader.on_partition_state(moved, 2), Err(ReplicationError::NotLeader { .. })));
    let error =
        Leader::new(NodeId(2), state(&[1, 2], 1), config(1, Durability::Fsync), Offset(0), Offset(0), Offset(0), 0)
            .expect_err("2 does not lead");
    assert_eq!(error.error_code(), crate::NOT_LEADER_OR_FOLLOWER);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// The leader appends this many records.
    Append(i64),
    /// The leader fsyncs.
    Flush,
    /// A follower copies up to this many records from the leader, fsyncs, and fetches.
    Replicate(i32, i64),
    /// Time passes, and the leader may propose a shrink (which the controller applies).
    Tick(i64),
    /// The controller takes a follower out of the ISR (its broker was fenced).
    Fence(i32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..5).prop_map(Step::Append),
        Just(Step::Flush),
        (2i32..=3, 0i64..6).prop_map(|(follower, records)| Step::Replicate(follower, records)),
        (0i64..(2 * LAG_MS)).prop_map(Step::Tick),
        (2i32..=3).prop_map(Step::Fence),
    ]
}

/// The controller applies an AlterPartition at once (the model's metadata image).
fn apply_alter(leader: &mut Leader, alter: Option<AlterIsr>, partition_epoch: &mut i32, now_ms: i64) {
    if let Some(alter) = alter {
        *partition_epoch += 1;
        let mut next = leader.state().clone();
        next.isr = alter.new_isr;
        next.partition_epoch = PartitionEpoch(*partition_epoch);
        let _ = leader.on_partition_state(next, now_ms).expect("still leads");
    }
}

proptest! {
    /// Against a model of three replicas' durable logs: the high watermark never moves back,
    /// never passes the durable end of any committed-ISR member (every ISR member holds the
    /// committed prefix on stable storage: StrongIsr), never moves while the ISR is below
    /// min ISR, and an acks=all produce completes only at or below it.
    #[test]
    fn the_high_watermark_is_always_durable_on_the_whole_isr(
        min_isr in 1usize..=3,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut leader = leader(&[1, 2, 3], min_isr, 0);
        let mut durable: BTreeMap<i32, i64> = BTreeMap::from([(1, 0), (2, 0), (3, 0)]);
        let mut log_end = 0i64;
        let mut now = 0i64;
        let mut partition_epoch = 1;
        for step in steps {
            let before = leader.high_watermark();
            match step {
                Step::Append(records) => {
                    log_end += records;
                    let _ = leader.on_append(Offset(log_end));
                }
                Step::Flush => {
                    let _ = durable.insert(1, log_end);
                    let _ = leader.on_flush(Offset(log_end));
                }
                Step::Replicate(follower, records) => {
                    let end = (durable[&follower] + records).min(log_end);
                    let _ = durable.insert(follower, end);
                    now += 1;
                    let outcome = leader.on_fetch(NodeId(follower), Offset(end), now, true).expect("valid fetch");
                    apply_alter(&mut leader, outcome.alter, &mut partition_epoch, now);
                }
                Step::Tick(elapsed) => {
                    now += elapsed;
                    let alter = leader.on_tick(now);
                    apply_alter(&mut leader, alter, &mut partition_epoch, now);
                }
                Step::Fence(follower) => {
                    let mut next = leader.state().clone();
                    if next.isr.contains(&NodeId(follower)) {
                        next.isr.retain(|member| *member != NodeId(follower));
                        partition_epoch += 1;
                        next.partition_epoch = PartitionEpoch(partition_epoch);
                        let _ = leader.on_partition_state(next, now).expect("still leads");
                    }
                }
            }
            let high_watermark = leader.high_watermark();
            prop_assert!(high_watermark >= before, "moved back: {before} -> {high_watermark}");
            for member in &leader.state().isr {
                prop_assert!(
                    high_watermark.0 <= durable[&member.0],
                    "high watermark {high_watermark} above ISR member {member}'s durable end {}",
                    durable[&member.0]
                );
            }
            if high_watermark > before {
                prop_assert!(leader.state().isr.len() >= leader.effective_min_isr(), "advanced under min ISR");
            }
            if let Some(Ok(())) = leader.produce_outcome(Offset(log_end)) {
                prop_assert!(log_end <= high_watermark.0);
            }
        }
    }
}
