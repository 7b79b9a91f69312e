//! The Jepsen Kafka "queue" workload: processes send unique integers to integer keys (one
//! partition each) with idempotent acks=all producers and poll them back, recording every
//! operation for the simulator's checker (`sim::checker`), with wall-clock milliseconds since
//! the run began. Processes take turns at three roles ([`Role`]): the native client in assign
//! mode, the native client subscribed through a consumer group that commits what it read
//! (checked by `sim::group_check`), and confluent-kafka-python (librdkafka) in assign mode.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client::admin::{Admin, NewTopic, OffsetSpec};
use client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use client::group::{GroupConfig, GroupConsumer, RebalanceEvent};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::{Client, ClientConfig, ClientError};
use protocol::ids::{Offset, TopicPartition};
use protocol::ResponseError;
use sim::checker::{Op, Operation, Outcome};
use sim::group_check::{Commit, GroupChecks};
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
    /// The group members' ownership and commits.
    pub(crate) groups: GroupChecks,
    /// Offsets committed by group members.
    pub(crate) commits: AtomicU64,
}

impl Recorder {
    /// An empty history starting now.
    pub(crate) fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            history: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            failures: Mutex::new(Vec::new()),
            groups: GroupChecks::default(),
            commits: AtomicU64::new(0),
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
    /// The second client, if it runs.
    pub(crate) python: Option<PythonSetup>,
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
    connect_with(client_config(shape, client_id), deadline).await
}

async fn connect_with(config: ClientConfig, deadline: Instant) -> anyhow::Result<Client> {
    let client_id = config.client_id.clone();
    loop {
        match Client::connect(config.clone()).await {
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

/// What a process runs: which client, and how it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The native client; its consumer is assigned every partition.
    Assign,
    /// The native client; its consumer subscribes through the group [`GROUP`] and commits
    /// what it read.
    Subscribe,
    /// confluent-kafka-python (librdkafka), assign mode: the second client implementation.
    Python,
}

impl Role {
    /// The role of process `id`: assign, subscribe, python, subscribe, and again (python only
    /// when the second client is available).
    pub(crate) fn of(id: u64, python: bool) -> Role {
        match id % 4 {
            0 => Role::Assign,
            2 if python => Role::Python,
            2 => Role::Assign,
            _ => Role::Subscribe,
        }
    }
}

/// The consumer group of the subscribe-mode processes.
pub(crate) const GROUP: &str = "jepsen-group";
/// `max.poll.interval.ms` (the rebalance timeout) of the group members.
const REBALANCE_TIMEOUT_MS: i32 = 20_000;
/// `session.timeout.ms` of the group members.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// A group poll (which may rejoin) must end within this.
const GROUP_POLL_BOUND_MS: u64 = 60_000;

/// How a process reads.
enum Reader {
    Assigned(Consumer),
    Group(GroupConsumer),
}

/// How a process talks to the cluster (one per process: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Io {
    Native { producer: Producer, reader: Reader },
    Python(PythonWorker),
}

/// One client process: a producer and a consumer.
struct Process {
    id: u64,
    recorder: Arc<Recorder>,
    shape: Shape,
    io: Io,
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger_ms: 2,
        retries: 5,
        enable_idempotence: true,
        delivery_timeout_ms: 15_000,
        ..ProducerConfig::default()
    }
}

fn consumer_config(auto_offset_reset: OffsetReset) -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait_ms: 100,
        max_partition_fetch_bytes: 4_096,
        auto_offset_reset,
        ..ConsumerConfig::default()
    }
}

