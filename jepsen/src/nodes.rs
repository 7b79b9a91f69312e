//! The weir processes: one `weir server` per namespace, every node both broker and controller,
//! started with `ip netns exec` (which execs weir, so the child's pid is weir's own and
//! SIGKILL/SIGSTOP reach it directly).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::net;

/// The Kafka port on every node.
pub(crate) const KAFKA_PORT: u16 = 9092;
/// The controller port on every node.
pub(crate) const CONTROLLER_PORT: u16 = 9093;

/// One node and its process, if running.
#[derive(Debug)]
pub(crate) struct Node {
    /// Node id (1-based).
    pub(crate) id: u32,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// Every node of the cluster.
#[derive(Debug)]
pub(crate) struct Nodes {
    weir: PathBuf,
    voters: String,
    /// The nodes, by id - 1.
    pub(crate) nodes: Vec<Node>,
    /// Extra environment for every node (a planted bug, say).
    env: Vec<(String, String)>,
    /// Each node's own small filesystem (a tmpfs), when the `disk` nemesis may fill it.
    disks: Vec<PathBuf>,
    /// Where each node's libfaketime offset file lives, when the `clock` nemesis may skew it.
    clocks: Option<PathBuf>,
}

/// libfaketime, from the Debian package `faketime`.
pub(crate) const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Size of each node's tmpfs under the `disk` nemesis.
const DISK_BYTES: u64 = 1024 * 1024 * 1024;
/// Free space a full disk keeps: none, so the next write meets ENOSPC (weir's own reserve
/// check works from an estimate refreshed every 64 MiB, which a filler written behind its
/// back does not move).
const FULL_DISK_FREE_BYTES: u64 = 0;

impl Nodes {
    /// Plans `count` nodes with data and logs under `out`.
    pub(crate) fn new(weir: &Path, count: u32, out: &Path, env: Vec<(String, String)>) -> Nodes {
        let voters =
            (1..=count).map(|id| format!("{id}@{}:{CONTROLLER_PORT}", net::node_ip(id))).collect::<Vec<_>>().join(",");
        let nodes = (1..=count)
            .map(|id| Node {
                id,
                data_dir: out.join(format!("node-{id}")),
                log: out.join(format!("node-{id}.log")),
                child: None,
                paused: false,
            })
            .collect();
        Nodes { weir: weir.to_owned(), voters, nodes, env, disks: Vec::new(), clocks: None }
    }

    /// Runs every node under libfaketime with its realtime clock offset read from a file in
    /// `dir` (re-read every second; the monotonic clock, which weir's timers use, stays
    /// true). Call before starting the nodes.
    ///
    /// # Errors
    /// If libfaketime is missing (naming its package) or a file cannot be written.
    pub(crate) fn fake_clocks(&mut self, dir: &Path) -> anyhow::Result<()> {
        if !Path::new(LIBFAKETIME).is_file() {
            anyhow::bail!(
                "{LIBFAKETIME} is missing: install the Debian package faketime (apt-get install -y faketime)"
            );
        }
        std::fs::create_dir_all(dir)?;
        self.clocks = Some(dir.to_owned());
        for id in 1..=self.nodes.len() as u32 {
            self.set_clock(id, 0)?;
        }
        Ok(())
    }

    /// Sets node `id`'s realtime clock `offset_ms` ahead (behind if negative) of the true time.
    ///
    /// # Errors
    /// If clocks are not faked, or the file cannot be written.
    pub(crate) fn set_clock(&self, id: u32, offset_ms: i64) -> anyhow::Result<()> {
        let dir = self.clocks.as_ref().context("clocks are not faked in this run")?;
        let seconds = offset_ms as f64 / 1_000.0;
        std::fs::write(dir.join(format!("node-{id}")), format!("{seconds:+.3}\n"))?;
        Ok(())
    }

