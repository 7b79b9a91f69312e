//! `weir bench produce|consume`: throughput and latency with the native client.
//!
//! Figures are printed as records/s, MB/s (10^6 bytes of record values per second) and
//! latency percentiles from send to acknowledgement. A progress line goes to standard error
//! every second. Compare results only with the machine's limits measured in the same run
//! (`docs/performance.md`).

use std::collections::VecDeque;

use anyhow::Context;
use bytes::Bytes;
use client::admin::{Admin, NewTopic};
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use protocol::ids::TopicPartition;
use rt::time::{Duration, Instant};

use super::connect;

/// Records in flight (sent, not yet acknowledged) at most; bounds the benchmark's memory.
const BENCH_IN_FLIGHT_RECORDS_MAX: usize = 200_000;

/// Options of `weir bench produce`.
#[derive(Debug, Clone)]
pub struct ProduceBench {
    /// Topic (created if missing).
    pub topic: String,
    /// Partitions if the topic is created.
    pub partitions: i32,
    /// Value size in bytes.
    pub record_size: usize,
    /// Records to send (if no duration).
    pub count: Option<u64>,
    /// Seconds to run (if no count).
    pub duration_s: Option<u64>,
    /// Acks.
    pub acks: Acks,
    /// Producer linger.
    pub linger_ms: u64,
    /// Producer batch size.
    pub batch_size: usize,
    /// Idempotent producing (the producer's default with acks=all).
    pub enable_idempotence: bool,
}

/// The measured result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Records acknowledged (or read).
    pub records: u64,
    /// Seconds elapsed.
    pub seconds: f64,
    /// Records per second.
    pub records_per_second: f64,
    /// Megabytes (10^6) of values per second.
    pub megabytes_per_second: f64,
    /// Latency percentiles in milliseconds (produce only).
    pub latency_ms_p50: f64,
    /// p99.
    pub latency_ms_p99: f64,
    /// p99.9.
    pub latency_ms_p999: f64,
    /// Failed records.
    pub failed: u64,
}

impl BenchResult {
    fn print(&self, what: &str, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        println!(
            "{what}: {} records in {:.2} s: {:.0} records/s, {:.1} MB/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2}; {} failed",
            self.records, self.seconds, self.records_per_second, self.megabytes_per_second, self.latency_ms_p50, self.latency_ms_p99, self.latency_ms_p999, self.failed
        );
    }
}

async fn ensure_topic(client: &client::Client, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    if admin.describe_topic(topic).await.is_ok() {
        return Ok(());
    }
    for (name, result) in admin
        .create_topics(
            &[NewTopic {
                name: topic.to_owned(),
                num_partitions: partitions,
                replication_factor: -1,
                configs: Vec::new(),
            }],
            false,
        )
        .await?
    {
        if let Err(error) = result {
            if !error.to_string().contains("already exists") {
                return Err(error).with_context(|| format!("cannot create {name}"));
            }
        }
    }
    Ok(())
}

