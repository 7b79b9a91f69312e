//! `weir-sim`: the seed runner.
//!
//! Runs seeds of a scenario, each in its own child process (the same binary with `--child`),
//! `--jobs` at a time, with a wall-clock watchdog per seed: a seed that hangs is killed and
//! counted as failed. Prints every failing seed with the exact command that replays it, and
//! ends with `N passed, N failed`; the exit status is non-zero if any seed failed.
//!
//! `--check-determinism` runs every seed twice and compares the hashes of the two event
//! traces; on a mismatch it prints the first diverging event.
//!
//! Build and run it through `sim/run`, which compiles with `--cfg madsim`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use sim::scenario::{self, RunOptions, RunResult, SCENARIOS};

/// Planted bugs the broker and storage can compile in (feature `planted-bugs`).
const PLANTED_BUGS: &[&str] = &[
    "ack-before-fsync",
    "log-start-not-durable",
    "cleaner-skips-fsync",
    "ack-before-replication",
    "raft-log-no-fsync",
    "follower-skips-entry",
    "truncate-to-high-watermark",
    "follower-reports-unsynced",
    "expand-isr-before-epoch-start",
    "skip-sequence-check",
];
/// Lines of a failing child's stderr shown.
const STDERR_TAIL_LINES: usize = 30;
/// Above this many seeds, passing seeds are not listed one by one.
const LIST_PASSING_MAX: usize = 50;

#[derive(Debug, Clone, Parser)]
#[command(name = "weir-sim", about = "Runs seeds of weir's deterministic simulation and checks them")]
struct Args {
    /// Run exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds: start, start+1, ...
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// The scenario.
    #[arg(long, default_value = "single_node_durability")]
    scenario: String,
    /// Seeds run in parallel (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Wall-clock limit per seed run, in seconds; a seed that exceeds it has hung and fails.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Print the event trace (and weir's logs at `RUST_LOG`, default warn) to stderr.
    #[arg(long)]
    verbose: bool,
    /// Run every seed twice and compare the trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Activate a planted bug in the broker (needs the `planted-bugs` feature, which sim/run
    /// enables): the run must then fail.
    #[arg(long)]
    planted_bug: Option<String>,
    /// Length of the safety phase in simulated ms (default: drawn per seed, 20-40 s).
    #[arg(long)]
    safety_ms: Option<u64>,
    /// Do not apply the scenarios' workarounds for known weir bugs (reproduces them).
    #[arg(long)]
    no_workarounds: bool,
    /// Internal: run one seed in this process and print its result.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: write the child's event trace to this file.
    #[arg(long, hide = true)]
    trace_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !cfg!(madsim) {
        eprintln!("weir-sim: build with --cfg madsim (use sim/run)");
        return ExitCode::from(2);
    }
    if !SCENARIOS.contains(&args.scenario.as_str()) {
        eprintln!("weir-sim: unknown scenario {:?}; known: {SCENARIOS:?}", args.scenario);
        return ExitCode::from(2);
    }
    if let Some(bug) = &args.planted_bug {
        if !PLANTED_BUGS.contains(&bug.as_str()) {
            eprintln!("weir-sim: unknown planted bug {bug:?}; known: {PLANTED_BUGS:?}");
            return ExitCode::from(2);
        }
        if !cfg!(feature = "planted-bugs") {
            eprintln!("weir-sim: --planted-bug needs the planted-bugs feature (sim/run enables it)");
            return ExitCode::from(2);
        }
    }
    if args.child {
        return child(&args);
    }
    parent(&args)
}

/// Runs one seed here and prints `RESULT <json>` on stdout.
fn child(args: &Args) -> ExitCode {
    let Some(seed) = args.seed else {
        eprintln!("weir-sim: --child needs --seed");
        return ExitCode::from(2);
    };
    let filter =
        if args.verbose { std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()) } else { "error".to_owned() };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let options = RunOptions {
        scenario: args.scenario.clone(),
        seed,
        verbose: args.verbose,
        safety_ms: args.safety_ms,
        workarounds: !args.no_workarounds,
    };
    let (result, events) = scenario::run(&options);
    if let Some(path) = &args.trace_out {
        let mut text = events.join("\n");
        text.push('\n');
        if let Err(error) = std::fs::write(path, text) {
            eprintln!("weir-sim: cannot write {}: {error}", path.display());
        }
    }
    let json = serde_json::to_string(&result).expect("a run result serializes");
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "RESULT {json}");
    let _ = stdout.flush();
    if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What one child process did.
#[derive(Debug)]
struct ChildRun {
    result: Option<RunResult>,
    timed_out: bool,
    status: Option<i32>,
    stderr_tail: Vec<String>,
    wall: Duration,
}

