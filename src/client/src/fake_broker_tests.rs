//! The client against the fake broker in [`crate::tester`]: the connection handshake, the
//! producer's batching and delivery, and the consumer reading it back. Their goal is to prove
//! the pieces fit over real sockets; protocol corner cases are unit-tested next to the code.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::messages::ApiKey;

use crate::admin::{Admin, NewTopic, OffsetSpec};
use crate::connection::lock;
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use crate::producer::partitioner::partition_for_key;
use crate::producer::{Acks, Compression, Producer, ProducerConfig, ProducerRecord};
use crate::tester::{FakeBroker, FakeState};
use crate::{Client, ClientError};

fn topics(entries: &[(&str, i32)]) -> FakeState {
    FakeState {
        topics: entries
            .iter()
            .map(|(name, count)| ((*name).to_owned(), *count))
            .collect(),
        ..FakeState::default()
    }
}

/// KIP-511: a broker that does not serve ApiVersions v3 answers in v0 format, and the client
/// retries at the broker's highest version.
#[tokio::test]
async fn the_handshake_falls_back_to_the_brokers_api_versions_version() {
    let broker = FakeBroker::start(FakeState {
        api_versions_max: Some(2),
        ..FakeState::default()
    })
    .await;
    let client = Client::connect(broker.config()).await.expect("connects");
    let requests = lock(&broker.state).requests.clone();
    assert_eq!(
        &requests[..3],
        &[
            (ApiKey::ApiVersions, 3),
            (ApiKey::ApiVersions, 2),
            (ApiKey::Metadata, 12)
        ]
    );
    assert!(client.partitions_for("missing").await.is_err());
}

#[tokio::test]
async fn produced_records_are_delivered_in_order_and_read_back() {
    let broker = FakeBroker::start(topics(&[("events", 3)])).await;
    let client = Client::connect(broker.config()).await.expect("connects");
    let config = ProducerConfig {
        compression: Compression::Lz4,
        batch_size: 512,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config).expect("valid config");

    let mut deliveries = Vec::new();
    for index in 0..60u32 {
        let mut record = ProducerRecord::new("events", format!("value-{index}"));
        if index % 2 == 0 {
            record = record.with_key(format!("key-{}", index % 6));
        }
        record.headers = vec![
            ("index".to_owned(), Some(Bytes::from(index.to_string()))),
            ("empty".to_owned(), None),
        ];
        deliveries.push((
            record.clone(),
            producer.send(record).await.expect("accepted"),
        ));
    }
    producer.flush().await.expect("flushes");
    let mut delivered: BTreeMap<i32, Vec<(Offset, String)>> = BTreeMap::new();
    for (record, delivery) in deliveries {
        let metadata = delivery.await.expect("delivered");
        if let Some(key) = &record.key {
            assert_eq!(
                metadata.partition,
                partition_for_key(key, 3),
                "keyed records follow murmur2"
            );
        }
        let value = String::from_utf8(record.value.expect("has a value").to_vec()).expect("utf-8");
        delivered
            .entry(metadata.partition)
            .or_default()
            .push((metadata.offset, value));
    }
    for offsets in delivered.values() {
        let expected: Vec<Offset> = (0..offsets.len() as i64).map(Offset).collect();
        assert_eq!(
            offsets
                .iter()
                .map(|(offset, _)| *offset)
                .collect::<Vec<_>>(),
            expected,
            "dense offsets in send order"
        );
    }

    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    )
    .expect("valid config");
    consumer.assign((0..3).map(|p| TopicPartition::new("events", p)).collect());
    let mut consumed: BTreeMap<i32, Vec<(Offset, String)>> = BTreeMap::new();
    let mut count = 0;
    while count < 60 {
        let records = consumer.poll(Duration::from_secs(2)).await.expect("polls");
        assert!(!records.is_empty(), "records arrive before the timeout");
        for record in records {
            assert_eq!(record.headers.len(), 2);
            let value =
                String::from_utf8(record.value.expect("has a value").to_vec()).expect("utf-8");
            consumed
                .entry(record.partition)
                .or_default()
                .push((record.offset, value));
            count += 1;
        }
    }
    assert_eq!(consumed, delivered);
    for partition in 0..3 {
        let tp = TopicPartition::new("events", partition);
        let end = Offset(
            delivered
                .get(&partition)
                .map_or(0, |records| records.len() as i64),
        );
        assert_eq!(consumer.position(&tp), Some(end));
        assert_eq!(consumer.high_watermark(&tp), Some(end));
    }
}

