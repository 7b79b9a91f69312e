//! `weir dev-cluster`: a cluster of real `weir server` processes on 127.0.0.1, for trying
//! replication, failover and client behaviour on one machine.
//!
//! # Layout
//!
//! Everything lives under `--dir D`:
//!
//! * `D/node-<id>/` is node `id`'s `log.dirs`, and also holds
//!   * `node.toml`, its config, rewritten at every start of the cluster, and
//!   * `weir.log`, its stdout and stderr, appended across starts and restarts;
//! * `D/cluster.json` lists the running nodes, for scripts and for `dev-cluster restart`:
//!   `{"nodes": [{"id": 1, "pid": 4242, "kafka": "127.0.0.1:29092", "controller": "127.0.0.1:29093"}, ...]}`,
//!   where `controller` is `null` for a node that is not a voter;
//! * `D/cluster.lock` serialises the writers of `cluster.json` (the supervisor and restarts).
//!
//! Node `i` (ids `1..=N`) serves Kafka on `base + 2(i-1)` and, if it is a voter, its controller
//! listener on the next port. The voters are the first 1, 3 or 5 nodes: the largest odd number
//! not above `min(N, 5)`.
//!
//! # Design
//!
//! The supervisor (`weir dev-cluster`) starts the nodes, writes `cluster.json` (temporary file,
//! then rename, so readers never see half of it), waits until every node serves, and then only
//! reaps and logs exited nodes until Ctrl-C or SIGTERM. `weir dev-cluster restart` replaces one
//! node's process and pid in `cluster.json`; the supervisor does not restart anything itself, so
//! a node's exit is logged, never treated as a failure. At shutdown the supervisor reads
//! `cluster.json` again and stops whatever it lists then: SIGTERM, at most [`NODE_STOP_TIMEOUT`],
//! then SIGKILL.
//!
//! Signals go through `kill(1)` (or `Child::kill` for SIGKILL to a child), because the
//! workspace forbids `unsafe` and this crate's `rustix` is built without its `process` feature.
//! Before signalling a pid read from `cluster.json`, the supervisor and `restart` check through
//! `/proc/<pid>/cmdline` that it is still a `weir server` of this node's config, so a pid the
//! OS reused for another process is never signalled. Nodes run in their own process group, so
//! Ctrl-C in the terminal reaches only the supervisor, which then stops them in order.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use protocol::ids::NodeId;
use serde::{Deserialize, Serialize};

use crate::config::{NodeConfig, Settings, CONTROLLER_VOTERS_MAX};

/// Most nodes a dev cluster may have; its ports must also fit below 65536.
pub const DEV_CLUSTER_NODES_MAX: u32 = 32;
/// Most controller voters a dev cluster gets: five survive two failures, which is as many as a
/// laptop experiment needs.
pub const DEV_CLUSTER_VOTERS_MAX: u32 = 5;
const _: () = assert!(DEV_CLUSTER_VOTERS_MAX % 2 == 1 && DEV_CLUSTER_VOTERS_MAX <= CONTROLLER_VOTERS_MAX);
const _: () = assert!(DEV_CLUSTER_VOTERS_MAX <= DEV_CLUSTER_NODES_MAX);
const _: () = assert!(NODE_STOP_TIMEOUT.as_secs() == 10, "the --signal help text says 10 s");
/// How long a node may take to exit after SIGTERM before it gets SIGKILL.
pub const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node may take to vanish after SIGKILL before stopping reports a failure.
pub const NODE_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take from spawn until its Kafka listener accepts connections.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between probes of a process or port.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often the supervisor looks for exited nodes.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on one TCP connect of a readiness probe; loopback answers at once or refuses.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Bytes of a node's log quoted when it fails to start.
const LOG_TAIL_BYTES: u64 = 4_000;
/// The state file: which pid serves which node.
pub const CLUSTER_FILE: &str = "cluster.json";
const CLUSTER_LOCK_FILE: &str = "cluster.lock";
const NODE_CONFIG_FILE: &str = "node.toml";
const NODE_LOG_FILE: &str = "weir.log";
const LOOPBACK: &str = "127.0.0.1";
/// `WEIR_*` variables that would override a node's own `node.toml` (environment beats file),
/// so nodes never inherit them. Other `WEIR_*` settings reach every node, which makes
/// `WEIR_NUM_PARTITIONS=3 weir dev-cluster` a cluster-wide setting.
const NODE_ENVIRONMENT_SCRUBBED: &[&str] = &[
    "WEIR_CONFIG",
    "WEIR_NODE_ID",
    "WEIR_LOG_DIRS",
    "WEIR_LISTENERS",
    "WEIR_ADVERTISED_LISTENERS",
    "WEIR_PROCESS_ROLES",
    "WEIR_CONTROLLER_QUORUM_VOTERS",
    "WEIR_CONTROLLER_LISTENER_NAMES",
];