fn run_child(args: &Args, seed: u64, trace_out: Option<&Path>) -> ChildRun {
    let started = Instant::now();
    let exe = std::env::current_exe().expect("own executable path");
    let mut command = Command::new(exe);
    let _ = command.args(["--child", "--seed", &seed.to_string(), "--scenario", &args.scenario]);
    if args.verbose {
        let _ = command.arg("--verbose");
    }
    if let Some(safety_ms) = args.safety_ms {
        let _ = command.args(["--safety-ms", &safety_ms.to_string()]);
    }
    if let Some(path) = trace_out {
        let _ = command.arg("--trace-out").arg(path);
    }
    if args.no_workarounds {
        let _ = command.arg("--no-workarounds");
    }
    match &args.planted_bug {
        Some(bug) => {
            let _ = command.env("WEIR_PLANTED_BUG", bug);
        }
        None => {
            let _ = command.env_remove("WEIR_PLANTED_BUG");
        }
    }
    let _ = command.stdin(Stdio::null()).stdout(Stdio::piped());
    let _ = if args.verbose { command.stderr(Stdio::inherit()) } else { command.stderr(Stdio::piped()) };
    let mut process = match command.spawn() {
        Ok(process) => process,
        Err(error) => {
            return ChildRun {
                result: None,
                timed_out: false,
                status: None,
                stderr_tail: vec![format!("cannot start child: {error}")],
                wall: started.elapsed(),
            };
        }
    };
    let stdout = process.stdout.take().expect("piped stdout");
    let stdout_reader = std::thread::spawn(move || {
        let mut result = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(json) = line.strip_prefix("RESULT ") {
                result = serde_json::from_str::<RunResult>(json).ok();
            }
        }
        result
    });
    let stderr_reader = process.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            let mut tail: VecDeque<String> = VecDeque::new();
            let mut bytes = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut bytes);
            for line in String::from_utf8_lossy(&bytes).lines() {
                if tail.len() == STDERR_TAIL_LINES {
                    let _ = tail.pop_front();
                }
                tail.push_back(line.to_owned());
            }
            Vec::from(tail)
        })
    });
    let deadline = started + Duration::from_secs(args.timeout_s);
    let mut timed_out = false;
    let status = loop {
        match process.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = process.kill();
                break process.wait().ok().and_then(|status| status.code());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let result = stdout_reader.join().unwrap_or(None);
    let stderr_tail = stderr_reader.and_then(|reader| reader.join().ok()).unwrap_or_default();
    ChildRun { result, timed_out, status, stderr_tail, wall: started.elapsed() }
}

/// The verdict on one seed.
#[derive(Debug)]
struct SeedReport {
    seed: u64,
    failures: Vec<String>,
    detail: Vec<String>,
    sim_ms: u64,
    wall: Duration,
    hash: Option<u64>,
    summary: String,
}

fn child_failures(run: &ChildRun, timeout_s: u64) -> Vec<String> {
    if run.timed_out {
        return vec![format!("hung: no result within {timeout_s} s of wall-clock time (killed)")];
    }
    match &run.result {
        Some(result) => result.failures.clone(),
        None => vec![format!("the child process died without a result (exit status {:?})", run.status)],
    }
}

fn read_trace(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|text| text.lines().map(str::to_owned).collect()).unwrap_or_default()
}

fn run_seed(args: &Args, seed: u64, scratch: &Path) -> SeedReport {
    if !args.check_determinism {
        let run = run_child(args, seed, None);
        let failures = child_failures(&run, args.timeout_s);
        let result = run.result.as_ref();
        return SeedReport {
            seed,
            detail: if failures.is_empty() { Vec::new() } else { run.stderr_tail.clone() },
            failures,
            sim_ms: result.map_or(0, |result| result.sim_ms),
            wall: run.wall,
            hash: result.map(|result| result.trace_hash),
            summary: result.map(|result| result.summary.clone()).unwrap_or_default(),
        };
    }
    let paths = [scratch.join(format!("seed-{seed}-a.trace")), scratch.join(format!("seed-{seed}-b.trace"))];
    let first = run_child(args, seed, Some(&paths[0]));
    let second = run_child(args, seed, Some(&paths[1]));
    let mut failures = child_failures(&first, args.timeout_s);
    let mut detail = if failures.is_empty() { Vec::new() } else { first.stderr_tail.clone() };
    match (&first.result, &second.result) {
        (Some(one), Some(two)) if one.trace_hash != two.trace_hash || one.event_count != two.event_count => {
            failures.push(format!(
                "non-determinism: trace hashes {:016x} ({} events) and {:016x} ({} events)",
                one.trace_hash, one.event_count, two.trace_hash, two.event_count
            ));
            match sim::trace::first_divergence(&read_trace(&paths[0]), &read_trace(&paths[1])) {
                Some((index, left, right)) => {
                    detail.push(format!("first diverging event #{index}:"));
                    detail.push(format!("  run 1: {}", left.unwrap_or_else(|| "<end of trace>".to_owned())));
                    detail.push(format!("  run 2: {}", right.unwrap_or_else(|| "<end of trace>".to_owned())));
                }
                None => detail.push("the kept events are identical; the divergence is beyond them".to_owned()),
            }
        }
        (Some(_), Some(_)) => {}
        _ => failures.push(format!(
            "determinism check: second run gave no result ({:?})",
            child_failures(&second, args.timeout_s)
        )),
    }
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    let result = first.result.as_ref();
    SeedReport {
        seed,
        failures,
        detail,
        sim_ms: result.map_or(0, |result| result.sim_ms) * 2,
        wall: first.wall + second.wall,
        hash: result.map(|result| result.trace_hash),
        summary: result.map(|result| result.summary.clone()).unwrap_or_default(),
    }
}

