//! Real clients round-trip records through weir: the native client, kcat (librdkafka),
//! confluent-kafka-python and kafka-python. Each compares what it read with what it wrote,
//! byte for byte, including keys, headers, offsets and (where the client exposes them)
//! timestamps, and checks that the batches were stored with the requested codec (KIP-390
//! record batches keep the producer's compression, `compression.type=producer`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use client::producer::{Acks, Compression, Producer, ProducerConfig, ProducerRecord};

use crate::harness::{python, repo_root, require_tool, run_bounded, WeirProcess};
use crate::tester::{connect, create_topic, offsets, read_to_end, stored_batch_codecs};

/// Codecs with their name and batch attribute id.
const CODECS: [(Compression, &str, i16); 5] = [
    (Compression::None, "none", 0),
    (Compression::Gzip, "gzip", 1),
    (Compression::Snappy, "snappy", 2),
    (Compression::Lz4, "lz4", 3),
    (Compression::Zstd, "zstd", 4),
];

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_millis())
        .expect("fits i64")
}

/// One record as written, to compare with what is read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(String, Option<Bytes>)>,
    timestamp_ms: i64,
}

fn native_record(topic: &str, codec: &str, index: usize, timestamp_ms: i64) -> ProducerRecord {
    // Null keys, null values (tombstones), null and empty header values, binary bytes and
    // compressible text all appear.
    let key = (index % 50 != 7).then(|| Bytes::from(format!("key-{codec}-{}", index % 23)));
    let value = (index % 37 != 5).then(|| {
        let mut value = format!("value {index} of {codec}: ").repeat(1 + index % 5).into_bytes();
        value.extend((0..=255u8).cycle().skip(index % 256).take(index % 300));
        Bytes::from(value)
    });
    let headers = vec![
        ("index".to_owned(), Some(Bytes::from(index.to_string()))),
        ("codec".to_owned(), Some(Bytes::from(codec.to_owned()))),
        ("null-header".to_owned(), None),
        ("empty-header".to_owned(), Some(Bytes::new())),
        ("ünïcode".to_owned(), Some(Bytes::from_static("✓".as_bytes()))),
    ];
    ProducerRecord { topic: topic.to_owned(), partition: None, key, value, headers, timestamp_ms: Some(timestamp_ms) }
}

/// Goal: every codec round-trips keyed records with headers exactly through the native
/// producer (acks=all) and consumer, at the offsets the producer was told, and the stored
/// batches carry that codec. Method: produce 300 varied records per codec to a two-partition
/// topic, read both partitions from the beginning, compare record by record (KIP-98 record
/// format v2, KIP-82 headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_client_round_trips_every_codec_with_keys_and_headers() {
    const RECORDS: usize = 300;
    let node = WeirProcess::start(&[]);
    let client = connect(&node.address()).await;
    let base_ms = now_ms() - 60_000;
    for (compression, codec, codec_id) in CODECS {
        let topic = format!("native-{codec}");
        create_topic(&client, &topic, 2, &[]).await;
        let config = ProducerConfig { acks: Acks::All, compression, linger_ms: 20, ..ProducerConfig::default() };
        let producer = Producer::new(client.clone(), config).expect("valid producer config");
        let mut deliveries = Vec::with_capacity(RECORDS);
        for index in 0..RECORDS {
            let record = native_record(&topic, codec, index, base_ms + index as i64);
            let written = Written {
                key: record.key.clone(),
                value: record.value.clone(),
                headers: record.headers.clone(),
                timestamp_ms: base_ms + index as i64,
            };
            let delivery =
                producer.send(record).await.unwrap_or_else(|error| panic!("{codec}: send {index} refused: {error}"));
            deliveries.push((written, delivery));
        }
        producer.flush().await.expect("flush completes");
        let mut expected: BTreeMap<i32, BTreeMap<i64, Written>> = BTreeMap::new();
        for (written, delivery) in deliveries {
            let metadata =
                delivery.await.unwrap_or_else(|error| panic!("{codec}: a record was not delivered: {error}"));
            assert_eq!(metadata.timestamp_ms, written.timestamp_ms, "{codec}: acknowledged timestamp");
            let previous = expected.entry(metadata.partition).or_default().insert(metadata.offset.0, written);
            assert!(
                previous.is_none(),
                "{codec}: two records acknowledged at {}@{}",
                metadata.partition,
                metadata.offset
            );
        }
        let read = read_to_end(&client, &topic, 2).await;
        let mut total = 0;
        for (partition, records) in &read {
            let wanted = expected.remove(partition).unwrap_or_default();
            assert_eq!(
                offsets(records),
                wanted.keys().copied().collect::<Vec<_>>(),
                "{codec}: offsets of partition {partition}"
            );
            for record in records {
                let written = &wanted[&record.offset.0];
                let got = Written {
                    key: record.key.clone(),
                    value: record.value.clone(),
                    headers: record.headers.clone(),
                    timestamp_ms: record.timestamp_ms,
                };
                assert_eq!(&got, written, "{codec}: record {partition}@{}", record.offset);
            }
            total += records.len();
            if !records.is_empty() {
                let codecs = stored_batch_codecs(&client, &topic, *partition, 0).await;
                assert!(!codecs.is_empty(), "{codec}: no complete batch fetched from partition {partition}");
                assert!(
                    codecs.iter().all(|id| *id == codec_id),
                    "{codec}: stored batches have codecs {codecs:?}, expected all {codec_id}"
                );
            }
        }
        assert!(expected.is_empty(), "{codec}: acknowledged partitions never read: {:?}", expected.keys());
        assert_eq!(total, RECORDS, "{codec}: records read back");
    }
}

