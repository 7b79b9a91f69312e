//! The `weir` command-line tools against a running node: topic administration, produce,
//! consume and bench, checked by their printed output and by the native client.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{weir_cli, WeirProcess};
use crate::tester::{connect, log_end_offset};

/// One line of `weir consume --print-partition --print-offset --print-key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Printed {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

fn parse_consumed(stdout: &str) -> Vec<Printed> {
    stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            assert_eq!(fields.len(), 4, "unexpected consume line {line:?}");
            let number = |field: &str, prefix: &str| -> i64 {
                field
                    .strip_prefix(prefix)
                    .and_then(|text| text.parse().ok())
                    .unwrap_or_else(|| panic!("field {field:?} of {line:?} is not {prefix}N"))
            };
            Printed {
                partition: number(fields[0], "Partition:") as i32,
                offset: number(fields[1], "Offset:"),
                key: fields[2].to_owned(),
                value: fields[3].to_owned(),
            }
        })
        .collect()
}

fn listed_topics(address: &str) -> BTreeSet<String> {
    let output = weir_cli(address, &["topic", "list"], None);
    output.assert_success("weir topic list");
    output.stdout.lines().map(str::to_owned).collect()
}

/// Goal: an operator can administer topics, produce lines and read them back with the `weir`
/// CLI alone, and its output says what happened. Method: run each command against a node and
/// check stdout/stderr and exit status; cross-check with the native client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topic_produce_consume_work_end_to_end() {
    let node = WeirProcess::start(&[]);
    let address = node.address();
    let topic = "cli-events";

    let output =
        weir_cli(&address, &["topic", "create", topic, "--partitions", "2", "--config", "retention.ms=3600000"], None);
    output.assert_success("weir topic create");
    assert_eq!(output.stdout.trim(), format!("Created topic {topic}."), "create output");
    let output = weir_cli(&address, &["topic", "create", topic, "--partitions", "2"], None);
    assert!(!output.status.success(), "creating {topic} twice succeeded:\n{}", output.stdout);
    assert!(
        output.stderr.contains(&format!("cannot create topic {topic}")),
        "the duplicate create's error names the topic:\n{}",
        output.stderr
    );

    assert!(listed_topics(&address).contains(topic), "topic list lacks {topic}");
    let output = weir_cli(&address, &["topic", "describe", topic], None);
    output.assert_success("weir topic describe");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "describe prints a topic line and one line per partition:\n{}", output.stdout);
    assert!(
        lines[0].starts_with(&format!("Topic: {topic}\t")) && lines[0].contains("PartitionCount: 2"),
        "describe header: {}",
        lines[0]
    );
    assert!(lines[0].ends_with("Configs: retention.ms=3600000"), "describe shows exactly the override: {}", lines[0]);
    for (partition, line) in lines[1..].iter().enumerate() {
        assert!(
            line.contains(&format!("Partition: {partition}\tLeader: 1\t")) && line.contains("Isr: 1"),
            "partition line {line:?}"
        );
    }

    let written: Vec<(String, String)> =
        (0..40).map(|index| (format!("user-{}", index % 5), format!("event {index} with spaces"))).collect();
    let input: String = written.iter().map(|(key, value)| format!("{key}:{value}\n")).collect();
    let output = weir_cli(&address, &["produce", topic, "--key-separator", ":", "--acks", "all"], Some(&input));
    output.assert_success("weir produce");
    assert!(output.stderr.contains("40 records delivered, 0 failed"), "produce summary:\n{}", output.stderr);

    let consume = [
        "consume",
        topic,
        "--from-beginning",
        "--timeout-ms",
        "5000",
        "--print-partition",
        "--print-offset",
        "--print-key",
    ];
    let output = weir_cli(&address, &consume, None);
    output.assert_success("weir consume");
    let consumed = parse_consumed(&output.stdout);
    assert_eq!(consumed.len(), written.len(), "records consumed:\n{}", output.stdout);
    let mut by_partition: BTreeMap<i32, Vec<&Printed>> = BTreeMap::new();
    for printed in &consumed {
        by_partition.entry(printed.partition).or_default().push(printed);
    }
    for (partition, records) in &mut by_partition {
        records.sort_by_key(|printed| printed.offset);
        let offsets: Vec<i64> = records.iter().map(|printed| printed.offset).collect();
        assert_eq!(offsets, (0..records.len() as i64).collect::<Vec<_>>(), "offsets of partition {partition}");
    }
    // Per key, the records keep their order (a key maps to one partition).
    for key in (0..5).map(|index| format!("user-{index}")) {
        let sent: Vec<&str> = written.iter().filter(|(k, _)| *k == key).map(|(_, value)| value.as_str()).collect();
        let partitions: BTreeSet<i32> =
            consumed.iter().filter(|printed| printed.key == key).map(|printed| printed.partition).collect();
        assert_eq!(partitions.len(), 1, "{key} spread over partitions {partitions:?}");
        let partition = *partitions.first().expect("one partition");
        let read: Vec<&str> = by_partition[&partition]
            .iter()
            .filter(|printed| printed.key == key)
            .map(|printed| printed.value.as_str())
            .collect();
        assert_eq!(read, sent, "values of {key} in order");
    }
    let client = connect(&address).await;
    let ends = log_end_offset(&client, topic, 0).await + log_end_offset(&client, topic, 1).await;
    assert_eq!(ends, 40, "log end offsets seen by the native client");

    let output = weir_cli(&address, &["consume", topic, "--from-beginning", "--max-messages", "7"], None);
    output.assert_success("weir consume --max-messages 7");
    assert_eq!(output.stdout.lines().count(), 7, "--max-messages 7 printed:\n{}", output.stdout);

    let output = weir_cli(&address, &["topic", "alter", topic, "--set", "retention.ms=1000"], None);
    output.assert_success("weir topic alter");
    assert_eq!(output.stdout.trim(), format!("Updated configs of topic {topic}."), "alter output");
    let output = weir_cli(&address, &["topic", "describe", topic], None);
    output.assert_success("weir topic describe after alter");
    assert!(
        output.stdout.contains("PartitionCount: 2") && output.stdout.contains("Configs: retention.ms=1000"),
        "describe after alter:\n{}",
        output.stdout
    );
    let output = weir_cli(&address, &["topic", "alter", topic, "--delete", "retention.ms"], None);
    output.assert_success("weir topic alter --delete");
    let output = weir_cli(&address, &["topic", "describe", topic], None);
    assert!(
        output.stdout.lines().next().is_some_and(|line| line.ends_with("Configs: ")),
        "describe after deleting the override:\n{}",
        output.stdout
    );

    let output = weir_cli(
        &address,
        &["bench", "produce", "--topic", "cli-bench", "--count", "2000", "--record-size", "100", "--json"],
        None,
    );
    output.assert_success("weir bench produce");
    let line = output.stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|error| panic!("bench produce printed {line:?}: {error}"));
    assert_eq!(
        (result["records"].as_u64(), result["failed"].as_u64()),
        (Some(2000), Some(0)),
        "bench produce result {result}"
    );
    assert_eq!(log_end_offset(&client, "cli-bench", 0).await, 2000, "records the bench wrote");
    let output = weir_cli(&address, &["bench", "consume", "--topic", "cli-bench", "--count", "2000", "--json"], None);
    output.assert_success("weir bench consume");
    let line = output.stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|error| panic!("bench consume printed {line:?}: {error}"));
    assert_eq!(result["records"].as_u64(), Some(2000), "bench consume result {result}");

    let output = weir_cli(&address, &["topic", "delete", topic], None);
    output.assert_success("weir topic delete");
    assert_eq!(output.stdout.trim(), format!("Deleted topic {topic}."), "delete output");
    let topics = listed_topics(&address);
    assert!(!topics.contains(topic) && topics.contains("cli-bench"), "topics after delete: {topics:?}");
    let output = weir_cli(&address, &["topic", "describe", topic], None);
    assert!(!output.status.success(), "describing a deleted topic succeeded:\n{}", output.stdout);
}

