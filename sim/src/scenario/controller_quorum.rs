//! `controller_quorum`: three or five controllers (the real `controller::Quorum` with its log
//! in raft-engine on a [`CrashFs`]) under crashes, pauses and partitions, each proposing
//! metadata records while it leads.
//!
//! # Shape (drawn per seed)
//!
//! Voters 3 or 5, election timeout 5-15 ticks of 100 ms, snapshots every 3-40 entries (so
//! restarts and lagging followers load snapshots), proposal pace, the nemesis's pace and mix.
//!
//! # Faults (safety phase)
//!
//! * **power-fail crash** of one controller (the leader in half the cases): freeze its file
//!   system, kill it, drop unsynced bytes and tear tails, restart it;
//! * **crash of every controller** at once (rare);
//! * **pause** of one controller;
//! * **isolate** one controller, **split** the voters into two sides, or clog **one direction**
//!   of one link (asymmetric).
//!
//! # Checks
//!
//! [`QuorumCheck`] as events arrive (one leader per term; entries applied in order and
//! identical everywhere; snapshots agree with the entries they cover; acknowledged proposals
//! are the entries applied at their index). Liveness: after the faults stop, a leader must
//! commit a new proposal within [`CONVERGENCE_MS`], and every controller must then apply up to
//! it and hold the same image.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::{AppliedEntry, ControllerError, Quorum, QuorumConfig, Role};
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use metadata::record::{encode_batch, ConfigResource, MetadataRecord};
use protocol::ids::NodeId;
use storage::raft_log::RaftLogStore;

use super::{RunOptions, ScenarioOutcome};
use crate::quorum_check::QuorumCheck;
use crate::raft_fs::{CrashFs, TornTail};
use crate::trace::{fnv1a, Trace};

/// The controller port.
const PORT: u16 = 9093;
/// After the faults stop, a proposal must commit within this.
pub const CONVERGENCE_MS: u64 = 30_000;
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
}

const FAULTS: [(Fault, u32); 6] = [
    (Fault::Crash, 10),
    (Fault::CrashAll, 2),
    (Fault::Pause, 6),
    (Fault::Isolate, 6),
    (Fault::Split, 5),
    (Fault::OneWay, 5),
];

#[derive(Debug, Clone)]
struct Params {
    voters: u64,
    safety_ms: u64,
    election_ticks: usize,
    snapshot_interval_entries: u64,
    propose_every_ms: u64,
    nemesis_mean_ms: u64,
    weights: Vec<(Fault, u32)>,
}

impl Params {
    fn draw(options: &RunOptions) -> Params {
        let mut rng = thread_rng();
        Params {
            voters: if rng.gen_bool(0.5) { 3 } else { 5 },
            safety_ms: options.safety_ms.unwrap_or_else(|| rng.gen_range(super::SAFETY_MS_MIN..=super::SAFETY_MS_MAX)),
            election_ticks: rng.gen_range(5..=15),
            snapshot_interval_entries: rng.gen_range(3..=40),
            propose_every_ms: rng.gen_range(10..=300),
            nemesis_mean_ms: rng.gen_range(300..=3_000),
            weights: FAULTS
                .iter()
                .map(|(fault, weight)| (*fault, if rng.gen_bool(0.2) { 0 } else { *weight }))
                .collect(),
        }
    }
}

fn address(node: u64) -> String {
    format!("10.0.0.{node}:{PORT}")
}

fn ip(node: u64) -> IpAddr {
    format!("10.0.0.{node}").parse().expect("valid IP")
}

