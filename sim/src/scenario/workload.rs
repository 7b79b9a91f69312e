//! The workload: client processes that send unique integers and poll them back through weir's
//! native client, recording every operation for the checker.
//!
//! Jepsen's Kafka model: integer keys map one-to-one onto the partitions of one topic, values
//! are unique across the run, and each process owns a producer and a consumer and performs one
//! operation at a time. A send's outcome is `Ok` with the offset, `Fail` only when the record
//! certainly was not written (the producer refused it, or the broker answered a definite error
//! code), and `Info` otherwise (timeouts, lost connections, REQUEST_TIMED_OUT). acks=all
//! producers are idempotent and retry in most seeds (0-10 retries): a retry after a lost
//! response must not write a record twice, which the checker reports as a duplicate, and a
//! definite error after a retry is `Info` (an earlier attempt may have been written). acks=1
//! producers never retry: without idempotence a retry would legitimately duplicate.
//!
//! Consumers use manual assignment and never reset their position silently
//! (`auto_offset_reset = None`). An out-of-range position is legitimate only below the log
//! start offset (DeleteRecords or retention removed the records): the process then observes
//! the log start offset, records it, and moves there. A position at or above the log start
//! offset that is out of range is a lost committed record and is reported.
//!
//! Processes also delete: DeleteRecords below an offset they have read (so never past the high
//! watermark), recorded with the log start offset the broker returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::admin::{Admin, OffsetSpec};
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::{Client, ClientConfig, ClientError};
use madsim::rand::{thread_rng, Rng};
use protocol::ids::{Offset, TopicPartition};
use protocol::ResponseError;

use crate::checker::{self, Op, Operation, Outcome};
use crate::trace::Trace;

/// The workload's topic.
pub const TOPIC: &str = "jepsen";

/// After the faults stop, a produce to every partition must be acknowledged within this.
pub const CONVERGENCE_MS: u64 = 30_000;
/// Final reads must reach every partition's high watermark within this.
pub const FINAL_READS_MS: u64 = 60_000;
/// The probe's process id in the history.
pub const PROBE_PROCESS: u64 = 90;
/// The final reader's process id in the history.
pub const FINAL_PROCESS: u64 = 91;

/// The shared record of a run: the history, the value counter and invariant failures.
#[derive(Debug)]
pub struct Recorder {
    /// The run's trace.
    pub trace: Trace,
    history: Mutex<Vec<Op>>,
    next_value: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Recorder {
    /// An empty record.
    pub fn new(trace: Trace) -> Arc<Recorder> {
        Arc::new(Recorder {
            trace,
            history: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            failures: Mutex::new(Vec::new()),
        })
    }

    /// A value never used before in this run.
    pub fn next_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends a completed operation.
    pub fn record(&self, op: Op) {
        self.history.lock().expect("history lock").push(op);
    }

    /// Reports a violated invariant (the run fails).
    pub fn fail(&self, text: impl Into<String>) {
        let text = text.into();
        self.trace.event(format!("INVARIANT VIOLATED: {text}"));
        self.failures.lock().expect("failures lock").push(text);
    }

    /// The history so far.
    pub fn history(&self) -> Vec<Op> {
        self.history.lock().expect("history lock").clone()
    }

    /// The invariant failures so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("failures lock").clone()
    }
}

/// How the workload's clients behave (drawn per seed).
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The brokers' `host:port`, comma-separated.
    pub bootstrap: String,
    /// Partitions (= keys).
    pub partitions: u32,
    /// Client request timeout.
    pub request_timeout_ms: u64,
    /// Producer delivery timeout.
    pub delivery_timeout_ms: u64,
    /// Producer linger.
    pub linger_ms: u64,
    /// Upper bound of the pause between two operations of a process.
    pub think_ms_max: u64,
    /// Percent of operations that are sends (the rest are polls, and a few repositions).
    pub send_percent: u32,
    /// Consumer `max_partition_fetch_bytes` (small: polls return part of what is there).
    pub max_partition_fetch_bytes: i32,
    /// Upper bound of one poll's timeout.
    pub poll_ms_max: u64,
    /// Upper bound of the records one send operation sends at once.
    pub sends_per_op_max: u32,
    /// Percent of operations that are DeleteRecords.
    pub delete_percent: u32,
    /// Producer retries for acks=all sends, which are idempotent: a retry after a lost
    /// response must not write the record twice. acks=1 sends never retry (they are not
    /// idempotent, so a retry may duplicate).
    pub retries: u32,
}

