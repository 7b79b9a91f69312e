//! `weir topic create|list|describe|delete|alter`.

use anyhow::{bail, Context};
use client::admin::{Admin, AlterOp, NewTopic};

use super::connect;

/// `weir topic create`.
///
/// # Errors
/// Connection or broker errors, printed with the broker's message.
pub async fn create(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let admin = Admin::new(&client);
    let results = admin
        .create_topics(
            &[NewTopic { name: name.to_owned(), num_partitions: partitions, replication_factor, configs }],
            false,
        )
        .await?;
    for (topic, result) in results {
        result.with_context(|| format!("cannot create topic {topic}"))?;
        println!("Created topic {topic}.");
    }
    Ok(())
}

/// `weir topic list`.
///
/// # Errors
/// Connection errors.
pub async fn list(bootstrap: &str) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let mut topics = Admin::new(&client).list_topics().await?;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    for topic in topics {
        println!("{}", topic.name);
    }
    Ok(())
}

/// `weir topic describe`.
///
/// # Errors
/// Connection errors or an unknown topic.
pub async fn describe(bootstrap: &str, name: &str) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let admin = Admin::new(&client);
    let description = admin.describe_topic(name).await.with_context(|| format!("cannot describe topic {name}"))?;
    let configs = admin.describe_configs(name).await?;
    let overrides: Vec<String> = configs
        .iter()
        .filter(|config| !config.is_default)
        .map(|config| format!("{}={}", config.name, config.value.clone().unwrap_or_default()))
        .collect();
    println!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tConfigs: {}",
        description.name,
        description.topic_id,
        description.partitions.len(),
        overrides.join(",")
    );
    let log_ends = admin.replica_log_end_offsets(&description).await?;
    let reassignments = admin.list_partition_reassignments(Some(name)).await.unwrap_or_default();
    for partition in &description.partitions {
        let join = |nodes: &[i32]| nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        println!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tLeaderEpoch: {}\tReplicas: {}\tIsr: {}\tLag: {}",
            description.name,
            partition.partition,
            partition.leader,
            partition.leader_epoch,
            join(&partition.replicas),
            join(&partition.isr),
            replica_lags(partition, &log_ends)
        );
        if let Some(moving) =
            reassignments.iter().find(|reassignment| reassignment.topic_partition.partition.0 == partition.partition)
        {
            println!(
                "\t\tReassigning: AddingReplicas: {}\tRemovingReplicas: {}",
                join(&moving.adding_replicas),
                join(&moving.removing_replicas)
            );
        }
    }
    Ok(())
}

/// Each follower's lag behind its leader's log end, as `broker=records` (`?` where a replica
/// did not answer, and only `?` without a leader).
fn replica_lags(
    partition: &client::PartitionInfo,
    log_ends: &std::collections::BTreeMap<(i32, i32), Result<i64, client::ClientError>>,
) -> String {
    let end_of = |broker: i32| log_ends.get(&(partition.partition, broker)).and_then(|end| end.as_ref().ok()).copied();
    let leader_end = end_of(partition.leader);
    partition
        .replicas
        .iter()
        .filter(|replica| **replica != partition.leader)
        .map(|replica| match (leader_end, end_of(*replica)) {
            (Some(leader_end), Some(end)) => format!("{replica}={}", (leader_end - end).max(0)),
            _ => format!("{replica}=?"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `weir topic reassign`: start (or, with `None`, cancel) a reassignment of one partition.
///
/// # Errors
/// Connection errors, or the broker refusing the reassignment.
pub async fn reassign(bootstrap: &str, name: &str, partition: i32, replicas: Option<Vec<i32>>) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let topic_partition = protocol::ids::TopicPartition::new(name, partition);
    let cancel = replicas.is_none();
    for (reassigned, result) in
        Admin::new(&client).alter_partition_reassignments(&[(topic_partition, replicas.clone())]).await?
    {
        result.with_context(|| format!("cannot reassign {reassigned}"))?;
        if cancel {
            println!("Cancelled the reassignment of {reassigned}.");
        } else {
            let target = replicas.iter().flatten().map(ToString::to_string).collect::<Vec<_>>().join(",");
            println!("Reassigning {reassigned} to replicas {target}; `weir topic describe {name}` shows its progress.");
        }
    }
    Ok(())
}

/// `weir topic delete`.
///
/// # Errors
/// Connection errors or an unknown topic.
pub async fn delete(bootstrap: &str, name: &str) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    for (topic, result) in Admin::new(&client).delete_topics(&[name.to_owned()]).await? {
        result.with_context(|| format!("cannot delete topic {topic}"))?;
        println!("Deleted topic {topic}.");
    }
    Ok(())
}

/// `weir topic alter`: set and delete config overrides, and/or add partitions.
///
/// # Errors
/// Connection or broker errors.
pub async fn alter(
    bootstrap: &str,
    name: &str,
    set: Vec<(String, String)>,
    delete: Vec<String>,
    partitions: Option<i32>,
) -> anyhow::Result<()> {
    if set.is_empty() && delete.is_empty() && partitions.is_none() {
        bail!("nothing to alter: give --set key=value, --delete key or --partitions N");
    }
    let client = connect(bootstrap).await?;
    let admin = Admin::new(&client);
    if !set.is_empty() || !delete.is_empty() {
        let mut operations: Vec<(String, AlterOp)> =
            set.into_iter().map(|(key, value)| (key, AlterOp::Set(value))).collect();
        operations.extend(delete.into_iter().map(|key| (key, AlterOp::Delete)));
        admin
            .incremental_alter_configs(name, &operations)
            .await
            .with_context(|| format!("cannot alter configs of {name}"))?;
        println!("Updated configs of topic {name}.");
    }
    if let Some(count) = partitions {
        admin.create_partitions(name, count).await.with_context(|| format!("cannot add partitions to {name}"))?;
        println!("Topic {name} now has {count} partitions.");
    }
    Ok(())
}
