//! Connection-level configuration shared by the admin API, the producer and the consumer.

use crate::error::ClientError;
use crate::limits::{METADATA_MAX_AGE_MS_DEFAULT, SOCKET_MAX_BYTES_DEFAULT, SOCKET_MAX_BYTES_MIN};

/// How a [`crate::Client`] finds and talks to the cluster.
///
/// Field names follow Kafka's client properties with dots turned into underscores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `host:port` addresses used to bootstrap: the first reachable one answers the initial
    /// Metadata request; afterwards the client talks to brokers as the metadata names them.
    ///
    /// Default: `["localhost:9092"]`. Range: at least one entry.
    pub bootstrap_servers: Vec<String>,
    /// Sent in every request header so brokers can attribute requests in logs and quotas.
    ///
    /// Default: `"weir"`.
    pub client_id: String,
    /// How long a request (and a connect plus ApiVersions handshake) may take before it fails
    /// with a retriable timeout and its connection is dropped.
    ///
    /// Default: 30000. Range: 1..=2^31-1.
    pub request_timeout_ms: u64,
    /// Cached metadata older than this is refreshed before it is used to route a request.
    ///
    /// Default: 300000.
    pub metadata_max_age_ms: u64,
    /// Pause between attempts of a retried operation (producer batches, metadata lookups).
    ///
    /// Default: 100.
    pub retry_backoff_ms: u64,
    /// The largest response frame the client reads; a larger length prefix drops the
    /// connection before anything is allocated.
    ///
    /// Default: 104857600 (100 MiB). Range: 65536..=2^31-1.
    pub socket_max_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: vec!["localhost:9092".to_owned()],
            client_id: "weir".to_owned(),
            request_timeout_ms: 30_000,
            metadata_max_age_ms: METADATA_MAX_AGE_MS_DEFAULT,
            retry_backoff_ms: 100,
            socket_max_bytes: SOCKET_MAX_BYTES_DEFAULT,
        }
    }
}

impl ClientConfig {
    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |field, reason| Err(ClientError::InvalidConfig { field, reason });
        if self.bootstrap_servers.is_empty() {
            return invalid("bootstrap_servers", "needs at least one host:port");
        }
        if self.bootstrap_servers.iter().any(|address| !address.contains(':')) {
            return invalid("bootstrap_servers", "every entry must be host:port");
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > i32::MAX as u64 {
            return invalid("request_timeout_ms", "must be in 1..=2147483647");
        }
        if !(SOCKET_MAX_BYTES_MIN..=i32::MAX as usize).contains(&self.socket_max_bytes) {
            return invalid("socket_max_bytes", "must be in 65536..=2147483647");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        assert!(ClientConfig::default().validate().is_ok());
        let config = ClientConfig { bootstrap_servers: vec![], ..ClientConfig::default() };
        assert!(matches!(config.validate(), Err(ClientError::InvalidConfig { field: "bootstrap_servers", .. })));
        let config = ClientConfig { socket_max_bytes: 10, ..ClientConfig::default() };
        assert!(matches!(config.validate(), Err(ClientError::InvalidConfig { field: "socket_max_bytes", .. })));
    }
}
