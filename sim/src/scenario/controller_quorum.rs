//! `controller_quorum`: three or five controllers (the real `controller::Quorum` with its log
//! in raft-engine on a [`CrashFs`], and the real control service) and two to four broker-only
//! nodes (the real `server::run_node`, following the quorum's log as observers) under crashes,
//! pauses, partitions and clock faults. The leader proposes metadata records, and a client
//! creates topics through the brokers (forwarded to the active controller).
//!
//! The `replication` scenario is this one in the [`Shape::Replication`] shape: 3 controllers,
//! 3-5 brokers, the workload's topic at replication factor 2-5, and a fault mix aimed at
//! brokers.
//!
//! # Shape (drawn per seed)
//!
//! Voters 3 or 5 (3 for `replication`), brokers 2-4 (3-5), the workload topic's replication
//! factor 2-3 (2-5) and `min.insync.replicas` 1-RF, election timeout 5-15 ticks, snapshots
//! every 3-40 entries (so restarts and lagging followers load snapshots),
//! `broker.session.timeout.ms` 1.5-6 s with a heartbeat 3-6 times as often,
//! `replica.lag.time.max.ms` 1-10 s, leader rebalancing every 1-15 s (or off), proposal and
//! topic-creation pace, the nemesis's pace and mix, and whether one broker stays down at the
//! end.
//!
//! # Faults (safety phase)
//!
//! * **power-fail crash** of one controller (the leader in half the cases): freeze its file
//!   system, kill it, drop unsynced bytes and tear tails, restart it; or of **every controller**;
//! * **pause**, **isolation**, a **split** of the voters, or **one direction** of one link;
//! * **broker crash** (its `SimDisk` loses what was not synced), **broker restart** with a
//!   controlled shutdown, **broker pause**, **broker isolation** from every controller (its
//!   session expires and it is fenced);
//! * **last replica standing** (KIP-966): every replica of a workload partition but one goes
//!   down long enough to leave the ISR, then the survivor crashes too, and comes back last;
//! * **broker split**: one broker cut off from the other brokers (not from the controllers);
//! * **reassignment** of a workload partition to other brokers, or its cancellation;
//! * **clocks**: controllers read no wall clock (sessions and elections run on monotonic
//!   timers), so their clock fault is the rate: every controller incarnation ticks at its own
//!   period, 75-125% of the nominal 100 ms, as on hosts whose clocks run fast or slow; brokers'
//!   wall clocks are skewed and stepped (up to two minutes either way) by the nemesis.
//!
//! # Checks
//!
//! * [`QuorumCheck`] as events arrive: one leader per term; entries applied in order and
//!   identical everywhere; snapshots agree with the entries they cover; acknowledged proposals
//!   are the entries applied at their index.
//! * [`ImageCheck`] as events arrive: every image a broker publishes is the fold of a prefix
//!   of the committed log, and never moves back within an incarnation; every committed image
//!   keeps the partition invariants (a leader is an unfenced ISR member, the ISR is a nonempty
//!   subset of the replicas, a partition has no leader only while no ISR member is unfenced).
//! * [`ReplicaCheck`] as brokers report what their replicas do: one leader per (partition,
//!   epoch), leaders in their ISR, high watermarks and epochs monotonic, identical committed
//!   prefixes, no committed batch cut, every new leader and every member of a committed ISR
//!   holding everything committed (StrongIsr), no high-watermark advance below
//!   `min.insync.replicas` (see [`crate::replica_check`]).
//! * Liveness, after the faults stop: a proposal commits within [`CONVERGENCE_MS`] and every
//!   controller applies up to it and holds the same image; then within [`SETTLE_MS`] every
//!   running broker is unfenced, a broker left down is fenced, and every broker applied
//!   everything committed into the controllers' image. Every topic whose creation was
//!   acknowledged exists with its partitions. The workload's probe and final reads follow,
//!   then within [`ISR_REGROW_MS`] every workload partition has no reassignment in progress,
//!   its whole replica set in the ISR and its leader's high watermark at its log end.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::observe::{ReplicaEvent, ReplicaObserver};
use broker::ImageObserver;
use client::admin::{Admin, NewTopic};
use client::producer::Acks;
use client::{Client, ClientConfig};
use controller::service::{AppliedLog, ControllerService};
use controller::{AppliedEntry, ControllerError, Quorum, QuorumConfig, Role};
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use metadata::image::MetadataImage;
use metadata::record::{encode_batch, ConfigResource, MetadataRecord, TopicId};
use protocol::ids::{NodeId, TopicPartition};
use server::config::{NodeConfig, Settings};
use storage::raft_log::RaftLogStore;

use super::group_member;
use super::workload::{self, Recorder, WorkloadConfig};
use super::{RunOptions, ScenarioOutcome};
use crate::checker;
use crate::clock::SimClock;
use crate::disk::{DiskFaults, SimDisk};
use crate::image_check::{image_hash, ImageCheck};
use crate::quorum_check::QuorumCheck;
use crate::raft_fs::{CrashFs, TornTail};
use crate::replica_check::ReplicaCheck;
use crate::trace::{fnv1a, Trace};

/// The controller port.
const PORT: u16 = 9093;
/// The brokers' Kafka port.
const KAFKA_PORT: u16 = 9092;
/// Broker ids are this plus 1, 2, ... (node ids are unique across roles, as in KRaft).
const BROKER_ID_BASE: u64 = 10;
/// After the faults stop, a proposal must commit within this.
pub const CONVERGENCE_MS: u64 = 30_000;
/// After the controllers converged, brokers' fencing and images must settle within this.
pub const SETTLE_MS: u64 = 30_000;
/// The controllers' nominal tick.
const TICK_MS_NOMINAL: u64 = 100;
/// How far a controller's tick may be off its nominal period, in percent.
const TICK_DRIFT_PERCENT_MAX: u64 = 25;
/// Largest step of a broker's wall clock.
const CLOCK_JUMP_MS_MAX: i64 = 120_000;
/// Longest a topic creation may take before the client gives up on it.
const CREATE_TIMEOUT_MS: u64 = 10_000;
/// Attempts at one topic name whose outcome stays unknown before the client moves on.
const CREATE_ATTEMPTS_MAX: u32 = 5;
/// Longest the nemesis waits for a broker's controlled shutdown.
const CONTROLLED_SHUTDOWN_WAIT_MS: u64 = 15_000;
/// FNV-1a offset basis.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Crash,
    CrashAll,
    Pause,
    Isolate,
    Split,
    OneWay,
    BrokerCrash,
    BrokerRestart,
    BrokerPause,
    BrokerIsolate,
    BrokerCrashAll,
    ClockJump,
    /// KIP-966's last replica standing: every replica of a partition but one goes down long
    /// enough to leave the ISR, then the last one crashes too; they come back in turn, the
    /// last one last.
    LastReplicaStanding,
    /// One broker cut off from every other broker (the controllers still reach it): its
    /// followers fall out of its ISRs, and it out of others'.
    BrokerSplit,
    /// A partition of the workload's topic is reassigned to other brokers (or its reassignment
    /// in progress cancelled) through AlterPartitionReassignments.
    Reassign,
    /// A buggify window: brokers drop responses (and the connection) at random, so producers
    /// retry batches that were written (idempotence must answer them with the original
    /// offsets) and fsyncs are slow.
    DropResponses,
}

/// The `controller_quorum` shape's fault mix.
const FAULTS: [(Fault, u32); 16] = [
    (Fault::Crash, 10),
    (Fault::CrashAll, 2),
    (Fault::Pause, 6),
    (Fault::Isolate, 6),
    (Fault::Split, 5),
    (Fault::OneWay, 5),
    (Fault::BrokerCrash, 5),
    (Fault::BrokerRestart, 3),
    (Fault::BrokerPause, 3),
    (Fault::BrokerIsolate, 4),
    (Fault::BrokerCrashAll, 1),
    (Fault::ClockJump, 3),
    (Fault::LastReplicaStanding, 1),
    (Fault::BrokerSplit, 2),
    (Fault::Reassign, 1),
    (Fault::DropResponses, 2),
];