/// Goal: librdkafka (through kcat) produces with every codec and consumes back exactly the
/// keys, values and headers it wrote, at dense offsets, and lists the topics in its metadata.
/// Method: `kcat -P -K: -z CODEC -H ...` then `kcat -C -e -f '%p:%o %k=%s %h'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_round_trips_every_codec() {
    const RECORDS: usize = 200;
    let kcat = require_tool("kcat", "apt-get install kcat");
    let node = WeirProcess::start(&[]);
    let address = node.address();
    let client = connect(&address).await;
    for (_, codec, codec_id) in CODECS {
        let topic = format!("kcat-{codec}");
        create_topic(&client, &topic, 1, &[]).await;
        let input: String = (0..RECORDS)
            .map(|index| format!("key{index}:{codec} value number {index} {}\n", "x".repeat(index % 40)))
            .collect();
        let mut produce = Command::new(&kcat);
        let _ = produce.args([
            "-P",
            "-b",
            &address,
            "-t",
            &topic,
            "-K:",
            "-z",
            codec,
            "-H",
            "origin=kcat",
            "-H",
            &format!("codec={codec}"),
        ]);
        let _ = produce.args(["-X", "linger.ms=50", "-X", "request.required.acks=all"]);
        let output = run_bounded(&mut produce, Some(input.into_bytes()), Duration::from_secs(60));
        output.assert_success(&format!("kcat produce with {codec}"));
        assert!(
            !output.stderr.contains("Delivery failed"),
            "kcat reported failed deliveries with {codec}:\n{}",
            output.stderr
        );

        let mut consume = Command::new(&kcat);
        let _ = consume.args(["-C", "-b", &address, "-t", &topic, "-o", "beginning", "-e", "-f", "%p:%o %k=%s %h\n"]);
        let output = run_bounded(&mut consume, None, Duration::from_secs(60));
        output.assert_success(&format!("kcat consume of {codec}"));
        let expected: Vec<String> = (0..RECORDS)
            .map(|index| {
                format!(
                    "0:{index} key{index}={codec} value number {index} {} origin=kcat,codec={codec}",
                    "x".repeat(index % 40)
                )
            })
            .collect();
        let got: Vec<&str> = output.stdout.lines().collect();
        assert_eq!(
            got.len(),
            RECORDS,
            "kcat read {} lines with {codec}:\n{}\n{}",
            got.len(),
            output.stdout,
            output.stderr
        );
        for (line, wanted) in got.iter().zip(&expected) {
            assert_eq!(line, wanted, "kcat round trip with {codec}");
        }
        let codecs = stored_batch_codecs(&client, &topic, 0, 0).await;
        assert!(
            !codecs.is_empty() && codecs.iter().all(|id| *id == codec_id),
            "kcat {codec}: stored batch codecs {codecs:?}"
        );
    }

    let mut list = Command::new(&kcat);
    let _ = list.args(["-L", "-b", &address]);
    let output = run_bounded(&mut list, None, Duration::from_secs(60));
    output.assert_success("kcat -L");
    assert!(
        output.stdout.contains(&format!("broker 1 at {address}")),
        "kcat -L does not show the broker:\n{}",
        output.stdout
    );
    for (_, codec, _) in CODECS {
        let line = format!("topic \"kcat-{codec}\" with 1 partitions");
        assert!(output.stdout.contains(&line), "kcat -L does not list {line}:\n{}", output.stdout);
    }
}

/// Runs `tests/python/SCRIPT ADDRESS` and fails with its output unless it exits 0 and prints
/// its closing `PASS` line (so a script that stops early cannot pass).
fn run_python_script(script: &str, address: &str) {
    let interpreter = python();
    let path = repo_root().join("tests/python").join(script);
    assert!(path.is_file(), "missing script {}", path.display());
    let mut command = Command::new(&interpreter);
    let _ = command.arg(&path).arg(address).env("PYTHONUNBUFFERED", "1");
    let output = run_bounded(&mut command, None, Duration::from_secs(180));
    output.assert_success(script);
    assert!(
        output.stdout.lines().any(|line| line.starts_with("PASS")),
        "{script} exited 0 without its PASS line\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout,
        output.stderr
    );
}

/// Goal: confluent-kafka-python (librdkafka 2.x) can create a topic with a config, produce
/// keyed records with headers under every codec, read them back by assign + seek, see the
/// override as DYNAMIC_TOPIC_CONFIG, look up offsets by time, and read watermarks. Method:
/// `tests/python/confluent_kafka_client.py`, which exits non-zero on any mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_python_produces_consumes_and_administers() {
    let node = WeirProcess::start(&[]);
    run_python_script("confluent_kafka_client.py", &node.address());
}

/// Goal: kafka-python (a pure-Python client with its own protocol code) produces and consumes
/// keyed records with headers, with and without gzip, and administers topics. Method:
/// `tests/python/kafka_python_client.py`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_and_consumes() {
    let node = WeirProcess::start(&[]);
    run_python_script("kafka_python_client.py", &node.address());
}
