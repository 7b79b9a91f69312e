//! The weir broker: Kafka listeners, the per-connection request pipeline, one handler per
//! Kafka API, and the partitions hosted on this node.
//!
//! # Design
//!
//! [`Broker::start`] opens the data directory ([`node::Node::open`]: metadata log replay,
//! partition recovery) and serves a listener. Each connection ([`connection`]) decodes frames
//! with `protocol`, dispatches them to `handler::*` (one file per API), and writes responses in
//! request order. A partition ([`partition`]) wraps its segment log with the high watermark
//! and a group-commit flusher: by default the high watermark counts only fsynced data, so an
//! acks=all produce completes only after fsync, and consumers never see data a crash could
//! take back.
//!
//! All I/O goes through `rt` (sockets, timers, tasks) and `storage::Disk` (files), so the same
//! broker runs in production and in the simulator.
//!
//! # Invariants
//!
//! * A partition's high watermark never decreases and never passes its durable end offset
//!   unless `write.caching=true`.
//! * Responses on a connection leave in request order.
//! * A metadata change is durable before it is visible.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker::BrokerError> {
//! let config = broker::BrokerConfig::for_tests("./weir-data".into(), "127.0.0.1", 9092);
//! let listener = rt::net::TcpListener::bind("127.0.0.1:9092").await.expect("bind");
//! let broker = broker::Broker::start(config, storage::OsDisk::shared(), rt::time::system_clock()).await?;
//! broker.serve(listener).await;
//! # Ok(()) }
//! ```

mod cluster;
pub mod config;
mod connection;
mod error;
mod follower;
mod groups;
mod handler;
pub mod node;
pub mod observe;
mod partition;

use std::sync::Arc;

pub use cluster::{ClusterConfig, ImageObserver, BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT};
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use node::Node;

/// Planted bugs: deliberate faults the simulator must catch, compiled only with the
/// `planted-bugs` feature and active only when `WEIR_PLANTED_BUG` names them.
///
/// * `ack-before-fsync`: appended data counts as durable at once, so acks=all completes before
///   the fsync (the crash scenarios must catch it);
/// * `follower-skips-entry`: a broker following the metadata log skips every 16th entry
///   (the cluster scenario's image check must catch it);
/// * `truncate-to-high-watermark`: a diverged follower cuts its log at its high watermark
///   instead of where its epoch ends on the leader (the pre-KIP-101 rule);
/// * `follower-reports-unsynced`: a follower fetches on before fsyncing what it appended, so
///   the leader counts unsynced data in the high watermark;
/// * `expand-isr-before-epoch-start`: a leader admits a follower to the ISR once it reached
///   the high watermark, before it reached the start of the leader's epoch;
/// * `ack-before-replication`: a leader's high watermark follows its own durable end alone, so
///   acks=all completes before any follower has the batch (the fault harness, `jepsen/`, must
///   catch it on real processes).
///
/// True when `name` is active and `when` holds.
pub(crate) fn planted_bug(name: &str, when: bool) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        when && std::env::var("WEIR_PLANTED_BUG").is_ok_and(|bug| bug == name)
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = (name, when);
        false
    }
}

/// A running broker.
#[derive(Debug, Clone)]
pub struct Broker {
    node: Arc<Node>,
}

/// How often the housekeeping loop runs (`flush.ms` checks); retention runs every
/// `log.retention.check.interval.ms`.
const HOUSEKEEPING_INTERVAL_MS: u64 = 100;

impl Broker {
    /// Opens the data directory, recovers every partition, and starts housekeeping.
    ///
    /// # Errors
    /// Any error from [`Node::open`].
    pub async fn start(
        config: BrokerConfig,
        disk: storage::SharedDisk,
        clock: rt::time::SharedClock,
    ) -> Result<Broker, BrokerError> {
        let node = Node::open(config, disk, clock).await?;
        if node.config.cluster.is_some() {
            cluster::start(&node);
        }
        let housekeeper = Arc::clone(&node);
        drop(rt::task::spawn(async move {
            let retention_every =
                (housekeeper.config.log_retention_check_interval_ms / HOUSEKEEPING_INTERVAL_MS).max(1);
            let mut ticks: u64 = 0;
            loop {
                rt::time::sleep(rt::time::Duration::from_millis(HOUSEKEEPING_INTERVAL_MS)).await;
                ticks += 1;
                housekeeper.housekeeping(ticks % retention_every == 0).await;
            }
        }));
        // The cleaner has its own task: a long pass must not hold up the flush and ISR checks.
        let cleaner = Arc::clone(&node);
        drop(rt::task::spawn(async move {
            let backoff = rt::time::Duration::from_millis(cleaner.config.log_cleaner_backoff_ms);
            loop {
                rt::time::sleep(backoff).await;
                cleaner.clean_logs().await;
            }
        }));
        Ok(Broker { node })
    }

    /// Returns once the broker may serve clients: at once for a single node; for a cluster
    /// member, once the controller has unfenced it (it registered and caught up with the
    /// metadata log), so clients never see it with an empty image.
    pub async fn ready(&self) {
        if self.node.config.cluster.is_some() {
            cluster::wait_ready(&self.node).await;
        }
    }

    /// Accepts connections forever.
    pub async fn serve(&self, listener: rt::net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let node = Arc::clone(&self.node);
                    drop(rt::task::spawn(connection::serve(node, stream)));
                }
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    rt::time::sleep(rt::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The node's shared state.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Broker {
    /// Shuts down cleanly: a cluster member first has the controller move its leaderships
    /// away (controlled shutdown); then every partition is flushed, so nothing is lost even of
    /// write-cached topics; a cluster member then records the clean shutdown.
    pub async fn shutdown(&self) {
        let clustered = self.node.config.cluster.is_some();
        if clustered {
            cluster::controlled_shutdown(&self.node).await;
        }
        for partition in self.node.all_partitions() {
            if let Err(error) = partition.log.flush().await {
                tracing::error!(partition = %partition.topic_partition, %error, "flush at shutdown failed");
            }
        }
        if clustered {
            cluster::write_clean_shutdown(&self.node).await;
        }
    }
}