/// The `replication` shape's fault mix: mostly brokers.
const REPLICATION_FAULTS: [(Fault, u32); 16] = [
    (Fault::Crash, 3),
    (Fault::CrashAll, 1),
    (Fault::Pause, 2),
    (Fault::Isolate, 2),
    (Fault::Split, 1),
    (Fault::OneWay, 1),
    (Fault::BrokerCrash, 10),
    (Fault::BrokerRestart, 4),
    (Fault::BrokerPause, 5),
    (Fault::BrokerIsolate, 4),
    (Fault::BrokerCrashAll, 2),
    (Fault::ClockJump, 2),
    (Fault::LastReplicaStanding, 4),
    (Fault::BrokerSplit, 6),
    (Fault::Reassign, 5),
    (Fault::DropResponses, 5),
];

/// Which cluster a seed draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 3 or 5 controllers, 2-4 brokers, replication factor up to 3, faults spread over both.
    Controllers,
    /// 3 controllers, 3-5 brokers, replication factor 2-5, faults aimed at brokers.
    Replication,
}

/// `leader.imbalance.per.broker.percentage` when the controllers rebalance leaderships.
const LEADER_IMBALANCE_PERCENT: u32 = 10;
/// Bounds of the drawn `replica.lag.time.max.ms` (Kafka's default, 30 s, would outlast most
/// safety phases, and no ISR would ever shrink for lag).
const REPLICA_LAG_TIME_MS_MIN: u64 = 1_000;
/// See [`REPLICA_LAG_TIME_MS_MIN`].
const REPLICA_LAG_TIME_MS_MAX: u64 = 10_000;
/// After the final reads, every ISR must be whole again and every leader's high watermark at
/// its log end within this.
pub const ISR_REGROW_MS: u64 = 30_000;

#[derive(Debug, Clone)]
struct Params {
    shape: Shape,
    voters: u64,
    brokers: u64,
    safety_ms: u64,
    election_ticks: usize,
    snapshot_interval_entries: u64,
    session_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    propose_every_ms: u64,
    create_every_ms: u64,
    nemesis_mean_ms: u64,
    /// One broker is stopped for good when the faults stop (it must end up fenced).
    leave_broker_down: bool,
    weights: Vec<(Fault, u32)>,
    /// The replicated workload's topic: replication factor and `min.insync.replicas`.
    replication_factor: i16,
    min_insync_replicas: i16,
    /// `replica.lag.time.max.ms`.
    replica_lag_time_max_ms: u64,
    /// The active controller's leader rebalance interval (`None`: off).
    leader_rebalance_ms: Option<u64>,
    /// Workload processes producing with acks=all, and whether one more uses acks=1.
    acks_all_processes: u64,
    acks_one_process: bool,
    workload: WorkloadConfig,
    /// The consumer group reading the workload's topic (`replication` shape only).
    group: group_member::GroupParams,
    /// `group.initial.rebalance.delay.ms`.
    group_initial_rebalance_delay_ms: u64,
    /// `log.segment.bytes` when small (`replication` shape, some seeds): segments roll, and the
    /// compacted `__consumer_offsets` is cleaned under the faults.
    segment_bytes: Option<u64>,
    /// `log.cleaner.backoff.ms`.
    cleaner_backoff_ms: u64,
}

impl Params {
    fn draw(options: &RunOptions, shape: Shape) -> Params {
        let mut rng = thread_rng();
        let session_timeout_ms = rng.gen_range(1_500..=6_000);
        let (voters, brokers, replication_factor, faults) = match shape {
            Shape::Controllers => {
                let brokers = rng.gen_range(2..=4);
                let voters = if rng.gen_bool(0.5) { 3 } else { 5 };
                (voters, brokers, rng.gen_range(2..=brokers.min(3)) as i16, &FAULTS)
            }
            Shape::Replication => {
                let brokers = rng.gen_range(3..=5);
                (3, brokers, rng.gen_range(2..=brokers) as i16, &REPLICATION_FAULTS)
            }
        };
        Params {
            shape,
            voters,
            brokers,
            safety_ms: options.safety_ms.unwrap_or_else(|| rng.gen_range(super::SAFETY_MS_MIN..=super::SAFETY_MS_MAX)),
            election_ticks: rng.gen_range(5..=15),
            snapshot_interval_entries: rng.gen_range(3..=40),
            session_timeout_ms,
            heartbeat_interval_ms: session_timeout_ms / rng.gen_range(3..=6),
            propose_every_ms: rng.gen_range(10..=300),
            create_every_ms: rng.gen_range(100..=2_000),
            nemesis_mean_ms: rng.gen_range(300..=3_000),
            leave_broker_down: rng.gen_bool(0.3),
            replica_lag_time_max_ms: rng.gen_range(REPLICA_LAG_TIME_MS_MIN..=REPLICA_LAG_TIME_MS_MAX),
            leader_rebalance_ms: rng.gen_bool(0.7).then(|| rng.gen_range(1_000..=15_000)),
            replication_factor,
            min_insync_replicas: rng.gen_range(1..=replication_factor),
            acks_all_processes: rng.gen_range(1..=2),
            acks_one_process: rng.gen_bool(0.5),
            // No DeleteRecords: a replicated one does not yet wait for followers.
            workload: WorkloadConfig::draw(
                (1..=brokers)
                    .map(|index| format!("{}:{KAFKA_PORT}", broker_ip(BROKER_ID_BASE + index)))
                    .collect::<Vec<_>>()
                    .join(","),
                rng.gen_range(1..=3),
                false,
            ),
            weights: faults
                .iter()
                .map(|(fault, weight)| (*fault, if rng.gen_bool(0.2) { 0 } else { *weight }))
                .collect(),
            group: match shape {
                Shape::Replication => group_member::GroupParams::draw(),
                Shape::Controllers => group_member::GroupParams { members: 0, ..group_member::GroupParams::draw() },
            },
            group_initial_rebalance_delay_ms: rng.gen_range(0..=1_000),
            segment_bytes: (shape == Shape::Replication && rng.gen_bool(0.5)).then(|| rng.gen_range(1_024..=16_384)),
            cleaner_backoff_ms: rng.gen_range(100..=3_000),
        }
    }

    fn broker_ids(&self) -> impl Iterator<Item = u64> {
        (1..=self.brokers).map(|index| BROKER_ID_BASE + index)
    }
}

fn controller_ip(node: u64) -> IpAddr {
    format!("10.0.0.{node}").parse().expect("valid IP")
}

fn broker_ip(broker: u64) -> IpAddr {
    format!("10.0.1.{}", broker - BROKER_ID_BASE).parse().expect("valid IP")
}

/// A broker host: what survives its restarts.
#[derive(Debug, Clone)]
struct BrokerHost {
    disk: SimDisk,
    clock: SimClock,
}