/// Goal: `weir topic alter --partitions N` grows a topic, and the new partition takes
/// writes. Method: create a two-partition topic, alter it to three, describe it, produce to
/// partition 2 with the CLI and read it back. (CreatePartitions with null assignments lets
/// the controller place the new partitions, KIP-195.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topic_alter_adds_partitions() {
    let node = WeirProcess::start(&[]);
    let address = node.address();
    weir_cli(&address, &["topic", "create", "growing", "--partitions", "2"], None).assert_success("weir topic create");
    let output = weir_cli(&address, &["topic", "alter", "growing", "--partitions", "3"], None);
    output.assert_success("weir topic alter --partitions 3");
    assert_eq!(output.stdout.trim(), "Topic growing now has 3 partitions.", "alter output");
    let output = weir_cli(&address, &["topic", "describe", "growing"], None);
    output.assert_success("weir topic describe");
    assert!(
        output.stdout.contains("PartitionCount: 3") && output.stdout.contains("Partition: 2\tLeader: 1"),
        "describe after growing:\n{}",
        output.stdout
    );
    weir_cli(&address, &["produce", "growing", "--partition", "2"], Some("into the new partition\n"))
        .assert_success("weir produce --partition 2");
    let output = weir_cli(
        &address,
        &["consume", "growing", "--partition", "2", "--from-beginning", "--max-messages", "1", "--print-offset"],
        None,
    );
    output.assert_success("weir consume --partition 2");
    assert_eq!(output.stdout.trim(), "Offset:0\tinto the new partition", "the new partition's contents");
}