/// `D/cluster.json`: the nodes of a running dev cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// One entry per node, by ascending id.
    pub nodes: Vec<ClusterNode>,
}

/// One node of `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// `node.id`.
    pub id: i32,
    /// The process serving the node now; `dev-cluster restart` replaces it.
    pub pid: u32,
    /// The Kafka listener, `127.0.0.1:PORT`: what clients bootstrap from.
    pub kafka: String,
    /// The controller listener, `127.0.0.1:PORT`, for a voter; `null` for a broker-only node.
    pub controller: Option<String>,
}

/// Which signal `dev-cluster restart` stops the node with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StopSignal {
    /// SIGTERM: a graceful shutdown, with SIGKILL if it takes over 10 s (`NODE_STOP_TIMEOUT`).
    Term,
    /// SIGKILL: a crash, with no chance to flush or clean up.
    Kill,
}

impl StopSignal {
    fn kill_flag(self) -> &'static str {
        match self {
            StopSignal::Term => "-TERM",
            StopSignal::Kill => "-KILL",
        }
    }
}

/// What `weir dev-cluster` starts.
#[derive(Debug, Clone)]
pub struct DevClusterOptions {
    /// Nodes, with ids `1..=nodes`.
    ///
    /// Range: 1..=[`DEV_CLUSTER_NODES_MAX`].
    pub nodes: u32,
    /// Directory holding every node's data, config and log, and `cluster.json`.
    pub dir: PathBuf,
    /// Kafka port of node 1.
    ///
    /// Range: 1..; every node's ports must stay below 65536.
    pub base_port: u16,
}

/// Where one node of the cluster lives and listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// `node.id`.
    pub node_id: NodeId,
    /// Kafka listener port.
    pub kafka_port: u16,
    /// Controller listener port; `Some` exactly for voters.
    pub controller_port: Option<u16>,
}

/// Voters of a `nodes`-node dev cluster: the largest odd number not above
/// `min(nodes, DEV_CLUSTER_VOTERS_MAX)`. An even count would raise the majority without
/// surviving one more failure.
pub fn voter_count(nodes: u32) -> u32 {
    let capped = nodes.clamp(1, DEV_CLUSTER_VOTERS_MAX);
    if capped % 2 == 1 {
        capped
    } else {
        capped - 1
    }
}

/// Ids and ports of every node.
///
/// # Errors
/// A node count out of range, or ports that do not fit below 65536.
pub fn plan(nodes: u32, base_port: u16) -> anyhow::Result<Vec<NodePlan>> {
    if !(1..=DEV_CLUSTER_NODES_MAX).contains(&nodes) {
        bail!("--nodes {nodes} is out of range: a dev cluster has 1 to {DEV_CLUSTER_NODES_MAX} nodes");
    }
    let last_port = u32::from(base_port) + 2 * nodes - 1;
    if base_port == 0 || last_port > u32::from(u16::MAX) {
        bail!(
            "--base-port {base_port} does not fit {nodes} nodes: they use ports base to base+{}, which must be \
             within 1..=65535",
            2 * nodes - 1
        );
    }
    let voters = voter_count(nodes);
    Ok((1..=nodes)
        .map(|id| {
            let kafka_port = base_port + u16::try_from(2 * (id - 1)).expect("checked against u16::MAX above");
            NodePlan {
                node_id: NodeId(i32::try_from(id).expect("node ids are at most DEV_CLUSTER_NODES_MAX")),
                kafka_port,
                controller_port: (id <= voters).then_some(kafka_port + 1),
            }
        })
        .collect())
}

