//! `single_node_durability`: one weir node on a `SimDisk`, a workload of acks=all and acks=1
//! producers and assigned consumers, and a nemesis.
//!
//! # Shape (drawn per seed: swarm testing)
//!
//! Partitions 1-4, two or three workload processes (each on its own simulated host; the third,
//! when present, produces with acks=1), segment size 1-8 KiB, optional time-based rolls,
//! optional topic retention by size (a few segments) and by time (seconds), how often processes
//! DeleteRecords (never in some seeds), disk and fsync latency, think time, and the nemesis's
//! pace and mix of faults.
//!
//! # Faults (safety phase)
//!
//! * **power-fail crash**: `disk.freeze()` then `kill` in the same instant (so destructors
//!   cannot flush), some downtime, `disk.crash()` (unsynced bytes dropped, appends torn at
//!   random), restart;
//! * **clean restart**: Ctrl-C, the node shuts down (flushing), restart;
//! * **pause** of the node (a stop-the-world stall);
//! * **partition** of the node from one client or from all (new connects refused, bytes held);
//! * **disk full** window: capacity set just above what is used, then restored;
//! * **slow disk** window: large latency bounds on every operation and on fsync;
//! * **clock** jumps and drift changes of the node's wall clock;
//! * **buggify** window: `rt::buggify()` points fire (dropped responses, slow fsync) and
//!   madsim delays messages.
//!
//! In about two seeds of three a second topic is compacted (`cleanup.policy=compact`, small
//! segments, a cleaner every 50-1000 ms) and one more process writes keyed records and
//! tombstones to it and re-reads it (see [`super::compacted`]). Half the power failures are
//! then timed (`SimDisk::stall_during`) to strike 0-8 disk operations into a cleaning pass's
//! copy or swap (the summary counts `crash-mid-clean`).
//!
//! # Checks
//!
//! * Continuously: the node never restarts unless the nemesis restarted it (a `fatal` from an
//!   unexpected fsync failure or corrupt state is a failure); it never fails to start on a disk
//!   with free space; client invariants from the workload (no out-of-range positions, no
//!   corrupt records, no hung sends).
//! * Liveness: after the faults stop, a produce to every partition must be acknowledged within
//!   [`CONVERGENCE_MS`], and final reads must reach every partition's high watermark within
//!   [`FINAL_READS_MS`] ("no convergence" otherwise).
//! * History: `checker::check_with` finds no anomaly (with `retention` set when the topic has
//!   retention, so that log start offsets may rise beyond what DeleteRecords asked).
//! * Compaction (when drawn): the checks of [`super::compacted`]: records keep their offsets,
//!   nothing is read twice or invented, the latest value of every key survives.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::producer::Acks;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::JoinHandle;
use server::config::{NodeConfig, Settings};

use super::compacted::{self, CompactionConfig, COMPACTED_TOPIC};
use super::workload::{self, Recorder, TopicShape, WorkloadConfig};
use super::{RunOptions, ScenarioOutcome};
use crate::checker;
use crate::clock::SimClock;
use crate::disk::{DiskFaults, SimDisk};
use crate::trace::Trace;

/// The node's address.
const SERVER_IP: &str = "10.0.0.1";
/// The Kafka port.
const PORT: u16 = 9092;
pub use super::workload::{CONVERGENCE_MS, FINAL_READS_MS};
/// Workload processes must finish their last operation within this after being told to stop.
pub const STOP_MS: u64 = 60_000;

/// The nemesis's faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Crash,
    CleanRestart,
    Pause,
    Partition,
    DiskFull,
    SlowDisk,
    Clock,
    Buggify,
}

const FAULTS: [Fault; 8] = [
    Fault::Crash,
    Fault::CleanRestart,
    Fault::Pause,
    Fault::Partition,
    Fault::DiskFull,
    Fault::SlowDisk,
    Fault::Clock,
    Fault::Buggify,
];

