//! `weir consume`: print records of a topic.

use std::io::Write;

use anyhow::Context;
use std::collections::BTreeMap;

use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::group::{GroupConfig, GroupConsumer};
use protocol::ids::{Offset, TopicPartition};

use super::connect;

/// Where to start.
#[derive(Debug, Clone, Copy)]
pub enum StartAt {
    /// The log start.
    Beginning,
    /// A given offset (with one partition).
    Offset(i64),
    /// Only records produced from now on.
    End,
}

/// Options of `weir consume`.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Topic to read.
    pub topic: String,
    /// One partition, or all.
    pub partition: Option<i32>,
    /// Start position.
    pub start: StartAt,
    /// Stop after this many records.
    pub max_messages: Option<u64>,
    /// Stop after this long without a record (milliseconds).
    pub idle_timeout_ms: Option<u64>,
    /// Print the key before the value.
    pub print_key: bool,
    /// Print the partition.
    pub print_partition: bool,
    /// Print the offset.
    pub print_offset: bool,
    /// Print the timestamp.
    pub print_timestamp: bool,
    /// Separator between printed fields.
    pub separator: String,
    /// Consume as a member of this group: partitions come from the group, reading starts at
    /// its committed offsets, and what is printed is committed.
    pub group: Option<String>,
}

/// Runs `weir consume`.
///
/// # Errors
/// Connection errors or an unknown topic.
pub async fn run(bootstrap: &str, options: ConsumeOptions) -> anyhow::Result<()> {
    if options.group.is_some() {
        return run_in_group(bootstrap, options).await;
    }
    let client = connect(bootstrap).await?;
    let partitions =
        client.partitions_for(&options.topic).await.with_context(|| format!("unknown topic {}", options.topic))?;
    let assigned: Vec<TopicPartition> = partitions
        .iter()
        .filter(|info| options.partition.is_none_or(|wanted| wanted == info.partition))
        .map(|info| TopicPartition::new(options.topic.clone(), info.partition))
        .collect();
    if assigned.is_empty() {
        anyhow::bail!("topic {} has no partition {:?}", options.topic, options.partition);
    }
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )?;
    consumer.assign(assigned.clone());
    for topic_partition in &assigned {
        let to = match options.start {
            StartAt::Beginning => SeekTo::Beginning,
            StartAt::End => SeekTo::End,
            StartAt::Offset(offset) => SeekTo::Offset(Offset(offset)),
        };
        consumer.seek(topic_partition, to).await?;
    }
    let mut printed: u64 = 0;
    let mut idle_since = rt::time::Instant::now();
    let stdout = std::io::stdout();
    loop {
        let records = consumer.poll(rt::time::Duration::from_millis(500)).await?;
        if records.is_empty() {
            if options.idle_timeout_ms.is_some_and(|limit| idle_since.elapsed().as_millis() as u64 >= limit) {
                break;
            }
            continue;
        }
        idle_since = rt::time::Instant::now();
        let mut out = stdout.lock();
        for record in records {
            let fields = record_fields(&options, &record);
            writeln!(out, "{}", fields.join(&options.separator))?;
            printed += 1;
            if options.max_messages.is_some_and(|max| printed >= max) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
    eprintln!("weir consume: {printed} records");
    Ok(())
}

/// The printed fields of a record.
fn record_fields(options: &ConsumeOptions, record: &client::consumer::ConsumerRecord) -> Vec<String> {
    let mut fields = Vec::new();
    if options.print_partition {
        fields.push(format!("Partition:{}", record.partition));
    }
    if options.print_offset {
        fields.push(format!("Offset:{}", record.offset.0));
    }
    if options.print_timestamp {
        fields.push(format!("Timestamp:{}", record.timestamp_ms));
    }
    let text = |bytes: &Option<bytes::Bytes>| {
        bytes.as_ref().map_or_else(|| "null".to_owned(), |bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    if options.print_key {
        fields.push(text(&record.key));
    }
    fields.push(text(&record.value));
    fields
}

/// `weir consume --group`: a group member that commits what it printed.
async fn run_in_group(bootstrap: &str, options: ConsumeOptions) -> anyhow::Result<()> {
    let group = options.group.clone().expect("called with a group");
    if options.partition.is_some() || matches!(options.start, StartAt::Offset(_)) {
        anyhow::bail!("--group takes its partitions from the group: drop --partition and --offset");
    }
    let client = connect(bootstrap).await?;
    let _ = client.partitions_for(&options.topic).await.with_context(|| format!("unknown topic {}", options.topic))?;
    let reset = match options.start {
        StartAt::Beginning => OffsetReset::Earliest,
        _ => OffsetReset::Latest,
    };
    let mut consumer = GroupConsumer::new(
        client,
        ConsumerConfig { auto_offset_reset: reset, ..ConsumerConfig::default() },
        GroupConfig { enable_auto_commit: false, ..GroupConfig::new(group) },
    )?;
    consumer.subscribe(vec![options.topic.clone()]);
    let mut printed: u64 = 0;
    let mut idle_since = rt::time::Instant::now();
    let stdout = std::io::stdout();
    let mut done = false;
    while !done {
        let records = consumer.poll(rt::time::Duration::from_millis(500)).await?;
        if records.is_empty() {
            if options.idle_timeout_ms.is_some_and(|limit| idle_since.elapsed().as_millis() as u64 >= limit) {
                break;
            }
            continue;
        }
        idle_since = rt::time::Instant::now();
        let mut next: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        let mut out = stdout.lock();
        for record in records {
            writeln!(out, "{}", record_fields(&options, &record).join(&options.separator))?;
            let _ = next.insert(TopicPartition::new(record.topic.clone(), record.partition), record.offset.plus(1));
            printed += 1;
            if options.max_messages.is_some_and(|max| printed >= max) {
                done = true;
                break;
            }
        }
        out.flush()?;
        drop(out);
        let offsets: Vec<(TopicPartition, Offset)> = next.into_iter().collect();
        if let Err(error) = consumer.commit_offsets(&offsets).await {
            tracing::warn!(%error, "cannot commit; the records may be read again");
        }
    }
    consumer.close().await?;
    eprintln!("weir consume: {printed} records");
    Ok(())
}