/// What the scenario shares with every node incarnation.
#[derive(Debug)]
struct Shared {
    trace: Trace,
    check: Mutex<QuorumCheck>,
    images: Mutex<ImageCheck>,
    replicas: Mutex<ReplicaCheck>,
    params: Params,
    voters: BTreeMap<u64, String>,
    /// Each controller's file system and directory (kept across incarnations).
    disks: BTreeMap<u64, (CrashFs, PathBuf)>,
    /// The running incarnation of each controller.
    quorums: Mutex<BTreeMap<u64, Quorum>>,
    brokers: BTreeMap<u64, BrokerHost>,
    /// Stops the running incarnation of a broker cleanly (controlled shutdown).
    broker_stops: Mutex<BTreeMap<u64, rt::sync::oneshot::Sender<()>>>,
    /// Brokers whose last incarnation finished a clean shutdown.
    stopped_cleanly: Mutex<BTreeSet<u64>>,
    /// Each broker's last published image: (index, hash).
    broker_images: Mutex<BTreeMap<u64, (u64, u64)>>,
    /// Topics whose creation was acknowledged: name -> partitions.
    created: Mutex<BTreeMap<String, i32>>,
    /// Committed metadata entries after which some workload partition had a nonempty ELR.
    elr_entries: AtomicU64,
    creating: AtomicBool,
    next_value: AtomicU64,
    proposing: AtomicBool,
    /// Simulated ms at which the leader was crashed, paused or isolated, and failover times.
    leader_lost_ms: Mutex<Option<(u64, u64)>>,
    failovers_ms: Mutex<Vec<u64>>,
    failures: Mutex<Vec<String>>,
    /// The run's real directory (per process and seed): kept out of the trace.
    root: PathBuf,
}

impl Shared {
    fn fail(&self, text: String) {
        self.trace.event(format!("INVARIANT VIOLATED: {text}"));
        self.failures.lock().expect("failures lock").push(text);
    }

    fn leader(&self) -> Option<u64> {
        let quorums = self.quorums.lock().expect("quorums lock");
        let leaders: Vec<u64> =
            quorums.iter().filter(|(_, quorum)| quorum.status().role == Role::Leader).map(|(id, _)| *id).collect();
        // Two controllers may both think they lead for a moment (an old leader that has not
        // heard of the new term); the newest term's is the leader.
        leaders.into_iter().max_by_key(|id| quorums[id].status().term)
    }

    fn voters_setting(&self) -> String {
        self.voters.iter().map(|(id, address)| format!("{id}@{address}")).collect::<Vec<_>>().join(",")
    }
}

