//! The `weir` binary's library: configuration, the node entry point, and the CLI commands.
//!
//! # Design
//!
//! [`config`] layers embedded defaults, a TOML file, `WEIR_*` variables and flags, and
//! validates everything before anything starts. [`run_node`] is the one entry point that
//! starts a node, used by `weir server` and by the simulator (which passes its own disk and
//! clock). The `cmd` modules are thin CLI front ends over the native client.

pub mod cmd;
pub mod config;

use std::sync::Arc;

use config::NodeConfig;

/// Errors of starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker could not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The controller's Raft log could not be opened.
    #[error("cannot open the controller log: {0}")]
    ControllerLog(#[from] storage::StorageError),
    /// The controller could not start.
    #[error(transparent)]
    Controller(#[from] controller::ControllerError),
}

/// Directory (under the metadata directory) of a controller's Raft log.
pub const RAFT_LOG_DIR: &str = "raft";

async fn bind(address: &str) -> Result<rt::net::TcpListener, NodeError> {
    rt::net::TcpListener::bind(address).await.map_err(|source| NodeError::Bind { address: address.to_owned(), source })
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Starts this node's controller (when it is a voter of a multi-node quorum); the returned
/// sender stops it when dropped.
async fn start_controller(config: &NodeConfig) -> Result<Option<rt::sync::oneshot::Sender<()>>, NodeError> {
    let Some((host, port)) = config.controller_listen.clone().filter(|_| !config.voters.is_empty()) else {
        return Ok(None);
    };
    let address = host_port(&host, port);
    let listener = bind(&address).await?;
    let dir = config.broker.data_dir.join(broker::node::METADATA_DIR).join(RAFT_LOG_DIR);
    let (store, recovered) = storage::raft_log::RaftLogStore::open_os(&dir)?;
    let voters = config.voters.iter().map(|voter| (voter.node_id.0 as u64, voter.address())).collect();
    let quorum_config = controller::QuorumConfig::new(config.broker.node_id.0 as u64, voters);
    let (stop, stopped) = rt::sync::oneshot::channel::<()>();
    let (control, streams) = rt::sync::mpsc::channel(controller::quorum::INBOX_MAX);
    let applied = controller::service::AppliedLog::new();
    let quorum = controller::Quorum::start(
        quorum_config,
        store,
        recovered,
        listener,
        Some(control),
        Some(applied.observer(None)),
        async move {
            let _ = stopped.await;
        },
    )?;
    let service = controller::service::ControllerService::start(quorum, applied, config.session_timeout_ms, streams);
    if let Some((interval_ms, imbalance_percent)) = config.leader_rebalance {
        service.balance_leaders(interval_ms, imbalance_percent);
    }
    tracing::info!(listener = %address, raft_log = %dir.display(), "controller serving the quorum");
    println!("weir controller {} listening on {address}", config.broker.node_id.0);
    Ok(Some(stop))
}

/// Starts a node and serves until the future `shutdown` completes.
///
/// A node is a single node (no voters: its metadata log is a local file), or a member of a
/// cluster: a controller (a voter, serving the quorum on its controller listener), a broker
/// (following the quorum's log and serving Kafka clients), or both.
///
/// # Errors
/// Bind, controller and broker start errors.
pub async fn run_node(
    config: NodeConfig,
    disk: storage::SharedDisk,
    clock: rt::time::SharedClock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let stop_controller = if config.roles.controller { start_controller(&config).await? } else { None };
    if !config.roles.broker {
        shutdown.await;
        drop(stop_controller);
        return Ok(());
    }
    let address = host_port(&config.listen_host, config.listen_port);
    let broker = broker::Broker::start(config.broker.clone(), disk, clock).await?;
    // A cluster member listens for clients once it caught up with the metadata log (so a
    // client never meets it with an empty image, and "accepts connections" means "serves").
    let mut shutdown = std::pin::pin!(shutdown);
    rt::select! {
        () = broker.ready() => {}
        () = &mut shutdown => {
            broker.shutdown().await;
            drop(stop_controller);
            return Ok(());
        }
    }
    let listener = match bind(&address).await {
        Ok(listener) => listener,
        Err(error) => {
            broker.shutdown().await;
            return Err(error);
        }
    };
    // Printed only once the listener is bound, the data directory recovered and (in a
    // cluster) the broker unfenced, so scripts may wait for this line.
    println!(
        "weir {} serving Kafka on {address} (data in {})",
        env!("CARGO_PKG_VERSION"),
        config.broker.data_dir.display()
    );
    tracing::info!(
        listener = %address,
        advertised = %format!("{}:{}", config.broker.advertised_host, config.broker.advertised_port),
        data_dir = %config.broker.data_dir.display(),
        node_id = config.broker.node_id.0,
        "weir node serving the Kafka API"
    );
    let serving = Arc::new(broker);
    let server = Arc::clone(&serving);
    let accept = rt::task::spawn(async move { server.serve(listener).await });
    shutdown.await;
    accept.abort();
    // The controller stays up through the broker's controlled shutdown, which it may serve.
    serving.shutdown().await;
    drop(stop_controller);
    Ok(())
}