impl WorkloadConfig {
    /// Draws the clients' behaviour from the seed: timeouts, pace, sizes, and (when `deletes`)
    /// the share of DeleteRecords operations.
    pub fn draw(bootstrap: String, partitions: u32, deletes: bool) -> WorkloadConfig {
        let mut rng = thread_rng();
        WorkloadConfig {
            bootstrap,
            partitions,
            request_timeout_ms: rng.gen_range(1_000..=5_000),
            delivery_timeout_ms: rng.gen_range(5_000..=15_000),
            linger_ms: rng.gen_range(0..=5),
            think_ms_max: rng.gen_range(0..=30),
            send_percent: rng.gen_range(40..=85),
            max_partition_fetch_bytes: rng.gen_range(64..=4_096),
            poll_ms_max: rng.gen_range(10..=300),
            sends_per_op_max: if rng.gen_bool(0.3) { 1 } else { rng.gen_range(2..=8) },
            delete_percent: match deletes {
                true if rng.gen_bool(0.3) => 0,
                true => rng.gen_range(1..=5),
                false => 0,
            },
            retries: if rng.gen_bool(0.3) { 0 } else { rng.gen_range(1..=10) },
        }
    }

    /// The bootstrap list.
    pub fn bootstrap_servers(&self) -> Vec<String> {
        self.bootstrap.split(',').map(str::to_owned).collect()
    }
}

pub use crate::outcome::{classify_client_error, classify_code, classify_send_error};

fn parse_value(bytes: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(bytes?).ok()?.parse().ok()
}

/// One workload process: a client with a producer and an assigned consumer.
#[derive(Debug)]
pub struct Process {
    /// The process id in the history.
    pub id: u64,
    acks: Acks,
    recorder: Arc<Recorder>,
    config: WorkloadConfig,
    producer: Producer,
    consumer: Consumer,
    admin: Admin,
    /// Highest offset this process has polled per key (for repositions).
    polled_max: BTreeMap<u32, i64>,
}

impl Process {
    /// Connects, retrying until it works or `give_up` is set.
    pub async fn connect(
        id: u64,
        acks: Acks,
        recorder: Arc<Recorder>,
        config: WorkloadConfig,
        give_up: &AtomicBool,
    ) -> Option<Process> {
        let client_config = ClientConfig {
            bootstrap_servers: config.bootstrap_servers(),
            client_id: format!("p{id}"),
            request_timeout_ms: config.request_timeout_ms,
            retry_backoff_ms: 50,
            ..ClientConfig::default()
        };
        let client = connect_until(&client_config, &recorder, &format!("p{id}"), give_up).await?;
        let producer_config = ProducerConfig {
            acks,
            linger_ms: config.linger_ms,
            retries: if acks == Acks::All { config.retries } else { 0 },
            enable_idempotence: true,
            delivery_timeout_ms: config.delivery_timeout_ms,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client.clone(), producer_config).expect("valid producer config");
        let consumer_config = ConsumerConfig {
            fetch_max_wait_ms: 100,
            max_partition_fetch_bytes: config.max_partition_fetch_bytes,
            auto_offset_reset: OffsetReset::None,
            ..ConsumerConfig::default()
        };
        let admin = Admin::new(&client);
        let consumer = Consumer::new(client, consumer_config).expect("valid consumer config");
        let mut process =
            Process { id, acks, recorder, config, producer, consumer, admin, polled_max: BTreeMap::new() };
        process.reposition(true).await;
        Some(process)
    }

