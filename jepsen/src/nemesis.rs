//! The nemesis: faults drawn from the run's seed, one at a time, each bounded and healed.
//!
//! * `kill`: SIGKILL one node (or a minority of a 5-node cluster), restart it 1-5 s later;
//! * `kill-leader`: the same for the leader of a random `jepsen` partition, as the cluster's
//!   metadata names it (a random node if it cannot be asked);
//! * `kill-controller`: the same for the active controller;
//! * `pause`: SIGSTOP one node for 1-8 s, then SIGCONT;
//! * `partition`: nftables rules, for 3-15 s, in one of three shapes: one node isolated from
//!   the others (and, one time in three, from the clients too); a random majority and
//!   minority that cannot reach each other; or a bridge, two halves that cannot reach each
//!   other but both reach one node in the middle;
//! * `loss`: nftables `numgen random` rules drop 5-40% of one node's packets, both ways, for
//!   3-15 s;
//! * `delay`: one node's links to the other nodes go through the delaying proxy
//!   (`proxy.rs`), 20-500 ms each way plus up to half that again of jitter, for 3-15 s;
//! * `clock`: libfaketime offsets of the realtime clock for 3-15 s, then back to true time:
//!   one node bumped by up to 5 minutes either way, or every node skewed by up to 30 s, or one
//!   node strobing (a new offset within a minute every second);
//! * `disk`: one node's data filesystem (its own tmpfs) is filled for 3-15 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net;
use crate::nodes::Nodes;
use crate::proxy::{Delay, DelayProxy};
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
    /// Delay through the proxy.
    Delay,
    /// libfaketime clock offsets.
    Clock,
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
            "delay" => Some(Fault::Delay),
            "clock" => Some(Fault::Clock),
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
    proxy: Option<Arc<DelayProxy>>,
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
                let (cuts, what) = partition_shape(victim, count, &mut rng);
                for (id, peers) in &cuts {
                    if let Err(error) = net::isolate(*id, peers) {
                        eprintln!("weir-jepsen: partition failed: {error:#}");
                    }
                }
                sleep(3_000 + rng.below(12_000)).await;
                for id in 1..=count {
                    if let Err(error) = net::heal(id) {
                        eprintln!("weir-jepsen: heal failed: {error:#}");
                    }
                }
                what
            }
            Fault::Delay => {
                let base_ms = 20 + rng.below(481);
                let delay = Delay { base_ms, jitter_ms: rng.below(base_ms / 2 + 1) };
                if let Some(proxy) = &proxy {
                    if let Err(error) = proxy.delay_node(victim, count, delay) {
                        eprintln!("weir-jepsen: delay failed: {error:#}");
                    }
                }
                sleep(3_000 + rng.below(12_000)).await;
                for id in 1..=count {
                    if let Err(error) = net::heal(id) {
                        eprintln!("weir-jepsen: heal failed: {error:#}");
                    }
                }
                if let Some(proxy) = &proxy {
                    proxy.heal();
                    // A connection redirected just before the flush may be accepted just after
                    // that close: close again once such stragglers are in.
                    sleep(500).await;
                    proxy.heal();
                }
                format!("delay {victim} by {base_ms}+{} ms", delay.jitter_ms)
            }
            Fault::Clock => {
                let set = |id: u32, offset_ms: i64| {
                    if let Err(error) = lock(&nodes).set_clock(id, offset_ms) {
                        eprintln!("weir-jepsen: clock fault failed: {error:#}");
                    }
                };
                let offset = |rng: &mut Rng, bound_ms: u64| rng.below(2 * bound_ms + 1) as i64 - bound_ms as i64;
                let hold_ms = 3_000 + rng.below(12_000);
                let what = match rng.below(3) {
                    0 => {
                        let offset_ms = offset(&mut rng, 300_000);
                        set(victim, offset_ms);
                        sleep(hold_ms).await;
                        format!("clock bump {victim} by {offset_ms} ms")
                    }
                    1 => {
                        let offsets: Vec<i64> = (1..=count).map(|_| offset(&mut rng, 30_000)).collect();
                        for (id, offset_ms) in (1..=count).zip(&offsets) {
                            set(id, *offset_ms);
                        }
                        sleep(hold_ms).await;
                        format!("clock skew {offsets:?} ms")
                    }
                    _ => {
                        let mut left_ms = hold_ms;
                        while left_ms > 0 && !stop.load(Ordering::Relaxed) {
                            set(victim, offset(&mut rng, 60_000));
                            sleep(1_000).await;
                            left_ms = left_ms.saturating_sub(1_000);
                        }
                        format!("clock strobe {victim}")
                    }
                };
                for id in 1..=count {
                    set(id, 0);
                }
                // libfaketime re-reads its file every second.
                sleep(1_100).await;
                what
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
    heal_all(count, &nodes, proxy.as_deref());
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

/// The cuts of a partition: for each node, the addresses it must not exchange packets with,
/// and a description.
fn partition_shape(victim: u32, count: u32, rng: &mut Rng) -> (Vec<(u32, Vec<String>)>, String) {
    // The nodes in a random order, the victim first.
    let mut order: Vec<u32> = (1..=count).filter(|id| *id != victim).collect();
    for index in (1..order.len()).rev() {
        order.swap(index, rng.below(index as u64 + 1) as usize);
    }
    order.insert(0, victim);
    let cut = |a: &[u32], b: &[u32]| -> Vec<(u32, Vec<String>)> {
        a.iter()
            .map(|id| (*id, b.iter().map(|peer| net::node_ip(*peer)).collect()))
            .chain(b.iter().map(|id| (*id, a.iter().map(|peer| net::node_ip(*peer)).collect())))
            .collect()
    };
    match rng.below(3) {
        0 => {
            let mut cuts = cut(&order[..1], &order[1..]);
            let from_clients = rng.below(3) == 0;
            if from_clients {
                cuts[0].1.push(net::harness_ip());
            }
            (cuts, format!("isolate {victim}{}", if from_clients { " (and clients)" } else { "" }))
        }
        1 => {
            let minority = ((count as usize - 1) / 2).max(1);
            let (small, large) = order.split_at(minority);
            (cut(small, large), format!("split {small:?} | {large:?}"))
        }
        _ => {
            // order[0] is the bridge; the rest split in two halves that only it joins.
            let rest = &order[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            (cut(left, right), format!("bridge {left:?} | {victim} | {right:?}"))
        }
    }
}

/// Removes every partition, resumes and restarts every node, and sets true time.
pub(crate) fn heal_all(count: u32, nodes: &Mutex<Nodes>, proxy: Option<&DelayProxy>) {
    for id in 1..=count {
        let _ = net::heal(id);
        lock(nodes).free_disk(id);
        let _ = lock(nodes).set_clock(id, 0);
    }
    if let Some(proxy) = proxy {
        proxy.heal();
    }
    if let Err(error) = lock(nodes).heal() {
        eprintln!("weir-jepsen: heal failed: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every shape cuts both directions of each cut link, never a node from itself, and keeps
    /// a majority side or a bridge that reaches everyone.
    #[test]
    fn partition_shapes_cut_both_ways_and_leave_a_reachable_majority_or_bridge() {
        for count in [3_u32, 5] {
            let mut rng = Rng::new(u64::from(count));
            let mut seen = BTreeSet::new();
            for round in 0..200 {
                let victim = 1 + round % count;
                let (cuts, what) = partition_shape(victim, count, &mut rng);
                let _ = seen.insert(what.split_whitespace().next().unwrap_or_default().to_owned());
                let cut = |a: u32, b: u32| cuts.iter().any(|(id, peers)| *id == a && peers.contains(&net::node_ip(b)));
                for a in 1..=count {
                    assert!(!cut(a, a), "{what}: node {a} cut from itself");
                    for b in 1..=count {
                        assert_eq!(cut(a, b), cut(b, a), "{what}: the cut {a}-{b} is one-way");
                    }
                }
                let reaches_all = |a: u32| (1..=count).all(|b| !cut(a, b));
                let isolated = (1..=count).filter(|a| (1..=count).all(|b| *a == b || cut(*a, b))).count() as u32;
                if what.starts_with("bridge") {
                    assert!(reaches_all(victim), "{what}: the bridge {victim} is cut");
                } else {
                    assert!(isolated <= (count - 1) / 2, "{what}: no majority left");
                }
            }
            assert_eq!(seen.len(), 3, "all three shapes drawn: {seen:?}");
        }
    }
}
