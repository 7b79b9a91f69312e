//! CLI commands: front ends over the native client, and `dev-cluster`, which runs nodes.

/// Prints a line to standard output, returning the error (rather than panicking as
/// `println!` does) when the reader went away, as with `weir group list | head -1`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

pub mod bench;
pub mod cluster;
pub mod consume;
// Real processes and signals: not part of the simulated node.
#[cfg(not(madsim))]
pub mod dev_cluster;
pub mod group;
pub mod produce;
pub mod topic;

use anyhow::Context;
use client::{Client, ClientConfig};

/// Connects to the cluster at `bootstrap` (comma-separated host:port list).
///
/// # Errors
/// If no bootstrap server answers.
pub async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
    let config = ClientConfig {
        bootstrap_servers: bootstrap
            .split(',')
            .map(|server| server.trim().to_owned())
            .filter(|server| !server.is_empty())
            .collect(),
        client_id: "weir-cli".to_owned(),
        ..ClientConfig::default()
    };
    Client::connect(config).await.with_context(|| format!("cannot reach a broker at {bootstrap}"))
}

/// Parses `key=value`.
///
/// # Errors
/// Without `=`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .ok_or_else(|| format!("expected key=value, got `{text}`"))
}