    fn now_ms(&self) -> u64 {
        self.recorder.trace.now_ms()
    }

    /// The producer's retries (acks=all only; see [`WorkloadConfig::retries`]).
    fn retries(&self) -> u32 {
        if self.acks == Acks::All {
            self.config.retries
        } else {
            0
        }
    }

    /// Assigns every partition and seeks each to the log start offset (`to_start`, or 0 if it
    /// cannot be listed) or to a random offset this process has already read (so never past
    /// the high watermark, but perhaps below the log start offset).
    pub async fn reposition(&mut self, to_start: bool) {
        let partitions: Vec<TopicPartition> =
            (0..self.config.partitions).map(|key| TopicPartition::new(TOPIC, key as i32)).collect();
        self.consumer.assign(partitions.clone());
        let mut positions = Vec::with_capacity(partitions.len());
        for (key, partition) in partitions.iter().enumerate() {
            let highest = self.polled_max.get(&(key as u32)).copied().unwrap_or(-1);
            let position = if to_start || highest < 0 {
                observe_log_start(&self.admin, &self.recorder, self.id, key as u32).await.unwrap_or(0)
            } else {
                thread_rng().gen_range(0..=highest + 1)
            };
            positions.push(position);
            // An explicit offset needs no request, so this cannot fail.
            if let Err(error) = self.consumer.seek(partition, SeekTo::Offset(Offset(position))).await {
                self.recorder.fail(format!("p{} seek to an explicit offset failed: {error}", self.id));
            }
        }
        let now = self.now_ms();
        self.recorder.trace.event(format!("p{} reposition {positions:?}", self.id));
        self.recorder.record(Op {
            process: self.id,
            invoke_ms: now,
            complete_ms: now,
            operation: Operation::Reposition,
            outcome: Outcome::Ok,
        });
    }

    /// DeleteRecords on a random key below a random offset this process has read, and records
    /// the outcome. Does nothing if the process has read nothing yet.
    pub async fn delete_records(&mut self) {
        let key = thread_rng().gen_range(0..self.config.partitions);
        let Some(highest) = self.polled_max.get(&key).copied() else { return };
        let before = thread_rng().gen_range(0..=highest + 1);
        let topic_partition = TopicPartition::new(TOPIC, key as i32);
        let invoke_ms = self.now_ms();
        self.recorder.trace.event(format!("p{} delete k{key} before {before}", self.id));
        let result = self.admin.delete_records(&topic_partition, Offset(before)).await;
        let complete_ms = self.now_ms();
        let (log_start_offset, outcome) = match result {
            Ok(offset) => {
                self.recorder
                    .trace
                    .event(format!("p{} delete k{key} before {before} ok: log start {}", self.id, offset.0));
                (Some(offset.0), Outcome::Ok)
            }
            Err(error) => {
                let outcome = classify_client_error(&error);
                self.recorder.trace.event(format!("p{} delete k{key} before {before} {outcome:?}: {error}", self.id));
                (None, outcome)
            }
        };
        self.recorder.record(Op {
            process: self.id,
            invoke_ms,
            complete_ms,
            operation: Operation::DeleteRecords { key, before, log_start_offset },
            outcome,
        });
    }

    /// Sends one new value to `key` and records the outcome.
    pub async fn send(&mut self, key: u32) -> Outcome {
        self.send_many(&[key]).await[0]
    }

