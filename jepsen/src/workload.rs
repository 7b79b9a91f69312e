//! The Jepsen Kafka "queue" workload, assign mode, on weir's native client: processes send
//! unique integers to integer keys (one partition each) with idempotent acks=all producers and
//! poll them back from assigned partitions, recording every operation for the simulator's
//! checker (`sim::checker`), with wall-clock milliseconds since the run began.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::admin::{Admin, NewTopic, OffsetSpec};
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::{Client, ClientConfig, ClientError};
use protocol::ids::{Offset, TopicPartition};
use protocol::ResponseError;
use sim::checker::{Op, Operation, Outcome};
use sim::outcome::classify_send_error;

/// The workload's topic.
pub(crate) const TOPIC: &str = "jepsen";
/// The final reader's process id.
pub(crate) const FINAL_PROCESS: u64 = 91;
/// A send's delivery must end within this (the producer's own timeout is shorter).
const DELIVERY_BOUND_MS: u64 = 30_000;

/// The run's history and clock.
#[derive(Debug)]
pub(crate) struct Recorder {
    started: Instant,
    history: Mutex<Vec<Op>>,
    next_value: AtomicU64,
    /// Problems that are not history anomalies (a hung send, an out-of-range position).
    pub(crate) failures: Mutex<Vec<String>>,
}

impl Recorder {
    /// An empty history starting now.
    pub(crate) fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            history: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            failures: Mutex::new(Vec::new()),
        })
    }

    /// Milliseconds since the run began.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, op: Op) {
        self.history.lock().expect("history lock").push(op);
    }

    fn fail(&self, text: String) {
        eprintln!("weir-jepsen: {text}");
        self.failures.lock().expect("failures lock").push(text);
    }

    /// The history so far.
    pub(crate) fn history(&self) -> Vec<Op> {
        self.history.lock().expect("history lock").clone()
    }
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// The brokers.
    pub(crate) bootstrap: Vec<String>,
    /// Partitions (= keys).
    pub(crate) partitions: u32,
    /// Replication factor.
    pub(crate) replication_factor: i16,
    /// `min.insync.replicas`.
    pub(crate) min_insync_replicas: u32,
}

fn client_config(shape: &Shape, client_id: String) -> ClientConfig {
    ClientConfig {
        bootstrap_servers: shape.bootstrap.clone(),
        client_id,
        request_timeout_ms: 5_000,
        retry_backoff_ms: 100,
        ..ClientConfig::default()
    }
}

async fn connect(shape: &Shape, client_id: String, deadline: Instant) -> anyhow::Result<Client> {
    loop {
        match Client::connect(client_config(shape, client_id.clone())).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() < deadline => {
                eprintln!("weir-jepsen: {client_id} connect: {error}");
                rt::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => anyhow::bail!("{client_id} could not connect: {error}"),
        }
    }
}

