//! Split roles: a controller-only node (its only listener is the controller listener) and a
//! broker-only node that follows its quorum, as two real `weir server` processes.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use client::PartitionInfo;

use crate::dev_cluster::{cluster_status, produce_and_read_back};
use crate::harness::{free_port, scrub_weir_environment, tail, weir_binary, START_TIMEOUT, STOP_TIMEOUT};
use crate::tester::{connect, create_topic};

const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long the broker may take to register, be unfenced and serve.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A `weir server` process, killed on drop.
struct Node {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(flags: &[String]) -> Node {
        let dir = tempfile::Builder::new().prefix("weir-roles-").tempdir().expect("temp dir");
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut command = Command::new(weir_binary());
        let _ = command
            .arg("server")
            .arg("--log-dirs")
            .arg(dir.path().join("data"))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("log file"))
            .stderr(File::create(&stderr).expect("log file"));
        scrub_weir_environment(&mut command);
        let child = command.spawn().expect("weir runs");
        Node { child: Some(child), stdout, stderr, _dir: dir }
    }

    /// Waits (bounded) until stdout contains `line`.
    fn wait_for(&mut self, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !std::fs::read_to_string(&self.stdout).unwrap_or_default().contains(line) {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().expect("try_wait")) {
                panic!("weir exited with {status} before printing {line:?}; stderr:\n{}", tail(&self.stderr));
            }
            assert!(Instant::now() < deadline, "no {line:?} within {timeout:?}; stderr:\n{}", tail(&self.stderr));
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGTERM, and the exit status must be success within the stop bound.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("positive pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "weir exited with {status}; stderr:\n{}", tail(&self.stderr));
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weir did not stop within {STOP_TIMEOUT:?}; stderr:\n{}", tail(&self.stderr));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().flat_map(|(key, value)| [format!("--{key}"), value.clone()]).collect()
}

fn broker_fenced(status: &serde_json::Value, id: i64) -> Option<bool> {
    status["nodes"].as_array()?.iter().find(|node| node["id"].as_i64() == Some(id))?["fenced"].as_bool()
}

/// Goal: `process.roles = controller` and `process.roles = broker` work apart: the
/// controller-only node needs no Kafka listener and serves the quorum, the broker-only node
/// registers with it, is unfenced, serves clients (topics created through it are placed on
/// it, records produced with acks=all read back), and a clean shutdown of the broker leaves
/// it fenced. Method: two processes on loopback, `weir cluster status --json`, the native
/// client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_only_node_and_a_broker_only_node_form_a_cluster() {
    let (controller_port, kafka_port) = (free_port(), free_port());
    let voters = format!("1@127.0.0.1:{controller_port}");
    let controller_address = format!("127.0.0.1:{controller_port}");
    let mut controller = Node::start(&flags(&[
        ("node-id", "1".into()),
        ("process-roles", "controller".into()),
        ("controller-quorum-voters", voters.clone()),
        ("listeners", format!("CONTROLLER://{controller_address}")),
    ]));
    controller.wait_for(&format!("weir controller 1 listening on {controller_address}"), START_TIMEOUT);
    let mut broker = Node::start(&flags(&[
        ("node-id", "2".into()),
        ("process-roles", "broker".into()),
        ("controller-quorum-voters", voters),
        ("listeners", format!("PLAINTEXT://127.0.0.1:{kafka_port}")),
        ("broker-heartbeat-interval-ms", "500".into()),
    ]));
    broker.wait_for("serving Kafka on", JOIN_TIMEOUT);

    let status = cluster_status(&[controller_address.clone()]).expect("the controller answers status");
    assert_eq!(status["active_controller"].as_i64(), Some(1), "{status}");
    let nodes = status["nodes"].as_array().expect("nodes");
    let roles = |id: i64| nodes.iter().find(|node| node["id"].as_i64() == Some(id)).map(|node| node["roles"].clone());
    assert_eq!(roles(1), Some(serde_json::json!(["controller"])), "{status}");
    assert_eq!(roles(2), Some(serde_json::json!(["broker"])), "{status}");
    assert_eq!(broker_fenced(&status, 2), Some(false), "{status}");

    let kafka = format!("127.0.0.1:{kafka_port}");
    let client = connect(&kafka).await;
    create_topic(&client, "split-roles", 3, &[]).await;
    let partitions: Vec<PartitionInfo> = client.partitions_for("split-roles").await.expect("metadata");
    assert_eq!(partitions.len(), 3);
    assert!(partitions.iter().all(|partition| partition.leader == 2), "{partitions:?}");
    let _ = produce_and_read_back(&client, "split-roles", 3, "split roles").await;
    drop(client);

    // A clean stop: the controlled shutdown leaves the broker fenced.
    broker.terminate();
    let status = cluster_status(&[controller_address]).expect("the controller answers status");
    assert_eq!(broker_fenced(&status, 2), Some(true), "{status}");
    controller.terminate();
}