/// What the scenario shares with every controller incarnation.
#[derive(Debug)]
struct Shared {
    trace: Trace,
    check: Mutex<QuorumCheck>,
    params: Params,
    voters: BTreeMap<u64, String>,
    /// Each controller's file system and directory (kept across incarnations).
    disks: BTreeMap<u64, (CrashFs, PathBuf)>,
    /// The running incarnation of each controller.
    quorums: Mutex<BTreeMap<u64, Quorum>>,
    next_value: AtomicU64,
    proposing: AtomicBool,
    /// Simulated ms at which the leader was crashed, paused or isolated, and failover times.
    leader_lost_ms: Mutex<Option<u64>>,
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
    shared.trace.event(format!(
        "controller {node} starting: term {} commit {} snapshot {:?} entries {}",
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
    config.election_ticks = shared.params.election_ticks;
    config.snapshot_interval_entries = shared.params.snapshot_interval_entries;
    let observer = {
        let shared = Arc::clone(&shared);
        Arc::new(move |entry: &AppliedEntry| {
            let hash = fnv1a(FNV_BASIS, &entry.data);
            shared.check.lock().expect("check lock").applied(node, entry.index, entry.term, hash, entry.from_snapshot);
        })
    };
    let quorum = match Quorum::start(config, store, recovered, listener, None, Some(observer), std::future::pending()) {
        Ok(quorum) => quorum,
        Err(error) => {
            shared.fail(format!("controller {node} cannot start: {error}"));
            return;
        }
    };
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
                    if let Some(lost_ms) = shared.leader_lost_ms.lock().expect("lock").take() {
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

struct Nemesis {
    handle: Handle,
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

    fn note_if_leader(&self, node: u64) {
        if self.shared.leader() == Some(node) {
            *self.shared.leader_lost_ms.lock().expect("lock") = Some(self.shared.trace.now_ms());
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
        self.shared.trace.event(format!("nemesis: {text} for {length} ms"));
        for (from, to) in &links {
            self.clog(*from, *to, true);
        }
        madsim::time::sleep(Duration::from_millis(length)).await;
        for (from, to) in &links {
            self.clog(*from, *to, false);
        }
        self.shared.trace.event("nemesis: network healed");
    }

    async fn run(mut self, until_ms: u64) -> BTreeMap<&'static str, u64> {
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
                    let length = thread_rng().gen_range(100..=5_000);
                    self.note_if_leader(node);
                    self.shared.trace.event(format!("nemesis: pause controller {node} for {length} ms"));
                    self.handle.pause(self.nodes[&node].id());
                    madsim::time::sleep(Duration::from_millis(length)).await;
                    self.handle.resume(self.nodes[&node].id());
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
            }
        }
        self.shared.trace.event("nemesis: stopped, every fault healed");
        self.counts
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

/// Runs the scenario; called inside a fresh madsim runtime that allows raft-engine's threads.
pub async fn run(trace: Trace, options: &RunOptions) -> ScenarioOutcome {
    let handle = Handle::current();
    let params = Params::draw(options);
    trace.event(format!("params: {params:?}"));
    let root = std::env::temp_dir().join(format!("weir-sim-{}-{}", std::process::id(), options.seed));
    let _ = std::fs::remove_dir_all(&root);
    let voters: BTreeMap<u64, String> = (1..=params.voters).map(|id| (id, address(id))).collect();
    let disks = (1..=params.voters).map(|id| (id, (CrashFs::new(), root.join(format!("controller-{id}"))))).collect();
    let shared = Arc::new(Shared {
        trace: trace.clone(),
        check: Mutex::new(QuorumCheck::new()),
        params: params.clone(),
        voters,
        disks,
        quorums: Mutex::new(BTreeMap::new()),
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
            .ip(ip(id))
            .init(move || incarnation(id, Arc::clone(&shared)))
            .build();
        let _ = nodes.insert(id, node);
    }
    let node_ids: Vec<_> = nodes.values().map(NodeHandle::id).collect();
    let safety_end = trace.now_ms() + params.safety_ms;
    let nemesis = Nemesis { handle: handle.clone(), nodes, shared: Arc::clone(&shared), counts: BTreeMap::new() };
    let counts = nemesis.run(safety_end).await;
    trace.event("liveness phase: faults stopped");
    let mut failures = Vec::new();
    let convergence = converge(&shared).await;
    if let Err(error) = &convergence {
        failures.push(error.clone());
    }
    let (violations, terms, highest) = {
        let check = shared.check.lock().expect("check lock");
        (check.violations(), check.terms_led(), check.highest_applied())
    };
    failures.extend(violations);
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
        "voters {} terms-led {terms} highest-index {highest} values {} failovers {failover_text} convergence {:?} faults {counts:?}",
        params.voters,
        shared.next_value.load(Ordering::SeqCst) - 1,
        convergence.as_ref().ok()
    );
    trace.event(format!("summary: {summary}"));
    for failure in &failures {
        trace.event(format!("FAILURE {failure}"));
    }
    // Stop the controllers (their engines close on their threads) before removing the files.
    for id in node_ids {
        handle.kill(id);
    }
    madsim::time::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_dir_all(&root);
    ScenarioOutcome { failures, summary }
}
