//! `weir-jepsen`: the fault harness on real processes (see `jepsen/README.md`).
//!
//! One run, as root on one machine: N network namespaces joined by a bridge, a real `weir
//! server` in each (broker and controller), the topic `jepsen` (replication factor and
//! `min.insync.replicas` from the flags), client processes running the queue workload from
//! the root namespace, a nemesis drawing faults from the seed, a heal, convergence and final
//! reads, the simulator's history checker, a report, and teardown (also on Ctrl-C or SIGTERM).
//!
//! Exit status: 0 if every check passed, 1 if one failed, 2 if the harness could not run.

mod nemesis;
mod net;
mod nodes;
mod proxy;
mod report;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sim::checker::{self, CheckOptions};

use crate::nemesis::Fault;
use crate::nodes::Nodes;
use crate::workload::{Recorder, Shape};

/// How long the cluster may take to accept the topic.
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);
/// After the heal, how long convergence and final reads may take.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(90);
/// Workload processes must stop within this after being told to.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(name = "weir-jepsen", about = "Runs weir on real processes under OS-level faults and checks the history")]
struct Args {
    /// Nodes (each broker and controller).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Length of the fault phase, in seconds.
    #[arg(long, default_value_t = 60)]
    time_limit_s: u64,
    /// Faults, comma-separated: kill, kill-leader, kill-controller, pause, partition, loss,
    /// delay, clock, disk (empty: none).
    #[arg(long, default_value = "kill,partition")]
    nemesis: String,
    /// Seed of the fault schedule and operation mix (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The weir binary (default: target/release/weir, else target/debug/weir).
    #[arg(long)]
    weir: Option<PathBuf>,
    /// Where data, logs and the report go (default: /tmp/weir-jepsen/run-SEED).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Workload processes; they take turns at the roles native assign, native subscribe,
    /// Python (confluent-kafka) assign, native subscribe.
    #[arg(long, default_value_t = 4)]
    processes: u64,
    /// The Python interpreter with confluent-kafka, the second client (default: $WEIR_PYTHON,
    /// else .venv/bin/python, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Run the native client only (no Python processes).
    #[arg(long)]
    native_only: bool,
    /// Partitions (= keys) of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    replication_factor: i16,
    /// `min.insync.replicas` of the topic.
    #[arg(long, default_value_t = 2)]
    min_insync_replicas: u32,
    /// Run the nodes with this planted bug (`WEIR_PLANTED_BUG`; weir must be built with the
    /// `planted-bugs` feature of weir-server): the run must fail.
    #[arg(long)]
    planted_bug: Option<String>,
    /// Which instance this run is (0-15): runs of different instances use their own names and
    /// subnet (10.88.K.0/24), so they can run side by side.
    #[arg(long, default_value_t = 0)]
    instance: u8,
    /// The nodes' log filter (`WEIR_LOG`, e.g. `info,broker::follower=debug`).
    #[arg(long)]
    node_log: Option<String>,
    /// Only remove what an interrupted run of this instance left (namespaces, bridge) and exit.
    #[arg(long)]
    cleanup: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.instance >= net::INSTANCES_MAX {
        eprintln!("weir-jepsen: --instance must be below {}", net::INSTANCES_MAX);
        return ExitCode::from(2);
    }
    net::set_instance(args.instance);
    if let Err(error) = net::preflight() {
        eprintln!("weir-jepsen: {error:#}");
        return ExitCode::from(2);
    }
    if args.cleanup {
        net::cleanup();
        return ExitCode::SUCCESS;
    }
    let runtime = match rt::runtime::build(2) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weir-jepsen: cannot start a runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let result = tokio::select! {
            result = run(&args) => result,
            () = rt::signal::shutdown() => Err(anyhow::anyhow!("interrupted; the cluster was torn down")),
        };
        net::cleanup();
        result
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("weir-jepsen: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn default_python() -> PathBuf {
    if let Some(python) = std::env::var_os("WEIR_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn default_weir() -> PathBuf {
    let release = PathBuf::from("target/release/weir");
    if release.is_file() {
        release
    } else {
        PathBuf::from("target/debug/weir")
    }
}

/// One run; true if every check passed.
async fn run(args: &Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(rt::rand::random_u64);
    let faults: Vec<Fault> = args
        .nemesis
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .map(|name| {
            Fault::parse(name.trim()).with_context(|| {
                format!(
                    "unknown nemesis {name:?} \
                     (kill, kill-leader, kill-controller, pause, partition, loss, delay, clock, disk)"
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let weir = std::fs::canonicalize(args.weir.clone().unwrap_or_else(default_weir))
        .context("the weir binary is missing: build it with `cargo build --release -p weir-server` or pass --weir")?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/weir-jepsen/run-{seed}")));
    if out.exists() {
        // A killed harness may have left its nodes' tmpfs mounted there.
        for entry in std::fs::read_dir(&out)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("disk-") {
                let _ = net::run("umount", &[&entry.path().to_string_lossy()]);
            }
        }
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    println!(
        "weir-jepsen: seed {seed}, {} nodes, {} s of {faults:?}, weir {}, output in {}",
        args.nodes,
        args.time_limit_s,
        weir.display(),
        out.display()
    );

    let python = if args.native_only {
        None
    } else {
        Some(workload::PythonSetup::prepare(&args.python.clone().unwrap_or_else(default_python), &out)?)
    };
    net::setup(args.nodes)?;
    let env: Vec<(String, String)> = args
        .planted_bug
        .iter()
        .map(|bug| ("WEIR_PLANTED_BUG".to_owned(), bug.clone()))
        .chain(args.node_log.iter().map(|filter| ("WEIR_LOG".to_owned(), filter.clone())))
        .collect();
    let nodes = Arc::new(Mutex::new(Nodes::new(&weir, args.nodes, &out, env)));
    let shape = {
        let mut guard = nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if faults.contains(&Fault::Disk) {
            guard.mount_disks(&out)?;
        }
        if faults.contains(&Fault::Clock) {
            guard.fake_clocks(&out.join("clocks"))?;
        }
        for id in 1..=args.nodes {
            guard.start(id)?;
        }
        Shape {
            bootstrap: guard.bootstrap(),
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            min_insync_replicas: args.min_insync_replicas,
            python,
        }
    };
    let proxy = if faults.contains(&Fault::Delay) { Some(proxy::DelayProxy::start(args.nodes).await?) } else { None };
    workload::create_topic(&shape, SETUP_TIMEOUT).await.with_context(|| log_tails(&out, args.nodes))?;

    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.processes)
        .map(|id| {
            rt::task::spawn(workload::run_process(id, seed, Arc::clone(&recorder), shape.clone(), Arc::clone(&stop)))
        })
        .collect();
    let stop_nemesis = Arc::new(AtomicBool::new(false));
    let nemesis = rt::task::spawn(nemesis::run(
        faults,
        seed,
        shape.bootstrap.clone(),
        Arc::clone(&nodes),
        Arc::clone(&recorder),
        Arc::clone(&stop_nemesis),
        proxy,
    ));
    rt::time::sleep(Duration::from_secs(args.time_limit_s)).await;
    stop_nemesis.store(true, Ordering::Relaxed);
    let windows = nemesis.await.context("the nemesis task failed")?;
    println!("weir-jepsen: faults healed after {} ms; stopping the workload", recorder.now_ms());
    stop.store(true, Ordering::Relaxed);
    let mut harness_failures = Vec::new();
    for (id, worker) in workers.into_iter().enumerate() {
        if rt::time::timeout(STOP_TIMEOUT, worker).await.is_err() {
            harness_failures.push(format!("process {id} did not stop within {STOP_TIMEOUT:?}"));
        }
    }
    let convergence = workload::converge_and_read(Arc::clone(&recorder), shape, CONVERGENCE_TIMEOUT).await.err();
    {
        let mut guard = nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, status) in guard.exited() {
            harness_failures.push(format!("node {id} exited by itself ({status}); see node-{id}.log"));
        }
        guard.kill_all();
    }
    harness_failures.extend(recorder.failures.lock().expect("failures lock").iter().cloned());
    let history = recorder.history();
    let report = checker::check_with(&history, CheckOptions::default());
    let convergence = convergence.map(|error| format!("{error:#}"));
    let findings = report::Findings {
        seed,
        nemesis: &args.nemesis,
        history: &history,
        report: &report,
        windows: &windows,
        group_violations: recorder.groups.violations(),
        group_summary: format!(
            "{}, {} offsets committed",
            recorder.groups.summary(),
            recorder.commits.load(Ordering::Relaxed)
        ),
        rebalances: recorder.groups.rebalances(),
        harness_failures: &harness_failures,
        convergence: convergence.as_deref(),
    };
    let verdict = report::write(&out, &findings)?;
    println!("weir-jepsen: report in {}", out.join("report.txt").display());
    Ok(verdict.failed.is_empty())
}

/// The last lines of every node's log, for an error that needs them.
fn log_tails(out: &std::path::Path, nodes: u32) -> String {
    let mut text = String::from("the nodes' logs end with:");
    for id in 1..=nodes {
        let log = std::fs::read_to_string(out.join(format!("node-{id}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!("\n--- node {id} ---\n{}", lines[lines.len().saturating_sub(5)..].join("\n")));
    }
    text
}
