//! Consumer-group members in the cluster scenarios: processes that read the workload's topic
//! through one consumer group (`client::group::GroupConsumer`, subscribe mode) while brokers
//! crash, the coordinator fails over and members join, leave, crash and stall.
//!
//! Each member polls, records what it read as the workload's `Poll` operations (so the
//! history checker sees them: nothing read may be wrong, duplicated at two offsets or out of
//! order), records a `Reposition` whenever a rebalance changes its partitions (its positions
//! then legitimately jump), and commits the next offset of every partition it read. The group
//! checks are `crate::group_check`'s: one owner per partition per generation, and committed
//! offsets never moving back.
//!
//! A member's life: polls mostly; now and then it leaves the group cleanly (LeaveGroup) or
//! crashes (drops its consumer without leaving, so its session expires) and comes back as a
//! new incarnation with a new client, or stalls past its rebalance timeout (the coordinator
//! drops it; it rejoins at its next poll).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::consumer::{ConsumerConfig, OffsetReset};
use client::group::assignor::Assignor;
use client::group::{GroupConfig, GroupConsumer, RebalanceEvent};
use client::ClientConfig;
use madsim::rand::{thread_rng, Rng};

use super::workload::{Recorder, WorkloadConfig, TOPIC};
use crate::checker::{Op, Operation, Outcome};
use crate::group_check::{Commit, GroupChecks};

/// The group the members share.
pub const GROUP: &str = "jepsen-group";
/// First process id of group members in the history (the workload's processes count from 0).
pub const MEMBER_ID_BASE: u64 = 100;
/// Bounds of a stall, as a multiple of the rebalance timeout.
const STALL_FACTOR_MAX: u64 = 2;
/// How much longer than a rebalance timeout one poll may take before the member gives up on it.
const POLL_SLACK_MS: u64 = 10_000;

