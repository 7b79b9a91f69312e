//! The nemesis: faults drawn from the run's seed, one at a time, each bounded and healed.
//!
//! * `kill`: SIGKILL one node (or a minority of a 5-node cluster), restart it 1-5 s later;
//! * `kill-leader`: the same for the leader of a random `jepsen` partition, as the cluster's
//!   metadata names it (a random node if it cannot be asked);
//! * `kill-controller`: the same for the active controller;
//! * `pause`: SIGSTOP one node for 1-8 s, then SIGCONT;
//! * `partition`: nftables rules isolate one node from the other nodes (and, one time in
//!   three, from the clients too) for 3-15 s;
//! * `loss`: nftables `numgen random` rules drop 5-40% of one node's packets, both ways, for
//!   3-15 s;
//! * `disk`: one node's data filesystem (its own tmpfs) is filled to below weir's disk
//!   reserve for 3-15 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net;
use crate::nodes::Nodes;
use client::admin::Admin;
use client::{Client, ClientConfig};

use crate::workload::{Recorder, Rng, TOPIC};

/// A fault kind the run may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// SIGKILL and restart.
    Kill,
    /// SIGKILL and restart a partition leader.
    KillLeader,
    /// SIGKILL and restart the active controller.
    KillController,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// nftables isolation.
    Partition,
    /// nftables random packet drops.
    Loss,
    /// A full data disk.
    Disk,
}

impl Fault {
    /// Parses a `--nemesis` entry.
    pub(crate) fn parse(name: &str) -> Option<Fault> {
        match name {
            "kill" => Some(Fault::Kill),
            "kill-leader" => Some(Fault::KillLeader),
            "kill-controller" => Some(Fault::KillController),
            "pause" => Some(Fault::Pause),
            "partition" => Some(Fault::Partition),
            "loss" => Some(Fault::Loss),
            "disk" => Some(Fault::Disk),
            _ => None,
        }
    }
}

/// One fault as it happened, in ms since the run began.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// What was done.
    pub(crate) what: String,
    /// When it began.
    pub(crate) start_ms: u64,
    /// When it was healed.
    pub(crate) end_ms: u64,
}

fn lock(nodes: &Mutex<Nodes>) -> std::sync::MutexGuard<'_, Nodes> {
    nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs faults from `faults` until `stop`, then heals everything. Returns the windows.
pub(crate) async fn run(
    faults: Vec<Fault>,
    seed: u64,
    bootstrap: Vec<String>,
    nodes: Arc<Mutex<Nodes>>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<Window> {
    let mut rng = Rng::new(seed.rotate_left(17) ^ 0x006e_656d_6573_6973);
    let mut windows = Vec::new();
    let count = lock(&nodes).nodes.len() as u32;
    let sleep = |ms: u64| rt::time::sleep(Duration::from_millis(ms));
    while !stop.load(Ordering::Relaxed) && !faults.is_empty() {
        sleep(2_000 + rng.below(4_000)).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let fault = faults[rng.below(faults.len() as u64) as usize];
        let mut victim = 1 + rng.below(u64::from(count)) as u32;
        let mut named = String::new();
        if matches!(fault, Fault::KillLeader | Fault::KillController) {
            let partition = rng.below(4) as i32;
            match target(fault, &bootstrap, partition).await {
                Some(id) if (1..=count).contains(&id) => {
                    victim = id;
                    named = match fault {
                        Fault::KillLeader => format!(" (leader of {TOPIC}-{partition})"),
                        _ => " (active controller)".to_owned(),
                    };
                }
                _ => named = " (leader unknown: a random node)".to_owned(),
            }
        }
        let start_ms = recorder.now_ms();
        let what = match fault {
            Fault::Kill | Fault::KillLeader | Fault::KillController => {
                let victims: Vec<u32> = if fault == Fault::Kill && count >= 5 && rng.below(3) == 0 {
                    vec![victim, 1 + victim % count]
                } else {
                    vec![victim]
                };
                for id in &victims {
                    lock(&nodes).kill(*id);
                }
                sleep(1_000 + rng.below(4_000)).await;
                for id in &victims {
                    if let Err(error) = lock(&nodes).start(*id) {
                        eprintln!("weir-jepsen: restart of node {id} failed: {error:#}");
                    }
                }
                format!("kill {victims:?}{named}")
            }
            Fault::Pause => {
                lock(&nodes).pause(victim, true);
                sleep(1_000 + rng.below(7_000)).await;
                lock(&nodes).pause(victim, false);
                format!("pause {victim}")
            }
            Fault::Partition => {
                let mut peers: Vec<String> = (1..=count).filter(|id| *id != victim).map(net::node_ip).collect();
                let from_clients = rng.below(3) == 0;
                if from_clients {
                    peers.push(net::HARNESS_IP.to_owned());
                }
                if let Err(error) = net::isolate(victim, &peers) {
                    eprintln!("weir-jepsen: partition failed: {error:#}");
                }
                sleep(3_000 + rng.below(12_000)).await;
                if let Err(error) = net::heal(victim) {
                    eprintln!("weir-jepsen: heal failed: {error:#}");
                }
                format!("isolate {victim}{}", if from_clients { " (and clients)" } else { "" })
            }
            Fault::Loss => {
                let percent = 5 + rng.below(36);
                if let Err(error) = net::drop_randomly(victim, percent) {
                    eprintln!("weir-jepsen: packet loss failed: {error:#}");
                }
                sleep(3_000 + rng.below(12_000)).await;
                if let Err(error) = net::heal(victim) {
                    eprintln!("weir-jepsen: heal failed: {error:#}");
                }
                format!("drop {percent}% at {victim}")
            }
            Fault::Disk => {
                if let Err(error) = lock(&nodes).fill_disk(victim) {
                    eprintln!("weir-jepsen: filling the disk failed: {error:#}");
                }
                sleep(3_000 + rng.below(12_000)).await;
                lock(&nodes).free_disk(victim);
                format!("disk full at {victim}")
            }
        };
        let window = Window { what, start_ms, end_ms: recorder.now_ms() };
        eprintln!("weir-jepsen: fault {} from {} ms to {} ms", window.what, window.start_ms, window.end_ms);
        windows.push(window);
    }
    heal_all(count, &nodes);
    windows
}

/// The node a targeted kill aims at: the leader of `jepsen-{partition}`, or the active
/// controller, as a fresh client learns them; `None` if the cluster does not answer.
async fn target(fault: Fault, bootstrap: &[String], partition: i32) -> Option<u32> {
    let config = ClientConfig {
        bootstrap_servers: bootstrap.to_vec(),
        client_id: "nemesis".to_owned(),
        request_timeout_ms: 2_000,
        ..ClientConfig::default()
    };
    let client = Client::connect(config).await.ok()?;
    let id = match fault {
        Fault::KillController => Admin::new(&client).describe_cluster().await.ok()?.controller_id,
        _ => client.partitions_for(TOPIC).await.ok()?.iter().find(|info| info.partition == partition)?.leader,
    };
    u32::try_from(id).ok()
}

/// Removes every partition, resumes and restarts every node.
pub(crate) fn heal_all(count: u32, nodes: &Mutex<Nodes>) {
    for id in 1..=count {
        let _ = net::heal(id);
        lock(nodes).free_disk(id);
    }
    if let Err(error) = lock(nodes).heal() {
        eprintln!("weir-jepsen: heal failed: {error:#}");
    }
}
