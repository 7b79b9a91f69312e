//! The hosts: one network namespace per node, joined by veth pairs to a bridge in the root
//! namespace, which is where the harness's clients run. Addresses come from 10.88.0.0/24, a
//! range used only inside these namespaces. Partitions are nftables rules inside a node's
//! namespace (a table `weirjepsen` with input and output chains), so healing is one flush.

use std::process::Command;

use anyhow::{bail, Context};

/// Prefix of every namespace, link and bridge the harness creates (so cleanup finds leftovers).
pub(crate) const PREFIX: &str = "wj";
/// The bridge in the root namespace.
const BRIDGE: &str = "wj-br0";
/// The harness's own address on the bridge.
pub(crate) const HARNESS_IP: &str = "10.88.0.254";

/// The address of node `id` (1-based).
pub(crate) fn node_ip(id: u32) -> String {
    format!("10.88.0.{id}")
}

/// The namespace of node `id`.
pub(crate) fn namespace(id: u32) -> String {
    format!("{PREFIX}-n{id}")
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
fn nft(id: u32, script: &str) -> anyhow::Result<()> {
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
            if name.starts_with(&format!("{PREFIX}-n")) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    // Host ends of veth pairs whose namespace is still going away, and the bridge.
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(&format!("{PREFIX}-")) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
}

/// Creates the bridge and `nodes` namespaces, each with its address and an empty nftables
/// table for partitions.
pub(crate) fn setup(nodes: u32) -> anyhow::Result<()> {
    cleanup();
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", &format!("{HARNESS_IP}/24"), "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    for id in 1..=nodes {
        let ns = namespace(id);
        let host_end = format!("{PREFIX}-v{id}");
        let node_end = format!("{PREFIX}-p{id}");
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
        run("ip", &["link", "set", &node_end, "netns", &ns])?;
        run("ip", &["link", "set", &host_end, "master", BRIDGE, "up"])?;
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

/// Removes every partition rule of node `id`.
pub(crate) fn heal(id: u32) -> anyhow::Result<()> {
    nft(id, "flush chain inet weirjepsen input")?;
    nft(id, "flush chain inet weirjepsen output")
}
