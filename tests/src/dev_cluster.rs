//! `weir dev-cluster`: a supervisor that runs real `weir server` nodes, replaces one on
//! `dev-cluster restart`, and stops them all on SIGTERM.
//!
//! The nodes form one cluster (three controller voters that are also brokers); the failover
//! test kills the active controller and checks the cluster carries on.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use client::admin::{Admin, NewTopic};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::PartitionInfo;

use crate::harness::{python, repo_root, run_bounded, scrub_weir_environment, tail, weir_binary, STOP_TIMEOUT};
use crate::tester::{connect, connect_any, read_to_end};

/// Nodes of the test cluster; three voters.
const NODES: u16 = 3;
/// How long the supervisor may take to write `cluster.json` and every node to serve.
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the supervisor may take to stop: its own SIGTERM grace and SIGKILL bounds, plus
/// margin.
const CLUSTER_STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Base ports tried before giving up because other processes hold the ports.
const BASE_PORT_ATTEMPTS_MAX: u32 = 8;
/// Base ports are drawn below Linux's ephemeral range (32768 and up), so that outgoing
/// connections of parallel tests cannot occupy them.
const BASE_PORT_MIN: u16 = 20_000;
const BASE_PORT_MAX: u16 = 32_000;
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One node of `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedNode {
    pub(crate) id: i64,
    pub(crate) pid: u32,
    pub(crate) kafka: String,
    pub(crate) controller: Option<String>,
}

/// `cluster.json`, or `None` while it does not exist or is incomplete.
fn read_cluster(dir: &Path) -> Option<Vec<ListedNode>> {
    let text = std::fs::read_to_string(dir.join("cluster.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!("cluster.json is not JSON ({error}); it is replaced atomically, so never half-written:\n{text}")
    });
    let nodes = json["nodes"].as_array().unwrap_or_else(|| panic!("cluster.json has no nodes array:\n{text}"));
    Some(
        nodes
            .iter()
            .map(|node| ListedNode {
                id: node["id"].as_i64().expect("id is a number"),
                pid: u32::try_from(node["pid"].as_u64().expect("pid is a number")).expect("pids fit u32"),
                kafka: node["kafka"].as_str().expect("kafka is a string").to_owned(),
                controller: node["controller"].as_str().map(str::to_owned),
            })
            .collect(),
    )
}

/// Whether `pid` runs. A zombie counts as gone: a restarted node is re-parented to init,
/// which reaps it on its own schedule.
pub(crate) fn process_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

pub(crate) fn send_signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pids fit i32")).expect("pids are positive");
    // An error means the process is already gone.
    let _ = rustix::process::kill_process(pid, signal);
}

/// Polls until `condition` holds or `timeout` passes; bounded in iterations too.
pub(crate) fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    for _ in 0..(timeout.as_millis() / POLL_INTERVAL.as_millis() + 2) {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    condition()
}

/// A base port whose `2 * nodes` ports were free a moment ago, varied per attempt so that
/// parallel runs do not collide.
fn pick_base_port(nodes: u16, attempt: u32) -> u16 {
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos())
        ^ std::process::id().rotate_left(16)
        ^ attempt.wrapping_mul(7919);
    let slots = u32::from((BASE_PORT_MAX - BASE_PORT_MIN) / (2 * nodes));
    let mut base = BASE_PORT_MIN + u16::try_from(seed % slots).expect("below slots") * 2 * nodes;
    for _ in 0..slots {
        if (base..base + 2 * nodes).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return base;
        }
        base = if base + 4 * nodes > BASE_PORT_MAX { BASE_PORT_MIN } else { base + 2 * nodes };
    }
    panic!("no {} consecutive free ports between {BASE_PORT_MIN} and {BASE_PORT_MAX}", 2 * nodes);
}

/// The `weir dev-cluster` process. Dropping it kills the supervisor and every node
/// `cluster.json` lists, so a failing test leaks no process.
#[derive(Debug)]
pub(crate) struct DevCluster {
    supervisor: Option<Child>,
    /// The cluster directory (`--dir`).
    pub(crate) dir: PathBuf,
    /// The supervisor's stdout and stderr.
    stdout: PathBuf,
    stderr: PathBuf,
    /// `--nodes`.
    nodes: u16,
    /// Every node pid seen, for the cleanup in `Drop`.
    pids_seen: Vec<u32>,
    _temporary: tempfile::TempDir,
}

impl DevCluster {
    /// Starts `weir dev-cluster --nodes N` on free ports and waits until `cluster.json` lists
    /// every node and the supervisor reports them serving.
    fn start_nodes(nodes: u16) -> DevCluster {
        DevCluster::start_nodes_with(nodes, &[])
    }

    /// [`DevCluster::start_nodes`] with `WEIR_*` settings every node inherits.
    pub(crate) fn start_nodes_with(nodes: u16, settings: &[(&str, &str)]) -> DevCluster {
        let temporary = tempfile::Builder::new().prefix("weir-dev-cluster-").tempdir().expect("tempdir");
        let root = temporary.path().to_path_buf();
        let mut cluster = DevCluster {
            supervisor: None,
            dir: root.join("cluster"),
            stdout: root.join("supervisor.stdout"),
            stderr: root.join("supervisor.stderr"),
            nodes,
            pids_seen: Vec::new(),
            _temporary: temporary,
        };
        for attempt in 0..BASE_PORT_ATTEMPTS_MAX {
            let base_port = pick_base_port(nodes, attempt);
            let mut command = Command::new(weir_binary());
            let _ = command
                .args(["dev-cluster", "--nodes", &nodes.to_string(), "--base-port", &base_port.to_string(), "--dir"])
                .arg(&cluster.dir)
                .stdin(Stdio::null())
                .stdout(File::create(&cluster.stdout).expect("create the stdout file"))
                .stderr(File::create(&cluster.stderr).expect("create the stderr file"));
            scrub_weir_environment(&mut command);
            for (name, value) in settings {
                let _ = command.env(name, value);
            }
            cluster.supervisor = Some(command.spawn().expect("weir dev-cluster starts"));
            match cluster.wait_until_serving() {
                Ok(()) => return cluster,
                // Another process took a port between our probe and the supervisor's.
                Err(status) if tail(&cluster.stderr).contains("not free") => {
                    eprintln!("base port {base_port} was taken ({status}); trying another");
                }
                Err(status) => panic!("weir dev-cluster exited with {status} while starting:\n{}", cluster.output()),
            }
        }
        panic!("weir dev-cluster found no free ports in {BASE_PORT_ATTEMPTS_MAX} attempts:\n{}", cluster.output());
    }

    /// Waits for the banner (printed once every node serves) and `cluster.json`; `Err` with
    /// the exit status if the supervisor exits first.
    fn wait_until_serving(&mut self) -> Result<(), ExitStatus> {
        let mut exited = None;
        let ready = wait_for(CLUSTER_START_TIMEOUT, || {
            let supervisor = self.supervisor.as_mut().expect("started");
            exited = supervisor.try_wait().expect("try_wait on a child works");
            exited.is_some()
                || (tail(&self.stdout).contains("bootstrap servers:")
                    && read_cluster(&self.dir).is_some_and(|nodes| nodes.len() == usize::from(self.nodes)))
        });
        if let Some(status) = exited {
            self.supervisor = None;
            return Err(status);
        }
        assert!(ready, "the dev cluster did not serve within {CLUSTER_START_TIMEOUT:?}:\n{}", self.output());
        self.nodes();
        Ok(())
    }

    /// `cluster.json` now; remembers the pids for cleanup.
    pub(crate) fn nodes(&mut self) -> Vec<ListedNode> {
        let nodes = read_cluster(&self.dir).unwrap_or_else(|| panic!("cluster.json is missing:\n{}", self.output()));
        for node in &nodes {
            if !self.pids_seen.contains(&node.pid) {
                self.pids_seen.push(node.pid);
            }
        }
        nodes
    }

    pub(crate) fn output(&self) -> String {
        format!("--- supervisor stdout ---\n{}\n--- supervisor stderr ---\n{}", tail(&self.stdout), tail(&self.stderr))
    }

    pub(crate) fn node_log(&self, id: i64) -> String {
        tail(&self.dir.join(format!("node-{id}")).join("weir.log"))
    }

    /// Checks that node `id` serves Kafka at its listed address and reports itself there.
    async fn assert_serves(&self, node: &ListedNode) {
        let address: SocketAddr = node.kafka.parse().expect("kafka is host:port");
        let accepting = wait_for(CLUSTER_START_TIMEOUT, || {
            TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
        });
        assert!(accepting, "node {} does not accept on {address}; its log:\n{}", node.id, self.node_log(node.id));
        let client = connect(&node.kafka).await;
        let description = Admin::new(&client)
            .describe_cluster()
            .await
            .unwrap_or_else(|error| panic!("DescribeCluster on node {} failed: {error}", node.id));
        assert!(
            description.brokers.iter().any(|broker| i64::from(broker.id) == node.id && broker.address() == node.kafka),
            "node {} at {} is not among the brokers it describes: {:?}",
            node.id,
            node.kafka,
            description.brokers
        );
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
        }
        let listed = read_cluster(&self.dir).unwrap_or_default();
        for pid in listed.iter().map(|node| node.pid).chain(self.pids_seen.iter().copied()) {
            if process_running(pid) {
                send_signal(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Goal: `weir dev-cluster` gives a developer a running multi-node setup in one command, lets
/// them crash and restart a node, and cleans up after itself. Method: start three nodes, check
/// `cluster.json` and that each node serves Kafka as itself, `restart --node 2` (SIGKILL), check
/// the new pid serves while the others are untouched, then SIGTERM the supervisor and check
/// every node process, including the restarted one it did not spawn, is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_starts_restarts_a_node_and_stops_everything() {
    let mut cluster = DevCluster::start_nodes(NODES);
    let nodes = cluster.nodes();
    let ids: Vec<i64> = nodes.iter().map(|node| node.id).collect();
    assert_eq!(ids, [1, 2, 3], "cluster.json lists the nodes by id");
    let base_port: u16 = nodes[0].kafka.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("a port");
    for (index, node) in nodes.iter().enumerate() {
        let kafka_port = base_port + 2 * u16::try_from(index).expect("small");
        assert_eq!(node.kafka, format!("127.0.0.1:{kafka_port}"), "Kafka ports are base + 2(i-1)");
        assert_eq!(node.controller, Some(format!("127.0.0.1:{}", kafka_port + 1)), "all three nodes are voters");
        assert!(process_running(node.pid), "node {} (pid {}) is not running", node.id, node.pid);
        cluster.assert_serves(node).await;
    }
    let bootstrap: Vec<&str> = nodes.iter().map(|node| node.kafka.as_str()).collect();
    assert!(
        tail(&cluster.stdout).contains(&format!("bootstrap servers: {}", bootstrap.join(","))),
        "the supervisor prints the bootstrap servers:\n{}",
        cluster.output()
    );

    let mut restart = Command::new(weir_binary());
    let _ = restart.args(["dev-cluster", "restart", "--node", "2", "--dir"]).arg(&cluster.dir);
    scrub_weir_environment(&mut restart);
    let output = run_bounded(&mut restart, None, Duration::from_secs(60));
    output.assert_success("weir dev-cluster restart --node 2");
    assert!(output.stdout.contains("node 2 restarted"), "restart reports what it did:\n{}", output.stdout);
    let after = cluster.nodes();
    assert_ne!(after[1].pid, nodes[1].pid, "node 2 has a new pid");
    assert_eq!((after[0].pid, after[2].pid), (nodes[0].pid, nodes[2].pid), "nodes 1 and 3 are untouched");
    assert!(!process_running(nodes[1].pid), "node 2's old process (pid {}) is gone", nodes[1].pid);
    cluster.assert_serves(&after[1]).await;
    let supervisor = cluster.supervisor.as_mut().expect("running");
    assert!(
        supervisor.try_wait().expect("try_wait on a child works").is_none(),
        "the supervisor survives a node restart:\n{}",
        cluster.output()
    );

    let supervisor_pid = supervisor.id();
    send_signal(supervisor_pid, rustix::process::Signal::TERM);
    let mut status = None;
    let exited = wait_for(CLUSTER_STOP_TIMEOUT, || {
        status = cluster.supervisor.as_mut().expect("running").try_wait().expect("try_wait on a child works");
        status.is_some()
    });
    assert!(exited, "weir dev-cluster did not exit within {CLUSTER_STOP_TIMEOUT:?} of SIGTERM:\n{}", cluster.output());
    cluster.supervisor = None;
    let status = status.expect("exited");
    assert!(status.success(), "weir dev-cluster exited with {status} after SIGTERM:\n{}", cluster.output());
    let pids: Vec<u32> = cluster.pids_seen.clone();
    let all_gone = wait_for(STOP_TIMEOUT, || pids.iter().all(|pid| !process_running(*pid)));
    let running: Vec<&u32> = pids.iter().filter(|pid| process_running(**pid)).collect();
    assert!(all_gone, "node pids {running:?} still run after the supervisor stopped:\n{}", cluster.output());
    assert!(
        !cluster.dir.join("cluster.json").exists(),
        "a stopped cluster leaves no cluster.json, so no restart can add to it"
    );
}

/// Goal: a second supervisor on a directory whose cluster still runs refuses to start instead
/// of fighting over ports and data directories. Method: start a one-node cluster, run
/// `weir dev-cluster` on the same directory again, and read its error.
#[test]
fn dev_cluster_refuses_a_directory_whose_cluster_runs() {
    let mut cluster = DevCluster::start_nodes(1);
    let nodes = cluster.nodes();
    let mut second = Command::new(weir_binary());
    let _ = second.args(["dev-cluster", "--nodes", "1", "--base-port", "1", "--dir"]).arg(&cluster.dir);
    scrub_weir_environment(&mut second);
    let output = run_bounded(&mut second, None, Duration::from_secs(30));
    assert!(!output.status.success(), "a second supervisor started:\n{}", output.stdout);
    assert!(
        output.stderr.contains("already running") && output.stderr.contains(&nodes[0].pid.to_string()),
        "the refusal names the running node's pid:\n{}",
        output.stderr
    );
}

/// Session timeout of the failover test's brokers: short, so a killed broker is fenced soon.
const FAILOVER_SESSION_TIMEOUT_MS: &str = "3000";
const FAILOVER_HEARTBEAT_INTERVAL_MS: &str = "500";
/// How long the cluster may take to elect a new controller and move partition leaders.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Records produced per partition before and after the kill.
const FAILOVER_RECORDS: usize = 30;

/// `weir cluster status --json` against the listed controllers.
pub(crate) fn cluster_status(controllers: &[String]) -> Option<serde_json::Value> {
    let mut command = Command::new(weir_binary());
    let _ = command.args(["cluster", "status", "--json", "--controller", &controllers.join(",")]);
    scrub_weir_environment(&mut command);
    let output = run_bounded(&mut command, None, Duration::from_secs(30));
    if !output.status.success() {
        return None;
    }
    serde_json::from_str(&output.stdout).ok()
}

fn active_controller(status: &serde_json::Value) -> Option<i64> {
    status["active_controller"].as_i64()
}

/// Creates a topic, retrying while the controller quorum is between leaders.
pub(crate) async fn create_topic_eventually(client: &client::Client, name: &str, partitions: i32, factor: i16) {
    let admin = Admin::new(client);
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        let topic = NewTopic { num_partitions: partitions, replication_factor: factor, ..NewTopic::new(name) };
        let outcome = admin.create_topics(&[topic], false).await;
        match outcome.as_ref().map(|results| &results[0].1) {
            Ok(Ok(())) => return,
            other => {
                assert!(Instant::now() < deadline, "creating {name} kept failing: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until every partition of `topic` is led by one of `live`.
pub(crate) async fn leaders_among(client: &client::Client, topic: &str, live: &[i32]) -> Vec<PartitionInfo> {
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        let _ = client.refresh_metadata(Some(&[topic.to_owned()])).await;
        let partitions = client.partitions_for(topic).await.unwrap_or_default();
        if !partitions.is_empty() && partitions.iter().all(|partition| live.contains(&partition.leader)) {
            return partitions;
        }
        assert!(Instant::now() < deadline, "{topic} has partitions without a live leader: {partitions:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Produces `FAILOVER_RECORDS` per partition with acks=all and reads everything back; returns
/// the values written.
pub(crate) async fn produce_and_read_back(
    client: &client::Client,
    topic: &str,
    partitions: i32,
    label: &str,
) -> std::collections::BTreeSet<String> {
    let producer = Producer::new(client.clone(), ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .expect("valid producer config");
    let mut written = std::collections::BTreeSet::new();
    for partition in 0..partitions {
        for index in 0..FAILOVER_RECORDS {
            let value = format!("{label}/{partition}/{index}");
            let record = ProducerRecord::new(topic, value.clone()).with_partition(partition);
            let metadata = producer
                .send_and_wait(record)
                .await
                .unwrap_or_else(|error| panic!("producing to {topic}[{partition}] ({label}) failed: {error}"));
            assert_eq!(metadata.partition, partition);
            let _ = written.insert(value);
        }
    }
    assert_readable(client, topic, partitions, &written, label).await;
    written
}

/// Every value of `written` is in the topic, read to its end.
pub(crate) async fn assert_readable(
    client: &client::Client,
    topic: &str,
    partitions: i32,
    written: &std::collections::BTreeSet<String>,
    label: &str,
) {
    let read = read_to_end(client, topic, partitions).await;
    let values: std::collections::BTreeSet<String> = read
        .values()
        .flatten()
        .filter_map(|record| record.value.as_ref().map(|value| String::from_utf8_lossy(value).into_owned()))
        .collect();
    let missing: Vec<&String> = written.iter().filter(|value| !values.contains(*value)).collect();
    assert!(missing.is_empty(), "{topic} ({label}): acknowledged records not read back: {missing:?}");
}

/// Goal: a three-node cluster survives the loss of its active controller: a new one is
/// elected, topics can still be created, the dead broker is fenced so every partition (with
/// replicas elsewhere) gets a live leader, and both the native client and librdkafka (through
/// confluent-kafka-python) bootstrap from the survivors, find the leaders, and produce and
/// consume. Method: `weir dev-cluster` with a 3 s broker session timeout; find the active
/// controller with `weir cluster status`, SIGKILL its process, measure the time until
/// `weir cluster status` shows another one, then drive both clients against the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_survives_the_loss_of_its_active_controller() {
    let mut cluster = DevCluster::start_nodes_with(
        NODES,
        &[
            ("WEIR_BROKER_SESSION_TIMEOUT_MS", FAILOVER_SESSION_TIMEOUT_MS),
            ("WEIR_BROKER_HEARTBEAT_INTERVAL_MS", FAILOVER_HEARTBEAT_INTERVAL_MS),
        ],
    );
    let nodes = cluster.nodes();
    let controllers: Vec<String> = nodes.iter().filter_map(|node| node.controller.clone()).collect();
    let mut status = None;
    let elected = wait_for(FAILOVER_TIMEOUT, || {
        status = cluster_status(&controllers);
        status.as_ref().is_some_and(|status| {
            active_controller(status).is_some() && status["fenced_brokers"].as_array().is_some_and(Vec::is_empty)
        })
    });
    assert!(elected, "no active controller: {status:?}\n{}", cluster.output());
    let status = status.expect("elected");
    let leader = active_controller(&status).expect("elected");
    let brokers = status["nodes"].as_array().expect("nodes").len();
    assert_eq!(brokers, usize::from(NODES), "cluster status lists every node: {status}");

    let all: Vec<i32> = nodes.iter().map(|node| i32::try_from(node.id).expect("small")).collect();
    let bootstrap: Vec<String> = nodes.iter().map(|node| node.kafka.clone()).collect();
    let client = connect_any(&bootstrap).await;
    create_topic_eventually(&client, "before-failover", 6, 3).await;
    let partitions = leaders_among(&client, "before-failover", &all).await;
    let led: std::collections::BTreeSet<i32> = partitions.iter().map(|partition| partition.leader).collect();
    assert_eq!(led.len(), all.len(), "leaders spread over every broker: {partitions:?}");
    assert!(partitions.iter().all(|partition| partition.replicas.len() == 3), "three replicas each: {partitions:?}");
    let before = produce_and_read_back(&client, "before-failover", 6, "before").await;

    let victim = nodes.iter().find(|node| node.id == leader).expect("the leader is a node");
    send_signal(victim.pid, rustix::process::Signal::KILL);
    let killed_at = Instant::now();
    let survivors: Vec<&ListedNode> = nodes.iter().filter(|node| node.id != leader).collect();
    let surviving_controllers: Vec<String> = survivors.iter().filter_map(|node| node.controller.clone()).collect();
    let mut after = None;
    let failed_over = wait_for(FAILOVER_TIMEOUT, || {
        after = cluster_status(&surviving_controllers);
        after.as_ref().and_then(active_controller).is_some_and(|active| active != leader)
    });
    assert!(failed_over, "no new active controller after killing {leader}: {after:?}\n{}", cluster.output());
    let failover = killed_at.elapsed();
    let new_leader = after.as_ref().and_then(active_controller).expect("failed over");
    eprintln!("controller failover: {leader} -> {new_leader} in {} ms (real processes)", failover.as_millis());

    let live: Vec<i32> = survivors.iter().map(|node| i32::try_from(node.id).expect("small")).collect();
    let survivors_bootstrap: Vec<String> = survivors.iter().map(|node| node.kafka.clone()).collect();
    let client = connect_any(&survivors_bootstrap).await;
    create_topic_eventually(&client, "after-failover", 4, 2).await;
    let moved = leaders_among(&client, "before-failover", &live).await;
    assert!(
        moved.iter().all(|partition| !partition.isr.contains(&(leader as i32))),
        "the dead broker left every ISR: {moved:?}"
    );
    let _ = leaders_among(&client, "after-failover", &live).await;
    let _ = produce_and_read_back(&client, "after-failover", 4, "after").await;
    let _ = produce_and_read_back(&client, "before-failover", 6, "after").await;
    // Records acknowledged before the kill (acks=all, three replicas) survive it, including
    // those of the partitions the dead broker led: its followers had them.
    assert_readable(&client, "before-failover", 6, &before, "before, read after the kill").await;

    let fenced = wait_for(FAILOVER_TIMEOUT, || {
        cluster_status(&surviving_controllers).is_some_and(|status| {
            status["fenced_brokers"]
                .as_array()
                .is_some_and(|fenced| fenced.iter().any(|id| id.as_i64() == Some(leader)))
        })
    });
    assert!(fenced, "weir cluster status does not show broker {leader} fenced");

    let script = repo_root().join("tests/python/confluent_cluster_client.py");
    let mut command = Command::new(python());
    let _ = command
        .arg(&script)
        .arg(survivors_bootstrap.join(","))
        .arg(leader.to_string())
        .args(["before-failover", "after-failover"])
        .env("PYTHONUNBUFFERED", "1");
    let output = run_bounded(&mut command, None, Duration::from_secs(180));
    output.assert_success("confluent_cluster_client.py");
    assert!(output.stdout.lines().any(|line| line.starts_with("PASS")), "no PASS line:\n{}", output.stdout);
}