async fn incarnation(node: u64, shared: Arc<Shared>) {
    let (fs, dir) = shared.disks[&node].clone();
    shared.check.lock().expect("check lock").restarted(node);
    let (store, recovered) = match RaftLogStore::open(Arc::new(fs), &dir) {
        Ok(opened) => opened,
        Err(error) => {
            shared.fail(format!("controller {node} cannot open its raft log: {error}"));
            return;
        }
    };
    // The clock-rate fault: this incarnation's timers run at their own pace.
    let drift = TICK_DRIFT_PERCENT_MAX;
    let tick_ms = TICK_MS_NOMINAL * thread_rng().gen_range(100 - drift..=100 + drift) / 100;
    shared.trace.event(format!(
        "controller {node} starting: term {} commit {} snapshot {:?} entries {} tick {tick_ms} ms",
        recovered.hard_state.term,
        recovered.hard_state.commit,
        recovered.snapshot.as_ref().map(|snapshot| snapshot.get_metadata().index),
        recovered.entries.len()
    ));
    let listener = match rt::net::TcpListener::bind(format!("0.0.0.0:{PORT}")).await {
        Ok(listener) => listener,
        Err(error) => {
            shared.fail(format!("controller {node} cannot bind: {error}"));
            return;
        }
    };
    let mut config = QuorumConfig::new(node, shared.voters.clone());
    config.tick_ms = tick_ms;
    config.election_ticks = shared.params.election_ticks;
    config.snapshot_interval_entries = shared.params.snapshot_interval_entries;
    let observer = {
        let shared = Arc::clone(&shared);
        Arc::new(move |entry: &AppliedEntry| {
            let hash = fnv1a(FNV_BASIS, &entry.data);
            shared.check.lock().expect("check lock").applied(node, entry.index, entry.term, hash, entry.from_snapshot);
            if !entry.from_snapshot {
                shared.images.lock().expect("images lock").committed(entry.index, &entry.data);
                strong_isr(&shared);
            }
        })
    };
    let (control, streams) = rt::sync::mpsc::channel(controller::quorum::INBOX_MAX);
    let applied = AppliedLog::new();
    let quorum = match Quorum::start(
        config,
        store,
        recovered,
        listener,
        Some(control),
        Some(applied.observer(Some(observer))),
        std::future::pending(),
    ) {
        Ok(quorum) => quorum,
        Err(error) => {
            shared.fail(format!("controller {node} cannot start: {error}"));
            return;
        }
    };
    let service = ControllerService::start(quorum.clone(), applied, shared.params.session_timeout_ms, streams);
    if let Some(interval_ms) = shared.params.leader_rebalance_ms {
        service.balance_leaders(interval_ms, LEADER_IMBALANCE_PERCENT);
    }
    let _ = shared.quorums.lock().expect("quorums lock").insert(node, quorum.clone());
    // Leadership changes, as they happen.
    {
        let shared = Arc::clone(&shared);
        let mut status = quorum.watch_status();
        drop(rt::task::spawn(async move {
            let mut last_term_led = None;
            loop {
                let current = status.borrow_and_update().clone();
                if current.role == Role::Leader && last_term_led != Some(current.term) {
                    last_term_led = Some(current.term);
                    shared.trace.event(format!("controller {node} leads term {}", current.term));
                    shared.check.lock().expect("check lock").leader(current.term, node);
                    if let Some((lost_ms, _)) = shared.leader_lost_ms.lock().expect("lock").take() {
                        shared.failovers_ms.lock().expect("lock").push(shared.trace.now_ms() - lost_ms);
                    }
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        }));
    }
    // Propose while leading.
    loop {
        let pause = thread_rng().gen_range(1..=2 * shared.params.propose_every_ms);
        madsim::time::sleep(Duration::from_millis(pause)).await;
        if !shared.proposing.load(Ordering::SeqCst) || quorum.status().role != Role::Leader {
            continue;
        }
        let value = shared.next_value.fetch_add(1, Ordering::SeqCst);
        let records = vec![MetadataRecord::Config {
            resource: ConfigResource::Broker(NodeId(node as i32)),
            name: "weir.sim.value".to_owned(),
            value: Some(value.to_string()),
        }];
        let hash = fnv1a(FNV_BASIS, &encode_batch(&records));
        match quorum.propose(records).await {
            Ok(index) => {
                shared.trace.event(format!("controller {node} committed value {value} at {index}"));
                shared.check.lock().expect("check lock").acknowledged(index, hash);
            }
            Err(error @ (ControllerError::NotController { .. } | ControllerError::Indeterminate)) => {
                shared.trace.event(format!("controller {node} proposal of {value}: {error}"));
            }
            Err(error) => shared.fail(format!("controller {node} proposal of {value} failed: {error}")),
        }
    }
}

/// StrongIsr on the workload's topic after a committed metadata entry: every member of each
/// partition's committed ISR holds everything committed.
fn strong_isr(shared: &Shared) {
    let isrs: Vec<(TopicId, i32, Vec<NodeId>, i32)> = {
        let images = shared.images.lock().expect("images lock");
        let Some(topic) = images.reference().0.topic(workload::TOPIC) else { return };
        if topic.partitions.values().any(|state| !state.elr.is_empty()) {
            let _ = shared.elr_entries.fetch_add(1, Ordering::Relaxed);
        }
        topic
            .partitions
            .iter()
            .map(|(partition, state)| (topic.topic_id, *partition, state.isr.clone(), state.leader_epoch.0))
            .collect()
    };
    let mut replicas = shared.replicas.lock().expect("replicas lock");
    for (topic_id, partition, isr, leader_epoch) in isrs {
        replicas.committed_epoch(topic_id, partition, leader_epoch);
        for violation in replicas.strong_isr(topic_id, partition, &isr) {
            shared.trace.event(format!("INVARIANT VIOLATED: {violation}"));
        }
    }
}

/// One run of a broker-only node: `server::run_node` with the cluster's settings, until the
/// nemesis kills it or asks for a clean shutdown.
async fn broker_incarnation(broker: u64, shared: Arc<Shared>) {
    let host = shared.brokers[&broker].clone();
    shared.images.lock().expect("images lock").restarted(broker);
    shared.replicas.lock().expect("replicas lock").restarted(broker);
    let _ = shared.stopped_cleanly.lock().expect("lock").remove(&broker);
    let (stop, stopped) = rt::sync::oneshot::channel::<()>();
    let _ = shared.broker_stops.lock().expect("lock").insert(broker, stop);
    let flags: Vec<String> = [
        ("node.id", broker.to_string()),
        ("process.roles", "broker".to_owned()),
        ("controller.quorum.voters", shared.voters_setting()),
        ("listeners", format!("PLAINTEXT://0.0.0.0:{KAFKA_PORT}")),
        ("advertised.listeners", format!("PLAINTEXT://{}:{KAFKA_PORT}", broker_ip(broker))),
        ("log.dirs", "/var/lib/weir".to_owned()),
        ("broker.session.timeout.ms", shared.params.session_timeout_ms.to_string()),
        ("broker.heartbeat.interval.ms", shared.params.heartbeat_interval_ms.to_string()),
        ("auto.create.topics.enable", "false".to_owned()),
        ("replica.lag.time.max.ms", shared.params.replica_lag_time_max_ms.to_string()),
        ("offsets.topic.num.partitions", "3".to_owned()),
        ("offsets.topic.replication.factor", shared.params.brokers.min(3).to_string()),
        ("group.initial.rebalance.delay.ms", shared.params.group_initial_rebalance_delay_ms.to_string()),
        ("log.cleaner.backoff.ms", shared.params.cleaner_backoff_ms.to_string()),
    ]
    .into_iter()
    .chain(shared.params.segment_bytes.map(|bytes| ("log.segment.bytes", bytes.to_string())))
    .flat_map(|(name, value)| [format!("--{}", name.replace('.', "-")), value])
    .collect();
    let mut settings = Settings::default();
    let config = settings.load_flags(&flags).and_then(|()| NodeConfig::from_settings(&settings));
    let mut config = match config {
        Ok(config) => config,
        Err(error) => {
            shared.fail(format!("broker {broker}'s settings are refused: {error}"));
            return;
        }
    };
    let observer: ImageObserver = {
        let shared = Arc::clone(&shared);
        Arc::new(move |index: u64, image: &MetadataImage| {
            let hash = image_hash(image);
            shared.images.lock().expect("images lock").broker_image(broker, index, hash);
            let _ = shared.broker_images.lock().expect("lock").insert(broker, (index, hash));
        })
    };
    let replica_observer: ReplicaObserver = {
        let shared = Arc::clone(&shared);
        Arc::new(move |topic_partition: &TopicPartition, topic_id: TopicId, event: &ReplicaEvent| {
            if topic_partition.topic == workload::TOPIC
                && !matches!(event, ReplicaEvent::Appended { .. } | ReplicaEvent::HighWatermark { .. })
            {
                shared.trace.event(format!("broker {broker} {topic_partition}: {event:?}"));
            }
            let found = shared.replicas.lock().expect("replicas lock").event(broker, topic_partition, topic_id, event);
            for violation in found {
                shared.trace.event(format!("INVARIANT VIOLATED: {violation}"));
            }
        })
    };
    match config.broker.cluster.as_mut() {
        Some(cluster) => {
            cluster.image_observer = Some(observer);
            cluster.replica_observer = Some(replica_observer);
        }
        None => {
            shared.fail(format!("broker {broker} is not a cluster member"));
            return;
        }
    }
    shared.trace.event(format!(
        "broker {broker} starting (disk {} bytes, clock offset {} ms)",
        host.disk.used_bytes(),
        host.clock.offset_ms()
    ));
    let disk: storage::SharedDisk = Arc::new(host.disk.clone());
    let clock: rt::time::SharedClock = Arc::new(host.clock.clone());
    let shutdown = async move {
        let _ = stopped.await;
    };
    match server::run_node(config, disk, clock, shutdown).await {
        Ok(()) => {
            shared.trace.event(format!("broker {broker} shut down cleanly"));
            let _ = shared.stopped_cleanly.lock().expect("lock").insert(broker);
        }
        Err(error) => shared.fail(format!("broker {broker} failed: {error}")),
    }
}

/// The admin client: creates topics through the brokers while the faults run. A creation is
/// acknowledged when the broker answers without error, or with TOPIC_ALREADY_EXISTS for a name
/// an earlier attempt of which timed out.
async fn create_topics(shared: Arc<Shared>) {
    let bootstrap: Vec<String> =
        shared.params.broker_ids().map(|broker| format!("{}:{KAFKA_PORT}", broker_ip(broker))).collect();
    let config = ClientConfig {
        bootstrap_servers: bootstrap,
        client_id: "sim-admin".to_owned(),
        request_timeout_ms: 5_000,
        retry_backoff_ms: 100,
        metadata_max_age_ms: 1_000,
        ..ClientConfig::default()
    };
    let mut number = 0u64;
    let mut attempts = 0u32;
    while shared.creating.load(Ordering::SeqCst) {
        let pause = thread_rng().gen_range(1..=2 * shared.params.create_every_ms);
        madsim::time::sleep(Duration::from_millis(pause)).await;
        let name = format!("topic-{number}");
        let partitions = thread_rng().gen_range(1..=3);
        let factor = thread_rng().gen_range(1..=shared.params.brokers.min(3)) as i16;
        let attempt = async {
            let client = Client::connect(config.clone()).await?;
            let topic = NewTopic { num_partitions: partitions, replication_factor: factor, ..NewTopic::new(&name) };
            Admin::new(&client).create_topics(&[topic], false).await
        };
        let outcome = rt::time::timeout(Duration::from_millis(CREATE_TIMEOUT_MS), attempt).await;
        attempts += 1;
        let result = match outcome {
            Ok(Ok(results)) => results.into_iter().find(|(topic, _)| *topic == name).map(|(_, result)| result),
            Ok(Err(error)) => Some(Err(error)),
            Err(_) => None,
        };
        let definite = match result {
            Some(Ok(())) => {
                shared.trace.event(format!("client: created {name} ({partitions} partitions, factor {factor})"));
                let _ = shared.created.lock().expect("lock").insert(name.clone(), partitions);
                true
            }
            Some(Err(error))
                if attempts > 1 && error.response_error() == Some(protocol::ResponseError::TopicAlreadyExists) =>
            {
                // An earlier attempt whose answer was lost created it; its partition count is
                // that attempt's, so only the name is checked.
                shared.trace.event(format!("client: {name} exists after a lost answer"));
                let _ = shared.created.lock().expect("lock").insert(name.clone(), 0);
                true
            }
            Some(Err(error)) => {
                shared.trace.event(format!("client: creating {name}: {error}"));
                !error.is_retriable()
            }
            None => {
                shared.trace.event(format!("client: creating {name} timed out"));
                false
            }
        };
        if definite || attempts >= CREATE_ATTEMPTS_MAX {
            number += 1;
            attempts = 0;
        }
    }
}

struct Nemesis {
    handle: Handle,
    /// Where the nemesis's admin requests (reassignments) come from.
    admin: NodeHandle,
    nodes: BTreeMap<u64, NodeHandle>,
    shared: Arc<Shared>,
    counts: BTreeMap<&'static str, u64>,
}

impl Nemesis {
    fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    fn pick(&self, prefer_leader: bool) -> u64 {
        if prefer_leader {
            if let Some(leader) = self.shared.leader() {
                return leader;
            }
        }
        thread_rng().gen_range(1..=self.shared.params.voters)
    }

    fn pick_broker(&self) -> u64 {
        BROKER_ID_BASE + thread_rng().gen_range(1..=self.shared.params.brokers)
    }

    fn note_if_leader(&self, node: u64) {
        if self.shared.leader() == Some(node) {
            *self.shared.leader_lost_ms.lock().expect("lock") = Some((self.shared.trace.now_ms(), node));
        }
    }

    /// A paused or cut-off leader that is back and still leads lost nothing: no failover.
    fn forget_loss_if_still_leading(&self) {
        let mut lost = self.shared.leader_lost_ms.lock().expect("lock");
        if lost.is_some_and(|(_, node)| self.shared.leader() == Some(node)) {
            *lost = None;
        }
    }

    async fn crash(&mut self, victims: &[u64]) {
        for node in victims {
            self.note_if_leader(*node);
            self.shared.disks[node].0.freeze();
            self.handle.kill(self.nodes[node].id());
            let _ = self.shared.quorums.lock().expect("quorums lock").remove(node);
        }
        let down_ms = thread_rng().gen_range(1..=3_000);
        self.shared.trace.event(format!("nemesis: power failure of {victims:?} for {down_ms} ms"));
        madsim::time::sleep(Duration::from_millis(down_ms)).await;
        for node in victims {
            let mut rng = thread_rng();
            let report = self.shared.disks[node].0.crash(|_, unsynced| TornTail {
                kept_bytes: if rng.gen_bool(0.5) { 0 } else { rng.gen_range(0..=unsynced) },
                garbled: rng.gen_bool(0.3),
            });
            match report {
                Ok(report) => {
                    self.shared.trace.event(format!("nemesis: controller {node} lost {} bytes", report.lost_bytes));
                    let root = format!("{}/", self.shared.root.display());
                    for change in &report.changes {
                        self.shared.trace.event(format!("nemesis: crash {node}: {}", change.replace(&root, "")));
                    }
                }
                Err(error) => self.shared.fail(format!("crash of controller {node}'s files failed: {error}")),
            }
            self.handle.restart(self.nodes[node].id());
        }
    }

    /// Power failure of a broker: it stops at once and its disk keeps only what was synced.
    fn power_off_broker(&self, broker: u64) {
        let host = &self.shared.brokers[&broker];
        host.disk.freeze();
        self.handle.kill(self.nodes[&broker].id());
        let _ = self.shared.broker_stops.lock().expect("lock").remove(&broker);
        let report = host.disk.crash();
        self.shared.trace.event(format!("nemesis: broker {broker} lost {} bytes", report.lost_bytes));
    }

    async fn crash_broker(&mut self, broker: u64) {
        let down_ms = thread_rng().gen_range(1..=3_000);
        self.shared.trace.event(format!("nemesis: power failure of broker {broker} for {down_ms} ms"));
        self.power_off_broker(broker);
        madsim::time::sleep(Duration::from_millis(down_ms)).await;
        self.handle.restart(self.nodes[&broker].id());
    }

    /// Asks the broker to shut down cleanly (controlled shutdown), waits for it (bounded),
    /// and starts it again.
    async fn restart_broker(&mut self, broker: u64) {
        self.shared.trace.event(format!("nemesis: clean restart of broker {broker}"));
        if let Some(stop) = self.shared.broker_stops.lock().expect("lock").remove(&broker) {
            let _ = stop.send(());
        }
        let deadline = self.shared.trace.now_ms() + CONTROLLED_SHUTDOWN_WAIT_MS;
        while self.shared.trace.now_ms() < deadline
            && !self.shared.stopped_cleanly.lock().expect("lock").contains(&broker)
        {
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        if !self.shared.stopped_cleanly.lock().expect("lock").contains(&broker) {
            self.shared.trace.event(format!("nemesis: broker {broker} did not stop within the wait; killing it"));
        }
        // The process exits: its sockets close.
        self.handle.kill(self.nodes[&broker].id());
        let down_ms = thread_rng().gen_range(1..=2_000);
        madsim::time::sleep(Duration::from_millis(down_ms)).await;
        self.handle.restart(self.nodes[&broker].id());
    }

    /// Reassigns a random partition of the workload's topic to as many brokers, drawn at
    /// random (or, one time in five, cancels the reassignment in progress), and waits for the
    /// answer (bounded). False if there is no workload topic yet.
    async fn reassign(&mut self) -> bool {
        let (partition, factor) = {
            let images = self.shared.images.lock().expect("images lock");
            let Some(topic) = images.reference().0.topic(workload::TOPIC) else { return false };
            let partition = thread_rng().gen_range(0..topic.partitions.len() as i32);
            (partition, topic.partitions[&partition].target_replicas().len())
        };
        let mut brokers: Vec<i32> = self.shared.params.broker_ids().map(|broker| broker as i32).collect();
        for index in (1..brokers.len()).rev() {
            brokers.swap(index, thread_rng().gen_range(0..=index));
        }
        let target = (!thread_rng().gen_bool(0.2)).then(|| brokers[..factor.min(brokers.len())].to_vec());
        self.shared.trace.event(format!("nemesis: reassign {}-{partition} to {target:?}", workload::TOPIC));
        let bootstrap: Vec<String> =
            self.shared.params.broker_ids().map(|broker| format!("{}:{KAFKA_PORT}", broker_ip(broker))).collect();
        let config = ClientConfig {
            bootstrap_servers: bootstrap,
            client_id: "sim-nemesis".to_owned(),
            request_timeout_ms: 5_000,
            retry_backoff_ms: 100,
            ..ClientConfig::default()
        };
        let request = async move {
            let client = Client::connect(config).await?;
            let topic_partition = TopicPartition::new(workload::TOPIC, partition);
            Admin::new(&client).alter_partition_reassignments(&[(topic_partition, target)]).await
        };
        let answer = self.admin.spawn(rt::time::timeout(Duration::from_millis(CREATE_TIMEOUT_MS), request)).await;
        let text = match answer {
            Ok(Ok(Ok(results))) => format!("{results:?}"),
            Ok(Ok(Err(error))) => error.to_string(),
            Ok(Err(_)) => "timed out".to_owned(),
            Err(error) => format!("task failed: {error}"),
        };
        self.shared.trace.event(format!("nemesis: reassignment answered: {text}"));
        true
    }

    /// KIP-966's last replica standing, on one partition of the workload's topic: every
    /// replica but one loses power and stays down long enough to be fenced and leave the ISR
    /// (the survivor goes on alone if `min.insync.replicas` allows); then the survivor loses
    /// power too. The others come back first (none may be elected: they are not in the ISR,
    /// and unclean election is off), the survivor last. False if no partition has two
    /// replicas.
    async fn last_replica_standing(&mut self) -> bool {
        let replicas: Vec<u64> = {
            let images = self.shared.images.lock().expect("images lock");
            let Some(topic) = images.reference().0.topic(workload::TOPIC) else { return false };
            let states: Vec<_> = topic.partitions.values().filter(|state| state.replicas.len() >= 2).collect();
            if states.is_empty() {
                return false;
            }
            let state = states[thread_rng().gen_range(0..states.len())];
            state.replicas.iter().map(|replica| replica.0 as u64).collect()
        };
        let last = replicas[thread_rng().gen_range(0..replicas.len())];
        let others: Vec<u64> = replicas.iter().copied().filter(|replica| *replica != last).collect();
        let alone_ms = thread_rng().gen_range(1_000..=3 * self.shared.params.session_timeout_ms);
        self.shared
            .trace
            .event(format!("nemesis: last replica standing: power off {others:?}, {last} alone for {alone_ms} ms"));
        for broker in &others {
            self.power_off_broker(*broker);
        }
        madsim::time::sleep(Duration::from_millis(alone_ms)).await;
        self.shared.trace.event(format!("nemesis: last replica standing: power off {last}"));
        self.power_off_broker(last);
        madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(1..=2_000))).await;
        for broker in &others {
            self.handle.restart(self.nodes[broker].id());
            madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(0..=1_000))).await;
        }
        madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(0..=3_000))).await;
        self.handle.restart(self.nodes[&last].id());
        true
    }

    fn clog(&self, from: u64, to: u64, on: bool) {
        let net = NetSim::current();
        let (from, to) = (self.nodes[&from].id(), self.nodes[&to].id());
        if on {
            net.clog_link(from, to);
        } else {
            net.unclog_link(from, to);
        }
    }

    async fn partition(&mut self, links: Vec<(u64, u64)>, text: String) {
        let length = thread_rng().gen_range(200..=6_000);
        self.partition_for(links, text, length).await;
    }

    async fn partition_for(&mut self, links: Vec<(u64, u64)>, text: String, length: u64) {
        self.shared.trace.event(format!("nemesis: {text} for {length} ms"));
        for (from, to) in &links {
            self.clog(*from, *to, true);
        }
        madsim::time::sleep(Duration::from_millis(length)).await;
        for (from, to) in &links {
            self.clog(*from, *to, false);
        }
        self.shared.trace.event("nemesis: network healed");
        self.forget_loss_if_still_leading();
    }

    async fn pause(&mut self, node: u64, what: &str) {
        let length = thread_rng().gen_range(100..=5_000);
        self.shared.trace.event(format!("nemesis: pause {what} {node} for {length} ms"));
        self.handle.pause(self.nodes[&node].id());
        madsim::time::sleep(Duration::from_millis(length)).await;
        self.handle.resume(self.nodes[&node].id());
        self.forget_loss_if_still_leading();
    }

    async fn run(mut self, until_ms: u64) -> Self {
        let total: u32 = self.shared.params.weights.iter().map(|(_, weight)| weight).sum();
        let voters = self.shared.params.voters;
        loop {
            let pause = thread_rng().gen_range(0..=2 * self.shared.params.nemesis_mean_ms);
            madsim::time::sleep(Duration::from_millis(pause)).await;
            if self.shared.trace.now_ms() >= until_ms || total == 0 {
                break;
            }
            let fault = super::pick_weighted(&self.shared.params.weights).expect("some weight is not zero");
            let prefer_leader = thread_rng().gen_bool(0.5);
            match fault {
                Fault::Crash => {
                    let node = self.pick(prefer_leader);
                    self.crash(&[node]).await;
                    self.count("crash");
                }
                Fault::CrashAll => {
                    let all: Vec<u64> = (1..=voters).collect();
                    self.crash(&all).await;
                    self.count("crash-all");
                }
                Fault::Pause => {
                    let node = self.pick(prefer_leader);
                    self.note_if_leader(node);
                    self.pause(node, "controller").await;
                    self.count("pause");
                }
                Fault::Isolate => {
                    let node = self.pick(prefer_leader);
                    self.note_if_leader(node);
                    let links = (1..=voters)
                        .filter(|other| *other != node)
                        .flat_map(|other| [(node, other), (other, node)])
                        .collect();
                    self.partition(links, format!("isolate controller {node}")).await;
                    self.count("isolate");
                }
                Fault::Split => {
                    let minority: Vec<u64> = (1..=voters).filter(|_| thread_rng().gen_bool(0.4)).collect();
                    let links = minority
                        .iter()
                        .flat_map(|a| {
                            (1..=voters).filter(|b| !minority.contains(b)).flat_map(move |b| [(*a, b), (b, *a)])
                        })
                        .collect();
                    self.partition(links, format!("split {minority:?} from the rest")).await;
                    self.count("split");
                }
                Fault::OneWay => {
                    let from = self.pick(prefer_leader);
                    let to = (from % voters) + 1;
                    self.partition(vec![(from, to)], format!("drop traffic from {from} to {to}")).await;
                    self.count("one-way");
                }
                Fault::BrokerCrash => {
                    let broker = self.pick_broker();
                    self.crash_broker(broker).await;
                    self.count("broker-crash");
                }
                Fault::BrokerCrashAll => {
                    let down_ms = thread_rng().gen_range(1..=3_000);
                    let all: Vec<u64> = self.shared.params.broker_ids().collect();
                    self.shared.trace.event(format!("nemesis: power failure of every broker for {down_ms} ms"));
                    for broker in &all {
                        self.power_off_broker(*broker);
                    }
                    madsim::time::sleep(Duration::from_millis(down_ms)).await;
                    for broker in &all {
                        self.handle.restart(self.nodes[broker].id());
                    }
                    self.count("broker-crash-all");
                }
                Fault::BrokerRestart => {
                    let broker = self.pick_broker();
                    self.restart_broker(broker).await;
                    self.count("broker-restart");
                }
                Fault::BrokerPause => {
                    let broker = self.pick_broker();
                    self.pause(broker, "broker").await;
                    self.count("broker-pause");
                }
                Fault::BrokerIsolate => {
                    let broker = self.pick_broker();
                    let links =
                        (1..=voters).flat_map(|controller| [(broker, controller), (controller, broker)]).collect();
                    self.partition(links, format!("isolate broker {broker} from the controllers")).await;
                    self.count("broker-isolate");
                }
                Fault::DropResponses => {
                    let length = thread_rng().gen_range(100..=2_000);
                    self.shared.trace.event(format!("nemesis: buggify (dropped responses) for {length} ms"));
                    madsim::buggify::enable();
                    madsim::time::sleep(Duration::from_millis(length)).await;
                    madsim::buggify::disable();
                    self.shared.trace.event("nemesis: buggify off");
                    self.count("drop-responses");
                }
                Fault::Reassign => {
                    if self.reassign().await {
                        self.count("reassign");
                    }
                }
                Fault::LastReplicaStanding => {
                    if self.last_replica_standing().await {
                        self.count("last-replica-standing");
                    }
                }
                Fault::BrokerSplit => {
                    let broker = self.pick_broker();
                    let links = self
                        .shared
                        .params
                        .broker_ids()
                        .filter(|other| *other != broker)
                        .flat_map(|other| [(broker, other), (other, broker)])
                        .collect();
                    let length = thread_rng().gen_range(500..=2 * REPLICA_LAG_TIME_MS_MAX);
                    self.partition_for(links, format!("cut broker {broker} off from the other brokers"), length).await;
                    self.count("broker-split");
                }
                Fault::ClockJump => {
                    let broker = self.pick_broker();
                    let mut delta_ms = thread_rng().gen_range(1..=CLOCK_JUMP_MS_MAX);
                    if thread_rng().gen_bool(0.5) {
                        delta_ms = -delta_ms;
                    }
                    self.shared.brokers[&broker].clock.jump(delta_ms);
                    self.shared.trace.event(format!("nemesis: step broker {broker}'s clock by {delta_ms} ms"));
                    self.count("clock-jump");
                }
            }
        }
        self.shared.trace.event("nemesis: stopped, every fault healed");
        self
    }
}

