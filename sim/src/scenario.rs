//! Whole simulated runs of weir nodes and workload clients under a nemesis, each ending with
//! its checks.
//!
//! A run is determined by (scenario, seed, commit). [`run`] builds a fresh madsim runtime from
//! the seed, runs the scenario to completion, and returns a [`RunResult`]: the failures found
//! (checker anomalies, liveness failures, invariant violations, panics), the trace hash for
//! determinism checks, and the kept trace events.
//!
//! Scenarios:
//! * `controller_quorum` ([`controller_quorum`]): three or five controllers (raft-rs with its
//!   log in raft-engine on a crash-faulting file system) and two to four broker-only nodes
//!   crashed, paused, partitioned and clock-faulted while the leader proposes metadata and a
//!   client creates topics through the brokers; one leader per term, identical applied logs,
//!   acknowledged proposals and topics kept, every broker image a prefix of the committed log,
//!   and convergence and settled fencing after the faults stop.
//! * `replication` (also [`controller_quorum`], another shape): three controllers and three to
//!   five brokers, a topic of replication factor 2 to 5 with `min.insync.replicas` 1 to RF,
//!   and a nemesis aimed at brokers (crashes, the last replica standing of KIP-966, broker
//!   links cut, pauses, clock steps) while acks=all and acks=1 producers and consumers record
//!   a history; the replica check ([`crate::replica_check`]) runs on every replica change, and
//!   after the faults every ISR regrows and every high watermark reaches its log end.
//! * `single_node_durability` ([`single_node_durability`]): one node on a `SimDisk` crashed,
//!   paused, restarted, starved of disk space, partitioned from clients and clock-stepped while
//!   acks=all and acks=1 producers and assigned consumers record a history; then faults stop,
//!   the node must accept a produce within a bounded time, final reads drain every partition,
//!   and the checker must find no anomaly.
//!
//! The madsim-specific code exists only under `--cfg madsim`; a normal build has the types and
//! a [`run`] that reports that the simulator is not compiled in.

#[cfg(madsim)]
pub mod compacted;
#[cfg(madsim)]
pub mod controller_quorum;
#[cfg(madsim)]
pub mod group_member;
#[cfg(madsim)]
pub mod single_node_durability;
#[cfg(madsim)]
pub mod workload;

/// Draws one item with probability proportional to its weight (the nemesis's choice of the
/// next fault). `None` if every weight is zero.
#[cfg(madsim)]
pub(crate) fn pick_weighted<T: Copy>(weights: &[(T, u32)]) -> Option<T> {
    use madsim::rand::{thread_rng, Rng};
    let total: u32 = weights.iter().map(|(_, weight)| weight).sum();
    if total == 0 {
        return None;
    }
    let mut pick = thread_rng().gen_range(0..total);
    for (item, weight) in weights {
        if pick < *weight {
            return Some(*item);
        }
        pick -= weight;
    }
    unreachable!("pick < total")
}

/// The range a seed draws its safety phase's length from, in simulated ms.
pub const SAFETY_MS_MIN: u64 = 20_000;
/// See [`SAFETY_MS_MIN`].
pub const SAFETY_MS_MAX: u64 = 40_000;

/// Every scenario name [`run`] accepts.
pub const SCENARIOS: &[&str] = &["single_node_durability", "controller_quorum", "replication"];

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario's name (one of [`SCENARIOS`]).
    pub scenario: String,
    /// The seed of madsim's RNG; every random choice of the run derives from it.
    pub seed: u64,
    /// Print trace events to stderr as they happen.
    pub verbose: bool,
    /// Overrides the seed's drawn length of the safety phase, in simulated ms.
    pub safety_ms: Option<u64>,
    /// Apply the scenario-side workarounds for known, reported bugs in weir (see
    /// [`KNOWN_BUG_WORKAROUNDS`]); `false` reproduces them.
    pub workarounds: bool,
}

/// Known bugs in weir that scenarios work around by default (each entry: name, description).
/// Delete an entry and its workaround once the bug is fixed.
pub const KNOWN_BUG_WORKAROUNDS: &[(&str, &str)] = &[];

/// What a run found.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Everything that went wrong, one line each; empty if the run passed.
    pub failures: Vec<String>,
    /// FNV-1a hash of the whole event trace.
    pub trace_hash: u64,
    /// Events in the trace.
    pub event_count: u64,
    /// Simulated time the run took, in ms.
    pub sim_ms: u64,
    /// One-line summary of what the run did (parameters, operation counts, faults).
    pub summary: String,
}

