//! A fake single-node broker for the client's own tests: real TCP on loopback, real Kafka
//! framing, an in-memory log per partition. It serves ApiVersions (optionally only up to a
//! version, answering higher ones with the v0 UNSUPPORTED_VERSION fallback), Metadata,
//! CreateTopics, Produce, Fetch and ListOffsets; enough to drive the producer, consumer and
//! connection code end to end without the real broker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use protocol::batch::Batches;
use protocol::frame::{decode_request, encode_response, peek_request_header};
use protocol::ids::Offset;
use protocol::kafka_protocol::messages::api_versions_response::ApiVersion;
use protocol::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use protocol::kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use protocol::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsResponse, FetchResponse,
    ListOffsetsResponse, MetadataResponse, ProduceResponse, RequestKind, ResponseKind,
};
use protocol::kafka_protocol::protocol::StrBytes;
use protocol::ResponseError;
use rt::io::{AsyncReadExt, AsyncWriteExt};
use rt::net::{TcpListener, TcpStream};

use crate::client::topic_name;
use crate::connection::lock;

const NODE_ID: i32 = 1;

/// The advertised versions, with ApiVersions capped at `api_versions_max`.
fn api_versions(api_versions_max: Option<i16>) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        protocol::versions::advertised()
            .into_iter()
            .map(|(key, min, max)| {
                let max = if key == ApiKey::ApiVersions {
                    api_versions_max.unwrap_or(max).min(max)
                } else {
                    max
                };
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

#[derive(Debug, Default)]
pub(crate) struct FakeState {
    /// Answer ApiVersions above this version with the v0 fallback.
    pub(crate) api_versions_max: Option<i16>,
    /// Partition count per topic.
    pub(crate) topics: BTreeMap<String, i32>,
    /// Batches per partition, rebased to their offsets.
    pub(crate) logs: BTreeMap<(String, i32), Vec<Bytes>>,
    pub(crate) log_end: BTreeMap<(String, i32), i64>,
    /// Close the connection instead of answering the next request (once).
    pub(crate) drop_next_request: bool,
    /// Every request received: key and version.
    pub(crate) requests: Vec<(ApiKey, i16)>,
}

#[derive(Debug, Clone)]
pub(crate) struct FakeBroker {
    pub(crate) address: String,
    pub(crate) state: Arc<Mutex<FakeState>>,
}

impl FakeBroker {
    pub(crate) async fn start(state: FakeState) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds loopback");
        let address = listener.local_addr().expect("has an address").to_string();
        let broker = FakeBroker {
            address,
            state: Arc::new(Mutex::new(state)),
        };
        let serving = broker.clone();
        drop(rt::task::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(rt::task::spawn(serving.clone().serve(stream)));
            }
        }));
        broker
    }

    pub(crate) fn config(&self) -> crate::ClientConfig {
        crate::ClientConfig {
            bootstrap_servers: vec![self.address.clone()],
            request_timeout_ms: 5_000,
            ..Default::default()
        }
    }

    async fn serve(self, mut stream: TcpStream) {
        loop {
            let Ok(length) = stream.read_i32().await else {
                return;
            };
            let mut frame = BytesMut::zeroed(usize::try_from(length).expect("sane length"));
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let frame = frame.freeze();
            let (key, version, correlation_id) = peek_request_header(&frame).expect("header");
            let api_versions_max = lock(&self.state).api_versions_max;
            if key == ApiKey::ApiVersions as i16
                && api_versions_max.is_some_and(|max| version > max)
            {
                lock(&self.state)
                    .requests
                    .push((ApiKey::ApiVersions, version));
                // The v0-format error answer, listing ApiVersions only up to what we serve.
                let response = api_versions(api_versions_max)
                    .with_error_code(ResponseError::UnsupportedVersion.code());
                let reply = encode_response(
                    ApiKey::ApiVersions,
                    0,
                    correlation_id,
                    &ResponseKind::ApiVersions(response),
                )
                .expect("encodes");
                if stream.write_all(&reply).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                continue;
            }
            if std::mem::take(&mut lock(&self.state).drop_next_request) {
                return;
            }
            let request = decode_request(frame).expect("the client sends valid requests");
            lock(&self.state)
                .requests
                .push((request.api_key, request.api_version));
            let Some(response) = self.handle(request.body) else {
                continue;
            };
            let reply = encode_response(
                request.api_key,
                request.api_version,
                correlation_id,
                &response,
            )
            .expect("encodes");
            if stream.write_all(&reply).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        }
    }

    fn handle(&self, body: RequestKind) -> Option<ResponseKind> {
        let mut state = lock(&self.state);
        let response = match body {
            RequestKind::ApiVersions(_) => {
                ResponseKind::ApiVersions(api_versions(state.api_versions_max))
            }
            RequestKind::Metadata(request) => {
                let (host, port) = self.address.rsplit_once(':').expect("host:port");
                let names: Vec<String> = match request.topics {
                    None => state.topics.keys().cloned().collect(),
                    Some(topics) => topics
                        .into_iter()
                        .filter_map(|t| t.name.map(|n| n.0.to_string()))
                        .collect(),
                };
                let topics = names
                    .into_iter()
                    .map(|name| {
                        let topic =
                            MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
                        match state.topics.get(&name) {
                            None => {
                                topic.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            }
                            Some(count) => topic.with_partitions(
                                (0..*count)
                                    .map(|index| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(index)
                                            .with_leader_id(BrokerId(NODE_ID))
                                            .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                            .with_isr_nodes(vec![BrokerId(NODE_ID)])
                                    })
                                    .collect(),
                            ),
                        }
                    })
                    .collect();
                ResponseKind::Metadata(
                    MetadataResponse::default()
                        .with_brokers(vec![MetadataResponseBroker::default()
                            .with_node_id(BrokerId(NODE_ID))
                            .with_host(StrBytes::from_string(host.to_owned()))
                            .with_port(port.parse().expect("port"))])
                        .with_controller_id(BrokerId(NODE_ID))
                        .with_cluster_id(Some(StrBytes::from_static_str("fake")))
                        .with_topics(topics),
                )
            }
            RequestKind::CreateTopics(request) => {
                let results = request
                    .topics
                    .into_iter()
                    .map(|topic| {
                        let name = topic.name.0.to_string();
                        let result = CreatableTopicResult::default().with_name(topic.name);
                        match state.topics.entry(name) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                result.with_error_code(ResponseError::TopicAlreadyExists.code())
                            }
                            std::collections::btree_map::Entry::Vacant(entry) => {
                                entry.insert(topic.num_partitions.max(1));
                                result
                            }
                        }
                    })
                    .collect();
                ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
            }
            RequestKind::Produce(request) => {
                let acks = request.acks;
                let mut responses = Vec::new();
                for topic in request.topic_data {
                    let name = topic.name.0.to_string();
                    let mut partitions = Vec::new();
                    for partition in topic.partition_data {
                        let key = (name.clone(), partition.index);
                        let result =
                            PartitionProduceResponse::default().with_index(partition.index);
                        if state
                            .topics
                            .get(&name)
                            .is_none_or(|count| partition.index >= *count)
                        {
                            partitions
                                .push(result.with_error_code(
                                    ResponseError::UnknownTopicOrPartition.code(),
                                ));
                            continue;
                        }
                        let base_offset = *state.log_end.get(&key).unwrap_or(&0);
                        let mut next = base_offset;
                        let records = partition.records.unwrap_or_default();
                        for batch in Batches::new(&records) {
                            let (header, range) = batch.expect("valid batch");
                            let mut bytes = records[range].to_vec();
                            protocol::batch::set_base_offset(&mut bytes, Offset(next));
                            next += i64::from(header.last_offset_delta) + 1;
                            state
                                .logs
                                .entry(key.clone())
                                .or_default()
                                .push(Bytes::from(bytes));
                        }
                        state.log_end.insert(key, next);
                        partitions.push(
                            result
                                .with_base_offset(base_offset)
                                .with_log_append_time_ms(-1),
                        );
                    }
                    responses.push(
                        TopicProduceResponse::default()
                            .with_name(topic.name)
                            .with_partition_responses(partitions),
                    );
                }
                if acks == 0 {
                    return None;
                }
                ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
            }
            RequestKind::Fetch(request) => {
                let responses = request
                    .topics
                    .into_iter()
                    .map(|topic| {
                        let name = topic.topic.0.to_string();
                        let partitions = topic
                            .partitions
                            .into_iter()
                            .map(|partition| {
                                let key = (name.clone(), partition.partition);
                                let log_end = *state.log_end.get(&key).unwrap_or(&0);
                                let data = PartitionData::default()
                                    .with_partition_index(partition.partition)
                                    .with_high_watermark(log_end);
                                if partition.fetch_offset > log_end {
                                    return data
                                        .with_error_code(ResponseError::OffsetOutOfRange.code());
                                }
                                let mut bytes = Vec::new();
                                for batch in state.logs.get(&key).into_iter().flatten() {
                                    let header = protocol::batch::BatchHeader::parse(batch)
                                        .expect("stored batches parse");
                                    if header.last_offset().0 >= partition.fetch_offset {
                                        bytes.extend_from_slice(batch);
                                    }
                                }
                                data.with_records(Some(Bytes::from(bytes)))
                            })
                            .collect();
                        FetchableTopicResponse::default()
                            .with_topic(topic.topic)
                            .with_partitions(partitions)
                    })
                    .collect();
                ResponseKind::Fetch(FetchResponse::default().with_responses(responses))
            }
            RequestKind::ListOffsets(request) => {
                let topics = request
                    .topics
                    .into_iter()
                    .map(|topic| {
                        let name = topic.name.0.to_string();
                        let partitions = topic
                            .partitions
                            .into_iter()
                            .map(|partition| {
                                let log_end = *state
                                    .log_end
                                    .get(&(name.clone(), partition.partition_index))
                                    .unwrap_or(&0);
                                let offset = if partition.timestamp == -2 {
                                    0
                                } else {
                                    log_end
                                };
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(partition.partition_index)
                                    .with_offset(offset)
                                    .with_timestamp(-1)
                            })
                            .collect();
                        ListOffsetsTopicResponse::default()
                            .with_name(topic.name)
                            .with_partitions(partitions)
                    })
                    .collect();
                ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
            }
            other => panic!("the fake broker does not serve {other:?}"),
        };
        Some(response)
    }
}
