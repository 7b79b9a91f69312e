//! Native-client vocabulary shared by the scenarios: connect, create a topic, read partitions
//! to their end, and look inside fetched record batches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client::admin::{Admin, NewTopic, OffsetSpec};
use client::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
use client::{Client, ClientConfig};
use protocol::ids::TopicPartition;
use protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use protocol::kafka_protocol::messages::{FetchRequest, RequestKind, ResponseKind, TopicName};
use protocol::kafka_protocol::protocol::StrBytes;

/// How long reading a topic back may take before the test fails.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Polls of one read before the test fails, whatever the clock says.
const POLLS_MAX: u32 = 10_000;

/// A client for one node, with timeouts short enough for a test.
pub(crate) async fn connect(address: &str) -> Client {
    connect_any(&[address.to_owned()]).await
}

/// A client bootstrapping from any of `addresses`.
pub(crate) async fn connect_any(addresses: &[String]) -> Client {
    let address = addresses.join(",");
    let config = ClientConfig {
        bootstrap_servers: addresses.to_vec(),
        client_id: "weir-blackbox".to_owned(),
        request_timeout_ms: 10_000,
        ..ClientConfig::default()
    };
    Client::connect(config).await.unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"))
}

/// Creates a topic and fails the test if the broker refuses.
pub(crate) async fn create_topic(client: &Client, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let topic = NewTopic {
        name: name.to_owned(),
        num_partitions: partitions,
        replication_factor: 1,
        configs: configs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
    };
    let results = Admin::new(client)
        .create_topics(&[topic], false)
        .await
        .unwrap_or_else(|error| panic!("CreateTopics {name} failed: {error}"));
    assert_eq!(results.len(), 1, "CreateTopics answered {results:?}");
    if let Err(error) = &results[0].1 {
        panic!("creating topic {name} was refused: {error}");
    }
}

/// The log end offset of a partition (ListOffsets latest).
pub(crate) async fn log_end_offset(client: &Client, topic: &str, partition: i32) -> i64 {
    let tp = TopicPartition::new(topic, partition);
    Admin::new(client)
        .list_offsets(&tp, OffsetSpec::Latest)
        .await
        .unwrap_or_else(|error| panic!("ListOffsets latest {tp} failed: {error}"))
        .0
         .0
}

/// Every record of `partitions` partitions of a topic, from the log start to the log end
/// offset as ListOffsets reports it when the read begins. Fails the test if the end is not
/// reached within [`READ_TIMEOUT`].
pub(crate) async fn read_to_end(client: &Client, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<ConsumerRecord>> {
    let mut ends = BTreeMap::new();
    for partition in 0..partitions {
        let _ = ends.insert(partition, log_end_offset(client, topic, partition).await);
    }
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .expect("the default consumer config is valid");
    let assignment: Vec<TopicPartition> =
        (0..partitions).map(|partition| TopicPartition::new(topic, partition)).collect();
    consumer.assign(assignment.clone());
    for tp in &assignment {
        consumer
            .seek(tp, SeekTo::Beginning)
            .await
            .unwrap_or_else(|error| panic!("seek to beginning of {tp} failed: {error}"));
    }
    let mut records: BTreeMap<i32, Vec<ConsumerRecord>> =
        (0..partitions).map(|partition| (partition, Vec::new())).collect();
    let done = |records: &BTreeMap<i32, Vec<ConsumerRecord>>| {
        ends.iter().all(|(partition, end)| {
            *end == 0 || records[partition].last().is_some_and(|record| record.offset.0 + 1 >= *end)
        })
    };
    let deadline = Instant::now() + READ_TIMEOUT;
    for _ in 0..POLLS_MAX {
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach the log end offsets {ends:?} within {READ_TIMEOUT:?}; got {:?} records per partition",
            records.iter().map(|(partition, list)| (*partition, list.len())).collect::<BTreeMap<_, _>>()
        );
        let polled = consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap_or_else(|error| panic!("poll of {topic} failed: {error}"));
        for record in polled {
            // Records past the end seen at the start belong to later writers; leave them out.
            if record.offset.0 < ends[&record.partition] {
                records.get_mut(&record.partition).expect("only assigned partitions are returned").push(record);
            }
        }
    }
    panic!("reading {topic} exhausted {POLLS_MAX} polls");
}

/// The compression codec ids (attributes & 7) of the record batches stored in a partition,
/// read by a raw Fetch from `offset` and parsed here independently of weir's own batch code.
pub(crate) async fn stored_batch_codecs(client: &Client, topic: &str, partition: i32, offset: i64) -> Vec<i16> {
    let request =
        FetchRequest::default().with_max_wait_ms(0).with_min_bytes(1).with_max_bytes(8 * 1024 * 1024).with_topics(
            vec![FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_owned()))).with_partitions(
                vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(8 * 1024 * 1024)],
            )],
        );
    let response = client
        .send(None, RequestKind::Fetch(request))
        .await
        .unwrap_or_else(|error| panic!("raw Fetch failed: {error}"));
    let ResponseKind::Fetch(response) = response else { panic!("a Fetch got another kind of response") };
    let data = response
        .responses
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .find(|data| data.partition_index == partition)
        .unwrap_or_else(|| panic!("the Fetch response has no partition {partition}"));
    assert_eq!(data.error_code, 0, "raw Fetch of {topic}-{partition} failed with code {}", data.error_code);
    let bytes = data.records.clone().unwrap_or_default();
    let mut codecs = Vec::new();
    let mut position = 0usize;
    // Batch layout (KIP-98): baseOffset i64, batchLength i32, leaderEpoch i32, magic i8,
    // crc u32, attributes i16, ...; a batch occupies 12 + batchLength bytes.
    while position + 23 <= bytes.len() {
        let length = i32::from_be_bytes(bytes[position + 8..position + 12].try_into().expect("4 bytes")) as usize;
        if position + 12 + length > bytes.len() {
            break; // A trailing partial batch, as Fetch may return.
        }
        let attributes = i16::from_be_bytes(bytes[position + 21..position + 23].try_into().expect("2 bytes"));
        codecs.push(attributes & 0x7);
        position += 12 + length;
    }
    codecs
}

/// Offsets of a partition's records, for density checks.
pub(crate) fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
    records.iter().map(|record| record.offset.0).collect()
}
