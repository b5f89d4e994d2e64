"""Per-rule job counts and times from Snakemake logs, side by side.

    python benchmarks/dag_rule_times.py BEFORE.log [AFTER.log ...]

Reads the console log of a run (or .snakemake/log/*.snakemake.log): a job starts at the timestamp
printed above its ``rule``/``localrule`` block and ends at the one above ``Finished jobid``.
Timestamps have a resolution of one second. Prints, per rule and log, the number of jobs and the
mean and total job time, then the wall time of the whole run (first to last timestamp).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
HEADER = re.compile(r"^(?:local)?(?:checkpoint|rule) (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def job_times(log: str) -> tuple[dict[str, list[float]], float]:
    """rule -> job durations (s), and the run's wall time (s)."""
    now = first = None
    starts: dict[str, tuple[str, datetime]] = {}
    pending_rule = None
    durations: dict[str, list[float]] = defaultdict(list)
    for line in log.splitlines():
        if m := STAMP.match(line.strip()):
            now = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or now
        elif m := HEADER.match(line):
            pending_rule = m.group(1)
        elif (m := JOBID.match(line)) and pending_rule:
            starts[m.group(1)] = (pending_rule, now)
            pending_rule = None
        elif m := FINISHED.match(line):
            rule, start = starts.pop(m.group(1))
            durations[rule].append((now - start).total_seconds())
    if starts:
        raise SystemExit(f"{len(starts)} jobs started but never finished: the run failed or the log is cut")
    return durations, (now - first).total_seconds()


def main(paths: list[str]) -> None:
    runs = [(Path(p).name, *job_times(Path(p).read_text(errors="replace"))) for p in paths]
    rules = list(dict.fromkeys(r for _, durations, _ in runs for r in durations))
    head = "| rule | " + " | ".join(f"{name}: jobs, mean s, total s" for name, _, _ in runs) + " |"
    print(head)
    print("|---|" + "---|" * len(runs))
    for rule in rules:
        cells = []
        for _, durations, _ in runs:
            d = durations.get(rule, [])
            cells.append(f"{len(d)}, {sum(d) / len(d):.1f}, {sum(d):.0f}" if d else "–")
        print(f"| {rule} | " + " | ".join(cells) + " |")
    print("| **all jobs** | " + " | ".join(
        f"{sum(map(len, d.values()))}, –, {sum(map(sum, d.values())):.0f}" for _, d, _ in runs) + " |")
    print("| **wall** | " + " | ".join(f"{wall:.0f} s" for _, _, wall in runs) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
