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
}

/// Starts a node and serves until the future `shutdown` completes.
///
/// # Errors
/// Bind and broker start errors.
pub async fn run_node(
    config: NodeConfig,
    disk: storage::SharedDisk,
    clock: rt::time::SharedClock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let address = format!("{}:{}", config.listen_host, config.listen_port);
    let listener = rt::net::TcpListener::bind(address.as_str())
        .await
        .map_err(|source| NodeError::Bind { address: address.clone(), source })?;
    let broker = broker::Broker::start(config.broker.clone(), disk, clock).await?;
    // Printed only once the listener is bound and the data directory recovered, so scripts
    // may wait for this line.
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
    serving.shutdown().await;
    Ok(())
}