impl Process {
    async fn connect(id: u64, role: Role, recorder: Arc<Recorder>, shape: Shape) -> anyhow::Result<Process> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let io = match role {
            Role::Python => Io::Python(PythonWorker::start(id, &shape)?),
            Role::Assign => {
                let client = connect(&shape, format!("p{id}"), deadline).await?;
                let producer = Producer::new(client.clone(), producer_config())?;
                let reader = Reader::Assigned(Consumer::new(client, consumer_config(OffsetReset::None))?);
                Io::Native { producer, reader }
            }
            Role::Subscribe => {
                let client = connect(&shape, format!("p{id}"), deadline).await?;
                let producer = Producer::new(client, producer_config())?;
                // JoinGroup waits up to the rebalance timeout: the group's client waits longer.
                let config = ClientConfig {
                    request_timeout_ms: u64::from(REBALANCE_TIMEOUT_MS.unsigned_abs()) + 5_000,
                    ..client_config(&shape, format!("p{id}-group"))
                };
                let group_client = connect_with(config, deadline).await?;
                let group = GroupConfig {
                    session_timeout_ms: SESSION_TIMEOUT_MS,
                    max_poll_interval_ms: REBALANCE_TIMEOUT_MS,
                    enable_auto_commit: false,
                    ..GroupConfig::new(GROUP)
                };
                let mut consumer = GroupConsumer::new(group_client, consumer_config(OffsetReset::Earliest), group)?;
                consumer.subscribe(vec![TOPIC.to_owned()]);
                let listener = Arc::clone(&recorder);
                consumer.set_rebalance_listener(move |event| {
                    if let RebalanceEvent::Assigned(_) = event {
                        listener.groups.rebalanced();
                    }
                    // Positions may jump (to a committed offset, or to a partition new to this
                    // member): the next poll need not continue the last one.
                    let now = listener.now_ms();
                    listener.record(Op {
                        process: id,
                        invoke_ms: now,
                        complete_ms: now,
                        operation: Operation::Reposition,
                        outcome: Outcome::Ok,
                    });
                });
                Io::Native { producer, reader: Reader::Group(consumer) }
            }
        };
        let mut process = Process { id, recorder, shape, io };
        process.reposition().await;
        Ok(process)
    }

    fn partitions(&self) -> Vec<TopicPartition> {
        (0..self.shape.partitions).map(|key| TopicPartition::new(TOPIC, key as i32)).collect()
    }

    /// Assigns every partition from offset 0 (nothing deletes records in this workload); a
    /// group member and the Python worker start where they start (the group's committed
    /// offsets, or offset 0).
    async fn reposition(&mut self) {
        let partitions = self.partitions();
        if let Io::Native { reader: Reader::Assigned(consumer), .. } = &mut self.io {
            consumer.assign(partitions.clone());
            for partition in &partitions {
                let _ = consumer.seek(partition, SeekTo::Offset(Offset(0))).await;
            }
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
        let (outcome, offset) = match &mut self.io {
            Io::Native { producer, .. } => {
                let record =
                    ProducerRecord::new(TOPIC, value.to_string()).with_key(key.to_string()).with_partition(key as i32);
                match producer.send(record).await {
                    Err(_) => (Outcome::Fail, None),
                    Ok(delivery) => match rt::time::timeout(Duration::from_millis(DELIVERY_BOUND_MS), delivery).await {
                        Ok(Ok(metadata)) => (Outcome::Ok, Some(metadata.offset.0)),
                        // A retried send's definite error speaks only for its last attempt.
                        Ok(Err(error)) => match classify_send_error(&error) {
                            Outcome::Fail => (Outcome::Info, None),
                            outcome => (outcome, None),
                        },
                        Err(_) => {
                            self.recorder
                                .fail(format!("p{} send of v{value} hung past {DELIVERY_BOUND_MS} ms", self.id));
                            (Outcome::Info, None)
                        }
                    },
                }
            }
            Io::Python(worker) => {
                let command = serde_json::json!({ "op": "send", "key": key, "value": value });
                match worker.call(command).await {
                    Ok(answer) => match answer["outcome"].as_str() {
                        Some("ok") => (Outcome::Ok, answer["offset"].as_i64()),
                        Some("fail") => (Outcome::Fail, None),
                        _ => (Outcome::Info, None),
                    },
                    Err(error) => {
                        self.recorder.fail(format!("p{} (python) send of v{value}: {error:#}", self.id));
                        (Outcome::Info, None)
                    }
                }
            }
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

    /// Reads for up to `timeout`: the records by key, or None on an error.
    async fn read(&mut self, timeout: Duration) -> Option<BTreeMap<u32, Vec<(i64, u64)>>> {
        let records = match &mut self.io {
            Io::Native { reader: Reader::Assigned(consumer), .. } => match consumer.poll(timeout).await {
                Ok(records) => records,
                Err(ClientError::OffsetOutOfRange { .. }) => {
                    self.recorder.fail(format!("p{}: offset out of range (nothing deletes records here)", self.id));
                    self.reposition().await;
                    return None;
                }
                Err(_) => return None,
            },
            Io::Native { reader: Reader::Group(consumer), .. } => {
                let bound = Duration::from_millis(GROUP_POLL_BOUND_MS);
                let records = match rt::time::timeout(bound, consumer.poll(timeout)).await {
                    Ok(Ok(records)) => records,
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        self.recorder.fail(format!("p{} group poll hung past {GROUP_POLL_BOUND_MS} ms", self.id));
                        return None;
                    }
                };
                let (member_id, generation) = consumer.generation();
                self.recorder.groups.owned(generation, &member_id, &consumer.assignment());
                records
            }
            Io::Python(worker) => {
                let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                let answer = match worker.call(serde_json::json!({ "op": "poll", "timeout_ms": timeout_ms })).await {
                    Ok(answer) if answer["outcome"] == "ok" => answer,
                    Ok(_) => return None,
                    Err(error) => {
                        self.recorder.fail(format!("p{} (python) poll: {error:#}", self.id));
                        return None;
                    }
                };
                let mut reads: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
                for read in answer["reads"].as_array().into_iter().flatten() {
                    match (read[0].as_u64(), read[1].as_i64(), read[2].as_u64()) {
                        (Some(key), Some(offset), Some(value)) => {
                            reads.entry(key as u32).or_default().push((offset, value));
                        }
                        _ => self.recorder.fail(format!("p{} (python) answered a bad read {read}", self.id)),
                    }
                }
                for error in answer["errors"].as_array().into_iter().flatten() {
                    if error.as_str().is_some_and(|text| text.starts_with("foreign")) {
                        self.recorder.fail(format!("p{} (python) read a {error}", self.id));
                    }
                }
                return Some(reads);
            }
        };
        let mut reads: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
        for record in records {
            let value = record.value.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok());
            match value {
                Some(value) => reads.entry(record.partition as u32).or_default().push((record.offset.0, value)),
                None => self.recorder.fail(format!("p{} read a foreign record at {}", self.id, record.offset.0)),
            }
        }
        Some(reads)
    }

    async fn poll(&mut self, timeout: Duration) {
        let invoke_ms = self.recorder.now_ms();
        let reads = self.read(timeout).await;
        let complete_ms = self.recorder.now_ms();
        let (reads, outcome) = match reads {
            Some(reads) => (reads, Outcome::Ok),
            None => (BTreeMap::new(), Outcome::Info),
        };
        self.recorder.record(Op {
            process: self.id,
            invoke_ms,
            complete_ms,
            operation: Operation::Poll { reads: reads.clone() },
            outcome,
        });
        self.commit(&reads).await;
    }

    /// A group member commits the next offset of every partition it read.
    async fn commit(&mut self, reads: &BTreeMap<u32, Vec<(i64, u64)>>) {
        let Io::Native { reader: Reader::Group(consumer), .. } = &self.io else { return };
        let next = sim::group_check::next_offsets(TOPIC, reads);
        if next.is_empty() {
            return;
        }
        let invoke_ms = self.recorder.now_ms();
        if consumer.commit_offsets(&next).await.is_ok() {
            let complete_ms = self.recorder.now_ms();
            for (partition, offset) in &next {
                self.recorder.groups.committed(Commit {
                    key: u32::try_from(partition.partition.0).unwrap_or(u32::MAX),
                    offset: offset.0,
                    invoke_ms,
                    complete_ms,
                    process: self.id,
                });
                let _ = self.recorder.commits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A confluent-kafka-python process (`python/queue_worker.py`) answering one JSON line per
/// command. Its I/O is blocking, so each call runs on a blocking thread; the worker bounds
/// every wait itself, and a call that still outlives [`PYTHON_CALL_BOUND`] kills it.
struct PythonWorker {
    child: Child,
    io: Arc<Mutex<(ChildStdin, BufReader<ChildStdout>)>>,
}

/// The worker script, written next to the report so the harness runs from anywhere.
const PYTHON_WORKER: &str = include_str!("../python/queue_worker.py");
/// Longest a Python call may take (its own waits end within about 25 s).
const PYTHON_CALL_BOUND: Duration = Duration::from_secs(45);

/// The Python interpreter with confluent-kafka, and where to write its worker script.
#[derive(Debug, Clone)]
pub(crate) struct PythonSetup {
    /// The interpreter.
    pub(crate) python: PathBuf,
    /// The worker script's path.
    pub(crate) script: PathBuf,
    /// Where each worker's stderr (librdkafka's log) goes: `python-ID.log` in here.
    pub(crate) log_dir: PathBuf,
}

impl PythonSetup {
    /// Checks that `python` imports confluent_kafka and writes the worker into `out`.
    ///
    /// # Errors
    /// Naming the package to install.
    pub(crate) fn prepare(python: &Path, out: &Path) -> anyhow::Result<PythonSetup> {
        let probe = std::process::Command::new(python).args(["-c", "import confluent_kafka"]).output();
        if !probe.is_ok_and(|output| output.status.success()) {
            anyhow::bail!(
                "{} cannot import confluent_kafka, the second client: install it (python3 -m venv .venv && \
                 .venv/bin/pip install confluent-kafka), then pass --python .venv/bin/python or set WEIR_PYTHON",
                python.display()
            );
        }
        let script = out.join("queue_worker.py");
        std::fs::write(&script, PYTHON_WORKER)?;
        Ok(PythonSetup { python: python.to_owned(), script, log_dir: out.to_owned() })
    }
}

impl PythonWorker {
    fn start(id: u64, shape: &Shape) -> anyhow::Result<PythonWorker> {
        let setup = shape.python.as_ref().context("no Python for the second client")?;
        let mut child = std::process::Command::new(&setup.python)
            .arg(&setup.script)
            .args([&shape.bootstrap.join(","), TOPIC, &shape.partitions.to_string(), &format!("py{id}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(setup.log_dir.join(format!("python-{id}.log")))?)
            .spawn()
            .context("cannot start the Python worker")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut ready = String::new();
        let _ = stdout.read_line(&mut ready)?;
        if !ready.contains("ready") {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the Python worker did not start: {ready:?}");
        }
        Ok(PythonWorker { child, io: Arc::new(Mutex::new((stdin, stdout))) })
    }

    async fn call(&mut self, command: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let io = Arc::clone(&self.io);
        let exchange = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
            let mut io = io.lock().map_err(|_| anyhow::anyhow!("worker lock poisoned"))?;
            writeln!(io.0, "{command}")?;
            io.0.flush()?;
            let mut line = String::new();
            if io.1.read_line(&mut line)? == 0 {
                anyhow::bail!("the Python worker exited");
            }
            Ok(serde_json::from_str(&line)?)
        });
        match rt::time::timeout(PYTHON_CALL_BOUND, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => Err(anyhow::anyhow!("the Python call failed: {error}")),
            Err(_) => {
                let _ = self.child.kill();
                Err(anyhow::anyhow!("the Python worker did not answer within {PYTHON_CALL_BOUND:?}; killed"))
            }
        }
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let role = Role::of(id, shape.python.is_some());
    let mut process = match Process::connect(id, role, Arc::clone(&recorder), shape.clone()).await {
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
    let mut process = Process::connect(FINAL_PROCESS, Role::Assign, Arc::clone(&recorder), shape.clone()).await?;
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
    let reached = |process: &Process| match &process.io {
        Io::Native { reader: Reader::Assigned(consumer), .. } => {
            ends.iter().all(|(partition, end)| consumer.position(partition).is_some_and(|at| at >= *end))
        }
        _ => false,
    };
    while !reached(&process) {
        if Instant::now() > deadline {
            anyhow::bail!("no convergence: final reads did not reach the high watermarks {ends:?}");
        }
        process.poll(Duration::from_millis(200)).await;
    }
    Ok(())
}
