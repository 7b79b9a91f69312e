//! Topic configs: DescribeConfigs values and sources, IncrementalAlterConfigs set, delete and
//! refusal (KIP-339 incremental alter, KIP-226 config sources).

use client::admin::{Admin, AlterOp, ConfigEntry, ConfigSource};
use client::ClientError;
use protocol::ResponseError;

use crate::harness::WeirProcess;
use crate::tester::{connect, create_topic};

/// The broker's static `log.retention.ms` in this test, distinct from Kafka's default.
const STATIC_RETENTION_MS: &str = "86400000";

async fn describe(admin: &Admin, topic: &str) -> Vec<ConfigEntry> {
    admin.describe_configs(topic).await.unwrap_or_else(|error| panic!("DescribeConfigs {topic} failed: {error}"))
}

fn entry<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
    entries
        .iter()
        .find(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("DescribeConfigs has no {name}: {entries:?}"))
}

fn value_and_source(entries: &[ConfigEntry], name: &str) -> (Option<String>, ConfigSource) {
    let entry = entry(entries, name);
    (entry.value.clone(), entry.source)
}

fn broker_error(result: Result<(), ClientError>, what: &str) -> ResponseError {
    match result {
        Err(ClientError::Broker { error, .. }) => error,
        other => panic!("{what}: expected a broker error, got {other:?}"),
    }
}

/// Goal: a topic's configs are described with the value in force and where it comes from:
/// the built-in default, the broker's static setting, or the topic override; deleting the
/// override restores the lower layer; invalid changes are refused with INVALID_CONFIG and
/// change nothing, even when batched with a valid change; an unknown topic is an error.
/// Method: a node started with `--log-retention-ms`, IncrementalAlterConfigs and
/// DescribeConfigs through the native admin client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_are_described_with_their_sources() {
    let node = WeirProcess::start(&["--log-retention-ms", STATIC_RETENTION_MS]);
    let client = connect(&node.address()).await;
    let admin = Admin::new(&client);
    create_topic(&client, "configured", 1, &[("segment.bytes", "1048576")]).await;

    let entries = describe(&admin, "configured").await;
    assert_eq!(
        value_and_source(&entries, "retention.ms"),
        (Some(STATIC_RETENTION_MS.to_owned()), ConfigSource::StaticBroker),
        "retention.ms from the broker's flag"
    );
    assert_eq!(
        value_and_source(&entries, "segment.bytes"),
        (Some("1048576".to_owned()), ConfigSource::DynamicTopic),
        "segment.bytes set at creation"
    );
    assert_eq!(
        value_and_source(&entries, "cleanup.policy"),
        (Some("delete".to_owned()), ConfigSource::Default),
        "cleanup.policy default"
    );
    assert_eq!(
        value_and_source(&entries, "max.message.bytes"),
        (Some("1048588".to_owned()), ConfigSource::Default),
        "max.message.bytes default"
    );

    let set = |value: &str| vec![("retention.ms".to_owned(), AlterOp::Set(value.to_owned()))];
    admin.incremental_alter_configs("configured", &set("3600000")).await.expect("setting retention.ms is accepted");
    let entries = describe(&admin, "configured").await;
    assert_eq!(
        value_and_source(&entries, "retention.ms"),
        (Some("3600000".to_owned()), ConfigSource::DynamicTopic),
        "retention.ms after the override"
    );
    assert_eq!(
        value_and_source(&entries, "segment.bytes"),
        (Some("1048576".to_owned()), ConfigSource::DynamicTopic),
        "an incremental change leaves other overrides alone"
    );

    for (bad, why) in [("abc", "not a number"), ("-2", "below -1"), ("1.5", "not an integer"), ("", "empty")] {
        let error = broker_error(
            admin.incremental_alter_configs("configured", &set(bad)).await,
            &format!("retention.ms={bad:?} ({why})"),
        );
        assert_eq!(error, ResponseError::InvalidConfig, "retention.ms={bad:?} ({why})");
    }
    let batched = vec![
        ("retention.ms".to_owned(), AlterOp::Set("1000".to_owned())),
        ("segment.bytes".to_owned(), AlterOp::Set("twelve".to_owned())),
    ];
    let error = broker_error(
        admin.incremental_alter_configs("configured", &batched).await,
        "a valid change batched with an invalid one",
    );
    assert_eq!(error, ResponseError::InvalidConfig, "a batch with an invalid value");
    let unknown = vec![("no.such.config".to_owned(), AlterOp::Set("1".to_owned()))];
    let error = broker_error(admin.incremental_alter_configs("configured", &unknown).await, "an unknown config name");
    assert_eq!(error, ResponseError::InvalidConfig, "an unknown config name");
    let entries = describe(&admin, "configured").await;
    assert_eq!(
        value_and_source(&entries, "retention.ms"),
        (Some("3600000".to_owned()), ConfigSource::DynamicTopic),
        "refused changes left retention.ms alone"
    );
    assert_eq!(
        value_and_source(&entries, "segment.bytes"),
        (Some("1048576".to_owned()), ConfigSource::DynamicTopic),
        "refused changes left segment.bytes alone"
    );

    admin
        .incremental_alter_configs("configured", &[("retention.ms".to_owned(), AlterOp::Delete)])
        .await
        .expect("deleting the override is accepted");
    let entries = describe(&admin, "configured").await;
    assert_eq!(
        value_and_source(&entries, "retention.ms"),
        (Some(STATIC_RETENTION_MS.to_owned()), ConfigSource::StaticBroker),
        "retention.ms after deleting the override"
    );
    admin
        .incremental_alter_configs("configured", &[("segment.bytes".to_owned(), AlterOp::Delete)])
        .await
        .expect("deleting segment.bytes is accepted");
    let entries = describe(&admin, "configured").await;
    assert_eq!(
        value_and_source(&entries, "segment.bytes"),
        (Some("1073741824".to_owned()), ConfigSource::Default),
        "segment.bytes back to the default"
    );

    // The overrides survive a restart (they are metadata records, not memory).
    admin.incremental_alter_configs("configured", &set("7200000")).await.expect("setting retention.ms again");
    drop(admin);
    drop(client);
    let mut node = node;
    let status = node.terminate();
    assert!(status.success(), "graceful shutdown exited with {status}");
    node.restart();
    let client = connect(&node.address()).await;
    let admin = Admin::new(&client);
    let entries = describe(&admin, "configured").await;
    assert_eq!(
        value_and_source(&entries, "retention.ms"),
        (Some("7200000".to_owned()), ConfigSource::DynamicTopic),
        "retention.ms override after a restart"
    );

    match admin.describe_configs("no-such-topic").await {
        Err(ClientError::Broker { error, .. }) => {
            assert_eq!(error, ResponseError::UnknownTopicOrPartition, "describing an unknown topic")
        }
        other => panic!("describing an unknown topic: expected UNKNOWN_TOPIC_OR_PARTITION, got {other:?}"),
    }
    let error =
        broker_error(admin.incremental_alter_configs("no-such-topic", &set("1000")).await, "altering an unknown topic");
    assert_eq!(error, ResponseError::UnknownTopicOrPartition, "altering an unknown topic");
}
