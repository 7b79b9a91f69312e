//! The compacted-topic workload of `single_node_durability`: one process writes keyed records
//! and tombstones to a one-partition topic with `cleanup.policy=compact` (small segments, a
//! cleaner that runs every few hundred milliseconds) and keeps re-reading it from offset 0,
//! while the nemesis crashes the node, also in the middle of cleaning passes.
//!
//! Every record carries its write's unique id in an `id` header (tombstones have no value), so
//! each record read names the write it came from.
//!
//! # Checks
//!
//! * Continuously, on every record read: it comes from a write of this run, with its key; it
//!   sits at the offset the write was acknowledged at (compaction keeps offsets); no write is
//!   read at two offsets; reads never hit OFFSET_OUT_OF_RANGE (nothing moves the log start
//!   of a compact-only topic: gaps left by compaction must be read through).
//! * At the end, a scan from offset 0 to the high watermark: for every key, the last record in
//!   the log is at or after the key's latest acknowledged write (compaction never loses the
//!   latest value, crash or not); a key may be missing only if a tombstone was written to it.
//! * The summary reports how many records were left of those written, so a run shows the
//!   cleaner did remove superseded records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use client::admin::{Admin, OffsetSpec};
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::{ClientConfig, ClientError};
use madsim::rand::{thread_rng, Rng};
use protocol::ids::{Offset, TopicPartition};

use super::workload::{classify_send_error, Recorder, FINAL_READS_MS};
use crate::checker::Outcome;

/// The compacted topic.
pub const COMPACTED_TOPIC: &str = "compacted";
/// Header carrying a record's write id.
const ID_HEADER: &str = "id";

/// The compacted workload's shape (drawn per seed).
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// The brokers' `host:port`.
    pub bootstrap: String,
    /// Distinct keys written.
    pub keys: u32,
    /// Percent of writes that are tombstones.
    pub tombstone_percent: u32,
    /// Topic `segment.bytes`.
    pub segment_bytes: u64,
    /// Topic `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// Topic `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: u64,
    /// Topic `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// Broker `log.cleaner.backoff.ms`.
    pub cleaner_backoff_ms: u64,
    /// Producer retries (idempotent, acks=all).
    pub retries: u32,
}

impl CompactionConfig {
    /// Draws the shape from the seed.
    pub fn draw(bootstrap: String) -> CompactionConfig {
        let mut rng = thread_rng();
        CompactionConfig {
            bootstrap,
            keys: rng.gen_range(1..=12),
            tombstone_percent: if rng.gen_bool(0.3) { 0 } else { rng.gen_range(1..=20) },
            segment_bytes: rng.gen_range(1_024..=4_096),
            min_cleanable_dirty_ratio: if rng.gen_bool(0.5) { 0.01 } else { rng.gen_range(0.05..=0.9) },
            min_compaction_lag_ms: if rng.gen_bool(0.6) { 0 } else { rng.gen_range(1..=5_000) },
            delete_retention_ms: rng.gen_range(0..=10_000),
            cleaner_backoff_ms: rng.gen_range(50..=1_000),
            retries: rng.gen_range(0..=10),
        }
    }