/// The seed's shape.
#[derive(Debug, Clone)]
struct Params {
    partitions: u32,
    acks_all_processes: u64,
    acks_one_process: bool,
    safety_ms: u64,
    segment_bytes: u64,
    roll_ms: Option<u64>,
    retention_check_ms: u64,
    /// Topic `retention.bytes`, if set.
    retention_bytes: Option<u64>,
    /// Topic `retention.ms`, if set.
    retention_ms: Option<u64>,
    reserve_bytes: u64,
    disk_latency_us: u64,
    fsync_latency_us: u64,
    clock_offset_ms: i64,
    drift_ppm: i64,
    nemesis_mean_ms: u64,
    weights: Vec<(Fault, u32)>,
    workload: WorkloadConfig,
    /// The compacted topic's workload, in some seeds.
    compaction: Option<CompactionConfig>,
}

impl Params {
    fn draw(options: &RunOptions) -> Params {
        let mut rng = thread_rng();
        let partitions = rng.gen_range(1..=4);
        let segment_bytes = rng.gen_range(1_024..=8_192);
        let retention_bytes = rng.gen_bool(0.3).then(|| segment_bytes * rng.gen_range(2..=6));
        let retention_ms = rng.gen_bool(0.3).then(|| rng.gen_range(3_000..=30_000));
        // Each fault type is off in about a fifth of the seeds, so the mix varies.
        let weights =
            FAULTS.iter().map(|fault| (*fault, if rng.gen_bool(0.2) { 0 } else { rng.gen_range(1..=10) })).collect();
        Params {
            partitions,
            acks_all_processes: rng.gen_range(2..=3),
            acks_one_process: rng.gen_bool(0.7),
            safety_ms: options.safety_ms.unwrap_or_else(|| rng.gen_range(super::SAFETY_MS_MIN..=super::SAFETY_MS_MAX)),
            segment_bytes,
            roll_ms: rng.gen_bool(0.3).then(|| rng.gen_range(500..=10_000)),
            retention_check_ms: rng.gen_range(100..=2_000),
            retention_bytes,
            retention_ms,
            reserve_bytes: if rng.gen_bool(0.5) { 0 } else { rng.gen_range(1..=16_384) },
            disk_latency_us: rng.gen_range(0..=200),
            fsync_latency_us: rng.gen_range(0..=5_000),
            clock_offset_ms: rng.gen_range(-60_000..=60_000),
            drift_ppm: rng.gen_range(-500..=500),
            nemesis_mean_ms: rng.gen_range(300..=3_000),
            weights,
            workload: WorkloadConfig::draw(format!("{SERVER_IP}:{PORT}"), partitions, true),
            compaction: rng.gen_bool(0.65).then(|| CompactionConfig::draw(format!("{SERVER_IP}:{PORT}"))),
        }
    }

    fn settings(&self) -> Settings {
        let mut flags: Vec<String> = [
            ("node.id", "1".to_owned()),
            ("listeners", format!("PLAINTEXT://0.0.0.0:{PORT}")),
            ("advertised.listeners", format!("PLAINTEXT://{SERVER_IP}:{PORT}")),
            ("log.dirs", "/var/lib/weir".to_owned()),
            ("log.segment.bytes", self.segment_bytes.to_string()),
            ("log.retention.check.interval.ms", self.retention_check_ms.to_string()),
            ("log.disk.reserve.bytes", self.reserve_bytes.to_string()),
            ("auto.create.topics.enable", "false".to_owned()),
        ]
        .into_iter()
        .flat_map(|(name, value)| [format!("--{}", name.replace('.', "-")), value])
        .collect();
        if let Some(compaction) = &self.compaction {
            flags.extend(["--log-cleaner-backoff-ms".to_owned(), compaction.cleaner_backoff_ms.to_string()]);
        }
        if let Some(roll_ms) = self.roll_ms {
            flags.extend(["--log-roll-ms".to_owned(), roll_ms.to_string()]);
        }
        let mut settings = Settings::default();
        settings.load_flags(&flags).expect("the simulator's broker settings are valid");
        settings
    }