    /// Sends a new value to each key at once (they share batches and requests, and arrive
    /// together at the broker's group commit), then waits for every delivery and records each
    /// outcome, in send order.
    pub async fn send_many(&mut self, keys: &[u32]) -> Vec<Outcome> {
        let durable = self.acks == Acks::All;
        let kind = if durable { "send" } else { "send1" };
        let invoke_ms = self.now_ms();
        let mut pending = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.recorder.next_value();
            self.recorder.trace.event(format!("p{} {kind} k{key} v{value}", self.id));
            let record =
                ProducerRecord::new(TOPIC, value.to_string()).with_key(key.to_string()).with_partition(*key as i32);
            pending.push((*key, value, self.producer.send(record).await));
        }
        let bound = Duration::from_millis(self.config.delivery_timeout_ms + 5_000);
        let mut outcomes = Vec::with_capacity(keys.len());
        for (key, value, accepted) in pending {
            let (outcome, offset, detail) = match accepted {
                Err(error) => (Outcome::Fail, None, error.to_string()),
                Ok(delivery) => match madsim::time::timeout(bound, delivery).await {
                    Ok(Ok(metadata)) => (Outcome::Ok, Some(metadata.offset.0), String::new()),
                    Ok(Err(error)) => {
                        // After a retry, a definite error speaks only for the last attempt: an
                        // earlier one may have been written.
                        let outcome = match classify_send_error(&error) {
                            Outcome::Fail if self.retries() > 0 => Outcome::Info,
                            outcome => outcome,
                        };
                        (outcome, None, error.to_string())
                    }
                    Err(_) => {
                        self.recorder.fail(format!(
                            "p{} send of v{value} neither completed nor timed out within {bound:?}",
                            self.id
                        ));
                        (Outcome::Info, None, "delivery future hung".to_owned())
                    }
                },
            };
            let complete_ms = self.now_ms();
            match (outcome, offset) {
                (Outcome::Ok, Some(offset)) => {
                    self.recorder.trace.event(format!("p{} {kind} k{key} v{value} ok @{offset}", self.id))
                }
                _ => self.recorder.trace.event(format!("p{} {kind} k{key} v{value} {outcome:?}: {detail}", self.id)),
            }
            self.recorder.record(Op {
                process: self.id,
                invoke_ms,
                complete_ms,
                operation: Operation::Send { key, value, offset, durable },
                outcome,
            });
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Polls once and records what it read. Returns the records read per key.
    pub async fn poll(&mut self, timeout: Duration) -> Option<BTreeMap<u32, Vec<(i64, u64)>>> {
        let invoke_ms = self.now_ms();
        let result = self.consumer.poll(timeout).await;
        let complete_ms = self.now_ms();
        match result {
            Ok(records) => {
                let mut reads: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
                for record in records {
                    let key = u32::try_from(record.partition).unwrap_or(u32::MAX);
                    match parse_value(record.value.as_deref()) {
                        Some(value) => reads.entry(key).or_default().push((record.offset.0, value)),
                        None => self.recorder.fail(format!(
                            "p{} read a record that is not a workload value at key {key} offset {}: {:?}",
                            self.id, record.offset.0, record.value
                        )),
                    }
                }
                for (key, records) in &reads {
                    if let Some((offset, _)) = records.last() {
                        let highest = self.polled_max.entry(*key).or_insert(*offset);
                        *highest = (*highest).max(*offset);
                    }
                }
                if !reads.is_empty() {
                    let text: Vec<String> = reads
                        .iter()
                        .map(|(key, records)| {
                            let pairs: Vec<String> =
                                records.iter().map(|(offset, value)| format!("{offset}:{value}")).collect();
                            format!("k{key}[{}]", pairs.join(" "))
                        })
                        .collect();
                    self.recorder.trace.event(format!("p{} poll {}", self.id, text.join(" ")));
                }
                self.recorder.record(Op {
                    process: self.id,
                    invoke_ms,
                    complete_ms,
                    operation: Operation::Poll { reads: reads.clone() },
                    outcome: Outcome::Ok,
                });
                Some(reads)
            }
            Err(error) => {
                self.recorder.trace.event(format!("p{} poll error: {error}", self.id));
                match &error {
                    ClientError::OffsetOutOfRange { topic_partition, offset } => {
                        match move_past_deleted(
                            &mut self.consumer,
                            &self.admin,
                            &self.recorder,
                            self.id,
                            topic_partition,
                            *offset,
                        )
                        .await
                        {
                            Ok(()) => {}
                            Err(failure) => {
                                self.recorder.fail(failure);
                                self.reposition(true).await;
                            }
                        }
                    }
                    ClientError::CorruptRecords { .. } => {
                        self.recorder.fail(format!("p{} fetched corrupt records: {error}", self.id))
                    }
                    _ => {}
                }
                let outcome = match error.response_error() {
                    Some(_) => Outcome::Fail,
                    None => Outcome::Info,
                };
                self.recorder.record(Op {
                    process: self.id,
                    invoke_ms,
                    complete_ms,
                    operation: Operation::Poll { reads: BTreeMap::new() },
                    outcome,
                });
                None
            }
        }
    }

    /// Highest offset this process has read per key.
    pub fn polled_max(&self) -> &BTreeMap<u32, i64> {
        &self.polled_max
    }

    /// The consumer (for the final reads).
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }
}