#[tokio::test]
async fn acks_zero_completes_without_a_response() {
    let broker = FakeBroker::start(topics(&[("fire", 1)])).await;
    let client = Client::connect(broker.config()).await.expect("connects");
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::None,
            ..ProducerConfig::default()
        },
    )
    .expect("valid");
    let metadata = producer
        .send_and_wait(ProducerRecord::new("fire", "x"))
        .await
        .expect("sent");
    assert_eq!(metadata.offset, Offset(-1));
    // A request after it on the same connection still gets its own response.
    let (offset, _) = Admin::new(&client)
        .list_offsets(&TopicPartition::new("fire", 0), OffsetSpec::Latest)
        .await
        .expect("lists");
    assert_eq!(offset, Offset(1));
}

#[tokio::test]
async fn the_consumer_seeks_and_resets_out_of_range_positions() {
    let broker = FakeBroker::start(topics(&[("log", 1)])).await;
    let client = Client::connect(broker.config()).await.expect("connects");
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("valid");
    for index in 0..5 {
        producer
            .send(ProducerRecord::new("log", format!("{index}")).with_partition(0))
            .await
            .expect("accepted");
    }
    producer.flush().await.expect("flushes");

    let tp = TopicPartition::new("log", 0);
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).expect("valid");
    consumer.assign(vec![tp.clone()]);
    consumer
        .seek(&tp, SeekTo::Offset(Offset(3)))
        .await
        .expect("seeks");
    let records = consumer.poll(Duration::from_secs(1)).await.expect("polls");
    assert_eq!(
        records.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
        vec![3, 4],
        "records below the position are skipped"
    );

    consumer
        .seek(&tp, SeekTo::Offset(Offset(100)))
        .await
        .expect("seeks");
    let records = consumer
        .poll(Duration::from_millis(50))
        .await
        .expect("polls");
    assert!(records.is_empty());
    assert_eq!(
        consumer.position(&tp),
        Some(Offset(5)),
        "out of range resets to latest"
    );

    consumer.seek(&tp, SeekTo::Beginning).await.expect("seeks");
    assert_eq!(consumer.position(&tp), Some(Offset(0)));

    let mut strict = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::None,
            ..ConsumerConfig::default()
        },
    )
    .expect("valid");
    strict.assign(vec![tp.clone()]);
    assert!(matches!(
        strict.poll(Duration::from_millis(10)).await,
        Err(ClientError::NoOffsetForPartition { .. })
    ));
}

#[tokio::test]
async fn admin_creates_topics_and_reports_per_topic_errors() {
    let broker = FakeBroker::start(topics(&[("existing", 1)])).await;
    let client = Client::connect(broker.config()).await.expect("connects");
    let admin = Admin::new(&client);
    let new = NewTopic {
        num_partitions: 4,
        ..NewTopic::new("fresh")
    };
    let results = admin
        .create_topics(&[new, NewTopic::new("existing")], false)
        .await
        .expect("request succeeds");
    assert!(results[0].1.is_ok());
    assert!(matches!(
        results[1].1,
        Err(ClientError::Broker {
            error: protocol::ResponseError::TopicAlreadyExists,
            ..
        })
    ));
    assert_eq!(
        admin
            .describe_topic("fresh")
            .await
            .expect("describes")
            .partitions
            .len(),
        4
    );
    let listed: Vec<String> = admin
        .list_topics()
        .await
        .expect("lists")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed, vec!["existing".to_owned(), "fresh".to_owned()]);
}

#[tokio::test]
async fn an_unreachable_bootstrap_server_is_a_retriable_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let listener = rt::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        listener.local_addr().expect("address").port()
    };
    let config = crate::ClientConfig {
        bootstrap_servers: vec![format!("127.0.0.1:{port}")],
        ..Default::default()
    };
    let error = Client::connect(config).await.expect_err("nothing listens");
    assert!(matches!(error, ClientError::NoBrokerAvailable { .. }));
    assert!(error.is_retriable());
}

/// A connection that breaks fails its pending request with a retriable error, and the next
/// request dials a new connection.
#[tokio::test]
async fn a_broken_connection_fails_pending_requests_and_is_redialled() {
    let broker = FakeBroker::start(topics(&[("t", 1)])).await;
    let client = Client::connect(broker.config()).await.expect("connects");
    lock(&broker.state).drop_next_request = true;
    let error = client
        .refresh_metadata(None)
        .await
        .expect_err("the broker hung up");
    assert!(
        matches!(
            error,
            ClientError::Disconnected {
                cause: crate::DisconnectCause::Closed,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retriable());
    client
        .refresh_metadata(None)
        .await
        .expect("a new connection works");
    let handshakes = lock(&broker.state)
        .requests
        .iter()
        .filter(|(key, _)| *key == ApiKey::ApiVersions)
        .count();
    assert_eq!(handshakes, 2);
}
