//! The broker's validated configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use protocol::ids::NodeId;

/// Default `socket.request.max.bytes` (Kafka's 100 MiB).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 104_857_600;
/// Default `log.disk.reserve.bytes`: produce is refused once free space would drop below it.
pub const LOG_DISK_RESERVE_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default `log.cleaner.backoff.ms` (Kafka's 15 seconds).
pub const LOG_CLEANER_BACKOFF_MS_DEFAULT: u64 = 15_000;
/// Default `log.retention.check.interval.ms` (Kafka's 5 minutes).
pub const LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 300_000;
/// Requests read ahead of their responses on one connection. Bounds the memory a pipelining
/// client can pin (Kafka processes one request per connection at a time; weir reads ahead so
/// acks=all produces on one connection share a group commit).
pub const CONNECTION_IN_FLIGHT_MAX: usize = 64;
/// Kafka's default `offsets.topic.num.partitions`.
pub const OFFSETS_TOPIC_NUM_PARTITIONS_DEFAULT: i32 = 50;
/// Kafka's default `offsets.topic.replication.factor`.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT: i16 = 3;
/// Kafka's default `replica.lag.time.max.ms`.
pub const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 30_000;
/// Longest a Produce or Fetch may ask the broker to wait.
pub const REQUEST_WAIT_MS_MAX: u64 = 300_000;

/// Everything a broker needs to run, already validated by the server's config loader.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: NodeId,
    /// Data directory (`log.dirs`, one directory).
    pub data_dir: PathBuf,
    /// Host advertised to clients in Metadata.
    pub advertised_host: String,
    /// Port advertised to clients.
    pub advertised_port: u16,
    /// `socket.request.max.bytes`: larger request frames close the connection.
    pub socket_request_max_bytes: usize,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `log.disk.reserve.bytes`.
    pub log_disk_reserve_bytes: u64,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// `log.cleaner.backoff.ms`: how often compacted partitions are checked for a cleaning
    /// pass.
    pub log_cleaner_backoff_ms: u64,
    /// `replica.lag.time.max.ms`: an ISR follower that has not caught up with the leader's
    /// log end for this long is proposed out of the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `producer.id.expiration.ms`: how long a partition remembers an idle idempotent
    /// producer's sequences.
    pub producer_id_expiration_ms: i64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: its replication factor (fewer when fewer brokers
    /// are registered).
    pub offsets_topic_replication_factor: i16,
    /// The group coordinator's settings (`group.*`).
    pub groups: coordinator::CoordinatorConfig,
    /// The controller quorum this broker belongs to; `None` for a single node that keeps its
    /// metadata log locally.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Broker configs set explicitly (file, flags, environment), by Kafka name: these supply
    /// topic defaults through synonyms and are reported as `STATIC_BROKER_CONFIG`.
    pub static_configs: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// A config for tests and the simulator: node 1 on the given address and data dir.
    pub fn for_tests(data_dir: PathBuf, host: &str, port: u16) -> BrokerConfig {
        BrokerConfig {
            node_id: NodeId(1),
            data_dir,
            advertised_host: host.to_owned(),
            advertised_port: port,
            socket_request_max_bytes: SOCKET_REQUEST_MAX_BYTES_DEFAULT,
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            log_disk_reserve_bytes: 0,
            log_retention_check_interval_ms: LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            log_cleaner_backoff_ms: LOG_CLEANER_BACKOFF_MS_DEFAULT,
            replica_lag_time_max_ms: REPLICA_LAG_TIME_MAX_MS_DEFAULT,
            producer_id_expiration_ms: replication::producer_state::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            offsets_topic_num_partitions: OFFSETS_TOPIC_NUM_PARTITIONS_DEFAULT,
            offsets_topic_replication_factor: OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT,
            groups: coordinator::CoordinatorConfig::default(),
            static_configs: BTreeMap::new(),
            cluster: None,
        }
    }
}
