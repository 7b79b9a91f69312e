//! ListOffsets: by timestamp, earliest, latest and max-timestamp (KIP-33 time index, KIP-734
//! max timestamp).

use std::time::{SystemTime, UNIX_EPOCH};

use client::admin::{Admin, OffsetSpec};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use protocol::ids::TopicPartition;

use crate::harness::WeirProcess;
use crate::tester::{connect, create_topic};

/// Goal: a timestamp lookup returns the first offset (in offset order) whose timestamp is at
/// or after the target, also inside a multi-record batch and when timestamps are out of
/// order; -1 past the last timestamp. Method: records with explicit CreateTime timestamps
/// 1000, 2000, 3000 ms after a base ten minutes in the past (inside the broker's accepted
/// window), each in its own batch, then 4000..6000 in one batch; a second partition holds
/// 1000, 3000, 2000. Kafka's ListOffsets semantics (KIP-79).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_by_timestamp_find_the_first_record_at_or_after() {
    let node = WeirProcess::start(&[]);
    let client = connect(&node.address()).await;
    let topic = "timestamps";
    create_topic(&client, topic, 2, &[]).await;
    let now_ms =
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits");
    let base = now_ms - 10 * 60 * 1000;
    let producer =
        Producer::new(client.clone(), ProducerConfig { acks: Acks::All, linger_ms: 50, ..ProducerConfig::default() })
            .expect("valid config");
    let record = |partition: i32, delta_ms: i64| ProducerRecord {
        topic: topic.to_owned(),
        partition: Some(partition),
        key: None,
        value: Some(format!("at {delta_ms}").into()),
        headers: Vec::new(),
        timestamp_ms: Some(base + delta_ms),
    };
    // Partition 0: three single-record batches, then one batch of three.
    for (expected_offset, delta) in [(0, 1000), (1, 2000), (2, 3000)] {
        let metadata = producer.send_and_wait(record(0, delta)).await.expect("acknowledged");
        assert_eq!(metadata.offset.0, expected_offset, "offset of the record at +{delta} ms");
    }
    let mut batch = Vec::new();
    for delta in [4000, 5000, 6000] {
        batch.push(producer.send(record(0, delta)).await.expect("accepted"));
    }
    producer.flush().await.expect("flush");
    for (index, delivery) in batch.into_iter().enumerate() {
        assert_eq!(delivery.await.expect("acknowledged").offset.0, 3 + index as i64);
    }
    // Partition 1: timestamps out of order.
    for delta in [1000, 3000, 2000] {
        let _ = producer.send_and_wait(record(1, delta)).await.expect("acknowledged");
    }

    let admin = Admin::new(&client);
    let lookup = |partition: i32, spec: OffsetSpec| {
        let admin = admin.clone();
        async move {
            let tp = TopicPartition::new(topic, partition);
            admin
                .list_offsets(&tp, spec)
                .await
                .unwrap_or_else(|error| panic!("ListOffsets {spec:?} on {tp} failed: {error}"))
        }
    };
    let cases_partition_0 = [
        (0, 0),
        (999, 0),
        (1000, 0),
        (1001, 1),
        (2000, 1),
        (2500, 2),
        (3000, 2),
        (3001, 3),
        (4000, 3),
        (4500, 4),
        (5000, 4),
        (5999, 5),
        (6000, 5),
    ];
    for (delta, expected) in cases_partition_0 {
        let (offset, timestamp) = lookup(0, OffsetSpec::Timestamp(base + delta)).await;
        assert_eq!(offset.0, expected, "partition 0: first offset with timestamp >= base+{delta}");
        // The offset's own timestamp comes back (KIP-79); deltas are multiples of 1000.
        let expected_timestamp = base + 1000 * (expected + 1);
        assert_eq!(timestamp, expected_timestamp, "partition 0: timestamp returned for base+{delta}");
    }
    let (offset, timestamp) = lookup(0, OffsetSpec::Timestamp(base + 6001)).await;
    assert_eq!((offset.0, timestamp), (-1, -1), "partition 0: no record at or after base+6001");

    for (delta, expected) in [(1000, 0), (1500, 1), (2000, 1), (3000, 1)] {
        let (offset, _) = lookup(1, OffsetSpec::Timestamp(base + delta)).await;
        assert_eq!(offset.0, expected, "partition 1 (1000, 3000, 2000): first offset with timestamp >= base+{delta}");
    }
    assert_eq!(
        lookup(1, OffsetSpec::Timestamp(base + 3001)).await.0 .0,
        -1,
        "partition 1: nothing at or after base+3001"
    );

    assert_eq!(lookup(0, OffsetSpec::Earliest).await.0 .0, 0, "partition 0 earliest");
    assert_eq!(lookup(0, OffsetSpec::Latest).await.0 .0, 6, "partition 0 latest");
    assert_eq!(lookup(1, OffsetSpec::Earliest).await.0 .0, 0, "partition 1 earliest");
    assert_eq!(lookup(1, OffsetSpec::Latest).await.0 .0, 3, "partition 1 latest");

    // A timestamp lookup on an empty partition of a fresh topic finds nothing.
    create_topic(&client, "timestamps-empty", 1, &[]).await;
    let tp = TopicPartition::new("timestamps-empty", 0);
    let (offset, _) =
        admin.list_offsets(&tp, OffsetSpec::Timestamp(base)).await.expect("ListOffsets on an empty partition");
    assert_eq!(offset.0, -1, "an empty partition has no offset at or after any timestamp");
    assert_eq!(admin.list_offsets(&tp, OffsetSpec::Latest).await.expect("latest").0 .0, 0, "empty partition latest");
}

