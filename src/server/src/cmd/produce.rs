//! `weir produce`: one record per line of standard input.

use anyhow::Context;
use bytes::Bytes;
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use rt::io::AsyncBufReadExt;

use super::connect;

/// Options of `weir produce`.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Target topic.
    pub topic: String,
    /// Fixed partition, or the partitioner's choice.
    pub partition: Option<i32>,
    /// Split each line into key and value at the first occurrence.
    pub key_separator: Option<String>,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Compression codec.
    pub compression: client::producer::Compression,
}

/// Runs `weir produce`. Prints a summary to standard error.
///
/// # Errors
/// Connection errors, or any record that was not acknowledged.
pub async fn run(bootstrap: &str, options: ProduceOptions) -> anyhow::Result<()> {
    let client = connect(bootstrap).await?;
    let producer = Producer::new(
        client,
        ProducerConfig { acks: options.acks, compression: options.compression, ..ProducerConfig::default() },
    )?;
    let mut lines = rt::io::BufReader::new(rt::io::stdin()).lines();
    let mut deliveries = Vec::new();
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        let (key, value) = match options.key_separator.as_deref().and_then(|separator| line.split_once(separator)) {
            Some((key, value)) => (Some(Bytes::from(key.to_owned())), value.to_owned()),
            None => (None, line),
        };
        let record = ProducerRecord {
            topic: options.topic.clone(),
            partition: options.partition,
            key,
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await?;
    let (mut delivered, mut failed) = (0u64, 0u64);
    for delivery in deliveries {
        match delivery.await {
            Ok(_) => delivered += 1,
            Err(error) => {
                failed += 1;
                eprintln!("weir produce: record not delivered: {error}");
            }
        }
    }
    eprintln!("weir produce: {delivered} records delivered, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} records were not delivered");
    }
    Ok(())
}