    /// The topic's configs.
    pub fn topic_configs(&self) -> Vec<(String, String)> {
        [
            ("cleanup.policy", "compact".to_owned()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("min.cleanable.dirty.ratio", self.min_cleanable_dirty_ratio.to_string()),
            ("min.compaction.lag.ms", self.min_compaction_lag_ms.to_string()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

/// One write and what became of it.
#[derive(Debug, Clone, Copy)]
struct Write {
    key: u32,
    tombstone: bool,
    /// The acknowledged offset.
    offset: Option<i64>,
    outcome: Outcome,
}

/// What the process wrote and read.
#[derive(Debug, Default)]
pub struct CompactedHistory {
    writes: BTreeMap<u64, Write>,
    /// Where each write id was read.
    read_at: BTreeMap<u64, i64>,
    next_id: u64,
    records_read: u64,
    scans: u64,
}

/// The shared history of the compacted workload.
pub type SharedHistory = Arc<Mutex<CompactedHistory>>;

fn lock(history: &SharedHistory) -> std::sync::MutexGuard<'_, CompactedHistory> {
    history.lock().expect("compacted history lock")
}

fn topic_partition() -> TopicPartition {
    TopicPartition::new(COMPACTED_TOPIC, 0)
}

/// Checks one record read against the writes (see the module docs). Returns its key and
/// whether it is a tombstone.
fn check_read(
    recorder: &Recorder,
    history: &SharedHistory,
    offset: i64,
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &[(String, Option<Bytes>)],
) -> Option<(u32, bool)> {
    let id = headers
        .iter()
        .find(|(name, _)| name == ID_HEADER)
        .and_then(|(_, value)| std::str::from_utf8(value.as_deref()?).ok()?.parse::<u64>().ok());
    let key_number = key.and_then(|key| std::str::from_utf8(key).ok()?.parse::<u32>().ok());
    let (Some(id), Some(key_number)) = (id, key_number) else {
        recorder.fail(format!("compacted: record at {offset} has no write id or key: {key:?}"));
        return None;
    };
    let mut history = lock(history);
    history.records_read += 1;
    let Some(write) = history.writes.get(&id).copied() else {
        recorder.fail(format!("compacted: record at {offset} names write {id}, which was never sent"));
        return None;
    };
    if write.key != key_number || write.tombstone != value.is_none() {
        recorder.fail(format!("compacted: record at {offset} does not match write {id}: {write:?}"));
    }
    if let Some(acked) = write.offset.filter(|acked| *acked != offset) {
        recorder.fail(format!("compacted: write {id} acknowledged at {acked} is read at {offset}"));
    }
    if let Some(earlier) = history.read_at.insert(id, offset).filter(|earlier| *earlier != offset) {
        recorder.fail(format!("compacted: write {id} read at {earlier} and at {offset} (a duplicate)"));
    }
    Some((write.key, write.tombstone))
}

struct Process {
    recorder: Arc<Recorder>,
    history: SharedHistory,
    config: CompactionConfig,
    producer: Producer,
    consumer: Consumer,
    admin: Admin,
}

impl Process {
    async fn connect(
        recorder: Arc<Recorder>,
        history: SharedHistory,
        config: CompactionConfig,
        stop: &AtomicBool,
    ) -> Option<Process> {
        let client_config = ClientConfig {
            bootstrap_servers: vec![config.bootstrap.clone()],
            client_id: "compacted".to_owned(),
            request_timeout_ms: 3_000,
            retry_backoff_ms: 50,
            ..ClientConfig::default()
        };
        let client = super::workload::connect_until(&client_config, &recorder, "compacted", stop).await?;
        let producer_config = ProducerConfig {
            acks: Acks::All,
            retries: config.retries,
            enable_idempotence: true,
            delivery_timeout_ms: 10_000,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client.clone(), producer_config).expect("valid producer config");
        let consumer_config = ConsumerConfig {
            fetch_max_wait_ms: 100,
            max_partition_fetch_bytes: 2_048,
            auto_offset_reset: OffsetReset::None,
            ..ConsumerConfig::default()
        };
        let admin = Admin::new(&client);
        let mut consumer = Consumer::new(client, consumer_config).expect("valid consumer config");
        consumer.assign(vec![topic_partition()]);
        let _ = consumer.seek(&topic_partition(), SeekTo::Offset(Offset(0))).await;
        Some(Process { recorder, history, config, producer, consumer, admin })
    }

    async fn write(&mut self) {
        let key = thread_rng().gen_range(0..self.config.keys);
        let tombstone = thread_rng().gen_range(0..100) < self.config.tombstone_percent;
        let id = {
            let mut history = lock(&self.history);
            history.next_id += 1;
            let id = history.next_id;
            let _ = history.writes.insert(id, Write { key, tombstone, offset: None, outcome: Outcome::Info });
            id
        };
        let record = ProducerRecord {
            topic: COMPACTED_TOPIC.to_owned(),
            partition: Some(0),
            key: Some(Bytes::from(key.to_string())),
            value: (!tombstone).then(|| Bytes::from(format!("value-{id}"))),
            headers: vec![(ID_HEADER.to_owned(), Some(Bytes::from(id.to_string())))],
            timestamp_ms: None,
        };
        let outcome = match self.producer.send(record).await {
            Err(_) => (Outcome::Fail, None),
            Ok(delivery) => match madsim::time::timeout(Duration::from_millis(20_000), delivery).await {
                Ok(Ok(metadata)) => (Outcome::Ok, Some(metadata.offset.0)),
                Ok(Err(error)) => match classify_send_error(&error) {
                    Outcome::Fail if self.config.retries > 0 => (Outcome::Info, None),
                    outcome => (outcome, None),
                },
                Err(_) => {
                    self.recorder.fail(format!("compacted: write {id} neither completed nor timed out"));
                    (Outcome::Info, None)
                }
            },
        };
        self.recorder.trace.event(format!(
            "compacted: write {id} k{key}{} {:?} @{:?}",
            if tombstone { " tombstone" } else { "" },
            outcome.0,
            outcome.1
        ));
        if let Some(write) = lock(&self.history).writes.get_mut(&id) {
            write.outcome = outcome.0;
            write.offset = outcome.1;
        }
    }

    /// Polls once; returns the records read as `(offset, key, tombstone)`.
    async fn poll(&mut self, timeout: Duration) -> Vec<(i64, u32, bool)> {
        match self.consumer.poll(timeout).await {
            Ok(records) => records
                .iter()
                .filter_map(|record| {
                    let (key, tombstone) = check_read(
                        &self.recorder,
                        &self.history,
                        record.offset.0,
                        record.key.as_ref(),
                        record.value.as_ref(),
                        &record.headers,
                    )?;
                    Some((record.offset.0, key, tombstone))
                })
                .collect(),
            Err(ClientError::OffsetOutOfRange { offset, .. }) => {
                self.recorder.fail(format!("compacted: offset {offset} out of range; a compact-only log never trims"));
                let _ = self.consumer.seek(&topic_partition(), SeekTo::Offset(Offset(0))).await;
                Vec::new()
            }
            Err(error) => {
                if let ClientError::CorruptRecords { .. } = error {
                    self.recorder.fail(format!("compacted: corrupt records: {error}"));
                }
                Vec::new()
            }
        }
    }
}

/// The process: writes and reads until `stop`.
pub async fn run(recorder: Arc<Recorder>, history: SharedHistory, config: CompactionConfig, stop: Arc<AtomicBool>) {
    let Some(mut process) = Process::connect(Arc::clone(&recorder), history, config, &stop).await else { return };
    while !stop.load(Ordering::Relaxed) {
        match thread_rng().gen_range(0..100) {
            0..=59 => process.write().await,
            60..=94 => {
                let _ = process.poll(Duration::from_millis(thread_rng().gen_range(10..=300))).await;
            }
            _ => {
                lock(&process.history).scans += 1;
                let _ = process.consumer.seek(&topic_partition(), SeekTo::Offset(Offset(0))).await;
            }
        }
        madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(0..=50))).await;
    }
}

/// The final scan and per-key check (see the module docs), after the faults stopped. Returns
/// a summary line.
///
/// # Errors
/// A description of a lost latest value, or of a scan that could not reach the end.
pub async fn final_check(
    recorder: Arc<Recorder>,
    history: SharedHistory,
    config: CompactionConfig,
) -> Result<String, String> {
    let never = AtomicBool::new(false);
    let mut process = Process::connect(Arc::clone(&recorder), Arc::clone(&history), config, &never)
        .await
        .ok_or("compacted: the final reader could not connect")?;
    let deadline = recorder.trace.now_ms() + FINAL_READS_MS;
    let end = loop {
        match process.admin.list_offsets(&topic_partition(), OffsetSpec::Latest).await {
            Ok((offset, _)) => break offset.0,
            Err(error) if recorder.trace.now_ms() < deadline => {
                recorder.trace.event(format!("compacted: final list offsets: {error}"));
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(format!("compacted: no high watermark for the final scan: {error}")),
        }
    };
    let _ = process.consumer.seek(&topic_partition(), SeekTo::Offset(Offset(0))).await;
    let mut last: BTreeMap<u32, (i64, bool)> = BTreeMap::new();
    let mut left = 0u64;
    while process.consumer.position(&topic_partition()).map_or(0, |position| position.0) < end {
        if recorder.trace.now_ms() > deadline {
            return Err(format!(
                "compacted: the final scan stopped at {:?} of {end} (stuck at a compacted gap?)",
                process.consumer.position(&topic_partition())
            ));
        }
        for (offset, key, tombstone) in process.poll(Duration::from_millis(200)).await {
            if offset < end {
                left += 1;
                let _ = last.insert(key, (offset, tombstone));
            }
        }
    }
    let history = lock(&history);
    let mut latest_acked: BTreeMap<u32, (i64, u64)> = BTreeMap::new();
    for (id, write) in &history.writes {
        if let (Outcome::Ok, Some(offset)) = (write.outcome, write.offset) {
            let entry = latest_acked.entry(write.key).or_insert((offset, *id));
            if offset >= entry.0 {
                *entry = (offset, *id);
            }
        }
    }
    for (key, (acked_offset, id)) in &latest_acked {
        match last.get(key) {
            Some((offset, _)) if offset >= acked_offset => {}
            Some((offset, _)) => {
                return Err(format!(
                    "compacted: key {key} lost its latest value: write {id} acknowledged at {acked_offset}, the log ends the key at {offset}"
                ))
            }
            None => {
                let tombstoned = history.writes.values().any(|write| {
                    write.key == *key
                        && write.tombstone
                        && match write.offset {
                            Some(offset) => offset >= *acked_offset,
                            None => write.outcome == Outcome::Info,
                        }
                });
                if !tombstoned {
                    return Err(format!(
                        "compacted: key {key} vanished: write {id} acknowledged at {acked_offset} and no tombstone after it"
                    ));
                }
            }
        }
    }
    let acked = history.writes.values().filter(|write| write.outcome == Outcome::Ok).count();
    Ok(format!(
        "compacted writes {} acknowledged {acked} left {left} of end {end} read {} scans {}",
        history.writes.len(),
        history.records_read,
        history.scans
    ))
}
