//! The native client against the real broker on loopback: produce, consume, seek, admin.
//!
//! These run the broker in-process (real sockets, real files in a temporary directory) so the
//! client's protocol handling is checked against the server it will talk to, not a stand-in.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use client::admin::{Admin, ConfigSource, NewTopic, OffsetSpec};
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::producer::{partitioner::partition_for_key, Acks, Compression, Producer, ProducerConfig, ProducerRecord};
use client::{Client, ClientConfig};
use protocol::ids::{Offset, TopicPartition};

/// A broker serving a fresh data directory on an ephemeral loopback port.
#[derive(Debug)]
struct TestBroker {
    address: String,
    _data: tempfile::TempDir,
}

async fn start_broker() -> TestBroker {
    start_broker_with(Default::default()).await
}

async fn start_broker_with(static_configs: std::collections::BTreeMap<String, String>) -> TestBroker {
    let data = tempfile::tempdir().expect("tempdir");
    let listener = rt::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut config = broker::BrokerConfig::for_tests(data.path().to_owned(), "127.0.0.1", port);
    config.static_configs = static_configs;
    let broker =
        broker::Broker::start(config, storage::OsDisk::shared(), rt::time::system_clock()).await.expect("starts");
    drop(tokio::spawn(async move { broker.serve(listener).await }));
    TestBroker { address: format!("127.0.0.1:{port}"), _data: data }
}

async fn connect(broker: &TestBroker) -> Client {
    Client::connect(ClientConfig { bootstrap_servers: vec![broker.address.clone()], ..ClientConfig::default() })
        .await
        .expect("connects")
}

async fn create_topic(client: &Client, name: &str, partitions: i32) {
    let results = Admin::new(client)
        .create_topics(
            &[NewTopic { name: name.into(), num_partitions: partitions, replication_factor: 1, configs: Vec::new() }],
            false,
        )
        .await
        .expect("request");
    for (_, result) in results {
        result.expect("created");
    }
}

#[tokio::test]
async fn produced_records_are_delivered_in_order_and_read_back() {
    let broker = start_broker().await;
    let client = connect(&broker).await;
    create_topic(&client, "events", 3).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig { compression: Compression::Lz4, batch_size: 512, ..ProducerConfig::default() },
    )
    .expect("valid config");
    let mut deliveries = Vec::new();
    for index in 0..60u32 {
        let mut record = ProducerRecord::new("events", format!("value-{index}"));
        if index % 2 == 0 {
            record = record.with_key(format!("key-{}", index % 6));
        }
        record.headers = vec![("index".to_owned(), Some(Bytes::from(index.to_string()))), ("empty".to_owned(), None)];
        deliveries.push((record.clone(), producer.send(record).await.expect("accepted")));
    }
    producer.flush().await.expect("flushes");
    let mut delivered: BTreeMap<i32, Vec<(Offset, String)>> = BTreeMap::new();
    for (record, delivery) in deliveries {
        let metadata = delivery.await.expect("delivered");
        if let Some(key) = &record.key {
            assert_eq!(metadata.partition, partition_for_key(key, 3), "keyed records follow murmur2");
        }
        let value = String::from_utf8(record.value.expect("has a value").to_vec()).expect("utf-8");
        delivered.entry(metadata.partition).or_default().push((metadata.offset, value));
    }
    for offsets in delivered.values() {
        let expected: Vec<Offset> = (0..offsets.len() as i64).map(Offset).collect();
        assert_eq!(
            offsets.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(),
            expected,
            "dense offsets in send order"
        );
    }
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .expect("valid config");
    consumer.assign((0..3).map(|partition| TopicPartition::new("events", partition)).collect());
    let mut consumed: BTreeMap<i32, Vec<(Offset, String)>> = BTreeMap::new();
    let mut count = 0;
    for _ in 0..100 {
        if count == 60 {
            break;
        }
        for record in consumer.poll(Duration::from_secs(2)).await.expect("polls") {
            assert_eq!(record.headers.len(), 2);
            let value = String::from_utf8(record.value.expect("has a value").to_vec()).expect("utf-8");
            consumed.entry(record.partition).or_default().push((record.offset, value));
            count += 1;
        }
    }
    assert_eq!(consumed, delivered);
    for partition in 0..3 {
        let topic_partition = TopicPartition::new("events", partition);
        let end = Offset(delivered.get(&partition).map_or(0, |records| records.len() as i64));
        assert_eq!(consumer.position(&topic_partition), Some(end));
        assert_eq!(consumer.high_watermark(&topic_partition), Some(end));
    }
}