/// Liveness: a proposal commits and every controller applies up to it and agrees on the image.
async fn converge(shared: &Arc<Shared>) -> Result<u64, String> {
    let started = shared.trace.now_ms();
    let deadline = started + CONVERGENCE_MS;
    let baseline = shared.check.lock().expect("check lock").highest_applied();
    // A proposal after the heal must commit.
    let committed = loop {
        if shared.trace.now_ms() >= deadline {
            return Err(format!(
                "no convergence: nothing committed within {CONVERGENCE_MS} ms after the faults stopped"
            ));
        }
        let highest = shared.check.lock().expect("check lock").highest_applied();
        if highest > baseline {
            break highest;
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    };
    shared.proposing.store(false, Ordering::SeqCst);
    // Everyone applies everything committed, and the images agree.
    loop {
        let statuses: Vec<(u64, u64, u64)> = shared
            .quorums
            .lock()
            .expect("quorums lock")
            .iter()
            .map(|(id, quorum)| (*id, quorum.status().applied_index, quorum.status().commit_index))
            .collect();
        let target = statuses.iter().map(|(_, _, commit)| *commit).max().unwrap_or(0).max(committed);
        let caught_up =
            statuses.len() as u64 == shared.params.voters && statuses.iter().all(|(_, applied, _)| *applied >= target);
        if caught_up {
            let images: Vec<(u64, Vec<u8>)> = shared
                .quorums
                .lock()
                .expect("quorums lock")
                .iter()
                .map(|(id, quorum)| (*id, quorum.image().image.to_snapshot()))
                .collect();
            if let Some((first_id, first)) = images.first() {
                for (id, image) in &images[1..] {
                    if image != first {
                        return Err(format!(
                            "controllers {first_id} and {id} applied the same log into different images"
                        ));
                    }
                }
            }
            let elapsed = shared.trace.now_ms() - started;
            shared.trace.event(format!("liveness: every controller applied index {target} within {elapsed} ms"));
            return Ok(elapsed);
        }
        if shared.trace.now_ms() >= deadline {
            return Err(format!(
                "no convergence: controllers did not all apply up to {target} within {CONVERGENCE_MS} ms: {statuses:?}"
            ));
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What keeps the brokers from having settled, or `None` once they have.
fn unsettled(shared: &Shared, down: Option<u64>) -> Option<String> {
    let leader = shared.leader()?;
    let committed = shared.quorums.lock().expect("quorums lock").get(&leader)?.image();
    let image = &committed.image;
    for broker in shared.params.broker_ids() {
        let registration = image.broker(NodeId(broker as i32));
        let fenced = registration.is_none_or(|registration| registration.fenced);
        if Some(broker) == down {
            if !fenced {
                return Some(format!("broker {broker} is down but not fenced"));
            }
            continue;
        }
        if fenced {
            return Some(format!("broker {broker} is running but not unfenced"));
        }
        let published = shared.broker_images.lock().expect("lock").get(&broker).copied();
        if published != Some((committed.applied_index, image_hash(image))) {
            return Some(format!(
                "broker {broker}'s image is at {published:?}, the controllers' at index {}",
                committed.applied_index
            ));
        }
    }
    None
}

/// Liveness of the brokers: within [`SETTLE_MS`] fencing matches who runs, and every running
/// broker holds the controllers' image. Then every acknowledged topic must exist.
async fn settle(shared: &Arc<Shared>, down: Option<u64>) -> Result<u64, String> {
    let started = shared.trace.now_ms();
    loop {
        let waiting = unsettled(shared, down);
        let Some(reason) = waiting else { break };
        if shared.trace.now_ms() >= started + SETTLE_MS {
            return Err(format!("brokers did not settle within {SETTLE_MS} ms: {reason}"));
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = shared.trace.now_ms() - started;
    shared.trace.event(format!("liveness: brokers settled within {elapsed} ms"));
    let image = shared.images.lock().expect("images lock").reference().0.clone();
    for (name, partitions) in shared.created.lock().expect("lock").iter() {
        match image.topic(name) {
            None => return Err(format!("acknowledged-topic-lost: {name} was created but is not in the image")),
            Some(topic) if (topic.partitions.len() as i32) < *partitions => {
                return Err(format!(
                    "acknowledged-topic-lost: {name} was created with {partitions} partitions, the image has {}",
                    topic.partitions.len()
                ))
            }
            Some(_) => {}
        }
    }
    Ok(elapsed)
}

/// What keeps the workload's partitions from being whole again, or `None` once they are:
/// each has a leader, its ISR is all its replicas, and the leader's high watermark is at its
/// log end.
fn isr_unsettled(shared: &Shared) -> Option<String> {
    let leader = shared.leader()?;
    let committed = shared.quorums.lock().expect("quorums lock").get(&leader)?.image();
    let Some(topic) = committed.image.topic(workload::TOPIC) else {
        return Some("the workload's topic is not in the image".to_owned());
    };
    for (partition, state) in &topic.partitions {
        if state.leader.0 < 0 {
            return Some(format!("partition {partition} has no leader"));
        }
        if state.reassigning() {
            return Some(format!(
                "partition {partition} is still being reassigned (adding {:?}, removing {:?})",
                state.adding_replicas, state.removing_replicas
            ));
        }
        let mut isr = state.isr.clone();
        let mut replicas = state.replicas.clone();
        isr.sort_unstable();
        replicas.sort_unstable();
        if isr != replicas {
            return Some(format!("partition {partition}'s ISR is {:?} of replicas {:?}", state.isr, state.replicas));
        }
        let view =
            shared.replicas.lock().expect("replicas lock").view(topic.topic_id, *partition, state.leader.0 as u64);
        match view {
            Some(view) if view.high_watermark == view.log_end_offset => {}
            view => {
                return Some(format!(
                    "partition {partition}'s leader {} is at {view:?}, its high watermark short of its log end",
                    state.leader.0
                ))
            }
        }
    }
    None
}

/// Liveness of replication: within [`ISR_REGROW_MS`] every partition of the workload's topic
/// has its whole ISR back and its high watermark at the log end.
async fn isr_regrows(shared: &Arc<Shared>) -> Result<u64, String> {
    let started = shared.trace.now_ms();
    loop {
        let Some(reason) = isr_unsettled(shared) else { break };
        if shared.trace.now_ms() >= started + ISR_REGROW_MS {
            return Err(format!("isr-did-not-regrow: not within {ISR_REGROW_MS} ms: {reason}"));
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = shared.trace.now_ms() - started;
    shared
        .trace
        .event(format!("liveness: every ISR whole and every high watermark at its log end within {elapsed} ms"));
    Ok(elapsed)
}

/// Runs the scenario in `shape`; called inside a fresh madsim runtime that allows
/// raft-engine's threads.
pub async fn run(trace: Trace, options: &RunOptions, shape: Shape) -> ScenarioOutcome {
    let handle = Handle::current();
    let params = Params::draw(options, shape);
    trace.event(format!("params: {params:?}"));
    let root = std::env::temp_dir().join(format!("weir-sim-{}-{}", std::process::id(), options.seed));
    let _ = std::fs::remove_dir_all(&root);
    let voters: BTreeMap<u64, String> =
        (1..=params.voters).map(|id| (id, format!("{}:{PORT}", controller_ip(id)))).collect();
    let disks = (1..=params.voters).map(|id| (id, (CrashFs::new(), root.join(format!("controller-{id}"))))).collect();
    let brokers = params
        .broker_ids()
        .map(|id| {
            let offset_ms = thread_rng().gen_range(-5_000..=5_000);
            let drift_ppm = thread_rng().gen_range(-200..=200);
            (id, BrokerHost { disk: SimDisk::new(DiskFaults::default()), clock: SimClock::new(offset_ms, drift_ppm) })
        })
        .collect();
    let shared = Arc::new(Shared {
        trace: trace.clone(),
        check: Mutex::new(QuorumCheck::new()),
        images: Mutex::new(ImageCheck::new()),
        replicas: Mutex::new(ReplicaCheck::new()),
        params: params.clone(),
        voters,
        disks,
        quorums: Mutex::new(BTreeMap::new()),
        brokers,
        broker_stops: Mutex::new(BTreeMap::new()),
        stopped_cleanly: Mutex::new(BTreeSet::new()),
        broker_images: Mutex::new(BTreeMap::new()),
        created: Mutex::new(BTreeMap::new()),
        elr_entries: AtomicU64::new(0),
        creating: AtomicBool::new(true),
        next_value: AtomicU64::new(1),
        proposing: AtomicBool::new(true),
        leader_lost_ms: Mutex::new(None),
        failovers_ms: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        root: root.clone(),
    });
    let mut nodes = BTreeMap::new();
    for id in 1..=params.voters {
        let shared = Arc::clone(&shared);
        let node = handle
            .create_node()
            .name(format!("controller-{id}"))
            .ip(controller_ip(id))
            .init(move || incarnation(id, Arc::clone(&shared)))
            .build();
        let _ = nodes.insert(id, node);
    }
    for id in params.broker_ids() {
        let shared = Arc::clone(&shared);
        let node = handle
            .create_node()
            .name(format!("broker-{id}"))
            .ip(broker_ip(id))
            .init(move || broker_incarnation(id, Arc::clone(&shared)))
            .build();
        let _ = nodes.insert(id, node);
    }
    let admin = {
        let shared = Arc::clone(&shared);
        handle
            .create_node()
            .name("admin")
            .ip("10.0.2.1".parse().expect("valid IP"))
            .build()
            .spawn(create_topics(shared))
    };
    // The replicated workload's topic, before any fault.
    let recorder = Recorder::new(trace.clone());
    let setup = handle.create_node().name("setup").ip("10.0.9.1".parse().expect("valid IP")).build();
    let created = {
        let (recorder, workload) = (Arc::clone(&recorder), params.workload.clone());
        let configs = vec![("min.insync.replicas".to_owned(), params.min_insync_replicas.to_string())];
        let factor = params.replication_factor;
        setup.spawn(async move { workload::create_topic(&recorder, &workload, factor, configs).await }).await
    };
    match created {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return ScenarioOutcome { failures: vec![error], summary: String::new() },
        Err(error) => {
            return ScenarioOutcome { failures: vec![format!("setup task failed: {error}")], summary: String::new() }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for id in 0..params.acks_all_processes + u64::from(params.acks_one_process) {
        let acks = if id < params.acks_all_processes { Acks::All } else { Acks::Leader };
        let client = handle
            .create_node()
            .name(format!("client-{id}"))
            .ip(format!("10.0.3.{}", id + 1).parse().expect("valid IP"))
            .build();
        let (recorder, workload, stop) = (Arc::clone(&recorder), params.workload.clone(), Arc::clone(&stop));
        workers.push(client.spawn(workload::run_process(id, acks, recorder, workload, stop)));
    }
    let group_checks = Arc::new(crate::group_check::GroupChecks::default());
    for index in 0..params.group.members {
        let id = group_member::MEMBER_ID_BASE + index;
        let member = handle
            .create_node()
            .name(format!("member-{index}"))
            .ip(format!("10.0.4.{}", index + 1).parse().expect("valid IP"))
            .build();
        let (recorder, workload, stop) = (Arc::clone(&recorder), params.workload.clone(), Arc::clone(&stop));
        let (group, checks) = (params.group.clone(), Arc::clone(&group_checks));
        workers.push(member.spawn(group_member::run_member(id, recorder, workload, group, checks, stop)));
    }
    let node_ids: Vec<_> = nodes.values().map(NodeHandle::id).collect();
    let safety_end = trace.now_ms() + params.safety_ms;
    let nemesis_admin = handle.create_node().name("nemesis-admin").ip("10.0.2.3".parse().expect("valid IP")).build();
    let nemesis = Nemesis {
        handle: handle.clone(),
        admin: nemesis_admin,
        nodes,
        shared: Arc::clone(&shared),
        counts: BTreeMap::new(),
    };
    let nemesis = nemesis.run(safety_end).await;
    shared.creating.store(false, Ordering::SeqCst);
    let _ = admin.await;
    let mut failures = Vec::new();
    stop.store(true, Ordering::SeqCst);
    for (id, worker) in workers.into_iter().enumerate() {
        match madsim::time::timeout(Duration::from_millis(super::single_node_durability::STOP_MS), worker).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("workload process {id} failed: {error}")),
            Err(_) => failures.push(format!("workload process {id} did not finish its operation after the stop")),
        }
    }
    // A broker left down must not hold a replica of the workload's topic: its partitions
    // would rightly stay without a leader (no unclean election), and the final reads wait.
    let down = params.leave_broker_down.then(|| nemesis.pick_broker()).filter(|broker| {
        let images = shared.images.lock().expect("images lock");
        images.reference().0.topic(workload::TOPIC).is_some_and(|topic| {
            topic.partitions.values().all(|state| !state.replicas.contains(&NodeId(*broker as i32)))
        })
    });
    if let Some(broker) = down {
        trace.event(format!("liveness phase: broker {broker} stays down"));
        nemesis.power_off_broker(broker);
    }
    trace.event("liveness phase: faults stopped");
    let convergence = converge(&shared).await;
    if let Err(error) = &convergence {
        failures.push(error.clone());
    }
    let settled = if convergence.is_ok() { settle(&shared, down).await } else { Err("not tried".to_owned()) };
    if let (Ok(_), Err(error)) = (&convergence, &settled) {
        failures.push(error.clone());
    }
    // The replicated workload: every partition takes a produce, final reads drain it, and the
    // history has no anomaly.
    if settled.is_ok() {
        let checker_node = handle.create_node().name("checker").ip("10.0.2.2".parse().expect("valid IP")).build();
        let (recorder, workload) = (Arc::clone(&recorder), params.workload.clone());
        let liveness = checker_node
            .spawn(async move {
                workload::probe(Arc::clone(&recorder), workload.clone()).await?;
                workload::final_reads(recorder, workload).await
            })
            .await;
        match liveness {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(error),
            Err(error) => failures.push(format!("liveness task failed: {error}")),
        }
    }
    let regrown = if settled.is_ok() { isr_regrows(&shared).await } else { Err("not tried".to_owned()) };
    if let (Ok(_), Err(error)) = (&settled, &regrown) {
        failures.push(error.clone());
    }
    let (report, outcomes) =
        workload::check_history(&recorder, checker::CheckOptions { retention: false }, &mut failures);
    let (violations, terms, highest) = {
        let check = shared.check.lock().expect("check lock");
        (check.violations(), check.terms_led(), check.highest_applied())
    };
    failures.extend(violations);
    let (image_violations, images_checked) = {
        let images = shared.images.lock().expect("images lock");
        (images.violations(), images.checked())
    };
    failures.extend(image_violations);
    let (replica_violations, replica_events) = {
        let replicas = shared.replicas.lock().expect("replicas lock");
        (replicas.violations(), replicas.events())
    };
    failures.extend(replica_violations);
    failures.extend(group_checks.violations());
    failures.extend(shared.failures.lock().expect("failures lock").iter().cloned());
    let failovers = shared.failovers_ms.lock().expect("lock").clone();
    let failover_text = if failovers.is_empty() {
        "none".to_owned()
    } else {
        let mut sorted = failovers.clone();
        sorted.sort_unstable();
        format!("{} (median {} ms, max {} ms)", sorted.len(), sorted[sorted.len() / 2], sorted[sorted.len() - 1])
    };
    let summary = format!(
        "{:?} rf {} min-isr {} lag-ms {} retries {} group {} members {:?} {} ops {outcomes:?} acknowledged {} voters {} brokers {} terms-led {terms} highest-index {highest} values {} topics {} broker-images-checked {images_checked} replica-events {replica_events} elr-entries {} failovers {failover_text} convergence {:?} settled {:?} isr-regrown {:?} faults {:?}",
        params.shape,
        params.replication_factor,
        params.min_insync_replicas,
        params.replica_lag_time_max_ms,
        params.workload.retries,
        params.group.members,
        params.group.assignors.iter().map(|assignor| assignor.name()).collect::<Vec<_>>(),
        group_checks.summary(),
        report.acknowledged,
        params.voters,
        params.brokers,
        shared.next_value.load(Ordering::SeqCst) - 1,
        shared.created.lock().expect("lock").len(),
        shared.elr_entries.load(Ordering::Relaxed),
        convergence.as_ref().ok(),
        settled.as_ref().ok(),
        regrown.as_ref().ok(),
        nemesis.counts,
    );
    trace.event(format!("summary: {summary}"));
    for failure in &failures {
        trace.event(format!("FAILURE {failure}"));
    }
    // Stop every node (the controllers' engines close on their threads) before removing the
    // files.
    for id in node_ids {
        handle.kill(id);
    }
    madsim::time::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_dir_all(&root);
    ScenarioOutcome { failures, summary }
}