fn replay_command(args: &Args, seed: u64) -> String {
    let mut command = format!("sim/run --seed {seed} --scenario {} --verbose", args.scenario);
    if let Some(bug) = &args.planted_bug {
        command.push_str(&format!(" --planted-bug {bug}"));
    }
    if let Some(safety_ms) = args.safety_ms {
        command.push_str(&format!(" --safety-ms {safety_ms}"));
    }
    if args.check_determinism {
        command.push_str(" --check-determinism");
    }
    if args.no_workarounds {
        command.push_str(" --no-workarounds");
    }
    command
}

fn parent(args: &Args) -> ExitCode {
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.start..args.start + args.seeds.unwrap_or(1)).collect(),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
        .min(seeds.len().max(1));
    let scratch = std::env::temp_dir().join(format!("weir-sim-{}", std::process::id()));
    if args.check_determinism {
        let _ = std::fs::create_dir_all(&scratch);
    }
    let list_passing = seeds.len() <= LIST_PASSING_MAX;
    let total = seeds.len();
    let queue = Arc::new(Mutex::new(seeds.into_iter().collect::<VecDeque<u64>>()));
    let reports: Arc<Mutex<Vec<SeedReport>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (queue, reports, args, scratch) =
                (Arc::clone(&queue), Arc::clone(&reports), args.clone(), scratch.clone());
            std::thread::spawn(move || loop {
                let Some(seed) = queue.lock().expect("queue lock").pop_front() else { return };
                let report = run_seed(&args, seed, &scratch);
                let mut reports = reports.lock().expect("reports lock");
                let mut stdout = std::io::stdout().lock();
                if report.failures.is_empty() {
                    if list_passing {
                        let hash = report.hash.map(|hash| format!("{hash:016x}")).unwrap_or_default();
                        let _ = writeln!(
                            stdout,
                            "seed {seed}: ok ({:.1} s simulated in {:.2} s, trace {hash}) {}",
                            report.sim_ms as f64 / 1000.0,
                            report.wall.as_secs_f64(),
                            report.summary
                        );
                    }
                } else {
                    let _ = writeln!(stdout, "seed {seed}: FAILED");
                    for failure in report.failures.iter().take(25) {
                        let _ = writeln!(stdout, "  {failure}");
                    }
                    if report.failures.len() > 25 {
                        let _ = writeln!(stdout, "  ... and {} more", report.failures.len() - 25);
                    }
                    for line in &report.detail {
                        let _ = writeln!(stdout, "  | {line}");
                    }
                    let _ = writeln!(stdout, "  replay: {}", replay_command(&args, seed));
                }
                reports.push(report);
                let done = reports.len();
                if !list_passing && done % 50 == 0 {
                    let failed = reports.iter().filter(|report| !report.failures.is_empty()).count();
                    let _ = writeln!(
                        stdout,
                        "progress: {done}/{total} seeds, {failed} failed, {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                let _ = stdout.flush();
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    if args.check_determinism {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let elapsed = started.elapsed();
    let reports = reports.lock().expect("reports lock");
    let mut failed: Vec<u64> =
        reports.iter().filter(|report| !report.failures.is_empty()).map(|report| report.seed).collect();
    failed.sort_unstable();
    let passed = reports.len() - failed.len();
    let sim_seconds: f64 = reports.iter().map(|report| report.sim_ms as f64 / 1000.0).sum();
    let child_seconds: f64 = reports.iter().map(|report| report.wall.as_secs_f64()).sum();
    println!(
        "ran {} seeds in {:.1} s with {jobs} jobs: {:.1} seeds/min, {:.1} simulated s per wall s per job",
        reports.len(),
        elapsed.as_secs_f64(),
        reports.len() as f64 * 60.0 / elapsed.as_secs_f64().max(1e-9),
        sim_seconds / child_seconds.max(1e-9),
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?}");
        for seed in &failed {
            println!("  replay: {}", replay_command(args, *seed));
        }
    }
    println!("{passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