/// Runs `weir bench produce`.
///
/// # Errors
/// Connection errors.
pub async fn produce(bootstrap: &str, options: ProduceBench, json: bool) -> anyhow::Result<BenchResult> {
    let client = connect(bootstrap).await?;
    ensure_topic(&client, &options.topic, options.partitions).await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: options.acks,
            linger_ms: options.linger_ms,
            batch_size: options.batch_size,
            enable_idempotence: options.enable_idempotence,
            ..ProducerConfig::default()
        },
    )?;
    let value = Bytes::from((0..options.record_size).map(|index| (index % 251) as u8).collect::<Vec<u8>>());
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")?;
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    let deadline = options.duration_s.map(|seconds| started + Duration::from_secs(seconds));
    let total = options.count.unwrap_or(u64::MAX);
    let (mut sent, mut acknowledged, mut failed) = (0u64, 0u64, 0u64);
    let mut last_progress = started;
    let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
    while sent < total && deadline.is_none_or(|deadline| Instant::now() < deadline) {
        let record = ProducerRecord {
            topic: options.topic.clone(),
            partition: None,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let sent_at = Instant::now();
        let delivery = producer.send(record).await?;
        in_flight.push(async move { (delivery.await, sent_at.elapsed()) });
        sent += 1;
        while in_flight.len() >= BENCH_IN_FLIGHT_RECORDS_MAX {
            if let Some((result, latency)) = in_flight.next().await {
                record_outcome(&mut histogram, &mut acknowledged, &mut failed, result.is_ok(), latency);
            }
        }
        while let Some(Some((result, latency))) = futures::FutureExt::now_or_never(in_flight.next()) {
            record_outcome(&mut histogram, &mut acknowledged, &mut failed, result.is_ok(), latency);
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            window.push_back((last_progress, acknowledged));
            if window.len() > 5 {
                let _ = window.pop_front();
            }
            let rate = window.front().filter(|(at, _)| *at < last_progress).map_or(0.0, |(at, count)| {
                (acknowledged - count) as f64 / last_progress.duration_since(*at).as_secs_f64()
            });
            eprintln!(
                "  {:>6.1} s  {acknowledged} acknowledged  {rate:.0} records/s  {:.1} MB/s",
                started.elapsed().as_secs_f64(),
                rate * options.record_size as f64 / 1e6
            );
        }
    }
    producer.flush().await?;
    while let Some((result, latency)) = in_flight.next().await {
        record_outcome(&mut histogram, &mut acknowledged, &mut failed, result.is_ok(), latency);
    }
    let seconds = started.elapsed().as_secs_f64();
    let result = BenchResult {
        records: acknowledged,
        seconds,
        records_per_second: acknowledged as f64 / seconds,
        megabytes_per_second: acknowledged as f64 * options.record_size as f64 / seconds / 1e6,
        latency_ms_p50: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        latency_ms_p99: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        latency_ms_p999: histogram.value_at_quantile(0.999) as f64 / 1000.0,
        failed,
    };
    result.print("produce", json);
    Ok(result)
}

fn record_outcome(
    histogram: &mut Histogram<u64>,
    acknowledged: &mut u64,
    failed: &mut u64,
    ok: bool,
    latency: Duration,
) {
    if ok {
        *acknowledged += 1;
        let _ = histogram.record((latency.as_micros() as u64).max(1));
    } else {
        *failed += 1;
    }
}

/// Runs `weir bench consume`: reads `count` records from the beginning of every partition.
///
/// # Errors
/// Connection errors or an unknown topic.
pub async fn consume(bootstrap: &str, topic: &str, count: u64, json: bool) -> anyhow::Result<BenchResult> {
    let client = connect(bootstrap).await?;
    let partitions = client.partitions_for(topic).await.with_context(|| format!("unknown topic {topic}"))?;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )?;
    let assigned: Vec<TopicPartition> =
        partitions.iter().map(|info| TopicPartition::new(topic.to_owned(), info.partition)).collect();
    consumer.assign(assigned.clone());
    for topic_partition in &assigned {
        consumer.seek(topic_partition, SeekTo::Beginning).await?;
    }
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut idle_since = Instant::now();
    let mut last_progress = started;
    while records < count {
        let batch = consumer.poll(Duration::from_millis(1000)).await?;
        if batch.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(10) {
                eprintln!("weir bench consume: no records for 10 s; stopping at {records}");
                break;
            }
            continue;
        }
        idle_since = Instant::now();
        for record in &batch {
            bytes += record.value.as_ref().map_or(0, |value| value.len() as u64);
        }
        records += batch.len() as u64;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!("  {:>6.1} s  {records} records read", started.elapsed().as_secs_f64());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let result = BenchResult {
        records,
        seconds,
        records_per_second: records as f64 / seconds,
        megabytes_per_second: bytes as f64 / seconds / 1e6,
        latency_ms_p50: 0.0,
        latency_ms_p99: 0.0,
        latency_ms_p999: 0.0,
        failed: 0,
    };
    result.print("consume", json);
    Ok(result)
}