/// Lists the log start offset of `key` and records the observation. `None` if the request
/// failed.
pub async fn observe_log_start(admin: &Admin, recorder: &Recorder, process: u64, key: u32) -> Option<i64> {
    let invoke_ms = recorder.trace.now_ms();
    match admin.list_offsets(&TopicPartition::new(TOPIC, key as i32), OffsetSpec::Earliest).await {
        Ok((offset, _)) => {
            let complete_ms = recorder.trace.now_ms();
            recorder.record(Op {
                process,
                invoke_ms,
                complete_ms,
                operation: Operation::LogStart { key, offset: offset.0 },
                outcome: Outcome::Ok,
            });
            Some(offset.0)
        }
        Err(error) => {
            recorder.trace.event(format!("p{process} list log start of k{key} failed: {error}"));
            None
        }
    }
}

/// Handles an out-of-range `position` of a consumer: legitimate if the records there were
/// deleted (the position is below the log start offset), and the consumer moves to the log
/// start offset (a reposition). Leaves the position for the next poll to retry if the log
/// start offset cannot be listed.
///
/// # Errors
/// A description of the failure if the position is at or above the log start offset: the log
/// lost records the consumer had reason to expect.
pub async fn move_past_deleted(
    consumer: &mut Consumer,
    admin: &Admin,
    recorder: &Recorder,
    process: u64,
    topic_partition: &TopicPartition,
    position: Offset,
) -> Result<(), String> {
    let key = u32::try_from(topic_partition.partition.0).unwrap_or(u32::MAX);
    let Some(log_start_offset) = observe_log_start(admin, recorder, process, key).await else { return Ok(()) };
    if position.0 >= log_start_offset {
        return Err(format!(
            "p{process} position {} of {topic_partition} is out of range but not below the log start offset {log_start_offset} (committed records lost?)", position.0
        ));
    }
    // An explicit offset needs no request, so this cannot fail.
    consumer
        .seek(topic_partition, SeekTo::Offset(Offset(log_start_offset)))
        .await
        .map_err(|error| format!("p{process} seek to an explicit offset failed: {error}"))?;
    let now = recorder.trace.now_ms();
    recorder.trace.event(format!("p{process} k{key} position {} was deleted; moved to {log_start_offset}", position.0));
    recorder.record(Op {
        process,
        invoke_ms: now,
        complete_ms: now,
        operation: Operation::Reposition,
        outcome: Outcome::Ok,
    });
    Ok(())
}

