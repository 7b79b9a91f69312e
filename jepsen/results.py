#!/usr/bin/env python3
"""Adds up weir-jepsen runs into the results table of docs/testing.md.

Usage: jepsen/results.py DIR

DIR holds one directory per nemesis set, each holding one directory per run with the
`summary.json` weir-jepsen writes. Prints one Markdown row per set: runs, runs that failed a
check (and which checks), anomalies, acknowledged sends, availability during faults (sends
invoked inside a fault window that were acknowledged), and recovery times: for each fault, the
time from its start until every written partition acknowledged a send invoked after it (for
kills, the failover time), as median and maximum over every fault of the set; and the consumer
group's rebalances per run (a member given partitions counts once).
"""

import json
import pathlib
import re
import statistics
import sys


def load(path):
    """A run's summary; runs of before `rebalances` was in it have it in report.txt."""
    summary = json.loads(path.read_text())
    if "rebalances" not in summary:
        found = re.search(r"^group: commits \d+ rebalances (\d+)", (path.parent / "report.txt").read_text(), re.M)
        if found:
            summary["rebalances"] = int(found.group(1))
    return summary


def main():
    root = pathlib.Path(sys.argv[1])
    print("| nemesis set | runs | failed runs | anomalies | acknowledged sends "
          "| acknowledged during faults | recovery after a fault, median / max | group rebalances per run |")
    print("|---|---|---|---|---|---|---|---|")
    for set_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        summaries = [load(path) for path in sorted(set_dir.glob("*/summary.json"))]
        if not summaries:
            continue
        # A run that wrote no summary could not run (exit status 2): counted as failed.
        broken = len(list(set_dir.glob("*.log"))) - len(summaries)
        failed = [s for s in summaries if s["failed"]]
        checks = sorted({check for s in failed for check in s["failed"]} | ({"harness error"} if broken > 0 else set()))
        recoveries = [ms for s in summaries for values in s["recovery_ms"].values() for ms in values]
        fault_sends = sum(s["fault_sends"] for s in summaries)
        fault_ok = sum(s["fault_ok"] for s in summaries)
        availability = "%.1f%% (%d of %d)" % (100.0 * fault_ok / fault_sends, fault_ok, fault_sends) \
            if fault_sends else "no sends in faults"
        recovery = "%.1f s / %.1f s" % (statistics.median(recoveries) / 1000, max(recoveries) / 1000) \
            if recoveries else "-"
        rebalances = "%.1f" % (sum(s.get("rebalances", 0) for s in summaries) / len(summaries)) \
            if all("rebalances" in s for s in summaries) else "-"
        print("| %s | %d | %s | %d | %d | %s | %s | %s |" % (
            summaries[0]["nemesis"],
            len(summaries) + max(broken, 0),
            "%d (%s)" % (len(failed) + max(broken, 0), ", ".join(checks)) if checks else "0",
            sum(s["anomalies"] for s in summaries),
            sum(s["acknowledged"] for s in summaries),
            availability,
            recovery,
            rebalances,
        ))


if __name__ == "__main__":
    main()
