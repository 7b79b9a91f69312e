//! The delaying proxy: this kernel has no `netem` qdisc, so delay between namespaces is a small
//! userspace TCP proxy in the harness's namespace.
//!
//! The proxy listens, from the start of a run that may delay, on one port of the harness's
//! address per node port ([`proxy_port`]). To delay the links between a node and the others,
//! the nemesis adds nftables rules in each namespace on either side: a `dnat` in the chain the
//! `nat` output hook jumps to sends new connections to the peer's Kafka or controller port to the matching
//! proxy port instead, and a `reject with tcp reset` in the filter output hook (which sees
//! addresses after that `dnat`, so proxied connections pass) ends the direct connections
//! already open, so the nodes reconnect through the proxy. The proxy forwards each chunk it
//! reads after the link's delay plus jitter, in order. Healing flushes the rules and closes
//! every proxied connection, so the nodes reconnect directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::net;
use crate::nodes::{CONTROLLER_PORT, KAFKA_PORT};
use crate::workload::Rng;

/// First proxy port: node `id`'s port number `k` (Kafka 0, controller 1) is proxied at
/// `PROXY_PORT_BASE + 2 * id + k`.
const PROXY_PORT_BASE: u16 = 21_000;
/// The node ports the proxy stands in for.
const NODE_PORTS: [u16; 2] = [KAFKA_PORT, CONTROLLER_PORT];
/// Bytes one read may take.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight per direction of one connection (so at most 16 MiB held per direction).
const CHUNKS_IN_FLIGHT_MAX: usize = 256;

/// The proxy port standing in for `port` of node `id`.
fn proxy_port(id: u32, port: u16) -> u16 {
    let index = NODE_PORTS.iter().position(|candidate| *candidate == port).unwrap_or(0);
    PROXY_PORT_BASE + 2 * id as u16 + index as u16
}

/// A link's delay: each chunk waits `base_ms` plus up to `jitter_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delay {
    /// Fixed part.
    pub(crate) base_ms: u64,
    /// Random part, at most.
    pub(crate) jitter_ms: u64,
}

/// The proxy: its delays by (source node, destination node), and the epoch that closes every
/// proxied connection when it moves.
#[derive(Debug)]
pub(crate) struct DelayProxy {
    delays: Mutex<HashMap<(u32, u32), Delay>>,
    epoch: watch::Sender<u64>,
}

impl DelayProxy {
    /// Listens for every node port of `nodes` nodes.
    ///
    /// # Errors
    /// If a port cannot be bound.
    pub(crate) async fn start(nodes: u32) -> anyhow::Result<Arc<DelayProxy>> {
        let (epoch, _) = watch::channel(0);
        let proxy = Arc::new(DelayProxy { delays: Mutex::new(HashMap::new()), epoch });
        for id in 1..=nodes {
            for port in NODE_PORTS {
                let address = format!("{}:{}", net::harness_ip(), proxy_port(id, port));
                let listener =
                    TcpListener::bind(&address).await.with_context(|| format!("the proxy cannot bind {address}"))?;
                let target = format!("{}:{port}", net::node_ip(id));
                let _accepting = rt::task::spawn(Arc::clone(&proxy).accept(listener, id, target));
            }
        }
        Ok(proxy)
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, destination: u32, target: String) {
        let mut seed = u64::from(destination);
        while let Ok((inbound, peer)) = listener.accept().await {
            let source = match peer.ip() {
                std::net::IpAddr::V4(ip) => u32::from(ip.octets()[3]),
                std::net::IpAddr::V6(_) => 0,
            };
            seed += 1;
            let proxy = Arc::clone(&self);
            let target = target.clone();
            let _connection = rt::task::spawn(async move {
                let Ok(outbound) = TcpStream::connect(&target).await else { return };
                let delay = proxy.delay(source, destination);
                let mut epoch = proxy.epoch.subscribe();
                let (inbound_read, inbound_write) = inbound.into_split();
                let (outbound_read, outbound_write) = outbound.into_split();
                tokio::select! {
                    () = pump(inbound_read, outbound_write, delay, Rng::new(seed)) => {}
                    () = pump(outbound_read, inbound_write, delay, Rng::new(!seed)) => {}
                    _ = epoch.changed() => {}
                }
            });
        }
    }

    fn delay(&self, source: u32, destination: u32) -> Delay {
        let delays = self.delays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        delays.get(&(source, destination)).copied().unwrap_or(Delay { base_ms: 0, jitter_ms: 0 })
    }

    /// Delays every link between `victim` and the other nodes, both ways.
    ///
    /// # Errors
    /// If a rule cannot be added.
    pub(crate) fn delay_node(&self, victim: u32, nodes: u32, delay: Delay) -> anyhow::Result<()> {
        {
            let mut delays = self.delays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for other in (1..=nodes).filter(|other| *other != victim) {
                let _ = delays.insert((victim, other), delay);
                let _ = delays.insert((other, victim), delay);
            }
        }
        for other in (1..=nodes).filter(|other| *other != victim) {
            redirect(victim, other)?;
            redirect(other, victim)?;
        }
        Ok(())
    }

    /// Forgets every delay and closes every proxied connection (after the rules were flushed).
    pub(crate) fn heal(&self) {
        self.delays.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.epoch.send_modify(|epoch| *epoch += 1);
    }
}

/// In `source`'s namespace: new connections to `destination`'s ports go through the proxy,
/// and direct ones already open are reset.
fn redirect(source: u32, destination: u32) -> anyhow::Result<()> {
    let ip = net::node_ip(destination);
    for port in NODE_PORTS {
        net::nft(
            source,
            &format!(
                "add rule inet weirjepsen redirects ip daddr {ip} tcp dport {port} dnat ip to {}:{}",
                net::harness_ip(),
                proxy_port(destination, port)
            ),
        )?;
        net::nft(
            source,
            &format!("add rule inet weirjepsen output ip daddr {ip} tcp dport {port} reject with tcp reset"),
        )?;
    }
    Ok(())
}

/// Copies `from` to `to`, each chunk after the delay, in order, until either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Delay,
    mut rng: Rng,
) {
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let reading = async move {
        let mut last_due = Instant::now();
        loop {
            let mut chunk = vec![0; CHUNK_BYTES];
            let read = match from.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            chunk.truncate(read);
            let wait = delay.base_ms + rng.below(delay.jitter_ms + 1);
            // Jitter never reorders: a chunk is due no earlier than the one before it.
            last_due = last_due.max(Instant::now() + Duration::from_millis(wait));
            if sender.send((last_due, chunk)).await.is_err() {
                return;
            }
        }
    };
    let writing = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // Reading ends at the source's end (dropping the sender); writing then drains what is due.
    let ((), ()) = tokio::join!(reading, writing);
}