/// A workload process's life: connect, then send/poll/reposition until `stop` is set.
pub async fn run_process(id: u64, acks: Acks, recorder: Arc<Recorder>, config: WorkloadConfig, stop: Arc<AtomicBool>) {
    let Some(mut process) = Process::connect(id, acks, Arc::clone(&recorder), config.clone(), &stop).await else {
        return;
    };
    let mut operations: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let think = thread_rng().gen_range(0..=config.think_ms_max);
        if think > 0 {
            madsim::time::sleep(Duration::from_millis(think)).await;
        }
        let roll = thread_rng().gen_range(0..100u32);
        if roll < config.send_percent {
            let count = thread_rng().gen_range(1..=config.sends_per_op_max.max(1));
            let keys: Vec<u32> = (0..count).map(|_| thread_rng().gen_range(0..config.partitions)).collect();
            let outcomes = process.send_many(&keys).await;
            if outcomes.iter().any(|outcome| *outcome != Outcome::Ok) {
                // Back off like a real client instead of spinning against a down or full node.
                let backoff = thread_rng().gen_range(10..=100);
                madsim::time::sleep(Duration::from_millis(backoff)).await;
            }
        } else if roll < config.send_percent + 2 {
            let to_start = thread_rng().gen_bool(0.5);
            process.reposition(to_start).await;
        } else if roll < config.send_percent + 2 + config.delete_percent {
            process.delete_records().await;
        } else {
            let timeout = Duration::from_millis(thread_rng().gen_range(10..=config.poll_ms_max.max(10)));
            let _ = process.poll(timeout).await;
        }
        operations += 1;
    }
    recorder.trace.event(format!("p{id} stopped after {operations} operations"));
}