/// Goal: ListOffsets with MAX_TIMESTAMP (-3, KIP-734) returns the offset and timestamp of the
/// record with the largest timestamp, also when that record is inside a multi-record batch
/// (the fix of KAFKA-16310 returns the record's own offset, not its batch's). Method: one
/// partition holds single-record batches at +1000 and +3000 ms and then one batch of
/// +4000, +6000, +5000 ms (offsets 2, 3, 4); the answer must be offset 3 at +6000 ms. A second
/// partition with a single-record batch of the maximum checks the simple case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_timestamp_lookup_returns_the_record_with_the_largest_timestamp() {
    let node = WeirProcess::start(&[]);
    let client = connect(&node.address()).await;
    let topic = "max-timestamp";
    create_topic(&client, topic, 2, &[]).await;
    let now_ms =
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits");
    let base = now_ms - 10 * 60 * 1000;
    let producer =
        Producer::new(client.clone(), ProducerConfig { acks: Acks::All, linger_ms: 50, ..ProducerConfig::default() })
            .expect("valid config");
    let record = |partition: i32, delta_ms: i64| ProducerRecord {
        topic: topic.to_owned(),
        partition: Some(partition),
        key: None,
        value: Some(format!("at {delta_ms}").into()),
        headers: Vec::new(),
        timestamp_ms: Some(base + delta_ms),
    };
    for delta in [1000, 3000] {
        let _ = producer.send_and_wait(record(0, delta)).await.expect("acknowledged");
    }
    let mut batch = Vec::new();
    for delta in [4000, 6000, 5000] {
        batch.push(producer.send(record(0, delta)).await.expect("accepted"));
    }
    producer.flush().await.expect("flush");
    for (index, delivery) in batch.into_iter().enumerate() {
        assert_eq!(
            delivery.await.expect("acknowledged").offset.0,
            2 + index as i64,
            "the three records share one batch at offsets 2..=4"
        );
    }
    for delta in [2000, 9000, 7000] {
        let _ = producer.send_and_wait(record(1, delta)).await.expect("acknowledged");
    }
    let admin = Admin::new(&client);
    let partition_1 = admin
        .list_offsets(&TopicPartition::new(topic, 1), OffsetSpec::MaxTimestamp)
        .await
        .expect("ListOffsets max timestamp");
    assert_eq!(
        (partition_1.0 .0, partition_1.1),
        (1, base + 9000),
        "partition 1 (single-record batches) max timestamp"
    );
    let partition_0 = admin
        .list_offsets(&TopicPartition::new(topic, 0), OffsetSpec::MaxTimestamp)
        .await
        .expect("ListOffsets max timestamp");
    assert_eq!(
        (partition_0.0 .0, partition_0.1),
        (3, base + 6000),
        "partition 0: the record with the largest timestamp is at offset 3 inside the batch at offsets 2..=4"
    );
}
