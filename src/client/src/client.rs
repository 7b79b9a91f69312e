//! The [`Client`]: a connection pool keyed by broker address and a metadata cache.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use protocol::ids::TopicPartition;
use protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use protocol::kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestKind, ResponseKind, TopicName,
};
use protocol::kafka_protocol::protocol::StrBytes;
use rt::time::{Duration, Instant};

use crate::config::ClientConfig;
use crate::connection::{lock, Connection, ConnectionOptions};
use crate::error::ClientError;

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition index.
    pub partition: i32,
    /// The leader's broker id, or -1 if the partition has no leader right now.
    pub leader: i32,
    /// Broker ids of all replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader epoch the metadata was taken at.
    pub leader_epoch: i32,
}

/// One broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker's `node.id`.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A topic in the metadata cache.
#[derive(Debug, Clone)]
pub(crate) struct TopicMetadata {
    /// The topic-level error of the last Metadata response (0 if none).
    pub(crate) error_code: i16,
    /// The topic id, hyphenated (all zeros if the broker sent none).
    pub(crate) topic_id: String,
    /// Partitions sorted by index.
    pub(crate) partitions: Vec<PartitionInfo>,
    /// When this entry was last refreshed; entries older than `metadata_max_age_ms` are
    /// refreshed before use.
    pub(crate) updated_at: Instant,
}

/// The client's view of the cluster.
#[derive(Debug, Default)]
pub(crate) struct Metadata {
    pub(crate) cluster_id: Option<String>,
    pub(crate) controller_id: i32,
    pub(crate) brokers: BTreeMap<i32, BrokerInfo>,
    pub(crate) topics: BTreeMap<String, TopicMetadata>,
}

impl Metadata {
    /// Merges a Metadata response. With `all_topics`, topics the response does not list are
    /// forgotten (they were deleted).
    fn apply(&mut self, response: MetadataResponse, all_topics: bool, now: Instant) {
        if !response.brokers.is_empty() {
            self.brokers = response
                .brokers
                .into_iter()
                .map(|broker| {
                    let id = broker.node_id.0;
                    (id, BrokerInfo { id, host: broker.host.to_string(), port: broker.port })
                })
                .collect();
        }
        if let Some(cluster_id) = response.cluster_id {
            self.cluster_id = Some(cluster_id.to_string());
        }
        self.controller_id = response.controller_id.0;
        if all_topics {
            self.topics.clear();
        }
        for topic in response.topics {
            let Some(name) = topic.name else { continue };
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .into_iter()
                .map(|partition| PartitionInfo {
                    partition: partition.partition_index,
                    leader: partition.leader_id.0,
                    replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                    isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                    leader_epoch: partition.leader_epoch,
                })
                .collect();
            partitions.sort_by_key(|partition| partition.partition);
            let entry = TopicMetadata {
                error_code: topic.error_code,
                topic_id: topic.topic_id.to_string(),
                partitions,
                updated_at: now,
            };
            self.topics.insert(name.0.to_string(), entry);
        }
    }
}

/// One pool slot: the connection to one address, dialled lazily and re-dialled when dead.
/// The async mutex makes concurrent callers share one dial.
type Slot = Arc<rt::sync::Mutex<Option<Arc<Connection>>>>;

#[derive(Debug)]
struct ClientInner {
    config: ClientConfig,
    options: ConnectionOptions,
    /// Connections by `host:port`; bootstrap addresses and broker addresses share slots.
    slots: Mutex<BTreeMap<String, Slot>>,
    metadata: Mutex<Metadata>,
}

