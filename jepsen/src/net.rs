//! The hosts: one network namespace per node, joined by veth pairs to a bridge in the root
//! namespace, which is where the harness's clients run. Addresses come from 10.88.K.0/24 for
//! instance K (`--instance`, default 0), a range used only inside these namespaces; names
//! start with `wj-` (instance 0) or `wjK-`, so runs of different instances can share a machine. Partitions are nftables rules inside a node's
//! namespace (a table `weirjepsen` with input and output filter chains, and a `redirects`
//! chain the `nat` output hook jumps to for the delaying proxy), so healing is a flush of each.

use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{bail, Context};

/// This run's instance (`--instance`).
static INSTANCE: AtomicU8 = AtomicU8::new(0);
/// Instances allowed (names and subnets stay short and private).
pub(crate) const INSTANCES_MAX: u8 = 16;

/// Sets this run's instance; call once, first.
pub(crate) fn set_instance(instance: u8) {
    INSTANCE.store(instance, Ordering::Relaxed);
}

fn instance() -> u8 {
    INSTANCE.load(Ordering::Relaxed)
}

/// Prefix of every namespace, link and bridge this instance creates (so cleanup finds its
/// leftovers and no other instance's).
fn prefix() -> String {
    match instance() {
        0 => "wj".to_owned(),
        instance => format!("wj{instance}"),
    }
}

/// The bridge in the root namespace.
fn bridge() -> String {
    format!("{}-br0", prefix())
}

/// The harness's own address on the bridge.
pub(crate) fn harness_ip() -> String {
    format!("10.88.{}.254", instance())
}

/// The address of node `id` (1-based).
pub(crate) fn node_ip(id: u32) -> String {
    format!("10.88.{}.{id}", instance())
}

/// The namespace of node `id`.
pub(crate) fn namespace(id: u32) -> String {
    format!("{}-n{id}", prefix())
}

/// Runs a command, failing with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Runs one `nft` command inside node `id`'s namespace.
pub(crate) fn nft(id: u32, script: &str) -> anyhow::Result<()> {
    let ns = namespace(id);
    run("ip", &["netns", "exec", &ns, "nft", script])
}

/// Checks what the harness needs, naming the Debian package of anything missing.
pub(crate) fn preflight() -> anyhow::Result<()> {
    let uid = Command::new("id").arg("-u").output().context("cannot run id")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("weir-jepsen must run as root (it creates network namespaces and nftables rules)");
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables"), ("kill", "procps")] {
        let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output();
        if !found.is_ok_and(|output| output.status.success()) {
            bail!("`{program}` is missing: install the Debian package {package} (apt-get install -y {package})");
        }
    }
    Ok(())
}

/// Removes every namespace and link a previous run left (an interrupted or crashed run).
pub(crate) fn cleanup() {
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&format!("{}-n", prefix())) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    // Host ends of veth pairs whose namespace is still going away, and the bridge.
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(&format!("{}-", prefix())) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
}

/// Creates the bridge and `nodes` namespaces, each with its address and an empty nftables
/// table for partitions.
pub(crate) fn setup(nodes: u32) -> anyhow::Result<()> {
    cleanup();
    let bridge = bridge();
    run("ip", &["link", "add", &bridge, "type", "bridge"])?;
    run("ip", &["addr", "add", &format!("{}/24", harness_ip()), "dev", &bridge])?;
    run("ip", &["link", "set", &bridge, "up"])?;
    for id in 1..=nodes {
        let ns = namespace(id);
        let host_end = format!("{}-v{id}", prefix());
        let node_end = format!("{}-p{id}", prefix());
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
        run("ip", &["link", "set", &node_end, "netns", &ns])?;
        run("ip", &["link", "set", &host_end, "master", &bridge, "up"])?;
        let exec = |args: &[&str]| -> anyhow::Result<()> {
            let mut full = vec!["netns", "exec", ns.as_str()];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&["ip", "addr", "add", &format!("{}/24", node_ip(id)), "dev", &node_end])?;
        exec(&["ip", "link", "set", &node_end, "up"])?;
        nft(id, "add table inet weirjepsen")?;
        nft(id, "add chain inet weirjepsen input { type filter hook input priority 0 ; policy accept ; }")?;
        nft(id, "add chain inet weirjepsen output { type filter hook output priority 0 ; policy accept ; }")?;
        // The delaying proxy's redirections (`proxy.rs`) live in a regular chain that healing
        // flushes; the base chain keeps a `dnat` rule that matches nothing, and the jump. On
        // this kernel, once the nat chain holds no `dnat` rule, the replies of connections it
        // translated are no longer translated back: the proxy's FIN never reached a node,
        // whose fetch then waited out its 10 s timeout.
        nft(id, "add chain inet weirjepsen redirects")?;
        nft(id, "add chain inet weirjepsen nat_output { type nat hook output priority -100 ; policy accept ; }")?;
        nft(id, "add rule inet weirjepsen nat_output ip daddr 127.0.0.9 tcp dport 9 dnat ip to 127.0.0.9:9")?;
        nft(id, "add rule inet weirjepsen nat_output jump redirects")?;
    }
    Ok(())
}

/// Cuts node `id` off from `peers` (both directions, dropped silently).
pub(crate) fn isolate(id: u32, peers: &[String]) -> anyhow::Result<()> {
    for peer in peers {
        nft(id, &format!("add rule inet weirjepsen input ip saddr {peer} drop"))?;
        nft(id, &format!("add rule inet weirjepsen output ip daddr {peer} drop"))?;
    }
    Ok(())
}

/// Drops `percent` of node `id`'s packets at random, both ways.
pub(crate) fn drop_randomly(id: u32, percent: u64) -> anyhow::Result<()> {
    nft(id, &format!("add rule inet weirjepsen input numgen random mod 100 < {percent} drop"))?;
    nft(id, &format!("add rule inet weirjepsen output numgen random mod 100 < {percent} drop"))
}

/// Removes every partition, loss and redirection rule of node `id`.
pub(crate) fn heal(id: u32) -> anyhow::Result<()> {
    nft(id, "flush chain inet weirjepsen input")?;
    nft(id, "flush chain inet weirjepsen output")?;
    nft(id, "flush chain inet weirjepsen redirects")
}