    /// The topic's configs.
    fn topic_configs(&self) -> Vec<(String, String)> {
        let mut configs = Vec::new();
        if let Some(bytes) = self.retention_bytes {
            configs.push(("retention.bytes".to_owned(), bytes.to_string()));
        }
        if let Some(ms) = self.retention_ms {
            configs.push(("retention.ms".to_owned(), ms.to_string()));
        }
        configs
    }

    /// Whether the broker may delete records by itself.
    fn retention(&self) -> bool {
        self.retention_bytes.is_some() || self.retention_ms.is_some()
    }
}

/// The node and what survives its restarts.
#[derive(Debug, Clone)]
struct Server {
    disk: SimDisk,
    clock: SimClock,
    recorder: Arc<Recorder>,
    settings: Settings,
    /// Incarnations started.
    incarnations: Arc<AtomicU64>,
    /// Restarts the nemesis asked for and the node has not yet begun.
    restarts_expected: Arc<AtomicU64>,
    /// Set by an incarnation when `run_node` returned after a clean shutdown.
    stopped_cleanly: Arc<AtomicBool>,
}

impl Server {
    async fn incarnation(self) {
        let incarnation = self.incarnations.fetch_add(1, Ordering::SeqCst);
        let expected = self.restarts_expected.load(Ordering::SeqCst);
        if incarnation > 0 {
            if expected == 0 {
                self.recorder
                    .fail(format!("node restarted by itself (incarnation {incarnation}): a fatal error or panic"));
            } else {
                let _ = self.restarts_expected.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.recorder.trace.event(format!(
            "node incarnation {incarnation} starting (disk {} bytes used, clock offset {} ms)",
            self.disk.used_bytes(),
            self.clock.offset_ms()
        ));
        loop {
            let config = NodeConfig::from_settings(&self.settings).expect("valid node config");
            let disk: storage::SharedDisk = Arc::new(self.disk.clone());
            let clock: rt::time::SharedClock = Arc::new(self.clock.clone());
            match server::run_node(config, disk, clock, rt::signal::shutdown()).await {
                Ok(()) => {
                    self.recorder.trace.event(format!("node incarnation {incarnation} shut down cleanly"));
                    self.stopped_cleanly.store(true, Ordering::SeqCst);
                    return;
                }
                Err(error) => {
                    self.recorder.trace.event(format!("node incarnation {incarnation} failed to start: {error}"));
                    if self.disk.capacity().is_none() {
                        self.recorder.fail(format!("node failed to start on a disk with free space: {error}"));
                    }
                    madsim::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Faults currently applied, so that the end of the safety phase can heal everything.
#[derive(Debug, Default)]
struct Windows {
    disk_full: AtomicBool,
    slow_disk: AtomicBool,
    buggify: AtomicBool,
    partitioned: AtomicBool,
}

struct Nemesis {
    handle: Handle,
    node: NodeHandle,
    clients: Vec<NodeHandle>,
    server: Server,
    params: Arc<Params>,
    trace: Trace,
    windows: Arc<Windows>,
    counts: BTreeMap<&'static str, u64>,
}

impl Nemesis {
    fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    async fn run(mut self, until_ms: u64) -> BTreeMap<&'static str, u64> {
        let total: u32 = self.params.weights.iter().map(|(_, weight)| weight).sum();
        let mut running: Vec<JoinHandle<()>> = Vec::new();
        if total == 0 {
            self.trace.event("nemesis: every fault is off for this seed");
        }
        loop {
            let pause = thread_rng().gen_range(0..=2 * self.params.nemesis_mean_ms);
            madsim::time::sleep(Duration::from_millis(pause)).await;
            if self.trace.now_ms() >= until_ms || total == 0 {
                break;
            }
            let fault = super::pick_weighted(&self.params.weights).expect("some weight is not zero");
            match fault {
                Fault::Crash if self.params.compaction.is_some() && thread_rng().gen_bool(0.5) => {
                    self.crash_mid_clean().await;
                }
                Fault::Crash => self.crash().await,
                Fault::CleanRestart => self.clean_restart().await,
                Fault::Pause => {
                    let length = thread_rng().gen_range(50..=3_000);
                    self.trace.event(format!("nemesis: pause node for {length} ms"));
                    self.handle.pause(self.node.id());
                    madsim::time::sleep(Duration::from_millis(length)).await;
                    self.handle.resume(self.node.id());
                    self.trace.event("nemesis: resume node");
                    self.count("pause");
                }
                Fault::Clock => {
                    let clock = &self.server.clock;
                    if thread_rng().gen_bool(0.7) {
                        // Stay within 30 minutes of true time, inside message.timestamp.after.max.ms.
                        let target = thread_rng().gen_range(-1_800_000..=1_800_000i64);
                        let delta = (target - clock.offset_ms()) / thread_rng().gen_range(1..=20);
                        clock.jump(delta);
                        self.trace
                            .event(format!("nemesis: clock jump {delta} ms (offset now {} ms)", clock.offset_ms()));
                    } else {
                        let drift = thread_rng().gen_range(-1_000..=1_000);
                        clock.set_drift_ppm(drift);
                        self.trace.event(format!("nemesis: clock drift {drift} ppm"));
                    }
                    self.count("clock");
                }
                Fault::Partition => {
                    if !self.windows.partitioned.swap(true, Ordering::SeqCst) {
                        let length = thread_rng().gen_range(200..=5_000);
                        let victims: Vec<NodeHandle> = if thread_rng().gen_bool(0.3) || self.clients.is_empty() {
                            self.clients.clone()
                        } else {
                            vec![self.clients[thread_rng().gen_range(0..self.clients.len())].clone()]
                        };
                        let node = self.node.id();
                        let ids: Vec<_> = victims.iter().map(NodeHandle::id).collect();
                        self.trace.event(format!("nemesis: partition node from clients {ids:?} for {length} ms"));
                        let net = NetSim::current();
                        for id in &ids {
                            net.clog_link(node, *id);
                            net.clog_link(*id, node);
                        }
                        let (windows, trace) = (Arc::clone(&self.windows), self.trace.clone());
                        running.push(madsim::task::spawn(async move {
                            madsim::time::sleep(Duration::from_millis(length)).await;
                            let net = NetSim::current();
                            for id in &ids {
                                net.unclog_link(node, *id);
                                net.unclog_link(*id, node);
                            }
                            trace.event("nemesis: partition healed");
                            windows.partitioned.store(false, Ordering::SeqCst);
                        }));
                        self.count("partition");
                    }
                }
                Fault::DiskFull => {
                    if !self.windows.disk_full.swap(true, Ordering::SeqCst) {
                        let length = thread_rng().gen_range(200..=5_000);
                        let used = self.server.disk.used_bytes();
                        let room = thread_rng().gen_range(0..=8_192);
                        self.server.disk.set_capacity(Some(used + room));
                        self.trace.event(format!("nemesis: disk full ({used} used + {room} free) for {length} ms"));
                        let (windows, trace, disk) =
                            (Arc::clone(&self.windows), self.trace.clone(), self.server.disk.clone());
                        running.push(madsim::task::spawn(async move {
                            madsim::time::sleep(Duration::from_millis(length)).await;
                            disk.set_capacity(None);
                            trace.event("nemesis: disk space restored");
                            windows.disk_full.store(false, Ordering::SeqCst);
                        }));
                        self.count("disk-full");
                    }
                }
                Fault::SlowDisk => {
                    if !self.windows.slow_disk.swap(true, Ordering::SeqCst) {
                        let length = thread_rng().gen_range(200..=5_000);
                        let latency_us = thread_rng().gen_range(1_000..=50_000);
                        let fsync_us = thread_rng().gen_range(10_000..=500_000);
                        self.server.disk.set_latency(latency_us, fsync_us);
                        self.trace.event(format!(
                            "nemesis: slow disk ({latency_us} us, fsync {fsync_us} us) for {length} ms"
                        ));
                        let (windows, trace, disk, params) = (
                            Arc::clone(&self.windows),
                            self.trace.clone(),
                            self.server.disk.clone(),
                            Arc::clone(&self.params),
                        );
                        running.push(madsim::task::spawn(async move {
                            madsim::time::sleep(Duration::from_millis(length)).await;
                            disk.set_latency(params.disk_latency_us, params.fsync_latency_us);
                            trace.event("nemesis: disk speed restored");
                            windows.slow_disk.store(false, Ordering::SeqCst);
                        }));
                        self.count("slow-disk");
                    }
                }
                Fault::Buggify => {
                    if !self.windows.buggify.swap(true, Ordering::SeqCst) {
                        let length = thread_rng().gen_range(100..=2_000);
                        madsim::buggify::enable();
                        self.trace.event(format!("nemesis: buggify on for {length} ms"));
                        let (windows, trace) = (Arc::clone(&self.windows), self.trace.clone());
                        running.push(madsim::task::spawn(async move {
                            madsim::time::sleep(Duration::from_millis(length)).await;
                            madsim::buggify::disable();
                            trace.event("nemesis: buggify off");
                            windows.buggify.store(false, Ordering::SeqCst);
                        }));
                        self.count("buggify");
                    }
                }
            }
        }
        for window in running {
            let _ = window.await;
        }
        self.trace.event("nemesis: stopped, every fault healed");
        self.counts
    }

    /// A power failure a few disk operations into the log cleaner's next copy or swap (or a
    /// plain one if no pass starts within 5 s).
    async fn crash_mid_clean(&mut self) {
        let after = thread_rng().gen_range(0..=8);
        self.server.disk.stall_during(".cleaned", after);
        let deadline = self.trace.now_ms() + 5_000;
        while !self.server.disk.is_stalled() && self.trace.now_ms() < deadline {
            madsim::time::sleep(Duration::from_millis(1)).await;
        }
        self.server.disk.disarm_stall();
        if self.server.disk.is_stalled() {
            self.trace.event(format!("nemesis: power failure {after} disk operations into a cleaning pass"));
            self.count("crash-mid-clean");
        }
        self.crash().await;
    }

    async fn crash(&mut self) {
        let down_ms = thread_rng().gen_range(1..=2_000);
        // Freeze and kill in the same instant: from here nothing the node does reaches the disk.
        self.server.disk.freeze();
        self.handle.kill(self.node.id());
        self.trace.event(format!("nemesis: power failure, node down for {down_ms} ms"));
        // The killed node's futures (and their destructors) run on the next pass, frozen.
        madsim::time::sleep(Duration::from_millis(down_ms)).await;
        let lost = self.server.disk.crash();
        self.trace.event(format!("nemesis: crash lost {} bytes; restarting node", lost.lost_bytes));
        for change in &lost.changes {
            self.trace.event(format!("nemesis: crash: {change}"));
        }
        let _ = self.server.restarts_expected.fetch_add(1, Ordering::SeqCst);
        self.handle.restart(self.node.id());
        self.count("crash");
    }

    async fn clean_restart(&mut self) {
        self.trace.event("nemesis: ctrl-c to node");
        self.server.stopped_cleanly.store(false, Ordering::SeqCst);
        self.handle.send_ctrl_c(self.node.id());
        // A node that has not yet installed its Ctrl-C handler (still recovering) is killed by
        // the signal instead, as a process would be: that is a crash without power loss.
        let deadline = self.trace.now_ms() + 10_000;
        let node = self.node.id();
        let done =
            |nemesis: &Self| nemesis.server.stopped_cleanly.load(Ordering::SeqCst) || nemesis.handle.is_exit(node);
        while !done(self) && self.trace.now_ms() < deadline {
            madsim::time::sleep(Duration::from_millis(10)).await;
        }
        if !done(self) {
            self.server.recorder.fail("node did not shut down within 10 s of ctrl-c");
        } else if !self.server.stopped_cleanly.load(Ordering::SeqCst) {
            self.trace.event("nemesis: ctrl-c killed the node before it served");
        }
        // Kill what is left (connection tasks) and start a new incarnation on the same disk.
        self.handle.kill(self.node.id());
        madsim::time::sleep(Duration::from_millis(1)).await;
        let _ = self.server.restarts_expected.fetch_add(1, Ordering::SeqCst);
        self.handle.restart(self.node.id());
        self.trace.event("nemesis: node restarted after clean shutdown");
        self.count("clean-restart");
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid IP literal")
}

/// Runs the scenario; called inside a fresh madsim runtime.
pub async fn run(trace: Trace, options: &RunOptions) -> ScenarioOutcome {
    let handle = Handle::current();
    let params = Arc::new(Params::draw(options));
    let weights: Vec<String> = params.weights.iter().map(|(fault, weight)| format!("{fault:?}={weight}")).collect();
    trace.event(format!(
        "params: partitions {} processes {}+{} safety {} ms segment {} B roll {:?} retention-check {} ms retention {:?} B {:?} ms reserve {} B disk {} us fsync {} us clock {} ms {} ppm nemesis every ~{} ms [{}] {:?} compaction {:?}",
        params.partitions,
        params.acks_all_processes,
        u8::from(params.acks_one_process),
        params.safety_ms,
        params.segment_bytes,
        params.roll_ms,
        params.retention_check_ms,
        params.retention_bytes,
        params.retention_ms,
        params.reserve_bytes,
        params.disk_latency_us,
        params.fsync_latency_us,
        params.clock_offset_ms,
        params.drift_ppm,
        params.nemesis_mean_ms,
        weights.join(" "),
        params.workload,
        params.compaction,
    ));
    let recorder = Recorder::new(trace.clone());
    let disk = SimDisk::new(DiskFaults {
        capacity_bytes: None,
        latency_us_max: params.disk_latency_us,
        fsync_latency_us_max: params.fsync_latency_us,
    });
    let server = Server {
        disk: disk.clone(),
        clock: SimClock::new(params.clock_offset_ms, params.drift_ppm),
        recorder: Arc::clone(&recorder),
        settings: params.settings(),
        incarnations: Arc::new(AtomicU64::new(0)),
        restarts_expected: Arc::new(AtomicU64::new(0)),
        stopped_cleanly: Arc::new(AtomicBool::new(false)),
    };
    let node = {
        let server = server.clone();
        handle
            .create_node()
            .name("weir-1")
            .ip(ip(SERVER_IP))
            .init(move || server.clone().incarnation())
            .restart_on_panic_matching("weir fatal")
            .build()
    };

    // Setup, before any fault.
    let setup = handle.create_node().name("setup").ip(ip("10.0.9.1")).build();
    let created = {
        let (recorder, params) = (Arc::clone(&recorder), Arc::clone(&params));
        setup
            .spawn(async move { workload::create_topic(&recorder, &params.workload, 1, params.topic_configs()).await })
            .await
    };
    let mut failures = Vec::new();
    match created {
        Ok(Ok(())) => {}
        Ok(Err(error)) => failures.push(error),
        Err(error) => failures.push(format!("setup task failed: {error}")),
    }
    if let Some(compaction) = params.compaction.clone() {
        let recorder = Arc::clone(&recorder);
        let shape = TopicShape { name: COMPACTED_TOPIC, partitions: 1, replication_factor: 1 };
        let created = setup
            .spawn(async move {
                let bootstrap = vec![compaction.bootstrap.clone()];
                workload::create_named_topic(&recorder, bootstrap, shape, compaction.topic_configs()).await
            })
            .await;
        match created {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(error),
            Err(error) => failures.push(format!("setup task failed: {error}")),
        }
    }
    if !failures.is_empty() {
        return ScenarioOutcome { failures, summary: String::new() };
    }

    // Safety phase: the workload under faults.
    let stop = Arc::new(AtomicBool::new(false));
    let process_count = params.acks_all_processes + u64::from(params.acks_one_process);
    let mut clients = Vec::new();
    let mut workers = Vec::new();
    for id in 0..process_count {
        let acks = if id < params.acks_all_processes { Acks::All } else { Acks::Leader };
        let client_node =
            handle.create_node().name(format!("client-{id}")).ip(ip(&format!("10.0.1.{}", id + 1))).build();
        let (recorder, workload, stop) = (Arc::clone(&recorder), params.workload.clone(), Arc::clone(&stop));
        workers.push(client_node.spawn(workload::run_process(id, acks, recorder, workload, stop)));
        clients.push(client_node);
    }
    let compacted_history = compacted::SharedHistory::default();
    if let Some(compaction) = params.compaction.clone() {
        let client_node = handle.create_node().name("compacted").ip(ip("10.0.1.50")).build();
        let (recorder, history, stop) = (Arc::clone(&recorder), Arc::clone(&compacted_history), Arc::clone(&stop));
        workers.push(client_node.spawn(compacted::run(recorder, history, compaction, stop)));
        clients.push(client_node);
    }
    let safety_end = trace.now_ms() + params.safety_ms;
    let nemesis = Nemesis {
        handle: handle.clone(),
        node: node.clone(),
        clients: clients.clone(),
        server: server.clone(),
        params: Arc::clone(&params),
        trace: trace.clone(),
        windows: Arc::new(Windows::default()),
        counts: BTreeMap::new(),
    };
    let fault_counts = nemesis.run(safety_end).await;

    // Liveness phase: faults have stopped; the workload stops, then the node must converge.
    trace.event("liveness phase: faults stopped");
    stop.store(true, Ordering::SeqCst);
    for (id, worker) in workers.into_iter().enumerate() {
        match madsim::time::timeout(Duration::from_millis(STOP_MS), worker).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("workload process {id} failed: {error}")),
            Err(_) => failures
                .push(format!("workload process {id} did not finish its operation within {STOP_MS} ms of the stop")),
        }
    }
    let checker_node = handle.create_node().name("checker").ip(ip("10.0.2.1")).build();
    let liveness = {
        let (recorder, workload) = (Arc::clone(&recorder), params.workload.clone());
        checker_node
            .spawn(async move {
                workload::probe(Arc::clone(&recorder), workload.clone()).await?;
                workload::final_reads(recorder, workload).await
            })
            .await
    };
    match liveness {
        Ok(Ok(())) => {}
        Ok(Err(error)) => failures.push(error),
        Err(error) => failures.push(format!("liveness task failed: {error}")),
    }
    let mut compaction_summary = String::new();
    if let Some(compaction) = params.compaction.clone() {
        let (recorder, history) = (Arc::clone(&recorder), Arc::clone(&compacted_history));
        match checker_node.spawn(compacted::final_check(recorder, history, compaction)).await {
            Ok(Ok(summary)) => compaction_summary = format!(" {summary}"),
            Ok(Err(error)) => failures.push(error),
            Err(error) => failures.push(format!("compaction check task failed: {error}")),
        }
    }

    // History checks.
    let (report, outcomes) =
        workload::check_history(&recorder, checker::CheckOptions { retention: params.retention() }, &mut failures);
    let summary = format!(
        "ops {outcomes:?} acknowledged {} deleted-unread {} log-start {:?} offsets-observed {} faults {fault_counts:?} incarnations {} disk-syncs {}{compaction_summary}",
        report.acknowledged,
        report.trimmed,
        report.trim_points.values().collect::<Vec<_>>(),
        report.observed_offsets,
        server.incarnations.load(Ordering::SeqCst),
        disk.syncs()
    );
    trace.event(format!("summary: {summary}"));
    for failure in &failures {
        trace.event(format!("FAILURE {failure}"));
    }
    ScenarioOutcome { failures, summary }
}