/// `controller.quorum.voters` of the cluster.
fn quorum_voters(plans: &[NodePlan]) -> String {
    plans
        .iter()
        .filter_map(|plan| plan.controller_port.map(|port| format!("{}@{LOOPBACK}:{port}", plan.node_id)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The text of a node's `node.toml` (TOML keys are Kafka names with underscores).
pub fn node_config_text(plan: &NodePlan, voters: &str, data_dir: &Path) -> String {
    let kafka = format!("PLAINTEXT://{LOOPBACK}:{}", plan.kafka_port);
    let (roles, listeners) = match plan.controller_port {
        Some(port) => ("broker,controller", format!("{kafka},CONTROLLER://{LOOPBACK}:{port}")),
        None => ("broker", kafka.clone()),
    };
    let mut table = toml::Table::new();
    let mut set = |key: &str, value: toml::Value| {
        let _ = table.insert(key.to_owned(), value);
    };
    set("node_id", toml::Value::Integer(i64::from(plan.node_id.0)));
    set("process_roles", roles.into());
    set("controller_quorum_voters", voters.into());
    set("controller_listener_names", "CONTROLLER".into());
    set("listeners", listeners.into());
    set("advertised_listeners", kafka.into());
    set("log_dirs", data_dir.to_string_lossy().into_owned().into());
    format!(
        "# Written by `weir dev-cluster` at every start of the cluster; edits are overwritten.\n{}",
        toml::to_string(&table).expect("a table of strings and integers serialises")
    )
}

/// A node's files under the cluster directory.
#[derive(Debug, Clone)]
struct NodeFiles {
    /// `D/node-<id>`, the node's `log.dirs`.
    data_dir: PathBuf,
    /// `D/node-<id>/node.toml`.
    config: PathBuf,
    /// `D/node-<id>/weir.log`.
    log: PathBuf,
}

impl NodeFiles {
    fn new(cluster_dir: &Path, node_id: NodeId) -> NodeFiles {
        let data_dir = cluster_dir.join(format!("node-{node_id}"));
        NodeFiles { config: data_dir.join(NODE_CONFIG_FILE), log: data_dir.join(NODE_LOG_FILE), data_dir }
    }
}

/// Starts `weir server --config <node.toml>` detached: stdin null, output appended to the
/// node's log, in its own process group.
fn spawn_node(files: &NodeFiles) -> anyhow::Result<Child> {
    let executable = std::env::current_exe().context("cannot find the weir executable")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log)
        .with_context(|| format!("cannot open {}", files.log.display()))?;
    let log_for_stderr = log.try_clone().with_context(|| format!("cannot open {}", files.log.display()))?;
    let mut command = Command::new(&executable);
    let _ = command
        .arg("server")
        .arg("--config")
        .arg(&files.config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .process_group(0);
    for key in NODE_ENVIRONMENT_SCRUBBED {
        let _ = command.env_remove(key);
    }
    // The output goes to a file, where colour escapes are noise.
    let _ = command.env("NO_COLOR", "1");
    command.spawn().with_context(|| format!("cannot run {} server", executable.display()))
}

/// Writes `node.toml` and checks that the node would accept it, so a mistake here shows up as
/// this command's error rather than as N failing nodes.
fn write_node_config(files: &NodeFiles, plan: &NodePlan, voters: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(&files.data_dir).with_context(|| format!("cannot create {}", files.data_dir.display()))?;
    std::fs::write(&files.config, node_config_text(plan, voters, &files.data_dir))
        .with_context(|| format!("cannot write {}", files.config.display()))?;
    let mut settings = Settings::default();
    settings.load_file(&files.config)?;
    let _ = NodeConfig::from_settings(&settings)
        .with_context(|| format!("weir dev-cluster wrote an invalid {}", files.config.display()))?;
    Ok(())
}

/// Holds `D/cluster.lock` exclusively while the caller reads and rewrites `cluster.json`.
fn lock_cluster(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(CLUSTER_LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// `cluster.json`, or `None` if there is none.
///
/// # Errors
/// If it exists but cannot be read or parsed.
pub fn read_cluster_file(dir: &Path) -> anyhow::Result<Option<ClusterFile>> {
    let path = dir.join(CLUSTER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let cluster = serde_json::from_str(&text).with_context(|| {
        format!("{} is not a dev cluster's state file; remove it if no cluster runs", path.display())
    })?;
    Ok(Some(cluster))
}

/// Replaces `cluster.json` atomically: a reader sees the old or the new file, never a mix.
fn write_cluster_file(dir: &Path, cluster: &ClusterFile) -> anyhow::Result<()> {
    let path = dir.join(CLUSTER_FILE);
    let temporary = dir.join(format!("{CLUSTER_FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(cluster).expect("the cluster file serialises");
    text.push('\n');
    let mut file = File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Whether `pid` is a live `weir server` started with `config`. Zombies count as gone: they
/// have exited and released their ports and data directory lock. Without `/proc`, it falls back
/// to `kill -0`, which cannot tell a reused pid.
fn is_node_running(pid: u32, config: &Path) -> bool {
    if !Path::new("/proc/self").exists() {
        return Command::new("kill")
            .arg("-0")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, None | Some('Z' | 'X' | 'x')) {
        return false;
    }
    let Ok(command_line) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // An exiting process drops its memory (and so its command line) before it closes its
    // files: until it is a zombie it may still hold the data directory's lock, and a node
    // started then finds the directory in use.
    if command_line.is_empty() {
        return true;
    }
    let config = config.as_os_str().as_encoded_bytes();
    command_line.split(|byte| *byte == 0).any(|argument| argument == config)
}

/// Sends a signal with `kill(1)`.
fn send_signal(pid: u32, signal: StopSignal) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(signal.kill_flag())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill(1)")?;
    // Failure means the process is already gone, which is what the caller wants.
    if !status.success() {
        tracing::debug!(pid, "kill {} found no process", signal.kill_flag());
    }
    Ok(())
}

/// Polls `condition` every [`POLL_INTERVAL`] until it holds or `timeout` passes; bounded in
/// iterations as well, in case the clock misbehaves.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let polls_max = timeout.as_millis() / POLL_INTERVAL.as_millis() + 2;
    for _ in 0..polls_max {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    condition()
}

/// The last [`LOG_TAIL_BYTES`] of a node's log, for error messages.
fn log_tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(usize::try_from(LOG_TAIL_BYTES).unwrap_or(usize::MAX));
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn accepts_connections(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok()
}

fn kafka_address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn seconds_since_epoch() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// Appends a marker line to a node's log, so its starts are easy to find.
fn mark_log(files: &NodeFiles, what: &str) {
    let marker = format!("--- weir dev-cluster: {what} at unix time {} ---\n", seconds_since_epoch());
    if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(&files.log) {
        let _ = log.write_all(marker.as_bytes());
    }
}

/// Refuses to start over a cluster that still runs in `dir`.
fn refuse_if_running(dir: &Path) -> anyhow::Result<()> {
    let Some(cluster) = read_cluster_file(dir)? else {
        return Ok(());
    };
    for node in &cluster.nodes {
        let files = NodeFiles::new(dir, NodeId(node.id));
        if is_node_running(node.pid, &files.config) {
            bail!(
                "a dev cluster is already running in {}: node {} is pid {}; stop it first (Ctrl-C in its \
                 terminal, or kill the `weir dev-cluster` process)",
                dir.display(),
                node.id,
                node.pid
            );
        }
    }
    Ok(())
}

/// Fails if a port the cluster needs is taken, naming the port and the fix.
fn check_ports_free(plans: &[NodePlan]) -> anyhow::Result<()> {
    for plan in plans {
        let ports = [Some(("Kafka", plan.kafka_port)), plan.controller_port.map(|port| ("controller", port))];
        for (kind, port) in ports.into_iter().flatten() {
            if let Err(error) = TcpListener::bind((LOOPBACK, port)) {
                bail!(
                    "port {port} on {LOOPBACK} (node {}'s {kind} port) is not free ({error}): pick another --base-port",
                    plan.node_id
                );
            }
        }
    }
    Ok(())
}

/// A node process this supervisor spawned.
#[derive(Debug)]
struct SupervisedNode {
    node_id: NodeId,
    child: Child,
}

/// A process to stop at shutdown: a child of the supervisor, or a pid from `cluster.json`
/// (a node `restart` started).
#[derive(Debug)]
struct StopTarget {
    node_id: NodeId,
    pid: u32,
    config: PathBuf,
    child: Option<Child>,
}

impl StopTarget {
    /// Whether it still runs; reaps a child that has exited, so no zombie is left.
    fn running(&mut self) -> bool {
        match &mut self.child {
            // An error means the child was already reaped.
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => is_node_running(self.pid, &self.config),
        }
    }

    fn signal(&mut self, signal: StopSignal) -> anyhow::Result<()> {
        match (&mut self.child, signal) {
            (Some(child), StopSignal::Kill) => {
                // An error means it exited meanwhile.
                let _ = child.kill();
                Ok(())
            }
            _ => send_signal(self.pid, signal),
        }
    }
}

/// Stops every target: SIGTERM, up to [`NODE_STOP_TIMEOUT`], then SIGKILL and up to
/// [`NODE_KILL_TIMEOUT`].
///
/// # Errors
/// The ids and pids of nodes still running after SIGKILL.
fn stop_targets(targets: &mut [StopTarget]) -> anyhow::Result<()> {
    for target in targets.iter_mut() {
        if target.running() {
            tracing::info!(node_id = target.node_id.0, pid = target.pid, "stopping node (SIGTERM)");
            target.signal(StopSignal::Term)?;
        }
    }
    if !wait_until(NODE_STOP_TIMEOUT, || targets.iter_mut().all(|target| !target.running())) {
        for target in targets.iter_mut() {
            if !target.running() {
                continue;
            }
            tracing::warn!(
                node_id = target.node_id.0,
                pid = target.pid,
                "node still running {NODE_STOP_TIMEOUT:?} after SIGTERM; sending SIGKILL"
            );
            target.signal(StopSignal::Kill)?;
        }
        let _ = wait_until(NODE_KILL_TIMEOUT, || targets.iter_mut().all(|target| !target.running()));
    }
    let survivors: Vec<String> = targets
        .iter_mut()
        .filter_map(|target| target.running().then(|| format!("node {} (pid {})", target.node_id, target.pid)))
        .collect();
    if !survivors.is_empty() {
        bail!("still running {NODE_KILL_TIMEOUT:?} after SIGKILL: {}", survivors.join(", "));
    }
    Ok(())
}

/// The `weir dev-cluster` process: owns the first process of every node.
#[derive(Debug)]
struct Supervisor {
    /// The cluster directory, absolute so nodes do not depend on the working directory.
    dir: PathBuf,
    plans: Vec<NodePlan>,
    /// Children not yet reaped. A child `restart` replaced stays here until it is reaped.
    children: Vec<SupervisedNode>,
}

impl Supervisor {
    /// Writes every node's config, spawns the nodes and writes `cluster.json`.
    fn start(&mut self) -> anyhow::Result<()> {
        let _lock = lock_cluster(&self.dir)?;
        let voters = quorum_voters(&self.plans);
        let mut nodes = Vec::with_capacity(self.plans.len());
        for plan in &self.plans {
            let files = NodeFiles::new(&self.dir, plan.node_id);
            write_node_config(&files, plan, &voters)?;
            mark_log(&files, "start");
            let child = spawn_node(&files)?;
            nodes.push(ClusterNode {
                id: plan.node_id.0,
                pid: child.id(),
                kafka: kafka_address(plan.kafka_port).to_string(),
                controller: plan.controller_port.map(|port| kafka_address(port).to_string()),
            });
            self.children.push(SupervisedNode { node_id: plan.node_id, child });
        }
        write_cluster_file(&self.dir, &ClusterFile { nodes })
    }

    /// Waits until every node's Kafka listener accepts connections. Returns `false` if a
    /// shutdown signal came first.
    ///
    /// # Errors
    /// A node that exits or does not serve within [`NODE_START_TIMEOUT`], with its log's tail.
    async fn wait_until_serving<F: Future<Output = ()>>(&mut self, shutdown: &mut Pin<&mut F>) -> anyhow::Result<bool> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        let polls_max = NODE_START_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
        let mut waiting: Vec<NodePlan> = self.plans.clone();
        for _ in 0..polls_max {
            for supervised in &mut self.children {
                if let Ok(Some(status)) = supervised.child.try_wait() {
                    let files = NodeFiles::new(&self.dir, supervised.node_id);
                    bail!(
                        "node {} exited with {status} while starting; {} ends with:\n{}",
                        supervised.node_id,
                        files.log.display(),
                        log_tail(&files.log)
                    );
                }
            }
            waiting.retain(|plan| !accepts_connections(kafka_address(plan.kafka_port)));
            if waiting.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                break;
            }
            if rt::time::timeout(POLL_INTERVAL, shutdown.as_mut()).await.is_ok() {
                return Ok(false);
            }
        }
        let plan = &waiting[0];
        let files = NodeFiles::new(&self.dir, plan.node_id);
        bail!(
            "node {} does not serve Kafka on {} after {NODE_START_TIMEOUT:?}; {} ends with:\n{}",
            plan.node_id,
            kafka_address(plan.kafka_port),
            files.log.display(),
            log_tail(&files.log)
        )
    }

    fn print_banner(&self) {
        let bootstrap: Vec<String> = self.plans.iter().map(|plan| kafka_address(plan.kafka_port).to_string()).collect();
        let voters: Vec<String> = self
            .plans
            .iter()
            .filter(|plan| plan.controller_port.is_some())
            .map(|plan| plan.node_id.to_string())
            .collect();
        println!(
            "weir dev cluster: {} nodes serving (controller voters: {}) in {}",
            self.plans.len(),
            voters.join(","),
            self.dir.display()
        );
        println!("bootstrap servers: {}", bootstrap.join(","));
        println!("node logs: {}/node-<id>/{NODE_LOG_FILE}", self.dir.display());
        println!("pids and addresses: {}", self.dir.join(CLUSTER_FILE).display());
        println!(
            "restart a node: weir dev-cluster restart --dir {} --node <id>; stop the cluster: Ctrl-C",
            self.dir.display()
        );
    }

    /// Reaps and logs exited nodes until the shutdown signal.
    async fn supervise<F: Future<Output = ()>>(&mut self, shutdown: &mut Pin<&mut F>) {
        loop {
            if rt::time::timeout(SUPERVISE_INTERVAL, shutdown.as_mut()).await.is_ok() {
                return;
            }
            self.reap_exited();
        }
    }

    /// Logs each child that has exited. Not an error: `restart` kills nodes on purpose, and a
    /// crashed node is there to be looked at.
    fn reap_exited(&mut self) {
        let dir = self.dir.clone();
        self.children.retain_mut(|supervised| {
            let status = match supervised.child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => return true,
                Err(error) => {
                    tracing::warn!(node_id = supervised.node_id.0, %error, "cannot check node process");
                    return true;
                }
            };
            log_node_exit(&dir, supervised.node_id, supervised.child.id(), status);
            false
        });
    }

    /// Stops every node `cluster.json` lists now, and any child still running, then removes
    /// `cluster.json` so a `restart` waiting for the lock finds no cluster to add a node to.
    fn stop(&mut self) -> anyhow::Result<()> {
        let _lock = lock_cluster(&self.dir)?;
        let listed = match read_cluster_file(&self.dir) {
            Ok(cluster) => cluster.map(|cluster| cluster.nodes).unwrap_or_default(),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "stopping only the nodes this process started");
                Vec::new()
            }
        };
        let mut targets: Vec<StopTarget> = self
            .children
            .drain(..)
            .map(|supervised| StopTarget {
                node_id: supervised.node_id,
                pid: supervised.child.id(),
                config: NodeFiles::new(&self.dir, supervised.node_id).config,
                child: Some(supervised.child),
            })
            .collect();
        for node in listed {
            if !targets.iter().any(|target| target.pid == node.pid) {
                targets.push(StopTarget {
                    node_id: NodeId(node.id),
                    pid: node.pid,
                    config: NodeFiles::new(&self.dir, NodeId(node.id)).config,
                    child: None,
                });
            }
        }
        stop_targets(&mut targets)?;
        let path = self.dir.join(CLUSTER_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot remove {}", path.display())),
        }
        println!("weir dev cluster stopped; data kept in {}", self.dir.display());
        Ok(())
    }
}

fn log_node_exit(dir: &Path, node_id: NodeId, pid: u32, status: ExitStatus) {
    let files = NodeFiles::new(dir, node_id);
    let current = read_cluster_file(dir)
        .ok()
        .flatten()
        .and_then(|cluster| cluster.nodes.into_iter().find(|node| node.id == node_id.0))
        .map(|node| node.pid);
    match current {
        Some(current) if current != pid => {
            tracing::info!(node_id = node_id.0, pid, %status, replaced_by = current, "node process exited (restarted)");
        }
        _ => tracing::info!(
            node_id = node_id.0,
            pid,
            %status,
            log = %files.log.display(),
            "node process exited; `weir dev-cluster restart --dir {} --node {node_id}` starts it again",
            dir.display()
        ),
    }
}

/// `weir dev-cluster`: starts the nodes, waits for Ctrl-C or SIGTERM, stops them.
///
/// # Errors
/// Bad options, a cluster already running in the directory, a port in use, a node that does
/// not start, or a node that does not stop.
pub fn run(options: &DevClusterOptions) -> anyhow::Result<()> {
    let plans = plan(options.nodes, options.base_port)?;
    std::fs::create_dir_all(&options.dir).with_context(|| format!("cannot create {}", options.dir.display()))?;
    let dir = options.dir.canonicalize().with_context(|| format!("cannot resolve {}", options.dir.display()))?;
    {
        let _lock = lock_cluster(&dir)?;
        refuse_if_running(&dir)?;
    }
    check_ports_free(&plans)?;
    let runtime = rt::runtime::build(1).context("cannot start the runtime")?;
    let mut supervisor = Supervisor { dir, plans, children: Vec::new() };
    let outcome = runtime.block_on(async {
        let mut shutdown = std::pin::pin!(rt::signal::shutdown());
        // Poll once to install the handlers: until then SIGTERM would end this process at once
        // and leave the nodes running.
        let _ = rt::time::timeout(Duration::ZERO, shutdown.as_mut()).await;
        supervisor.start()?;
        if supervisor.wait_until_serving(&mut shutdown).await? {
            supervisor.print_banner();
            supervisor.supervise(&mut shutdown).await;
        }
        println!("stopping the weir dev cluster");
        anyhow::Ok(())
    });
    // Stop whatever started, also after a failed start; the signal handlers stay installed, so
    // a second Ctrl-C cannot cut the stop short.
    let stopped = supervisor.stop();
    outcome.and(stopped)
}

/// `weir dev-cluster restart`: stops one node's process and starts it again with the same
/// config and log, detached from this command, and records the new pid in `cluster.json`.
///
/// # Errors
/// No cluster in `dir`, an unknown node, a node that does not stop, or one that does not serve
/// again within [`NODE_START_TIMEOUT`].
pub fn restart(dir: &Path, node_id: NodeId, signal: StopSignal) -> anyhow::Result<()> {
    let dir = dir.canonicalize().with_context(|| format!("no dev cluster in {}", dir.display()))?;
    let lock = lock_cluster(&dir)?;
    let mut cluster = read_cluster_file(&dir)?.ok_or_else(|| {
        anyhow!(
            "no dev cluster runs in {}: {CLUSTER_FILE} is missing (start one with `weir dev-cluster`)",
            dir.display()
        )
    })?;
    let ids: Vec<String> = cluster.nodes.iter().map(|node| node.id.to_string()).collect();
    let node = cluster.nodes.iter_mut().find(|node| node.id == node_id.0).ok_or_else(|| {
        anyhow!("node {node_id} is not in the dev cluster in {}; its nodes are {}", dir.display(), ids.join(","))
    })?;
    let files = NodeFiles::new(&dir, node_id);
    let old_pid = node.pid;
    let mut target = StopTarget { node_id, pid: old_pid, config: files.config.clone(), child: None };
    if target.running() {
        target.signal(signal)?;
        if !wait_until(NODE_STOP_TIMEOUT, || !target.running()) {
            tracing::warn!(
                node_id = node_id.0,
                pid = old_pid,
                "node still running {NODE_STOP_TIMEOUT:?} after {signal:?}; sending SIGKILL"
            );
            target.signal(StopSignal::Kill)?;
            if !wait_until(NODE_KILL_TIMEOUT, || !target.running()) {
                bail!("node {node_id} (pid {old_pid}) is still running {NODE_KILL_TIMEOUT:?} after SIGKILL");
            }
        }
    }
    mark_log(&files, &format!("restart after {signal:?} of pid {old_pid}"));
    let mut child = spawn_node(&files)?;
    node.pid = child.id();
    let kafka: SocketAddr =
        node.kafka.parse().with_context(|| format!("{CLUSTER_FILE} has a bad Kafka address {:?}", node.kafka))?;
    let new_pid = node.pid;
    write_cluster_file(&dir, &cluster)?;
    drop(lock);
    let mut exited = None;
    let serving = wait_until(NODE_START_TIMEOUT, || {
        exited = child.try_wait().ok().flatten();
        exited.is_some() || accepts_connections(kafka)
    });
    if let Some(status) = exited {
        bail!(
            "node {node_id} exited with {status} after the restart; {} ends with:\n{}",
            files.log.display(),
            log_tail(&files.log)
        );
    }
    if !serving {
        bail!(
            "node {node_id} (pid {new_pid}) does not serve Kafka on {kafka} after {NODE_START_TIMEOUT:?}; see {}",
            files.log.display()
        );
    }
    println!("node {node_id} restarted: pid {old_pid} -> {new_pid}, serving Kafka on {kafka}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_are_the_largest_odd_count_up_to_five() {
        let counts: Vec<u32> = (1..=8).map(voter_count).collect();
        assert_eq!(counts, [1, 1, 3, 3, 5, 5, 5, 5]);
    }

    #[test]
    fn plan_assigns_two_ports_per_node_and_controller_ports_to_voters() {
        let plans = plan(4, 29092).expect("valid");
        let ports: Vec<(i32, u16, Option<u16>)> =
            plans.iter().map(|plan| (plan.node_id.0, plan.kafka_port, plan.controller_port)).collect();
        assert_eq!(
            ports,
            [(1, 29092, Some(29093)), (2, 29094, Some(29095)), (3, 29096, Some(29097)), (4, 29098, None)]
        );
        assert_eq!(quorum_voters(&plans), "1@127.0.0.1:29093,2@127.0.0.1:29095,3@127.0.0.1:29097");
        assert!(plan(0, 29092).is_err());
        assert!(plan(DEV_CLUSTER_NODES_MAX + 1, 29092).is_err());
        assert!(plan(3, 65531).is_err(), "node 3's controller port would be 65536");
        assert!(plan(3, 65530).is_ok());
    }

    #[test]
    fn every_generated_node_config_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        for nodes in [1, 2, 3, 4, 5, 7] {
            let plans = plan(nodes, 40000).expect("valid");
            let voters = quorum_voters(&plans);
            for node in &plans {
                let files = NodeFiles::new(dir.path(), node.node_id);
                write_node_config(&files, node, &voters).expect("the node accepts its config");
                let mut settings = Settings::default();
                settings.load_file(&files.config).expect("loads");
                let config = NodeConfig::from_settings(&settings).expect("valid");
                assert_eq!(config.broker.node_id, node.node_id);
                assert_eq!(config.listen_port, node.kafka_port);
                assert_eq!(config.roles.controller, node.controller_port.is_some());
                assert_eq!(config.controller_listen.map(|(_, port)| port), node.controller_port);
                assert_eq!(config.voters.len(), voter_count(nodes) as usize);
                assert_eq!(config.broker.data_dir, files.data_dir);
            }
        }
    }

    #[test]
    fn cluster_file_has_the_documented_shape() {
        let cluster = ClusterFile {
            nodes: vec![
                ClusterNode {
                    id: 1,
                    pid: 4242,
                    kafka: "127.0.0.1:29092".into(),
                    controller: Some("127.0.0.1:29093".into()),
                },
                ClusterNode { id: 4, pid: 4243, kafka: "127.0.0.1:29098".into(), controller: None },
            ],
        };
        let json: serde_json::Value = serde_json::to_value(&cluster).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"nodes": [
                {"id": 1, "pid": 4242, "kafka": "127.0.0.1:29092", "controller": "127.0.0.1:29093"},
                {"id": 4, "pid": 4243, "kafka": "127.0.0.1:29098", "controller": null},
            ]})
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_cluster_file(dir.path()).expect("no file is fine"), None);
        write_cluster_file(dir.path(), &cluster).expect("write");
        assert_eq!(read_cluster_file(dir.path()).expect("read"), Some(cluster));
        assert!(!dir.path().join(format!("{CLUSTER_FILE}.tmp")).exists(), "the temporary file was renamed");
    }

    #[test]
    fn only_a_live_weir_server_of_this_config_counts_as_running() {
        let config = Path::new("/nonexistent/node-1/node.toml");
        assert!(!is_node_running(std::process::id(), config), "this test process is not that node");
        assert!(!is_node_running(u32::MAX - 1, config), "no such pid");
    }
}