/// A handle to a Kafka cluster: a pool with one pipelined connection per broker and a
/// metadata cache. Cloning is cheap and shares both.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), client::ClientError> {
/// let config = client::ClientConfig { bootstrap_servers: vec!["127.0.0.1:9092".into()], ..Default::default() };
/// let client = client::Client::connect(config).await?;
/// let partitions = client.partitions_for("events").await?;
/// println!("events has {} partitions", partitions.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Validates the config and bootstraps: connects to the first reachable bootstrap server
    /// (ApiVersions handshake) and loads the broker list with a Metadata request.
    ///
    /// # Errors
    /// `InvalidConfig`, `NoBrokerAvailable`, or the Metadata request's error.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client::unconnected(config)?;
        client.refresh_metadata(Some(&[])).await?;
        Ok(client)
    }

    /// A client with an empty cache and no connections yet.
    pub(crate) fn unconnected(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let options = ConnectionOptions {
            client_id: config.client_id.clone(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            socket_max_bytes: config.socket_max_bytes,
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                config,
                options,
                slots: Mutex::new(BTreeMap::new()),
                metadata: Mutex::new(Metadata::default()),
            }),
        })
    }

    /// The validated config.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Refreshes the metadata cache: for the named topics, or for all topics with `None`
    /// (`Some(&[])` refreshes only the broker list). Never creates topics.
    ///
    /// # Errors
    /// Connection and request errors of the Metadata request.
    pub async fn refresh_metadata(&self, topics: Option<&[String]>) -> Result<(), ClientError> {
        self.refresh_metadata_with(topics, false).await
    }

    /// [`Client::refresh_metadata`], optionally asking the broker to auto-create the named
    /// topics (the producer and consumer do, as Kafka's do, if the broker allows it).
    pub(crate) async fn refresh_metadata_with(
        &self,
        topics: Option<&[String]>,
        allow_auto_topic_creation: bool,
    ) -> Result<(), ClientError> {
        let request_topics = topics.map(|names| {
            names.iter().map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name)))).collect()
        });
        let request = MetadataRequest::default()
            .with_topics(request_topics)
            .with_allow_auto_topic_creation(allow_auto_topic_creation);
        let ResponseKind::Metadata(response) = self.send(None, RequestKind::Metadata(request)).await? else {
            return Err(ClientError::UnexpectedResponse { api_key: ApiKey::Metadata });
        };
        lock(&self.inner.metadata).apply(response, topics.is_none(), Instant::now());
        Ok(())
    }

    /// The partitions of a topic, sorted by index, from the cache if it is fresh, otherwise
    /// after a Metadata refresh.
    ///
    /// # Errors
    /// `Broker` with the topic's error (UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE
    /// while it is being created, ...) and the refresh's errors.
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<PartitionInfo>, ClientError> {
        self.partitions_for_with(topic, false).await
    }

    pub(crate) async fn partitions_for_with(
        &self,
        topic: &str,
        allow_auto_topic_creation: bool,
    ) -> Result<Vec<PartitionInfo>, ClientError> {
        if let Some(partitions) = self.fresh_partitions(topic) {
            return Ok(partitions);
        }
        self.refresh_metadata_with(Some(&[topic.to_owned()]), allow_auto_topic_creation).await?;
        let metadata = lock(&self.inner.metadata);
        let Some(cached) = metadata.topics.get(topic) else {
            return Err(ClientError::MissingFromResponse {
                api_key: ApiKey::Metadata,
                topic: topic.to_owned(),
                partition: None,
            });
        };
        if let Some(error) = ClientError::from_code(cached.error_code, None) {
            return Err(error);
        }
        Ok(cached.partitions.clone())
    }

    /// The cached partitions if the entry exists, has no error, and is younger than
    /// `metadata_max_age_ms`.
    fn fresh_partitions(&self, topic: &str) -> Option<Vec<PartitionInfo>> {
        let max_age = Duration::from_millis(self.inner.config.metadata_max_age_ms);
        let metadata = lock(&self.inner.metadata);
        let cached = metadata.topics.get(topic)?;
        let fresh = cached.error_code == 0 && !cached.partitions.is_empty() && cached.updated_at.elapsed() < max_age;
        fresh.then(|| cached.partitions.clone())
    }

    /// The cached leader of a partition, without any I/O; `None` if unknown or leaderless.
    pub(crate) fn cached_leader(&self, topic_partition: &TopicPartition) -> Option<i32> {
        let metadata = lock(&self.inner.metadata);
        let topic = metadata.topics.get(&topic_partition.topic)?;
        let partition = topic.partitions.iter().find(|p| p.partition == topic_partition.partition.0)?;
        (partition.leader >= 0).then_some(partition.leader)
    }

    /// The leader of a partition, refreshing the topic's metadata if the cache has none.
    ///
    /// # Errors
    /// `LeaderNotAvailable`, or the refresh's errors.
    pub(crate) async fn leader_for(&self, topic_partition: &TopicPartition) -> Result<i32, ClientError> {
        if let Some(leader) = self.cached_leader(topic_partition) {
            return Ok(leader);
        }
        self.refresh_metadata(Some(std::slice::from_ref(&topic_partition.topic))).await?;
        self.cached_leader(topic_partition)
            .ok_or_else(|| ClientError::LeaderNotAvailable { topic_partition: topic_partition.clone() })
    }

    /// Runs `read` over the metadata cache.
    pub(crate) fn with_metadata<T>(&self, read: impl FnOnce(&Metadata) -> T) -> T {
        read(&lock(&self.inner.metadata))
    }

    /// Low-level: sends any request to a broker (`None`: any reachable broker, bootstrap
    /// servers last), at the highest version both sides support, and returns the decoded
    /// response. One attempt: retrying is the caller's choice (see
    /// [`ClientError::is_retriable`]). Produce with acks=0 gets no response from Kafka
    /// brokers; use the producer for that.
    ///
    /// # Errors
    /// `UnknownBroker`, `NoBrokerAvailable`, `Connect`, version negotiation errors,
    /// `Disconnected`, `RequestTimeout`, encode/decode errors.
    pub async fn send(&self, broker: Option<i32>, request: RequestKind) -> Result<ResponseKind, ClientError> {
        let connection = self.connection(broker).await?;
        connection.send(&request).await
    }

    /// A live connection to a broker (`None`: any).
    pub(crate) async fn connection(&self, broker: Option<i32>) -> Result<Arc<Connection>, ClientError> {
        match broker {
            Some(broker_id) => {
                let address = self.broker_address(broker_id)?;
                self.connection_to(&address).await
            }
            None => self.any_connection().await,
        }
    }

    /// The address of a broker the metadata cache knows. A caller that gets
    /// `UnknownBroker` refreshes metadata and retries, as for any retriable error.
    fn broker_address(&self, broker_id: i32) -> Result<String, ClientError> {
        self.with_metadata(|metadata| metadata.brokers.get(&broker_id).map(BrokerInfo::address))
            .ok_or(ClientError::UnknownBroker { broker_id })
    }

    /// The pooled connection to `address`, dialled if missing or dead.
    async fn connection_to(&self, address: &str) -> Result<Arc<Connection>, ClientError> {
        let slot = Arc::clone(lock(&self.inner.slots).entry(address.to_owned()).or_default());
        let mut connection = slot.lock().await;
        if let Some(live) = connection.as_ref().filter(|existing| existing.is_alive()) {
            return Ok(Arc::clone(live));
        }
        *connection = None;
        let fresh = Arc::new(Connection::connect(address, self.inner.options.clone()).await?);
        *connection = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Any live pooled connection; otherwise the first known broker, then bootstrap server,
    /// that accepts a connection. Known brokers are tried from a random start so that load
    /// spreads.
    async fn any_connection(&self) -> Result<Arc<Connection>, ClientError> {
        let slots: Vec<Slot> = lock(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            if let Ok(connection) = slot.try_lock() {
                if let Some(live) = connection.as_ref().filter(|existing| existing.is_alive()) {
                    return Ok(Arc::clone(live));
                }
            }
        }
        let mut candidates: Vec<String> =
            self.with_metadata(|metadata| metadata.brokers.values().map(BrokerInfo::address).collect());
        if !candidates.is_empty() {
            let start = usize::try_from(rt::rand::random_u64() % candidates.len() as u64).unwrap_or(0);
            candidates.rotate_left(start);
        }
        for bootstrap in &self.inner.config.bootstrap_servers {
            if !candidates.contains(bootstrap) {
                candidates.push(bootstrap.clone());
            }
        }
        for address in &candidates {
            match self.connection_to(address).await {
                Ok(connection) => return Ok(connection),
                Err(error) => tracing::debug!(%address, %error, "broker unreachable"),
            }
        }
        Err(ClientError::NoBrokerAvailable { attempted: candidates })
    }
}