/// Creates the topic, retrying until the cluster takes it (it may still be electing).
///
/// # Errors
/// If it is not created within `timeout`.
pub(crate) async fn create_topic(shape: &Shape, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let client = connect(shape, "setup".to_owned(), deadline).await?;
    let admin = Admin::new(&client);
    loop {
        let topic = NewTopic {
            num_partitions: shape.partitions as i32,
            replication_factor: shape.replication_factor,
            configs: vec![("min.insync.replicas".to_owned(), shape.min_insync_replicas.to_string())],
            ..NewTopic::new(TOPIC)
        };
        let outcome = match admin.create_topics(&[topic], false).await {
            Ok(results) => match results.into_iter().next() {
                Some((_, Ok(()))) => Ok(()),
                Some((_, Err(error))) if error.response_error() == Some(ResponseError::TopicAlreadyExists) => Ok(()),
                Some((_, Err(error))) => Err(error.to_string()),
                None => Err("no result".to_owned()),
            },
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() < deadline => {
                eprintln!("weir-jepsen: create topic: {error}");
                rt::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => anyhow::bail!("the topic could not be created: {error}"),
        }
    }
}

/// One client process: a producer and an assigned consumer.
struct Process {
    id: u64,
    recorder: Arc<Recorder>,
    shape: Shape,
    producer: Producer,
    consumer: Consumer,
}

impl Process {
    async fn connect(id: u64, recorder: Arc<Recorder>, shape: Shape) -> anyhow::Result<Process> {
        let client = connect(&shape, format!("p{id}"), Instant::now() + Duration::from_secs(60)).await?;
        let producer_config = ProducerConfig {
            acks: Acks::All,
            linger_ms: 2,
            retries: 5,
            enable_idempotence: true,
            delivery_timeout_ms: 15_000,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client.clone(), producer_config)?;
        let consumer_config = ConsumerConfig {
            fetch_max_wait_ms: 100,
            max_partition_fetch_bytes: 4_096,
            auto_offset_reset: OffsetReset::None,
            ..ConsumerConfig::default()
        };
        let consumer = Consumer::new(client, consumer_config)?;
        let mut process = Process { id, recorder, shape, producer, consumer };
        process.reposition().await;
        Ok(process)
    }

    fn partitions(&self) -> Vec<TopicPartition> {
        (0..self.shape.partitions).map(|key| TopicPartition::new(TOPIC, key as i32)).collect()
    }

    /// Assigns every partition from offset 0 (nothing deletes records in this workload).
    async fn reposition(&mut self) {
        let partitions = self.partitions();
        self.consumer.assign(partitions.clone());
        for partition in &partitions {
            let _ = self.consumer.seek(partition, SeekTo::Offset(Offset(0))).await;
        }
        let now = self.recorder.now_ms();
        self.recorder.record(Op {
            process: self.id,
            invoke_ms: now,
            complete_ms: now,
            operation: Operation::Reposition,
            outcome: Outcome::Ok,
        });
    }

    async fn send(&mut self, key: u32) -> Outcome {
        let value = self.recorder.next_value.fetch_add(1, Ordering::Relaxed);
        let invoke_ms = self.recorder.now_ms();
        let record = ProducerRecord::new(TOPIC, value.to_string()).with_key(key.to_string()).with_partition(key as i32);
        let (outcome, offset) = match self.producer.send(record).await {
            Err(_) => (Outcome::Fail, None),
            Ok(delivery) => match rt::time::timeout(Duration::from_millis(DELIVERY_BOUND_MS), delivery).await {
                Ok(Ok(metadata)) => (Outcome::Ok, Some(metadata.offset.0)),
                // A retried send's definite error speaks only for its last attempt.
                Ok(Err(error)) => match classify_send_error(&error) {
                    Outcome::Fail => (Outcome::Info, None),
                    outcome => (outcome, None),
                },
                Err(_) => {
                    self.recorder.fail(format!("p{} send of v{value} hung past {DELIVERY_BOUND_MS} ms", self.id));
                    (Outcome::Info, None)
                }
            },
        };
        self.recorder.record(Op {
            process: self.id,
            invoke_ms,
            complete_ms: self.recorder.now_ms(),
            operation: Operation::Send { key, value, offset, durable: true },
            outcome,
        });
        outcome
    }

    async fn poll(&mut self, timeout: Duration) {
        let invoke_ms = self.recorder.now_ms();
        let result = self.consumer.poll(timeout).await;
        let complete_ms = self.recorder.now_ms();
        match result {
            Ok(records) => {
                let mut reads: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
                for record in records {
                    let value = record.value.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok());
                    match value {
                        Some(value) => reads.entry(record.partition as u32).or_default().push((record.offset.0, value)),
                        None => {
                            self.recorder.fail(format!("p{} read a foreign record at {}", self.id, record.offset.0))
                        }
                    }
                }
                self.recorder.record(Op {
                    process: self.id,
                    invoke_ms,
                    complete_ms,
                    operation: Operation::Poll { reads },
                    outcome: Outcome::Ok,
                });
            }
            Err(error) => {
                if let ClientError::OffsetOutOfRange { .. } = error {
                    self.recorder.fail(format!("p{}: {error} (nothing deletes records here)", self.id));
                    self.reposition().await;
                }
                self.recorder.record(Op {
                    process: self.id,
                    invoke_ms,
                    complete_ms,
                    operation: Operation::Poll { reads: BTreeMap::new() },
                    outcome: Outcome::Info,
                });
            }
        }
    }
}

/// A tiny deterministic generator (xorshift), so a run's operation mix follows its seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next number in `0..bound` (`bound` > 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// Runs process `id` until `stop`.
pub(crate) async fn run_process(id: u64, seed: u64, recorder: Arc<Recorder>, shape: Shape, stop: Arc<AtomicBool>) {
    let mut process = match Process::connect(id, Arc::clone(&recorder), shape.clone()).await {
        Ok(process) => process,
        Err(error) => {
            recorder.fail(format!("p{id} could not start: {error}"));
            return;
        }
    };
    let mut rng = Rng::new(seed ^ id);
    while !stop.load(Ordering::Relaxed) {
        if rng.below(100) < 55 {
            let key = rng.below(u64::from(shape.partitions)) as u32;
            let _ = process.send(key).await;
        } else {
            process.poll(Duration::from_millis(100 + rng.below(200))).await;
        }
    }
}

/// After the faults: a send to every partition must succeed within `timeout`, then a fresh
/// reader reads every partition from offset 0 to its high watermark.
///
/// # Errors
/// "no convergence" with what did not happen.
pub(crate) async fn converge_and_read(recorder: Arc<Recorder>, shape: Shape, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut process = Process::connect(FINAL_PROCESS, Arc::clone(&recorder), shape.clone()).await?;
    for key in 0..shape.partitions {
        while process.send(key).await != Outcome::Ok {
            if Instant::now() > deadline {
                anyhow::bail!("no convergence: no send to key {key} succeeded within {timeout:?} of the heal");
            }
            rt::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let admin = Admin::new(&connect(&shape, "final-admin".to_owned(), deadline).await?);
    let mut ends = Vec::new();
    for partition in process.partitions() {
        let end = loop {
            match admin.list_offsets(&partition, OffsetSpec::Latest).await {
                Ok((offset, _)) => break offset,
                Err(_) if Instant::now() < deadline => rt::time::sleep(Duration::from_millis(250)).await,
                Err(error) => anyhow::bail!("no convergence: no high watermark for {partition}: {error}"),
            }
        };
        ends.push((partition, end));
    }
    process.reposition().await;
    while !ends.iter().all(|(partition, end)| process.consumer.position(partition).is_some_and(|at| at >= *end)) {
        if Instant::now() > deadline {
            anyhow::bail!("no convergence: final reads did not reach the high watermarks {ends:?}");
        }
        process.poll(Duration::from_millis(200)).await;
    }
    Ok(())
}
