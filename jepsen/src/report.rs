//! The run's report: `history.jsonl` (one operation per line), `faults.txt`, `report.txt`
//! (anomalies with the operations involved, figures, and the `N passed, N failed` line) and
//! `timeline.svg` (acknowledged sends per second and the slowest send latency of each second,
//! fault windows shaded).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use sim::checker::{Op, Operation, Outcome, Report};

use crate::nemesis::Window;

/// Every check a run passes or fails: the checker's anomalies that apply to this workload
/// (no deletions), and the harness's own.
const CHECKS: &[&str] = &[
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offsets",
    "G1a",
    "nonmonotonic-poll",
    "poll-skip",
    "int-nonmonotonic-poll",
    "int-poll-skip",
    "nonmonotonic-send",
    "group",
    "convergence",
    "harness",
];

/// What the report says, for the caller's exit status.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// Checks passed.
    pub(crate) passed: usize,
    /// Checks failed, by name.
    pub(crate) failed: Vec<String>,
}

/// What a run found, for the report.
#[derive(Debug)]
pub(crate) struct Findings<'a> {
    /// The run's seed.
    pub(crate) seed: u64,
    /// The `--nemesis` flag.
    pub(crate) nemesis: &'a str,
    /// Every operation.
    pub(crate) history: &'a [Op],
    /// The history checker's report.
    pub(crate) report: &'a Report,
    /// The faults.
    pub(crate) windows: &'a [Window],
    /// The group checks' violations (`two-owners`, `commit-went-back`).
    pub(crate) group_violations: Vec<String>,
    /// The group checks' figures.
    pub(crate) group_summary: String,
    /// Rebalances that gave a group member its partitions.
    pub(crate) rebalances: u64,
    /// Harness problems (hung operations, nodes that exited by themselves).
    pub(crate) harness_failures: &'a [String],
    /// Why convergence failed, if it did.
    pub(crate) convergence: Option<&'a str>,
}

/// Writes every report file into `out` (also `summary.json`, the figures the results table
/// adds up) and returns the verdict.
///
/// # Errors
/// If a file cannot be written.
pub(crate) fn write(out: &Path, findings: &Findings<'_>) -> anyhow::Result<Verdict> {
    let Findings { history, report, windows, harness_failures, convergence, .. } = *findings;
    let mut lines = String::new();
    for op in history {
        lines.push_str(&serde_json::to_string(op)?);
        lines.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), lines).context("cannot write history.jsonl")?;
    let faults: String =
        windows.iter().map(|window| format!("{} {} {}\n", window.start_ms, window.end_ms, window.what)).collect();
    std::fs::write(out.join("faults.txt"), faults)?;
    std::fs::write(out.join("timeline.svg"), timeline(history, windows))?;

    let mut failed = Vec::new();
    let mut text = String::new();
    for check in CHECKS {
        let instances: Vec<String> = match *check {
            "convergence" => convergence.map(str::to_owned).into_iter().collect(),
            "harness" => harness_failures.to_vec(),
            "group" => findings.group_violations.clone(),
            name => report.anomalies.get(name).cloned().unwrap_or_default(),
        };
        if instances.is_empty() {
            let _ = writeln!(text, "PASS {check}");
        } else {
            failed.push((*check).to_owned());
            let _ = writeln!(text, "FAIL {check}: {} instances", instances.len());
            for instance in instances.iter().take(20) {
                let _ = writeln!(text, "  {instance}");
            }
        }
    }
    for (name, instances) in &report.anomalies {
        if !CHECKS.contains(name) {
            failed.push((*name).to_owned());
            let _ = writeln!(text, "FAIL {name}: {} instances", instances.len());
        }
    }
    let sends = history.iter().filter(|op| matches!(op.operation, Operation::Send { .. })).count();
    let _ = writeln!(
        text,
        "operations {} sends {sends} acknowledged {} offsets-observed {} faults {}",
        history.len(),
        report.acknowledged,
        report.observed_offsets,
        windows.len()
    );
    let figures = Figures::of(history, windows);
    let _ = writeln!(text, "group: {}", findings.group_summary);
    let _ = writeln!(
        text,
        "availability: {}/{} sends acknowledged during faults, {}/{} outside",
        figures.fault_ok, figures.fault_sends, figures.calm_ok, figures.calm_sends
    );
    for (kind, recoveries) in &figures.recovery_ms {
        let _ = writeln!(text, "recovery after {kind} (ms to an acknowledged send on every partition): {recoveries:?}");
    }
    let verdict =
        Verdict { passed: CHECKS.len() - failed.iter().filter(|name| CHECKS.contains(&name.as_str())).count(), failed };
    let _ = writeln!(text, "{} passed, {} failed", verdict.passed, verdict.failed.len());
    std::fs::write(out.join("report.txt"), &text)?;
    let summary = serde_json::json!({
        "seed": findings.seed,
        "nemesis": findings.nemesis,
        "failed": verdict.failed,
        "anomalies": report.anomalies.values().map(Vec::len).sum::<usize>() + findings.group_violations.len(),
        "acknowledged": report.acknowledged,
        "sends": sends,
        "fault_sends": figures.fault_sends,
        "fault_ok": figures.fault_ok,
        "calm_sends": figures.calm_sends,
        "calm_ok": figures.calm_ok,
        "recovery_ms": figures.recovery_ms,
        "faults": windows.len(),
        "rebalances": findings.rebalances,
    });
    std::fs::write(out.join("summary.json"), format!("{summary}\n"))?;
    print!("{text}");
    Ok(verdict)
}

