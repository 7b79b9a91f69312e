//! `weir`: the server and its command-line tools.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use server::cmd::{self, consume::StartAt};
use server::config::{describe_all, NodeConfig, Settings};

#[derive(Debug, Parser)]
#[command(name = "weir", version, about = "weir: a Kafka-compatible streaming platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. With no options: single node, data in ./weir-data, Kafka on 127.0.0.1:9092.
    #[command(after_help = server_help())]
    Server {
        /// TOML config file (Kafka config names with underscores: num_partitions = 3).
        #[arg(long, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
        /// Any config as a flag, dots as dashes: --num-partitions 3 --log-dirs /var/lib/weir.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "--CONFIG VALUE")]
        overrides: Vec<String>,
    },
    /// Create, list, describe, delete and alter topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
        #[command(flatten)]
        target: Target,
    },
    /// List, describe and delete consumer groups, and reset their committed offsets.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Produce lines of standard input as records.
    Produce {
        /// Topic.
        topic: String,
        #[command(flatten)]
        target: Target,
        /// Send every record to this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Split each line into key and value at this separator.
        #[arg(long)]
        key_separator: Option<String>,
        /// Acknowledgements: all, 1 or 0.
        #[arg(long, default_value = "all")]
        acks: AcksArg,
        /// Compression codec.
        #[arg(long, default_value = "none")]
        compression: CompressionArg,
    },
    /// Print records of a topic.
    Consume {
        /// Topic.
        topic: String,
        #[command(flatten)]
        target: Target,
        /// Read only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Start at the beginning (default: only new records).
        #[arg(long, conflicts_with = "offset")]
        from_beginning: bool,
        /// Start at this offset.
        #[arg(long)]
        offset: Option<i64>,
        /// Exit after this many records.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Exit after this many milliseconds without a record.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Consume as a member of this consumer group (partitions from the group, start at
        /// its committed offsets, commit what is printed).
        #[arg(long)]
        group: Option<String>,
        /// Print keys.
        #[arg(long)]
        print_key: bool,
        /// Print partitions.
        #[arg(long)]
        print_partition: bool,
        /// Print offsets.
        #[arg(long)]
        print_offset: bool,
        /// Print timestamps.
        #[arg(long)]
        print_timestamp: bool,
        /// Separator between printed fields.
        #[arg(long, default_value = "\t")]
        separator: String,
    },
    /// Measure produce or consume throughput and latency.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Show the cluster: nodes, roles, the active controller and fenced brokers.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run a local cluster of `weir server` processes on 127.0.0.1 until Ctrl-C.
    #[command(args_conflicts_with_subcommands = true, after_help = DEV_CLUSTER_HELP)]
    DevCluster {
        #[command(subcommand)]
        command: Option<DevClusterCommand>,
        /// Nodes to start, with ids 1..=N; the first 1, 3 or 5 are the controller voters.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Directory for the nodes' data, configs and logs, and cluster.json.
        #[arg(long, default_value = DEV_CLUSTER_DIR_DEFAULT)]
        dir: PathBuf,
        /// Kafka port of node 1; node i listens on base+2(i-1) (Kafka) and the next port (controller).
        #[arg(long, default_value_t = 29092)]
        base_port: u16,
    },
}

const DEV_CLUSTER_DIR_DEFAULT: &str = "./weir-dev-cluster";