impl RunResult {
    /// True if nothing went wrong.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one seed of a scenario in a fresh madsim runtime. Returns the result and the kept
/// trace events.
pub fn run(options: &RunOptions) -> (RunResult, Vec<String>) {
    #[cfg(madsim)]
    {
        run_sim(options)
    }
    #[cfg(not(madsim))]
    {
        let result = RunResult {
            scenario: options.scenario.clone(),
            seed: options.seed,
            failures: vec!["the simulator is compiled only with RUSTFLAGS=\"--cfg madsim\" (use sim/run)".to_owned()],
            ..RunResult::default()
        };
        (result, Vec::new())
    }
}

/// Simulated time a run may take beyond its safety phase before it fails.
#[cfg(madsim)]
const SIM_TIME_LIMIT_SLACK_MS: u64 = 600_000;

/// Stack of the thread a simulation runs on (every simulated task is polled on it).
#[cfg(madsim)]
const SIM_THREAD_STACK_BYTES: usize = 64 * 1024 * 1024;

#[cfg(madsim)]
fn run_sim(options: &RunOptions) -> (RunResult, Vec<String>) {
    use std::sync::{Arc, Mutex};

    use crate::trace::Trace;

    let mut result = RunResult { scenario: options.scenario.clone(), seed: options.seed, ..RunResult::default() };
    if !SCENARIOS.contains(&options.scenario.as_str()) {
        result.failures.push(format!("unknown scenario {:?}; known: {SCENARIOS:?}", options.scenario));
        return (result, Vec::new());
    }
    // The trace must be created inside the simulation (its clock is madsim's); the slot hands
    // it back out even if the run panics.
    let slot: Arc<Mutex<Option<Trace>>> = Arc::new(Mutex::new(None));
    let outcome = {
        let slot = Arc::clone(&slot);
        let options = options.clone();
        // A fresh thread: madsim seeds std's `HashMap` keys from the seed only if the thread
        // has not created a `RandomState` yet (argument parsing and logging have, on main).
        let thread = std::thread::Builder::new()
            .name(format!("seed-{}", options.seed))
            .stack_size(SIM_THREAD_STACK_BYTES)
            .spawn(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let mut runtime =
                        madsim::runtime::Runtime::with_seed_and_config(options.seed, madsim::Config::default());
                    // raft-engine runs on a thread of its own per controller (and spawns
                    // recovery and metrics threads). Allowing system threads costs madsim's
                    // deadlock panic; the runner's wall-clock watchdog covers that.
                    if options.scenario == "controller_quorum" || options.scenario == "replication" {
                        runtime.set_allow_system_thread(true);
                    }
                    // Every phase has its own deadline; this catches a run whose simulated time runs
                    // away anyway (the runner's wall-clock watchdog catches one that stops advancing).
                    runtime.set_time_limit(std::time::Duration::from_millis(
                        options.safety_ms.unwrap_or(SAFETY_MS_MAX) + SIM_TIME_LIMIT_SLACK_MS,
                    ));
                    runtime.block_on(async move {
                        let trace = Trace::new(options.verbose);
                        *slot.lock().expect("slot lock") = Some(trace.clone());
                        trace.event(format!("scenario {} seed {}", options.scenario, options.seed));
                        match options.scenario.as_str() {
                            "controller_quorum" => {
                                controller_quorum::run(trace, &options, controller_quorum::Shape::Controllers).await
                            }
                            "replication" => {
                                controller_quorum::run(trace, &options, controller_quorum::Shape::Replication).await
                            }
                            _ => single_node_durability::run(trace, &options).await,
                        }
                    })
                }))
            });
        match thread {
            Ok(thread) => thread.join().unwrap_or_else(Err),
            Err(error) => {
                Err(Box::new(format!("cannot start the simulation thread: {error}")) as Box<dyn std::any::Any + Send>)
            }
        }
    };
    match outcome {
        Ok(outcome) => {
            result.failures = outcome.failures;
            result.summary = outcome.summary;
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            result.failures.push(format!("panic: {message}"));
        }
    }
    let trace = slot.lock().map(|slot| slot.clone()).unwrap_or(None);
    let events = match trace {
        Some(trace) => {
            // No events are added here: outside the runtime the clock is real time.
            result.trace_hash = trace.hash();
            result.event_count = trace.count();
            result.sim_ms = trace.last_event_ms();
            trace.events()
        }
        None => Vec::new(),
    };
    (result, events)
}

/// What a scenario body returns.
#[derive(Debug, Default)]
pub struct ScenarioOutcome {
    /// Failures, one line each.
    pub failures: Vec<String>,
    /// One-line summary.
    pub summary: String,
}
