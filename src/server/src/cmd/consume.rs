//! `weir consume`: print records of a topic.

use std::io::Write;

use anyhow::Context;
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
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
}

/// Runs `weir consume`.
///
/// # Errors
/// Connection errors or an unknown topic.
pub async fn run(bootstrap: &str, options: ConsumeOptions) -> anyhow::Result<()> {
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
            if options.print_key {
                fields.push(
                    record
                        .key
                        .as_ref()
                        .map_or_else(|| "null".to_owned(), |key| String::from_utf8_lossy(key).into_owned()),
                );
            }
            fields.push(
                record
                    .value
                    .as_ref()
                    .map_or_else(|| "null".to_owned(), |value| String::from_utf8_lossy(value).into_owned()),
            );
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
