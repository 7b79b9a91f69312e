//! Cluster administration: topics, partitions, configs, offsets, records, cluster.
//!
//! Each call is one request to the broker Kafka routes it to: topic creation and deletion
//! and partition creation go to the controller the metadata names (any broker if none),
//! configs and cluster description to any broker (a broker's own configs to that broker),
//! and ListOffsets and DeleteRecords to the partition's leader. Calls are not retried;
//! check [`ClientError::is_retriable`].

use std::collections::BTreeMap;

use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use protocol::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use protocol::kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use protocol::kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use protocol::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use protocol::kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use protocol::kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use protocol::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use protocol::kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use protocol::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, ListPartitionReassignmentsRequest, RequestKind, ResponseKind,
};
use protocol::kafka_protocol::protocol::StrBytes;
use protocol::ResponseError;

use crate::client::{topic_name, BrokerInfo, Client, PartitionInfo};
use crate::error::ClientError;

/// Sends `request` as `RequestKind::$kind` and unwraps `ResponseKind::$kind`, returning
/// `UnexpectedResponse` from the enclosing function if the broker answered anything else.
macro_rules! send {
    ($client:expr, $broker:expr, $kind:ident, $request:expr) => {
        match $client.send($broker, RequestKind::$kind($request)).await? {
            ResponseKind::$kind(response) => response,
            _ => return Err(ClientError::UnexpectedResponse { api_key: ApiKey::$kind }),
        }
    };
}

/// Kafka's `ConfigResource.Type` for topics.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Kafka's `ConfigResource.Type` for brokers.
const RESOURCE_TYPE_BROKER: i8 = 4;
/// ListOffsets' special timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// ListOffsets' `ReplicaId` that any replica answers, with its own log end for the latest.
const DEBUGGING_REPLICA_ID: i32 = -2;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The name.
    pub name: String,
    /// Partitions; -1 for the broker's `num.partitions`.
    pub num_partitions: i32,
    /// Replicas per partition; -1 for the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with the broker's default partition count and replication factor.
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic { name: name.into(), num_partitions: -1, replication_factor: -1, configs: Vec::new() }
    }
}

/// A topic in [`Admin::list_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    /// The name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: i32,
    /// The topic id, hyphenated (all zeros from brokers without topic ids).
    pub topic_id: String,
}

/// A topic in [`Admin::describe_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The name.
    pub name: String,
    /// The topic id, hyphenated.
    pub topic_id: String,
    /// Partitions sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// The partition.
    pub topic_partition: TopicPartition,
    /// Its replicas now: the target followed by the replicas being removed.
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding_replicas: Vec<i32>,
    /// Replicas being removed.
    pub removing_replicas: Vec<i32>,
}

/// Where a config value comes from (Kafka's `DescribeConfigsResponse.ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// A topic override (`TOPIC_CONFIG`, 1).
    DynamicTopic,
    /// A per-broker dynamic config (`DYNAMIC_BROKER_CONFIG`, 2).
    DynamicBroker,
    /// A cluster-wide dynamic broker default (`DYNAMIC_DEFAULT_BROKER_CONFIG`, 3).
    DefaultBroker,
    /// The broker's config file (`STATIC_BROKER_CONFIG`, 4).
    StaticBroker,
    /// The built-in default (`DEFAULT_CONFIG`, 5).
    Default,
    /// A dynamic logger level (`DYNAMIC_BROKER_LOGGER_CONFIG`, 6).
    DynamicBrokerLogger,
    /// Client-metrics config (`CLIENT_METRICS_CONFIG`, 7).
    ClientMetrics,
    /// Group config (`GROUP_CONFIG`, 8).
    Group,
    /// `UNKNOWN` (0) or a value this client does not know.
    Unknown(i8),
}

impl ConfigSource {
    /// Maps Kafka's wire value.
    pub fn from_i8(value: i8) -> Self {
        match value {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            7 => ConfigSource::ClientMetrics,
            8 => ConfigSource::Group,
            other => ConfigSource::Unknown(other),
        }
    }
}

/// One config of a topic or broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config name.
    pub name: String,
    /// Its value; `None` if unset or sensitive.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether it cannot be altered.
    pub read_only: bool,
    /// Whether the value is the built-in default.
    pub is_default: bool,
}

