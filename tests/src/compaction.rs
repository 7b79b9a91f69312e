//! Log compaction with real clients: librdkafka (confluent-kafka-python) and kafka-python
//! produce keyed records to a compacted topic, and read it back from offset 0 after the
//! cleaner ran: every kept record at its original offset, the latest value of every key, the
//! reader carried past every compacted gap to the end, a record without a key refused, and
//! DeleteRecords refused.

use std::process::Command;
use std::time::Duration;

use client::admin::{Admin, NewTopic};
use protocol::ids::{Offset, TopicPartition};
use protocol::ResponseError;

use crate::harness::{python, repo_root, run_bounded, WeirProcess};
use crate::tester::connect;

/// How long the compaction script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `tests/python/compaction.py` for `library` against a fresh node whose cleaner looks
/// every 200 ms.
async fn run_compaction_script(library: &str) {
    let node = WeirProcess::start(&["--log-cleaner-backoff-ms", "200"]);
    let client = connect(&node.address()).await;
    let topic = format!("compacted-{library}");
    let configs = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "1024"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "0"),
    ];
    let new_topic = NewTopic {
        num_partitions: 1,
        replication_factor: 1,
        configs: configs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect(),
        ..NewTopic::new(&topic)
    };
    let created = Admin::new(&client).create_topics(&[new_topic], false).await.expect("CreateTopics answers");
    assert!(created[0].1.is_ok(), "creating {topic} failed: {created:?}");

    let mut command = Command::new(python());
    let _ = command
        .arg(repo_root().join("tests/python/compaction.py"))
        .arg(node.address())
        .arg(library)
        .arg(&topic)
        .env("PYTHONUNBUFFERED", "1");
    let output =
        tokio::task::spawn_blocking(move || run_bounded(&mut command, None, SCRIPT_TIMEOUT)).await.expect("joined");
    assert!(
        output.stdout.lines().any(|line| line.starts_with("PASS")),
        "compaction.py failed\n{}\n{}\n--- weir ---\n{}",
        output.stdout,
        output.stderr,
        node.stderr()
    );
    output.assert_success("compaction.py");
    eprintln!("compaction: {}", output.stdout.trim());

    // A compact-only topic keeps the latest value of every key: DeleteRecords is refused.
    let partition = TopicPartition::new(topic.as_str(), 0);
    let refused = Admin::new(&client).delete_records(&partition, Offset(1)).await;
    assert!(
        matches!(&refused, Err(error) if error.response_error() == Some(ResponseError::PolicyViolation)),
        "DeleteRecords on a compacted topic answered {refused:?}"
    );
}

/// Goal: librdkafka reads a compacted topic as it reads Kafka's: offsets kept with gaps, empty
/// filler batches skipped, the latest value of every key present, keyless records refused.
/// Method: `tests/python/compaction.py confluent` (idempotent producer, 30 rounds of 40 keys,
/// 1 KiB segments, cleaner every 200 ms).
#[tokio::test]
async fn librdkafka_reads_a_compacted_topic_with_offsets_and_latest_values_intact() {
    run_compaction_script("confluent").await;
}

/// Goal: the same with kafka-python, whose fetch and record-batch code is its own. Method:
/// `tests/python/compaction.py kafka-python`.
#[tokio::test]
async fn kafka_python_reads_a_compacted_topic_with_offsets_and_latest_values_intact() {
    run_compaction_script("kafka-python").await;
}