/// Availability and recovery figures.
#[derive(Debug, Default)]
struct Figures {
    /// Sends invoked during a fault window, and those acknowledged.
    fault_sends: u64,
    fault_ok: u64,
    /// Sends invoked outside every fault window, and those acknowledged.
    calm_sends: u64,
    calm_ok: u64,
    /// By fault kind (the window's first word): for each fault, the time from its start until
    /// every partition that was written had acknowledged a send invoked after that start (the
    /// failover time of a kill; capped at the run's last acknowledgement).
    recovery_ms: BTreeMap<String, Vec<u64>>,
}

impl Figures {
    fn of(history: &[Op], windows: &[Window]) -> Figures {
        let mut figures = Figures::default();
        let mut keys: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for op in history {
            let Operation::Send { key, .. } = op.operation else { continue };
            let ok = op.outcome == Outcome::Ok;
            if windows.iter().any(|window| (window.start_ms..window.end_ms).contains(&op.invoke_ms)) {
                figures.fault_sends += 1;
                figures.fault_ok += u64::from(ok);
            } else {
                figures.calm_sends += 1;
                figures.calm_ok += u64::from(ok);
            }
            if ok {
                keys.entry(key).or_default().push((op.invoke_ms, op.complete_ms));
            }
        }
        for window in windows {
            let kind = window.what.split_whitespace().next().unwrap_or("fault").to_owned();
            // The first acknowledgement, per key, of a send invoked after the fault began.
            let firsts: Option<Vec<u64>> = keys
                .values()
                .map(|acks| acks.iter().filter(|(invoke, _)| *invoke >= window.start_ms).map(|(_, done)| *done).min())
                .collect();
            if let Some(last) = firsts.and_then(|firsts| firsts.into_iter().max()) {
                figures.recovery_ms.entry(kind).or_default().push(last.saturating_sub(window.start_ms));
            }
        }
        figures
    }
}

/// Per second: acknowledged sends, and the slowest completed send (ms).
fn per_second(history: &[Op]) -> BTreeMap<u64, (u64, u64)> {
    let mut seconds: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for op in history {
        if let Operation::Send { .. } = op.operation {
            let entry = seconds.entry(op.complete_ms / 1_000).or_default();
            if op.outcome == Outcome::Ok {
                entry.0 += 1;
            }
            entry.1 = entry.1.max(op.complete_ms.saturating_sub(op.invoke_ms));
        }
    }
    seconds
}

/// An SVG of throughput and latency over time, with the fault windows shaded.
fn timeline(history: &[Op], windows: &[Window]) -> String {
    const WIDTH: f64 = 900.0;
    const HEIGHT: f64 = 180.0;
    const MARGIN: f64 = 40.0;
    let seconds = per_second(history);
    let end_s = seconds.keys().next_back().copied().unwrap_or(0).max(1) as f64 + 1.0;
    let max_rate = seconds.values().map(|(rate, _)| *rate).max().unwrap_or(1).max(1) as f64;
    let max_latency = seconds.values().map(|(_, latency)| *latency).max().unwrap_or(1).max(1) as f64;
    let x = |second: f64| MARGIN + second / end_s * (WIDTH - 2.0 * MARGIN);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        2.0 * HEIGHT + MARGIN
    );
    for (panel, (title, max)) in
        [("acknowledged sends per second", max_rate), ("slowest send per second (ms)", max_latency)]
            .into_iter()
            .enumerate()
    {
        let top = MARGIN / 2.0 + panel as f64 * HEIGHT;
        let bottom = top + HEIGHT - MARGIN;
        for window in windows {
            let (from, to) = (x(window.start_ms as f64 / 1_000.0), x(window.end_ms as f64 / 1_000.0));
            let _ = writeln!(
                svg,
                "<rect x=\"{from:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f4b4b4\" opacity=\"0.5\"><title>{}</title></rect>",
                (to - from).max(1.0),
                bottom - top,
                window.what
            );
        }
        let points: Vec<String> = seconds
            .iter()
            .map(|(second, (rate, latency))| {
                let value = if panel == 0 { *rate } else { *latency } as f64;
                format!("{:.1},{:.1}", x(*second as f64 + 0.5), bottom - value / max * (bottom - top))
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"black\"/>",
            WIDTH - MARGIN
        );
        let _ = writeln!(svg, "<text x=\"{MARGIN}\" y=\"{:.1}\">{title} (max {max})</text>", top + 10.0);
        let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{:.1}\">{end_s:.0} s</text>", WIDTH - MARGIN, bottom + 12.0);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(key: u32, invoke_ms: u64, complete_ms: u64, outcome: Outcome) -> Op {
        Op {
            process: 0,
            invoke_ms,
            complete_ms,
            operation: Operation::Send { key, value: invoke_ms, offset: None, durable: true },
            outcome,
        }
    }

    #[test]
    fn recovery_waits_for_every_written_partition_and_availability_counts_sends_in_windows() {
        let history = vec![
            send(0, 100, 110, Outcome::Ok),
            send(1, 120, 130, Outcome::Ok),
            // Inside the window: key 0 fails, key 1 answers, then key 0 answers after it.
            send(0, 1_000, 3_000, Outcome::Info),
            send(1, 1_100, 1_200, Outcome::Ok),
            send(0, 3_000, 4_500, Outcome::Ok),
        ];
        let windows = [Window { what: "kill [1]".to_owned(), start_ms: 900, end_ms: 2_000 }];
        let figures = Figures::of(&history, &windows);
        assert_eq!((figures.fault_sends, figures.fault_ok), (2, 1));
        assert_eq!((figures.calm_sends, figures.calm_ok), (3, 3));
        assert_eq!(figures.recovery_ms.get("kill"), Some(&vec![4_500 - 900]));
    }
}