/// A change in [`Admin::incremental_alter_configs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// Set the config to this value.
    Set(String),
    /// Remove the override, reverting to the default.
    Delete,
}

/// Which offset [`Admin::list_offsets`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (the next offset to be written).
    Latest,
    /// The first offset whose timestamp is at or after this (ms); -1 if none.
    Timestamp(i64),
    /// The offset of the record with the largest timestamp (ListOffsets v7+).
    MaxTimestamp,
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
            OffsetSpec::Latest => LATEST_TIMESTAMP,
            OffsetSpec::Timestamp(timestamp_ms) => timestamp_ms,
            OffsetSpec::MaxTimestamp => MAX_TIMESTAMP,
        }
    }
}

/// The cluster in [`Admin::describe_cluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// The controller's id as the broker reports it (-1 if unknown).
    pub controller_id: i32,
    /// Live brokers.
    pub brokers: Vec<BrokerInfo>,
}

/// Per-item results: the name and whether that item succeeded.
pub type ItemResults = Vec<(String, Result<(), ClientError>)>;

/// The admin API over a [`Client`].
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    /// An admin handle sharing the client's connections and metadata.
    pub fn new(client: &Client) -> Self {
        Admin { client: client.clone() }
    }

    /// The client this handle uses.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.client.config().request_timeout_ms).unwrap_or(i32::MAX)
    }

    /// The controller if the metadata names a known broker, else any broker.
    fn controller(&self) -> Option<i32> {
        self.client.with_metadata(|metadata| {
            metadata.brokers.contains_key(&metadata.controller_id).then_some(metadata.controller_id)
        })
    }

    /// Creates topics; the outer error is the request's, the inner ones each topic's.
    ///
    /// # Errors
    /// Connection and request errors.
    pub async fn create_topics(&self, topics: &[NewTopic], validate_only: bool) -> Result<ItemResults, ClientError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only)
            .with_topics(
                topics
                    .iter()
                    .map(|topic| {
                        CreatableTopic::default()
                            .with_name(topic_name(&topic.name))
                            .with_num_partitions(topic.num_partitions)
                            .with_replication_factor(topic.replication_factor)
                            .with_configs(
                                topic
                                    .configs
                                    .iter()
                                    .map(|(name, value)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(name.clone()))
                                            .with_value(Some(StrBytes::from_string(value.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = send!(self.client, self.controller(), CreateTopics, request);
        let results = response
            .topics
            .into_iter()
            .map(|topic| (topic.name.0.to_string(), item_result(topic.error_code, topic.error_message)))
            .collect();
        self.forget_metadata_soon(topics.iter().map(|topic| topic.name.clone()).collect()).await;
        Ok(results)
    }

    /// Deletes topics by name.
    ///
    /// # Errors
    /// Connection and request errors.
    pub async fn delete_topics(&self, names: &[String]) -> Result<ItemResults, ClientError> {
        // v0-5 carry names in `topic_names`, v6 in `topics`; the encoder rejects the other.
        let connection = self.client.connection(self.controller()).await?;
        let request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
        let request = if connection.version_for(ApiKey::DeleteTopics)? >= 6 {
            request.with_topics(
                names.iter().map(|name| DeleteTopicState::default().with_name(Some(topic_name(name)))).collect(),
            )
        } else {
            request.with_topic_names(names.iter().map(|name| topic_name(name)).collect())
        };
        let ResponseKind::DeleteTopics(response) = connection.send(&RequestKind::DeleteTopics(request)).await? else {
            return Err(ClientError::UnexpectedResponse { api_key: ApiKey::DeleteTopics });
        };
        let results = response
            .responses
            .into_iter()
            .map(|topic| {
                let name = topic.name.map_or_else(|| topic.topic_id.to_string(), |name| name.0.to_string());
                (name, item_result(topic.error_code, topic.error_message))
            })
            .collect();
        self.forget_metadata_soon(names.to_vec()).await;
        Ok(results)
    }

    /// Every topic with its partition count and id.
    ///
    /// # Errors
    /// Connection and request errors.
    pub async fn list_topics(&self) -> Result<Vec<TopicListing>, ClientError> {
        self.client.refresh_metadata(None).await?;
        Ok(self.client.with_metadata(|metadata| {
            metadata
                .topics
                .iter()
                .filter(|(_, topic)| topic.error_code == 0)
                .map(|(name, topic)| TopicListing {
                    name: name.clone(),
                    partitions: i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
                    topic_id: topic.topic_id.clone(),
                })
                .collect()
        }))
    }

    /// One topic's id and partitions, freshly from the broker.
    ///
    /// # Errors
    /// `Broker` with UNKNOWN_TOPIC_OR_PARTITION, connection and request errors.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        self.client.refresh_metadata(Some(&[name.to_owned()])).await?;
        self.client.with_metadata(|metadata| {
            let Some(topic) = metadata.topics.get(name) else {
                return Err(ClientError::MissingFromResponse {
                    api_key: ApiKey::Metadata,
                    topic: name.to_owned(),
                    partition: None,
                });
            };
            if let Some(error) = ClientError::from_code(topic.error_code, None) {
                return Err(error);
            }
            Ok(TopicDescription {
                name: name.to_owned(),
                topic_id: topic.topic_id.clone(),
                partitions: topic.partitions.clone(),
            })
        })
    }

    /// Grows a topic to `total_count` partitions.
    ///
    /// # Errors
    /// `Broker` (INVALID_PARTITIONS, ...), connection and request errors.
    pub async fn create_partitions(&self, topic: &str, total_count: i32) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest::default().with_timeout_ms(self.timeout_ms()).with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total_count)
                .with_assignments(None),
        ]);
        let response = send!(self.client, self.controller(), CreatePartitions, request);
        let result = response.results.into_iter().find(|result| result.name.0.as_str() == topic).ok_or_else(|| {
            ClientError::MissingFromResponse {
                api_key: ApiKey::CreatePartitions,
                topic: topic.to_owned(),
                partition: None,
            }
        })?;
        self.forget_metadata_soon(vec![topic.to_owned()]).await;
        item_result(result.error_code, result.error_message)
    }

    /// A topic's configs.
    ///
    /// # Errors
    /// `Broker` (UNKNOWN_TOPIC_OR_PARTITION, ...), connection and request errors.
    pub async fn describe_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>, ClientError> {
        self.describe_resource(None, RESOURCE_TYPE_TOPIC, topic).await
    }

    /// A broker's configs, asked of that broker.
    ///
    /// # Errors
    /// `UnknownBroker`, connection and request errors.
    pub async fn describe_broker_configs(&self, broker_id: i32) -> Result<Vec<ConfigEntry>, ClientError> {
        self.describe_resource(Some(broker_id), RESOURCE_TYPE_BROKER, &broker_id.to_string()).await
    }

    async fn describe_resource(
        &self,
        broker: Option<i32>,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_owned()))
            .with_configuration_keys(None)]);
        let response = send!(self.client, broker, DescribeConfigs, request);
        let result = response.results.into_iter().next().ok_or_else(|| ClientError::MissingFromResponse {
            api_key: ApiKey::DescribeConfigs,
            topic: name.to_owned(),
            partition: None,
        })?;
        config_entries(result)
    }

    /// Sets or deletes topic config overrides, leaving the others alone.
    ///
    /// # Errors
    /// `Broker` (INVALID_CONFIG, POLICY_VIOLATION, ...), connection and request errors.
    pub async fn incremental_alter_configs(
        &self,
        topic: &str,
        changes: &[(String, AlterOp)],
    ) -> Result<(), ClientError> {
        let configs = changes
            .iter()
            .map(|(name, op)| {
                let (operation, value) = match op {
                    AlterOp::Set(value) => (0, Some(StrBytes::from_string(value.clone()))),
                    AlterOp::Delete => (1, None),
                };
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_config_operation(operation)
                    .with_value(value)
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(configs)]);
        let response = send!(self.client, None, IncrementalAlterConfigs, request);
        let result = response.responses.into_iter().next().ok_or_else(|| ClientError::MissingFromResponse {
            api_key: ApiKey::IncrementalAlterConfigs,
            topic: topic.to_owned(),
            partition: None,
        })?;
        item_result(result.error_code, result.error_message)
    }

    /// Looks up an offset of a partition at its leader; returns it with its timestamp
    /// (-1 where Kafka reports none).
    ///
    /// # Errors
    /// `LeaderNotAvailable`, `Broker`, connection and request errors.
    pub async fn list_offsets(
        &self,
        topic_partition: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<(Offset, i64), ClientError> {
        list_offset(&self.client, topic_partition, spec).await
    }

    /// Starts reassignments of partitions to new replica sets, preferred leader first (`None`
    /// cancels the one in progress); the outer error is the request's, the inner ones each
    /// partition's.
    ///
    /// # Errors
    /// Connection and request errors.
    pub async fn alter_partition_reassignments(
        &self,
        reassignments: &[(TopicPartition, Option<Vec<i32>>)],
    ) -> Result<Vec<(TopicPartition, Result<(), ClientError>)>, ClientError> {
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for (topic_partition, replicas) in reassignments {
            let partition = ReassignablePartition::default()
                .with_partition_index(topic_partition.partition.0)
                .with_replicas(replicas.as_ref().map(|replicas| replicas.iter().map(|id| BrokerId(*id)).collect()));
            match topics.iter_mut().find(|topic| topic.name.0.as_str() == topic_partition.topic) {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    ReassignableTopic::default()
                        .with_name(topic_name(&topic_partition.topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request =
            AlterPartitionReassignmentsRequest::default().with_timeout_ms(self.timeout_ms()).with_topics(topics);
        let response = send!(self.client, self.controller(), AlterPartitionReassignments, request);
        if let Some(error) = ClientError::from_code(response.error_code, response.error_message.map(|m| m.to_string()))
        {
            return Err(error);
        }
        let mut results = Vec::new();
        for topic in response.responses {
            for partition in topic.partitions {
                let outcome = match ClientError::from_code(
                    partition.error_code,
                    partition.error_message.map(|message| message.to_string()),
                ) {
                    Some(error) => Err(error),
                    None => Ok(()),
                };
                results.push((TopicPartition::new(topic.name.0.to_string(), partition.partition_index), outcome));
            }
        }
        Ok(results)
    }

    /// The reassignments in progress, of one topic or of all.
    ///
    /// # Errors
    /// Connection and request errors.
    pub async fn list_partition_reassignments(&self, topic: Option<&str>) -> Result<Vec<Reassignment>, ClientError> {
        let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(self.timeout_ms()).with_topics(
            topic.map(|topic| {
                let partitions = self
                    .client
                    .with_metadata(|metadata| {
                        metadata.topics.get(topic).map(|found| found.partitions.iter().map(|p| p.partition).collect())
                    })
                    .unwrap_or_default();
                vec![ListPartitionReassignmentsTopics::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(partitions)]
            }),
        );
        let response = send!(self.client, self.controller(), ListPartitionReassignments, request);
        if let Some(error) = ClientError::from_code(response.error_code, response.error_message.map(|m| m.to_string()))
        {
            return Err(error);
        }
        let ids = |brokers: Vec<BrokerId>| brokers.into_iter().map(|broker| broker.0).collect();
        Ok(response
            .topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.name.0.to_string();
                topic.partitions.into_iter().map(move |partition| Reassignment {
                    topic_partition: TopicPartition::new(name.clone(), partition.partition_index),
                    replicas: ids(partition.replicas),
                    adding_replicas: ids(partition.adding_replicas),
                    removing_replicas: ids(partition.removing_replicas),
                })
            })
            .collect())
    }

    /// Each replica's log end offset, asked of the broker hosting it (ListOffsets with
    /// Kafka's debugging replica id -2, which any replica answers with its own log end):
    /// `(partition, broker) -> offset`, or the error that broker gave. With the leader's, this
    /// is how far each follower lags.
    ///
    /// # Errors
    /// The topic's description failed; per replica errors are in the map.
    pub async fn replica_log_end_offsets(
        &self,
        description: &TopicDescription,
    ) -> Result<BTreeMap<(i32, i32), Result<i64, ClientError>>, ClientError> {
        let mut by_broker: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in &description.partitions {
            for replica in &partition.replicas {
                by_broker.entry(*replica).or_default().push(partition.partition);
            }
        }
        let mut offsets = BTreeMap::new();
        for (broker, partitions) in by_broker {
            let request =
                ListOffsetsRequest::default().with_replica_id(BrokerId(DEBUGGING_REPLICA_ID)).with_topics(vec![
                    ListOffsetsTopic::default().with_name(topic_name(&description.name)).with_partitions(
                        partitions
                            .iter()
                            .map(|partition| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*partition)
                                    .with_timestamp(LATEST_TIMESTAMP)
                            })
                            .collect(),
                    ),
                ]);
            let answer = async { Ok::<_, ClientError>(send!(self.client, Some(broker), ListOffsets, request)) }.await;
            match answer {
                Ok(response) => {
                    let answered: BTreeMap<i32, _> = response
                        .topics
                        .into_iter()
                        .flat_map(|topic| topic.partitions)
                        .map(|partition| (partition.partition_index, partition))
                        .collect();
                    for partition in partitions {
                        let result = match answered.get(&partition) {
                            Some(answer) => match ClientError::from_code(answer.error_code, None) {
                                Some(error) => Err(error),
                                None => Ok(answer.offset),
                            },
                            None => Err(ClientError::MissingFromResponse {
                                api_key: ApiKey::ListOffsets,
                                topic: description.name.clone(),
                                partition: Some(partition),
                            }),
                        };
                        let _ = offsets.insert((partition, broker), result);
                    }
                }
                Err(error) => {
                    for partition in partitions {
                        let _ = offsets.insert((partition, broker), Err(error.clone()));
                    }
                }
            }
        }
        Ok(offsets)
    }

    /// Deletes the records of a partition below `before`; returns the new log start offset.
    ///
    /// # Errors
    /// `LeaderNotAvailable`, `Broker` (OFFSET_OUT_OF_RANGE, ...), connection and request errors.
    pub async fn delete_records(
        &self,
        topic_partition: &TopicPartition,
        before: Offset,
    ) -> Result<Offset, ClientError> {
        let leader = self.client.leader_for(topic_partition).await?;
        let request = DeleteRecordsRequest::default().with_timeout_ms(self.timeout_ms()).with_topics(vec![
            DeleteRecordsTopic::default().with_name(topic_name(&topic_partition.topic)).with_partitions(vec![
                DeleteRecordsPartition::default()
                    .with_partition_index(topic_partition.partition.0)
                    .with_offset(before.0),
            ]),
        ]);
        let response = send!(self.client, Some(leader), DeleteRecords, request);
        let result = response
            .topics
            .into_iter()
            .filter(|topic| topic.name.0.as_str() == topic_partition.topic)
            .flat_map(|topic| topic.partitions)
            .find(|partition| partition.partition_index == topic_partition.partition.0)
            .ok_or_else(|| missing_partition(ApiKey::DeleteRecords, topic_partition))?;
        if let Some(error) = ClientError::from_code(result.error_code, None) {
            refresh_if_leader_moved(&self.client, topic_partition, &error).await;
            return Err(error);
        }
        Ok(Offset(result.low_watermark))
    }

    /// The cluster id, the controller and the live brokers.
    ///
    /// # Errors
    /// `Broker`, connection and request errors.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let request = DescribeClusterRequest::default();
        let response = send!(self.client, None, DescribeCluster, request);
        if let Some(error) = ClientError::from_code(response.error_code, response.error_message.map(|m| m.to_string()))
        {
            return Err(error);
        }
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .into_iter()
                .map(|broker| BrokerInfo { id: broker.broker_id.0, host: broker.host.to_string(), port: broker.port })
                .collect(),
        })
    }

    /// Refreshes the named topics after a change so the cache does not serve the old shape.
    /// Failures are ignored: the cache is refreshed again on use.
    async fn forget_metadata_soon(&self, topics: Vec<String>) {
        if let Err(error) = self.client.refresh_metadata(Some(&topics)).await {
            tracing::debug!(%error, "metadata refresh after an admin change failed");
        }
    }
}