    /// Gives every node a tmpfs of [`DISK_BYTES`] for its data, so the `disk` nemesis can fill
    /// it without touching the machine's disk. Call before starting the nodes.
    ///
    /// # Errors
    /// If a mount fails.
    pub(crate) fn mount_disks(&mut self, out: &Path) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            let disk = out.join(format!("disk-{}", node.id));
            std::fs::create_dir_all(&disk)?;
            let size = format!("size={DISK_BYTES}");
            net::run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", &disk.to_string_lossy()])?;
            node.data_dir = disk.join("data");
            self.disks.push(disk);
        }
        Ok(())
    }

    /// Fills node `id`'s tmpfs until [`FULL_DISK_FREE_BYTES`] remain.
    pub(crate) fn fill_disk(&self, id: u32) -> anyhow::Result<()> {
        let disk = self.disks.get(id as usize - 1).context("the disk nemesis needs mounted disks")?;
        let output = Command::new("df").args(["--output=avail", "-B1"]).arg(disk).output()?;
        let available: u64 =
            String::from_utf8_lossy(&output.stdout).lines().nth(1).unwrap_or_default().trim().parse().unwrap_or(0);
        let fill = available.saturating_sub(FULL_DISK_FREE_BYTES);
        net::run("fallocate", &["-l", &fill.to_string(), &disk.join("filler").to_string_lossy()])
    }

    /// Frees node `id`'s tmpfs again.
    pub(crate) fn free_disk(&self, id: u32) {
        if let Some(disk) = self.disks.get(id as usize - 1) {
            let _ = std::fs::remove_file(disk.join("filler"));
        }
    }

    /// The Kafka bootstrap list.
    pub(crate) fn bootstrap(&self) -> Vec<String> {
        self.nodes.iter().map(|node| format!("{}:{KAFKA_PORT}", net::node_ip(node.id))).collect()
    }

    /// Starts node `id` (a no-op if it runs).
    pub(crate) fn start(&mut self, id: u32) -> anyhow::Result<()> {
        let (weir, voters, env, clocks) =
            (self.weir.clone(), self.voters.clone(), self.env.clone(), self.clocks.clone());
        let node = &mut self.nodes[id as usize - 1];
        if node.child.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("cannot create {}", node.data_dir.display()))?;
        let log = OpenOptions::new().create(true).append(true).open(&node.log)?;
        let ip = net::node_ip(id);
        let mut command = Command::new("ip");
        let _ = command
            .args(["netns", "exec", &net::namespace(id)])
            .arg(&weir)
            .arg("server")
            .args(["--node-id", &id.to_string()])
            .args(["--process-roles", "broker,controller"])
            .args(["--controller-quorum-voters", &voters])
            .args(["--controller-listener-names", "CONTROLLER"])
            .args(["--listeners", &format!("PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}")])
            .args(["--advertised-listeners", &format!("PLAINTEXT://{ip}:{KAFKA_PORT}")])
            .args(["--log-dirs", &node.data_dir.to_string_lossy()])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // weir reads WEIR_* variables as settings: the harness's own (a CI's WEIR_BIN, say)
        // must not reach the nodes.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEIR_") {
                let _ = command.env_remove(key);
            }
        }
        for (key, value) in env {
            let _ = command.env(key, value);
        }
        if let Some(clocks) = &clocks {
            let _ = command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", clocks.join(format!("node-{id}")))
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        node.child = Some(command.spawn().context("cannot start weir in its namespace")?);
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it.
    pub(crate) fn kill(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize - 1];
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(child.id(), "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP (`pause`) or SIGCONT node `id`.
    pub(crate) fn pause(&mut self, id: u32, pause: bool) {
        let node = &mut self.nodes[id as usize - 1];
        if let Some(child) = &node.child {
            signal(child.id(), if pause { "STOP" } else { "CONT" });
            node.paused = pause;
        }
    }

    /// Resumes paused nodes and starts stopped ones.
    pub(crate) fn heal(&mut self) -> anyhow::Result<()> {
        for id in 1..=self.nodes.len() as u32 {
            if self.nodes[id as usize - 1].paused {
                self.pause(id, false);
            }
            self.start(id)?;
        }
        Ok(())
    }

    /// Kills every node.
    pub(crate) fn kill_all(&mut self) {
        for id in 1..=self.nodes.len() as u32 {
            self.kill(id);
        }
    }

    /// Nodes whose process exited by itself (a crash the nemesis did not cause).
    pub(crate) fn exited(&mut self) -> Vec<(u32, String)> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node.id, status.to_string()));
                    node.child = None;
                }
            }
        }
        exited
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.kill_all();
        for disk in &self.disks {
            let _ = net::run("umount", &[&disk.to_string_lossy()]);
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
}