/// Connects with `config`, retrying every 200 ms (each failure traced under `who`) until it
/// works; `None` once `give_up` is set.
pub async fn connect_until(
    config: &ClientConfig,
    recorder: &Recorder,
    who: &str,
    give_up: &AtomicBool,
) -> Option<Client> {
    loop {
        if give_up.load(Ordering::Relaxed) {
            return None;
        }
        match Client::connect(config.clone()).await {
            Ok(client) => return Some(client),
            Err(error) => {
                recorder.trace.event(format!("{who} connect failed: {error}"));
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Creates the workload's topic with `replication_factor` and `configs`, retrying until the
/// cluster answers.
///
/// # Errors
/// If it could not be created in 20 attempts.
pub async fn create_topic(
    recorder: &Arc<Recorder>,
    workload: &WorkloadConfig,
    replication_factor: i16,
    configs: Vec<(String, String)>,
) -> Result<(), String> {
    let shape = TopicShape { name: TOPIC, partitions: workload.partitions, replication_factor };
    create_named_topic(recorder, workload.bootstrap_servers(), shape, configs).await
}

/// A topic to create: name, partitions, replication factor.
#[derive(Debug, Clone, Copy)]
pub struct TopicShape {
    /// The topic name.
    pub name: &'static str,
    /// Partitions.
    pub partitions: u32,
    /// Replication factor.
    pub replication_factor: i16,
}

/// Creates a topic of `shape` with `configs`, retrying until the cluster answers.
///
/// # Errors
/// If it could not be created in 20 attempts.
pub async fn create_named_topic(
    recorder: &Arc<Recorder>,
    bootstrap_servers: Vec<String>,
    shape: TopicShape,
    configs: Vec<(String, String)>,
) -> Result<(), String> {
    let TopicShape { name, partitions, replication_factor } = shape;
    let config = ClientConfig { bootstrap_servers, request_timeout_ms: 5_000, ..ClientConfig::default() };
    for attempt in 0..20 {
        let outcome = async {
            let client = Client::connect(config.clone()).await.map_err(|error| error.to_string())?;
            let admin = client::admin::Admin::new(&client);
            let topic = client::admin::NewTopic {
                name: name.to_owned(),
                num_partitions: partitions as i32,
                replication_factor,
                configs: configs.clone(),
            };
            let results = admin.create_topics(&[topic], false).await.map_err(|error| error.to_string())?;
            match results.into_iter().next() {
                Some((_, Ok(()))) => Ok(()),
                // An earlier attempt whose answer was lost created it.
                Some((_, Err(error))) if error.response_error() == Some(ResponseError::TopicAlreadyExists) => Ok(()),
                Some((_, Err(error))) => Err(error.to_string()),
                None => Err("CreateTopics answered without the topic".to_owned()),
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                recorder.trace.event(format!(
                    "topic {name} created with {partitions} partitions, replication factor {replication_factor}"
                ));
                return Ok(());
            }
            Err(error) => {
                recorder.trace.event(format!("create topic attempt {attempt} failed: {error}"));
                madsim::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(format!("topic {name} could not be created before any fault"))
}

/// Liveness: a produce to every partition must be acknowledged within [`CONVERGENCE_MS`].
///
/// # Errors
/// "no convergence" with what did not happen.
pub async fn probe(recorder: Arc<Recorder>, workload: WorkloadConfig) -> Result<(), String> {
    let deadline = recorder.trace.now_ms() + CONVERGENCE_MS;
    let give_up = AtomicBool::new(false);
    let connect = Process::connect(PROBE_PROCESS, Acks::All, Arc::clone(&recorder), workload.clone(), &give_up);
    let Ok(Some(mut process)) = madsim::time::timeout(Duration::from_millis(CONVERGENCE_MS), connect).await else {
        return Err(format!("no convergence: the probe could not connect within {CONVERGENCE_MS} ms"));
    };
    for key in 0..workload.partitions {
        loop {
            if process.send(key).await == Outcome::Ok {
                break;
            }
            if recorder.trace.now_ms() >= deadline {
                return Err(format!("no convergence: no produce to key {key} was acknowledged within {CONVERGENCE_MS} ms after the faults stopped"));
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
    }
    recorder.trace.event("liveness: every partition accepted a produce");
    Ok(())
}

/// Final reads: from the log start offset of every partition until each position reaches the
/// partition's high watermark, within [`FINAL_READS_MS`].
///
/// # Errors
/// "no convergence" with what did not happen, or a read that failed.
pub async fn final_reads(recorder: Arc<Recorder>, workload: WorkloadConfig) -> Result<(), String> {
    let started = recorder.trace.now_ms();
    let config = ClientConfig {
        bootstrap_servers: workload.bootstrap_servers(),
        request_timeout_ms: workload.request_timeout_ms,
        ..ClientConfig::default()
    };
    let client = loop {
        match Client::connect(config.clone()).await {
            Ok(client) => break client,
            Err(error) if recorder.trace.now_ms() < started + FINAL_READS_MS => {
                recorder.trace.event(format!("final reads: connect failed: {error}"));
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(format!("no convergence: final reads could not connect: {error}")),
        }
    };
    let consumer_config =
        ConsumerConfig { fetch_max_wait_ms: 100, auto_offset_reset: OffsetReset::None, ..ConsumerConfig::default() };
    let admin = Admin::new(&client);
    let mut consumer = Consumer::new(client, consumer_config).map_err(|error| error.to_string())?;
    let partitions: Vec<TopicPartition> =
        (0..workload.partitions).map(|key| TopicPartition::new(TOPIC, key as i32)).collect();
    consumer.assign(partitions.clone());
    for (key, partition) in partitions.iter().enumerate() {
        let log_start_offset = loop {
            if let Some(offset) = observe_log_start(&admin, &recorder, FINAL_PROCESS, key as u32).await {
                break offset;
            }
            if recorder.trace.now_ms() >= started + FINAL_READS_MS {
                return Err(format!("no convergence: final reads could not list the log start offset of {partition}"));
            }
            madsim::time::sleep(Duration::from_millis(200)).await;
        };
        consumer.seek(partition, SeekTo::Offset(Offset(log_start_offset))).await.map_err(|error| error.to_string())?;
    }
    let now = recorder.trace.now_ms();
    recorder.record(Op {
        process: FINAL_PROCESS,
        invoke_ms: now,
        complete_ms: now,
        operation: Operation::Reposition,
        outcome: Outcome::Ok,
    });
    loop {
        let caught_up = partitions.iter().all(|partition| {
            match (consumer.position(partition), consumer.high_watermark(partition)) {
                (Some(position), Some(high_watermark)) => position >= high_watermark,
                _ => false,
            }
        });
        if caught_up {
            let ends: Vec<i64> =
                partitions.iter().filter_map(|partition| consumer.position(partition)).map(|offset| offset.0).collect();
            recorder.trace.event(format!("final reads: reached the high watermarks {ends:?}"));
            return Ok(());
        }
        if recorder.trace.now_ms() >= started + FINAL_READS_MS {
            let state: Vec<String> = partitions
                .iter()
                .map(|partition| {
                    format!(
                        "{partition}: position {:?} high watermark {:?}",
                        consumer.position(partition),
                        consumer.high_watermark(partition)
                    )
                })
                .collect();
            return Err(format!(
                "no convergence: final reads did not reach the high watermarks within {FINAL_READS_MS} ms ({})",
                state.join(", ")
            ));
        }
        let invoke_ms = recorder.trace.now_ms();
        match consumer.poll(Duration::from_millis(500)).await {
            Ok(records) => {
                let mut reads: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
                for record in records {
                    let value = record
                        .value
                        .as_deref()
                        .and_then(|bytes| std::str::from_utf8(bytes).ok())
                        .and_then(|text| text.parse().ok());
                    match value {
                        Some(value) => reads.entry(record.partition as u32).or_default().push((record.offset.0, value)),
                        None => recorder.fail(format!(
                            "final reads: record at partition {} offset {} is not a workload value",
                            record.partition, record.offset.0
                        )),
                    }
                }
                let count: usize = reads.values().map(Vec::len).sum();
                if count > 0 {
                    let last: Vec<String> = reads
                        .iter()
                        .map(|(key, records)| format!("k{key}..{}", records.last().map_or(-1, |(offset, _)| *offset)))
                        .collect();
                    recorder.trace.event(format!("final poll {count} records {}", last.join(" ")));
                }
                let complete_ms = recorder.trace.now_ms();
                recorder.record(Op {
                    process: FINAL_PROCESS,
                    invoke_ms,
                    complete_ms,
                    operation: Operation::Poll { reads },
                    outcome: Outcome::Ok,
                });
            }
            Err(error) => {
                recorder.trace.event(format!("final poll error: {error}"));
                match &error {
                    // Retention may still delete while the final reads run.
                    client::ClientError::OffsetOutOfRange { topic_partition, offset } => {
                        move_past_deleted(&mut consumer, &admin, &recorder, FINAL_PROCESS, topic_partition, *offset)
                            .await
                            .map_err(|failure| format!("final reads failed: {failure}"))?;
                    }
                    client::ClientError::CorruptRecords { .. } => return Err(format!("final reads failed: {error}")),
                    _ => {}
                }
            }
        }
    }
}

/// Checks the recorded history: every anomaly and invariant failure, one line each (added to
/// `failures`), the checker's report, and the operation counts by kind and outcome for the
/// summary line.
pub fn check_history(
    recorder: &Recorder,
    options: checker::CheckOptions,
    failures: &mut Vec<String>,
) -> (checker::Report, BTreeMap<String, u64>) {
    let history = recorder.history();
    let report = checker::check_with(&history, options);
    for (name, instances) in &report.anomalies {
        for instance in instances {
            failures.push(format!("{name}: {instance}"));
        }
    }
    failures.extend(recorder.failures());
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for op in &history {
        let kind = match &op.operation {
            Operation::Send { durable: true, .. } => "send",
            Operation::Send { durable: false, .. } => "send1",
            Operation::Poll { .. } => "poll",
            Operation::DeleteRecords { .. } => "delete",
            Operation::LogStart { .. } => "log-start",
            Operation::Reposition => continue,
        };
        *outcomes.entry(format!("{kind}:{:?}", op.outcome)).or_default() += 1;
    }
    (report, outcomes)
}