const DEV_CLUSTER_HELP: &str =
    "Layout: DIR/node-<id>/ is node <id>'s data directory (log.dirs) and holds node.toml and \
weir.log; DIR/cluster.json lists {\"nodes\": [{\"id\", \"pid\", \"kafka\", \"controller\"}]} (controller is null \
for non-voters). Data is kept across runs. `weir dev-cluster restart --dir DIR --node ID` replaces one node's process.";

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Ask the controllers for the quorum and the brokers.
    Status {
        /// Controller listener(s) to ask first, host:port[,host:port...]; every voter they list is
        /// asked too.
        #[arg(long, env = "WEIR_CONTROLLER", default_value = "127.0.0.1:9093", value_delimiter = ',')]
        controller: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DevClusterCommand {
    /// Stop one node of a running dev cluster (SIGKILL by default: a crash) and start it again
    /// on its data, with the same config and log.
    Restart {
        /// The cluster's directory.
        #[arg(long, default_value = DEV_CLUSTER_DIR_DEFAULT)]
        dir: PathBuf,
        /// The node's id.
        #[arg(long)]
        node: i32,
        /// How to stop it: term (graceful, SIGKILL after 10 s) or kill.
        #[arg(long, value_enum, default_value = "kill")]
        signal: cmd::dev_cluster::StopSignal,
    },
}

#[derive(Debug, clap::Args)]
struct Target {
    /// Bootstrap servers, host:port[,host:port...].
    #[arg(long, short = 'b', global = true, env = "WEIR_BOOTSTRAP_SERVER", default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List every group with its state and protocol type.
    List,
    /// Show a group's state and members, and per partition its committed offset, log end
    /// offset, lag and owner.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets on a topic (the group must have no members). Prints
    /// the plan; commits it only with --execute.
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        /// To each partition's log start offset.
        #[arg(long)]
        to_earliest: bool,
        /// To each partition's log end offset.
        #[arg(long)]
        to_latest: bool,
        /// To the first offset at or after this time, in ms since the epoch.
        #[arg(long)]
        to_timestamp: Option<i64>,
        /// To this offset (clamped into each partition's range).
        #[arg(long)]
        to_offset: Option<i64>,
        /// Commit the plan (without it, a dry run).
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Name.
        name: String,
        /// Partitions (-1: the broker's num.partitions).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config, key=value (repeatable).
        #[arg(long = "config", value_parser = cmd::key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Describe a topic: partitions, leaders, replicas, ISR and config overrides.
    Describe {
        /// Name.
        name: String,
    },
    /// Delete a topic.
    Delete {
        /// Name.
        name: String,
    },
    /// Change config overrides or add partitions.
    Alter {
        /// Name.
        name: String,
        /// Set a config, key=value (repeatable).
        #[arg(long = "set", value_parser = cmd::key_value)]
        set: Vec<(String, String)>,
        /// Remove a config override (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
        /// New total partition count.
        #[arg(long)]
        partitions: Option<i32>,
    },
    /// Move a partition's replicas (new ones are added, catch up and join the ISR, then the old
    /// ones are dropped), or cancel the move in progress.
    Reassign {
        /// Name.
        name: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// The new replicas, preferred leader first: broker ids, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel", conflicts_with = "cancel")]
        replicas: Vec<i32>,
        /// Cancel the reassignment in progress (back to the original replicas).
        #[arg(long)]
        cancel: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce records as fast as acknowledgements allow.
    Produce {
        /// Topic (created if missing).
        #[arg(long, default_value = "weir-bench")]
        topic: String,
        /// Partitions if the topic is created.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Value size in bytes.
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// Records to send.
        #[arg(long, conflicts_with = "duration_s")]
        count: Option<u64>,
        /// Seconds to run.
        #[arg(long)]
        duration_s: Option<u64>,
        /// Acknowledgements: all, 1 or 0.
        #[arg(long, default_value = "all")]
        acks: AcksArg,
        /// Producer linger in milliseconds.
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// Producer batch size in bytes.
        #[arg(long, default_value_t = 262_144)]
        batch_size: usize,
        /// Turn idempotence off (on by default with acks=all).
        #[arg(long)]
        no_idempotence: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read records from the beginning.
    Consume {
        /// Topic.
        #[arg(long, default_value = "weir-bench")]
        topic: String,
        /// Records to read.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AcksArg {
    All,
    #[value(name = "1")]
    One,
    #[value(name = "0")]
    Zero,
}

impl From<AcksArg> for client::producer::Acks {
    fn from(acks: AcksArg) -> Self {
        match acks {
            AcksArg::All => client::producer::Acks::All,
            AcksArg::One => client::producer::Acks::Leader,
            AcksArg::Zero => client::producer::Acks::None,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for client::producer::Compression {
    fn from(codec: CompressionArg) -> Self {
        match codec {
            CompressionArg::None => client::producer::Compression::None,
            CompressionArg::Gzip => client::producer::Compression::Gzip,
            CompressionArg::Snappy => client::producer::Compression::Snappy,
            CompressionArg::Lz4 => client::producer::Compression::Lz4,
            CompressionArg::Zstd => client::producer::Compression::Zstd,
        }
    }
}

fn server_help() -> String {
    let mut help =
        String::from("Configs (file key with underscores, flag with dashes, or WEIR_ variable in capitals):\n");
    for (name, default, documentation) in describe_all() {
        help.push_str(&format!("  --{:<40} {documentation} [default: {default}]\n", name.replace('.', "-")));
    }
    help
}

/// Holds an exclusive lock on the data directory for the process lifetime, so two nodes
/// never share one (Kafka's `.lock`).
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let path = data_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| anyhow::anyhow!("data directory {} is in use by another weir process", data_dir.display()))?;
    Ok(file)
}

fn server(config_file: Option<PathBuf>, overrides: &[String]) -> anyhow::Result<()> {
    let mut settings = Settings::default();
    if let Some(path) = &config_file {
        settings.load_file(path)?;
    }
    settings.load_environment(std::env::vars())?;
    settings.load_flags(overrides)?;
    let config = NodeConfig::from_settings(&settings)?;
    let _lock = lock_data_dir(&config.broker.data_dir)?;
    let threads = if config.worker_threads == 0 {
        std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        config.worker_threads
    };
    let runtime = rt::runtime::build(threads).context("cannot start the runtime")?;
    runtime.block_on(async move {
        server::run_node(config, storage::OsDisk::shared(), rt::time::system_clock(), async {
            rt::signal::shutdown().await;
            tracing::info!("shutting down");
        })
        .await
    })?;
    Ok(())
}

fn client_command(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    rt::runtime::build(2).context("cannot start the runtime")?.block_on(future)
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server { config, overrides } => server(config, &overrides),
        Command::Topic { command, target } => client_command(async move {
            let bootstrap = target.bootstrap_server.as_str();
            match command {
                TopicCommand::Create { name, partitions, replication_factor, configs } => {
                    cmd::topic::create(bootstrap, &name, partitions, replication_factor, configs).await
                }
                TopicCommand::List => cmd::topic::list(bootstrap).await,
                TopicCommand::Describe { name } => cmd::topic::describe(bootstrap, &name).await,
                TopicCommand::Delete { name } => cmd::topic::delete(bootstrap, &name).await,
                TopicCommand::Alter { name, set, delete, partitions } => {
                    cmd::topic::alter(bootstrap, &name, set, delete, partitions).await
                }
                TopicCommand::Reassign { name, partition, replicas, cancel } => {
                    cmd::topic::reassign(bootstrap, &name, partition, (!cancel).then_some(replicas)).await
                }
            }
        }),
        Command::Group { command, target } => client_command(async move {
            let bootstrap = target.bootstrap_server.as_str();
            match command {
                GroupCommand::List => cmd::group::list(bootstrap).await,
                GroupCommand::Describe { group } => cmd::group::describe(bootstrap, &group).await,
                GroupCommand::Delete { group } => cmd::group::delete(bootstrap, &group).await,
                GroupCommand::ResetOffsets {
                    group,
                    topic,
                    partition,
                    to_earliest,
                    to_latest,
                    to_timestamp,
                    to_offset,
                    execute,
                } => {
                    let targets = [
                        to_earliest.then_some(cmd::group::ResetTo::Earliest),
                        to_latest.then_some(cmd::group::ResetTo::Latest),
                        to_timestamp.map(cmd::group::ResetTo::Timestamp),
                        to_offset.map(cmd::group::ResetTo::Offset),
                    ];
                    let chosen: Vec<cmd::group::ResetTo> = targets.into_iter().flatten().collect();
                    let [to] = chosen[..] else {
                        anyhow::bail!("give exactly one of --to-earliest, --to-latest, --to-timestamp, --to-offset");
                    };
                    cmd::group::reset_offsets(bootstrap, &group, &topic, partition, to, !execute).await
                }
            }
        }),
        Command::Produce { topic, target, partition, key_separator, acks, compression } => client_command(async move {
            cmd::produce::run(
                &target.bootstrap_server,
                cmd::produce::ProduceOptions {
                    topic,
                    partition,
                    key_separator,
                    acks: acks.into(),
                    compression: compression.into(),
                },
            )
            .await
        }),
        Command::Consume {
            topic,
            target,
            partition,
            from_beginning,
            offset,
            max_messages,
            timeout_ms,
            print_key,
            print_partition,
            print_offset,
            print_timestamp,
            separator,
            group,
        } => {
            let start = match (from_beginning, offset) {
                (true, _) => StartAt::Beginning,
                (false, Some(offset)) => StartAt::Offset(offset),
                (false, None) => StartAt::End,
            };
            client_command(async move {
                cmd::consume::run(
                    &target.bootstrap_server,
                    cmd::consume::ConsumeOptions {
                        topic,
                        partition,
                        start,
                        max_messages,
                        idle_timeout_ms: timeout_ms,
                        print_key,
                        print_partition,
                        print_offset,
                        print_timestamp,
                        separator,
                        group,
                    },
                )
                .await
            })
        }
        Command::Bench { command, target } => client_command(async move {
            match command {
                BenchCommand::Produce {
                    topic,
                    partitions,
                    record_size,
                    count,
                    duration_s,
                    acks,
                    linger_ms,
                    batch_size,
                    no_idempotence,
                    json,
                } => {
                    let count = if count.is_none() && duration_s.is_none() { Some(1_000_000) } else { count };
                    cmd::bench::produce(
                        &target.bootstrap_server,
                        cmd::bench::ProduceBench {
                            topic,
                            partitions,
                            record_size,
                            count,
                            duration_s,
                            acks: acks.into(),
                            linger_ms,
                            batch_size,
                            enable_idempotence: !no_idempotence,
                        },
                        json,
                    )
                    .await
                    .map(|_| ())
                }
                BenchCommand::Consume { topic, count, json } => {
                    cmd::bench::consume(&target.bootstrap_server, &topic, count, json).await.map(|_| ())
                }
            }
        }),
        Command::Cluster { command: ClusterCommand::Status { controller, json } } => {
            client_command(async move { cmd::cluster::status(&controller, json).await })
        }
        Command::DevCluster { command: Some(DevClusterCommand::Restart { dir, node, signal }), .. } => {
            cmd::dev_cluster::restart(&dir, protocol::ids::NodeId(node), signal)
        }
        Command::DevCluster { command: None, nodes, dir, base_port } => {
            cmd::dev_cluster::run(&cmd::dev_cluster::DevClusterOptions { nodes, dir, base_port })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