/// A topic name as the protocol types want it.
pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use protocol::kafka_protocol::messages::BrokerId;

    fn response(topics: &[(&str, &[(i32, i32)])]) -> MetadataResponse {
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("b1"))
                .with_port(9092)])
            .with_topics(
                topics
                    .iter()
                    .map(|(name, partitions)| {
                        MetadataResponseTopic::default().with_name(Some(topic_name(name))).with_partitions(
                            partitions
                                .iter()
                                .map(|(index, leader)| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(*index)
                                        .with_leader_id(BrokerId(*leader))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            )
    }

    #[test]
    fn metadata_sorts_partitions_and_forgets_deleted_topics_on_full_refresh() {
        let mut metadata = Metadata::default();
        metadata.apply(response(&[("a", &[(1, 1), (0, 1)]), ("b", &[(0, -1)])]), true, Instant::now());
        let a = &metadata.topics["a"];
        assert_eq!(a.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(metadata.brokers[&1].address(), "b1:9092");

        metadata.apply(response(&[("a", &[(0, 1)])]), false, Instant::now());
        assert!(metadata.topics.contains_key("b"), "a partial refresh keeps other topics");
        metadata.apply(response(&[("a", &[(0, 1)])]), true, Instant::now());
        assert!(!metadata.topics.contains_key("b"), "a full refresh forgets deleted topics");
    }
}
