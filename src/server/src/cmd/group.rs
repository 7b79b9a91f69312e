//! `weir group list|describe|delete|reset-offsets`, after Kafka's `kafka-consumer-groups`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use client::admin::{Admin, OffsetSpec};
use protocol::ids::{Offset, TopicPartition};

use super::connect;

/// Where `reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's log start offset.
    Earliest,
    /// Each partition's log end offset.
    Latest,
    /// The first offset at or after this time (ms since the epoch); the log end if none.
    Timestamp(i64),
    /// This offset (clamped into each partition's range).
    Offset(i64),
}

/// `weir group list`.
///
/// # Errors
/// Connection and broker errors.
pub async fn list(bootstrap: &str) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let groups = Admin::new(&client).list_groups().await.context("cannot list groups")?;
    for group in groups {
        outln!(
            "{}\t{}\t{}",
            group.group_id,
            group.state,
            if group.protocol_type.is_empty() { "-" } else { &group.protocol_type }
        );
    }
    Ok(())
}

/// `weir group describe`: state, members with their partitions, and per partition the
/// committed offset, the log end offset and the lag.
///
/// # Errors
/// Connection and broker errors.
pub async fn describe(bootstrap: &str, group_id: &str) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let admin = Admin::new(&client);
    let description =
        admin.describe_group(group_id).await.with_context(|| format!("cannot describe group {group_id}"))?;
    let committed =
        admin.list_group_offsets(group_id).await.with_context(|| format!("cannot read the offsets of {group_id}"))?;
    outln!(
        "Group: {}\tState: {}\tProtocol: {}\tCoordinator: {}\tMembers: {}",
        description.group_id,
        description.state,
        if description.protocol.is_empty() { "-" } else { &description.protocol },
        description.coordinator,
        description.members.len()
    );
    let mut owners: BTreeMap<TopicPartition, (String, String, String)> = BTreeMap::new();
    for member in &description.members {
        for partition in &member.assignment {
            let _ = owners.insert(
                partition.clone(),
                (member.member_id.clone(), member.client_id.clone(), member.client_host.clone()),
            );
        }
    }
    let mut partitions: Vec<TopicPartition> = committed.keys().chain(owners.keys()).cloned().collect();
    partitions.sort();
    partitions.dedup();
    outln!("TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tMEMBER-ID\tCLIENT-ID\tHOST");
    for partition in partitions {
        let end = admin.list_offsets(&partition, OffsetSpec::Latest).await.map(|(offset, _)| offset.0).ok();
        let current = committed.get(&partition).map(|offset| offset.0);
        let lag = match (current, end) {
            (Some(current), Some(end)) => (end - current).max(0).to_string(),
            _ => "-".to_owned(),
        };
        let (member, client_id, host) =
            owners.get(&partition).cloned().unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        outln!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            partition.topic,
            partition.partition,
            current.map_or_else(|| "-".to_owned(), |offset| offset.to_string()),
            end.map_or_else(|| "-".to_owned(), |offset| offset.to_string()),
            lag,
            member,
            client_id,
            host
        );
    }
    Ok(())
}

/// `weir group delete`.
///
/// # Errors
/// Connection and broker errors (a group with members is not deleted).
pub async fn delete(bootstrap: &str, group_id: &str) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    Admin::new(&client).delete_group(group_id).await.with_context(|| format!("cannot delete group {group_id}"))?;
    outln!("Deleted group {group_id}.");
    Ok(())
}

/// `weir group reset-offsets`: moves the group's committed offsets on `topic` (every partition,
/// or one) to `to`; prints the plan, and commits it unless `dry_run`. The group must have no
/// members.
///
/// # Errors
/// Connection and broker errors, an unknown topic, or a group with members.
pub async fn reset_offsets(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    partition: Option<i32>,
    to: ResetTo,
    dry_run: bool,
) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let admin = Admin::new(&client);
    let description = admin.describe_topic(topic).await.with_context(|| format!("cannot describe topic {topic}"))?;
    let partitions: Vec<i32> = description
        .partitions
        .iter()
        .map(|info| info.partition)
        .filter(|index| partition.is_none_or(|wanted| wanted == *index))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partition {}", partition.unwrap_or(-1));
    }
    if !dry_run {
        let group =
            admin.describe_group(group_id).await.with_context(|| format!("cannot describe group {group_id}"))?;
        if !group.members.is_empty() {
            bail!("group {group_id} has {} active member(s); stop its consumers first", group.members.len());
        }
    }
    let committed = admin.list_group_offsets(group_id).await.unwrap_or_default();
    let mut plan = BTreeMap::new();
    outln!("TOPIC\tPARTITION\tCURRENT-OFFSET\tNEW-OFFSET");
    for index in partitions {
        let topic_partition = TopicPartition::new(topic, index);
        let (start, _) = admin.list_offsets(&topic_partition, OffsetSpec::Earliest).await?;
        let (end, _) = admin.list_offsets(&topic_partition, OffsetSpec::Latest).await?;
        let target = match to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Timestamp(timestamp_ms) => {
                let (found, _) = admin.list_offsets(&topic_partition, OffsetSpec::Timestamp(timestamp_ms)).await?;
                if found.0 < 0 {
                    end
                } else {
                    found
                }
            }
            ResetTo::Offset(offset) => Offset(offset.clamp(start.0, end.0)),
        };
        outln!(
            "{topic}\t{index}\t{}\t{}",
            committed.get(&topic_partition).map_or_else(|| "-".to_owned(), |offset| offset.0.to_string()),
            target.0
        );
        let _ = plan.insert(topic_partition, target);
    }
    if dry_run {
        outln!("Dry run: nothing committed (add --execute to commit).");
        return Ok(());
    }
    admin
        .alter_group_offsets(group_id, &plan)
        .await
        .with_context(|| format!("cannot commit the offsets of {group_id}"))?;
    outln!("Committed {} offset(s) for group {group_id}.", plan.len());
    Ok(())
}