/// How the seed's group behaves.
#[derive(Debug, Clone)]
pub struct GroupParams {
    /// Members (0: no group this seed).
    pub members: u64,
    /// The assignors every member offers, by preference.
    pub assignors: Vec<Assignor>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms` (the rebalance timeout).
    pub rebalance_timeout_ms: i32,
    /// Percent of a member's steps that leave, crash or stall.
    pub churn_percent: u32,
}

impl GroupParams {
    /// Draws the group from the seed.
    pub fn draw() -> GroupParams {
        let mut rng = thread_rng();
        let all = [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky, Assignor::CooperativeSticky];
        let first = all[rng.gen_range(0..all.len())];
        let mut assignors = vec![first];
        if rng.gen_bool(0.3) {
            let second = all[rng.gen_range(0..all.len())];
            if second != first {
                assignors.push(second);
            }
        }
        GroupParams {
            members: if rng.gen_bool(0.3) { 0 } else { rng.gen_range(2..=3) },
            assignors,
            session_timeout_ms: rng.gen_range(6_000..=10_000),
            heartbeat_interval_ms: rng.gen_range(300..=1_000),
            rebalance_timeout_ms: rng.gen_range(5_000..=15_000),
            churn_percent: rng.gen_range(0..=4),
        }
    }
}

/// One incarnation of a member: a client of its own and a consumer in the group.
async fn incarnation(
    id: u64,
    recorder: &Arc<Recorder>,
    workload: &WorkloadConfig,
    params: &GroupParams,
    checks: &Arc<GroupChecks>,
    stop: &AtomicBool,
) -> Option<GroupConsumer> {
    let client_config = ClientConfig {
        bootstrap_servers: workload.bootstrap_servers(),
        client_id: format!("g{id}"),
        request_timeout_ms: workload
            .request_timeout_ms
            .max(u64::from(params.rebalance_timeout_ms.unsigned_abs()) + 5_000),
        retry_backoff_ms: 100,
        ..ClientConfig::default()
    };
    let client = super::workload::connect_until(&client_config, &recorder, &format!("p{id}"), stop).await?;
    let config = GroupConfig {
        session_timeout_ms: params.session_timeout_ms,
        heartbeat_interval_ms: params.heartbeat_interval_ms,
        max_poll_interval_ms: params.rebalance_timeout_ms,
        assignors: params.assignors.clone(),
        enable_auto_commit: false,
        ..GroupConfig::new(GROUP)
    };
    let consumer_config = ConsumerConfig {
        fetch_max_wait_ms: 100,
        max_partition_fetch_bytes: workload.max_partition_fetch_bytes,
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client, consumer_config, config).expect("valid group config");
    consumer.subscribe(vec![TOPIC.to_owned()]);
    let (listener_recorder, listener_checks) = (Arc::clone(recorder), Arc::clone(checks));
    consumer.set_rebalance_listener(move |event| {
        let now = listener_recorder.trace.now_ms();
        listener_recorder.trace.event(format!("p{id} {event:?}"));
        if let RebalanceEvent::Assigned(_) = event {
            listener_checks.rebalanced();
        }
        // The positions may jump (back to a committed offset, or to a partition new to this
        // member): the checker must not expect the next poll to continue the last one.
        listener_recorder.record(Op {
            process: id,
            invoke_ms: now,
            complete_ms: now,
            operation: Operation::Reposition,
            outcome: Outcome::Ok,
        });
    });
    recorder.trace.event(format!("p{id} joins group {GROUP}"));
    Some(consumer)
}

/// Polls once, records the reads, checks ownership and commits what was read.
async fn poll_and_commit(id: u64, consumer: &mut GroupConsumer, recorder: &Arc<Recorder>, checks: &Arc<GroupChecks>) {
    let timeout = Duration::from_millis(thread_rng().gen_range(50..=300));
    let invoke_ms = recorder.trace.now_ms();
    let result = consumer.poll(timeout).await;
    let complete_ms = recorder.trace.now_ms();
    let (member_id, generation) = consumer.generation();
    checks.owned(generation, &member_id, &consumer.assignment());
    let records = match result {
        Ok(records) => records,
        Err(error) => {
            recorder.trace.event(format!("p{id} poll error: {error}"));
            recorder.record(Op {
                process: id,
                invoke_ms,
                complete_ms,
                operation: Operation::Poll { reads: BTreeMap::new() },
                outcome: Outcome::Info,
            });
            return;
        }
    };
    let mut reads: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
    for record in &records {
        let key = u32::try_from(record.partition).unwrap_or(u32::MAX);
        match record
            .value
            .as_deref()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.parse().ok())
        {
            Some(value) => reads.entry(key).or_default().push((record.offset.0, value)),
            None => recorder
                .fail(format!("p{id} read a record that is not a workload value at k{key} @{}", record.offset.0)),
        }
    }
    if !reads.is_empty() {
        let text: Vec<String> = reads
            .iter()
            .map(|(key, records)| {
                let pairs: Vec<String> = records.iter().map(|(offset, value)| format!("{offset}:{value}")).collect();
                format!("k{key}[{}]", pairs.join(" "))
            })
            .collect();
        recorder.trace.event(format!("p{id} group poll g{generation} {}", text.join(" ")));
    }
    recorder.record(Op {
        process: id,
        invoke_ms,
        complete_ms,
        operation: Operation::Poll { reads: reads.clone() },
        outcome: Outcome::Ok,
    });
    let next = crate::group_check::next_offsets(TOPIC, &reads);
    if next.is_empty() {
        return;
    }
    let invoke_ms = recorder.trace.now_ms();
    match consumer.commit_offsets(&next).await {
        Ok(()) => {
            let complete_ms = recorder.trace.now_ms();
            for (partition, offset) in &next {
                checks.committed(Commit {
                    key: u32::try_from(partition.partition.0).unwrap_or(u32::MAX),
                    offset: offset.0,
                    invoke_ms,
                    complete_ms,
                    process: id,
                });
            }
        }
        Err(error) => recorder.trace.event(format!("p{id} commit refused: {error}")),
    }
}

/// A member's life until `stop` (see the module docs).
pub async fn run_member(
    id: u64,
    recorder: Arc<Recorder>,
    workload: WorkloadConfig,
    params: GroupParams,
    checks: Arc<GroupChecks>,
    stop: Arc<AtomicBool>,
) {
    let Some(mut consumer) = incarnation(id, &recorder, &workload, &params, &checks, &stop).await else { return };
    while !stop.load(Ordering::Relaxed) {
        let roll = thread_rng().gen_range(0..100u32);
        if roll < params.churn_percent {
            match thread_rng().gen_range(0..3u32) {
                0 => {
                    recorder.trace.event(format!("p{id} leaves the group"));
                    if let Err(error) = consumer.close().await {
                        recorder.trace.event(format!("p{id} leave failed: {error}"));
                    }
                    madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(0..=2_000))).await;
                    let Some(next) = incarnation(id, &recorder, &workload, &params, &checks, &stop).await else {
                        return;
                    };
                    consumer = next;
                }
                1 => {
                    recorder.trace.event(format!("p{id} crashes (no LeaveGroup)"));
                    drop(consumer);
                    madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(0..=3_000))).await;
                    let Some(next) = incarnation(id, &recorder, &workload, &params, &checks, &stop).await else {
                        return;
                    };
                    consumer = next;
                }
                _ => {
                    let limit = u64::from(params.rebalance_timeout_ms.unsigned_abs()) * STALL_FACTOR_MAX;
                    let stall = thread_rng().gen_range(0..=limit);
                    recorder.trace.event(format!("p{id} stalls for {stall} ms"));
                    let until = recorder.trace.now_ms() + stall;
                    while recorder.trace.now_ms() < until && !stop.load(Ordering::Relaxed) {
                        madsim::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            continue;
        }
        // A poll that rebalances may wait a whole join phase, or several if the coordinator
        // keeps moving; bounded so the member notices the stop.
        let bound = Duration::from_millis(u64::from(params.rebalance_timeout_ms.unsigned_abs()) + POLL_SLACK_MS);
        if madsim::time::timeout(bound, poll_and_commit(id, &mut consumer, &recorder, &checks)).await.is_err() {
            recorder.trace.event(format!("p{id} poll did not finish within {bound:?}"));
        }
    }
    if let Err(error) = consumer.close().await {
        recorder.trace.event(format!("p{id} final leave failed: {error}"));
    }
}