#[tokio::test]
async fn acks_zero_and_one_records_become_readable() {
    let broker = start_broker().await;
    let client = connect(&broker).await;
    create_topic(&client, "fire", 1).await;
    for acks in [Acks::None, Acks::Leader] {
        let producer =
            Producer::new(client.clone(), ProducerConfig { acks, ..ProducerConfig::default() }).expect("valid");
        for index in 0..10 {
            let _ = producer.send(ProducerRecord::new("fire", format!("{index}"))).await.expect("accepted");
        }
        producer.flush().await.expect("flushes");
    }
    let topic_partition = TopicPartition::new("fire", 0);
    let admin = Admin::new(&client);
    let mut latest = Offset(0);
    for _ in 0..50 {
        latest = admin.list_offsets(&topic_partition, OffsetSpec::Latest).await.expect("lists").0;
        if latest == Offset(20) {
            break;
        }
        rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(latest, Offset(20), "acks=0 and acks=1 records reach the high watermark after the flush");
}

#[tokio::test]
async fn the_consumer_seeks_and_resets_positions_below_the_log_start() {
    let broker = start_broker().await;
    let client = connect(&broker).await;
    create_topic(&client, "seek", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("valid");
    for index in 0..10 {
        let _ = producer.send_and_wait(ProducerRecord::new("seek", format!("{index}"))).await.expect("acked");
    }
    let topic_partition = TopicPartition::new("seek", 0);
    let low_watermark = Admin::new(&client).delete_records(&topic_partition, Offset(4)).await.expect("deletes");
    assert_eq!(low_watermark, Offset(4));
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .expect("valid");
    consumer.assign(vec![topic_partition.clone()]);
    consumer.seek(&topic_partition, SeekTo::Offset(Offset(1))).await.expect("seeks");
    let mut first = None;
    for _ in 0..20 {
        if let Some(record) = consumer.poll(Duration::from_millis(500)).await.expect("polls").first() {
            first = Some(record.offset);
            break;
        }
    }
    assert_eq!(first, Some(Offset(4)), "an out-of-range position resets to the log start");
    consumer.seek(&topic_partition, SeekTo::End).await.expect("seeks");
    assert_eq!(consumer.position(&topic_partition), Some(Offset(10)));
}

#[tokio::test]
async fn admin_reports_per_topic_errors() {
    let broker = start_broker().await;
    let client = connect(&broker).await;
    create_topic(&client, "exists", 1).await;
    let results = Admin::new(&client)
        .create_topics(
            &[
                NewTopic { name: "exists".into(), num_partitions: 1, replication_factor: 1, configs: Vec::new() },
                NewTopic { name: "bad/name".into(), num_partitions: 1, replication_factor: 1, configs: Vec::new() },
                NewTopic {
                    name: "three-replicas".into(),
                    num_partitions: 1,
                    replication_factor: 3,
                    configs: Vec::new(),
                },
                NewTopic {
                    name: "bad-config".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    configs: vec![("retention.ms".into(), "soon".into())],
                },
                NewTopic { name: "fresh".into(), num_partitions: 2, replication_factor: 1, configs: Vec::new() },
            ],
            false,
        )
        .await
        .expect("request");
    let codes: Vec<Option<i16>> = results
        .iter()
        .map(|(_, result)| result.as_ref().err().map(|error| error.response_error().map_or(-1, |error| error.code())))
        .collect();
    assert_eq!(codes, vec![Some(36), Some(17), Some(38), Some(40), None]);
    assert_eq!(client.partitions_for("fresh").await.expect("exists").len(), 2);
}

#[tokio::test]
async fn an_unreachable_bootstrap_server_is_a_retriable_error() {
    let listener = rt::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    let error = Client::connect(ClientConfig {
        bootstrap_servers: vec![address],
        request_timeout_ms: 2000,
        ..ClientConfig::default()
    })
    .await
    .expect_err("nothing listens there");
    assert!(error.is_retriable(), "{error}");
}

#[tokio::test]
async fn broker_configs_are_described_read_only_with_their_sources() {
    let static_configs = BTreeMap::from([("log.retention.ms".to_owned(), "1234".to_owned())]);
    let broker = start_broker_with(static_configs).await;
    let client = connect(&broker).await;
    let configs = Admin::new(&client).describe_broker_configs(1).await.expect("describes");
    let find =
        |name: &str| configs.iter().find(|config| config.name == name).unwrap_or_else(|| panic!("{name} listed"));
    let retention = find("log.retention.ms");
    assert_eq!((retention.value.as_deref(), retention.source), (Some("1234"), ConfigSource::StaticBroker));
    let partitions = find("num.partitions");
    assert_eq!((partitions.value.as_deref(), partitions.source), (Some("1"), ConfigSource::Default));
    assert!(find("log.disk.reserve.bytes").read_only, "broker configs are static");
    assert!(configs.iter().all(|config| config.name != "retention.ms"), "topic names are not broker configs");
}