/// ListOffsets for one partition at its leader (shared with the consumer).
pub(crate) async fn list_offset(
    client: &Client,
    topic_partition: &TopicPartition,
    spec: OffsetSpec,
) -> Result<(Offset, i64), ClientError> {
    let leader = client.leader_for(topic_partition).await?;
    let request =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(&topic_partition.topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(topic_partition.partition.0)
                .with_timestamp(spec.timestamp())])]);
    let response = send!(client, Some(leader), ListOffsets, request);
    let result = response
        .topics
        .into_iter()
        .filter(|topic| topic.name.0.as_str() == topic_partition.topic)
        .flat_map(|topic| topic.partitions)
        .find(|partition| partition.partition_index == topic_partition.partition.0)
        .ok_or_else(|| missing_partition(ApiKey::ListOffsets, topic_partition))?;
    if let Some(error) = ClientError::from_code(result.error_code, None) {
        refresh_if_leader_moved(client, topic_partition, &error).await;
        return Err(error);
    }
    Ok((Offset(result.offset), result.timestamp))
}

/// After an error that says the cached leader of `topic_partition` may be wrong, refreshes the
/// topic's metadata, so the caller's next attempt goes to the new leader rather than to the
/// deposed one until `metadata.max.age.ms` (as Kafka's admin client does).
async fn refresh_if_leader_moved(client: &Client, topic_partition: &TopicPartition, error: &ClientError) {
    let moved = matches!(
        error.response_error(),
        Some(
            ResponseError::NotLeaderOrFollower
                | ResponseError::LeaderNotAvailable
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::FencedLeaderEpoch
                | ResponseError::UnknownLeaderEpoch
        )
    );
    if moved {
        let _ = client.refresh_metadata(Some(&[topic_partition.topic.clone()])).await;
    }
}

