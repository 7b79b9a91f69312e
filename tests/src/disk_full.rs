//! A full disk is an operating error, not a crash: produce is refused with
//! KAFKA_STORAGE_ERROR while reads keep working, and writes resume once space returns.

use bytes::Bytes;
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::ProduceError;
use protocol::ResponseError;

use crate::harness::{available_bytes, WeirProcess};
use crate::tester::{connect, create_topic, read_to_end};

/// The Kafka error behind a failed delivery, whichever way the producer reports it.
fn delivery_error(error: &ProduceError) -> Option<ResponseError> {
    match error {
        ProduceError::Broker { error, .. } => Some(*error),
        ProduceError::RetriesExhausted { last_error, .. } => last_error.response_error(),
        ProduceError::DeliveryTimeout { last_error, .. } => {
            last_error.as_ref().and_then(|error| error.response_error())
        }
        ProduceError::Client(error) => error.response_error(),
        _ => None,
    }
}

async fn produce_values(address: &str, topic: &str, values: &[String]) {
    let client = connect(address).await;
    let producer =
        Producer::new(client, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() }).expect("valid config");
    let mut deliveries = Vec::new();
    for value in values {
        deliveries.push(producer.send(ProducerRecord::new(topic, value.clone())).await.expect("accepted"));
    }
    producer.flush().await.expect("flush");
    for delivery in deliveries {
        let _ = delivery.await.unwrap_or_else(|error| panic!("a record to {topic} was not acknowledged: {error}"));
    }
}

async fn values_of(address: &str, topic: &str) -> Vec<String> {
    let client = connect(address).await;
    let read = read_to_end(&client, topic, 1).await;
    read[&0]
        .iter()
        .map(|record| String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Produces one record without retries and returns the Kafka error it failed with.
async fn refused_produce(address: &str, topic: &str, value: &str) -> ResponseError {
    let client = connect(address).await;
    let config =
        ProducerConfig { acks: Acks::All, retries: 0, delivery_timeout_ms: 15_000, ..ProducerConfig::default() };
    let producer = Producer::new(client, config).expect("valid config");
    match producer.send_and_wait(ProducerRecord::new(topic, Bytes::from(value.to_owned()))).await {
        Ok(metadata) => panic!("a produce to {topic} on a full disk was acknowledged at offset {}", metadata.offset),
        Err(error) => delivery_error(&error)
            .unwrap_or_else(|| panic!("a produce to {topic} on a full disk failed without a Kafka error: {error}")),
    }
}

/// Goal: with less free space than `log.disk.reserve.bytes`, produce fails with
/// KAFKA_STORAGE_ERROR (56), the node stays up and serves reads of earlier data, and once the
/// reserve is lifted writes resume with nothing earlier lost and nothing refused stored.
/// Method: write records, restart the node with a reserve larger than the filesystem's free
/// space (measured with statvfs, as `df` does), try to produce, read, then restart without
/// the reserve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_produce_and_keeps_serving_reads() {
    let mut node = WeirProcess::start(&["--log-disk-reserve-bytes", "0"]);
    let address = node.address();
    let topic = "before-full";
    create_topic(&connect(&address).await, topic, 1, &[]).await;
    let before: Vec<String> = (0..200).map(|index| format!("written before the disk filled {index}")).collect();
    produce_values(&address, topic, &before).await;
    let status = node.terminate();
    assert!(status.success(), "graceful shutdown exited with {status}");

    let reserve = available_bytes(node.data_dir()) + (1 << 40);
    node.restart_with(&["--log-disk-reserve-bytes", &reserve.to_string()]);
    let address = node.address();
    let error = refused_produce(&address, topic, "refused on a full disk").await;
    assert_eq!(error, ResponseError::KafkaStorageError, "produce on a full disk");
    node.assert_running();
    assert_eq!(values_of(&address, topic).await, before, "reads on a full disk");

    // Creating a topic writes only metadata; either outcome is acceptable, but a topic that
    // exists must refuse produce the same way.
    let client = connect(&address).await;
    let created = client::admin::Admin::new(&client)
        .create_topics(
            &[client::admin::NewTopic {
                name: "during-full".to_owned(),
                num_partitions: 1,
                replication_factor: 1,
                configs: Vec::new(),
            }],
            false,
        )
        .await;
    let created = matches!(created.as_deref(), Ok([(_, Ok(()))]));
    eprintln!("creating a topic on a full disk {}", if created { "succeeded" } else { "was refused" });
    if created {
        let error = refused_produce(&address, "during-full", "refused too").await;
        assert_eq!(error, ResponseError::KafkaStorageError, "produce to a topic created on a full disk");
    }
    let error = refused_produce(&address, topic, "refused again").await;
    assert_eq!(error, ResponseError::KafkaStorageError, "a second produce on a full disk");
    node.assert_running();
    if let Err(error) = client.refresh_metadata(None).await {
        panic!("metadata on a full disk failed: {error}");
    }

    let status = node.terminate();
    assert!(status.success(), "graceful shutdown on a full disk exited with {status}; stderr:\n{}", node.stderr());
    node.restart_with(&["--log-disk-reserve-bytes", "0"]);
    let address = node.address();
    let after: Vec<String> = (0..50).map(|index| format!("written after space returned {index}")).collect();
    produce_values(&address, topic, &after).await;
    let expected: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert_eq!(
        values_of(&address, topic).await,
        expected,
        "after space returned: everything before, nothing refused, everything after"
    );
}