fn missing_partition(api_key: ApiKey, topic_partition: &TopicPartition) -> ClientError {
    ClientError::MissingFromResponse {
        api_key,
        topic: topic_partition.topic.clone(),
        partition: Some(topic_partition.partition.0),
    }
}

/// A per-item outcome from an error code and message.
fn item_result(error_code: i16, message: Option<StrBytes>) -> Result<(), ClientError> {
    ClientError::from_code(error_code, message.map(|m| m.to_string())).map_or(Ok(()), Err)
}

/// The entries of one DescribeConfigs result, or its error.
fn config_entries(result: DescribeConfigsResult) -> Result<Vec<ConfigEntry>, ClientError> {
    if let Some(error) = ClientError::from_code(result.error_code, result.error_message.map(|m| m.to_string())) {
        return Err(error);
    }
    Ok(result
        .configs
        .into_iter()
        .map(|config| {
            let source = ConfigSource::from_i8(config.config_source);
            ConfigEntry {
                name: config.name.to_string(),
                value: config.value.map(|value| value.to_string()),
                source,
                read_only: config.read_only,
                is_default: source == ConfigSource::Default,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
    use protocol::ResponseError;

    #[test]
    fn config_sources_map_kafka_values() {
        let expected = [
            (1, ConfigSource::DynamicTopic),
            (2, ConfigSource::DynamicBroker),
            (3, ConfigSource::DefaultBroker),
            (4, ConfigSource::StaticBroker),
            (5, ConfigSource::Default),
            (0, ConfigSource::Unknown(0)),
        ];
        for (wire, source) in expected {
            assert_eq!(ConfigSource::from_i8(wire), source);
        }
    }

    #[test]
    fn config_entries_mark_defaults_and_surface_errors() {
        let result = DescribeConfigsResult::default().with_configs(vec![
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("1000")))
                .with_config_source(1),
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_config_source(5),
        ]);
        let entries = config_entries(result).expect("no error");
        assert_eq!(entries[0].value.as_deref(), Some("1000"));
        assert!(!entries[0].is_default);
        assert!(entries[1].is_default);

        let failed = DescribeConfigsResult::default().with_error_code(ResponseError::UnknownTopicOrPartition.code());
        assert!(matches!(
            config_entries(failed),
            Err(ClientError::Broker { error: ResponseError::UnknownTopicOrPartition, .. })
        ));
    }

    #[test]
    fn offset_specs_use_kafka_sentinels() {
        assert_eq!(OffsetSpec::Earliest.timestamp(), -2);
        assert_eq!(OffsetSpec::Latest.timestamp(), -1);
        assert_eq!(OffsetSpec::MaxTimestamp.timestamp(), -3);
        assert_eq!(OffsetSpec::Timestamp(42).timestamp(), 42);
    }
}
