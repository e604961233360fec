"""The run directory, a contract: every file name and column of a run is named here, once.

reports/<run-id>/ holds everything about one run; the report card is rebuilt from
it alone. The load process writes the probe tables at its end; the launching
process writes the run settings before and summary.json after.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import secrets
from dataclasses import asdict
from pathlib import Path

import yaml

from esr import __version__
from esr.population.demographics import template_file
from esr.scenario.model import Scenario
from esr.scenario.stages import plan_stages
from esr.scenario.yaml_source import MAX_FILE_BYTES

RUN_SETTINGS = "run.json"
RESOLVED_SCENARIO = "scenario.resolved.yml"
EVENTS = "events.jsonl"
LIVE = "live.json"
SUMMARY = "summary.json"
COUNTERS = "esr_counters.json"
# The report card's files, by format.
REPORT_CARD = {"html": "report.html", "pdf": "report.pdf", "json": SUMMARY, "junit": "junit.xml"}
LOCUST_PREFIX = "locust"  # Locust's own CSVs: locust_stats.csv, locust_stats_history.csv, …
# Each load process, by its role ("locust" alone, or "master" and "worker-0", …): <role>.log,
# its output, and <role>.pid, "PID START" (its start time in clock ticks after boot, so a pid
# reused by another process is told apart): how a restarted service finds a run's processes.
LOG, PID_FILE = "{role}.log", "{role}.pid"
LEAD_ROLES = ("locust", "master")  # the process that runs the shape and writes the results

TABLES = {
    "latency": ("esr_latency.csv", ("endpoint", "bucket_start", "bucket_s", "requests",
                                     "failures", "total_ms", "min_ms", "max_ms", "hdr")),
    "journeys": ("esr_journeys.csv", ("group", "age_band", "veteran", "outcome", "frustrated",
                                       "citizens")),
    "traits": ("esr_traits.csv", ("trait", "value", "outcome", "citizens")),
    # trace_id: the W3C trace id of one failing request of the kind (empty: none carried one)
    "errors": ("esr_errors.csv", ("endpoint", "kind", "count", "trace_id")),
    "routes": ("esr_routes.csv", ("route", "count")),
    "legal_blocks": ("esr_legal_blocks.csv", ("reason", "age_band", "veteran", "count")),
}
# Tables of values the target names, capped (bounded.py): each holds the values kept, and
# esr_counters.json's "folded" says how many responses, of about how many distinct values,
# were counted as "other" instead.
FOLDED_TABLES = ("errors", "routes", "legal_blocks")


def new_run_id(scenario_name: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() else "-" for c in scenario_name.lower()).strip("-")[:40]
    return f"{stamp}-{slug or 'run'}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def iso_at(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds")


def write_json(path: Path, data: object) -> None:
    """Write atomically, so a reader (progress, a pipeline) never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, default=str))
    os.replace(partial, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_pid_file(path: Path | str, pid: int) -> None:
    """Written by whoever starts the process, before anyone else learns its pid."""
    partial = Path(f"{path}.partial")
    partial.write_text(f"{pid} {_stat(pid)[STARTED_AT]}\n")
    os.replace(partial, path)


def load_processes_alive(run_dir: Path) -> dict[str, int]:
    """The run's load processes still alive, by role, from their pid files."""
    alive = {}
    for pid_file in Path(run_dir).glob(PID_FILE.format(role="*")):
        try:
            pid, started = pid_file.read_text().split()
            stat = _stat(int(pid))
        except (OSError, ValueError):
            continue  # ended, or its file half-written by a process killed
        if stat[STARTED_AT] == started and stat[STATE] != "Z":
            alive[pid_file.name.removesuffix(".pid")] = int(pid)
    return alive


STATE, STARTED_AT = 0, 19  # fields 3 and 22 of proc(5), counted after the command's name


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command's name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def write_tables(run_dir: Path, tally, counters: dict) -> None:
    """The probe tables of a finished (or interrupted) run."""
    bucket_s = tally.bucket_s
    rows = {
        "latency": [[name, bucket * bucket_s, bucket_s, lat.requests, lat.failures,
                     round(lat.total_ms, 3), round(lat.min_ms, 3), round(lat.max_ms, 3),
                     lat.histogram.encode().decode("ascii")]
                    for (name, bucket), lat in sorted(tally.latency.items())],
        "journeys": [[*key, n] for key, n in sorted(tally.journeys.items())],
        "traits": [[*key, n] for key, n in sorted(tally.traits.items(), key=str)],
        # What the target named: at most DISTINCT_VALUES_MAX rows each, most frequent first;
        # the rest is in the counters' "folded".
        **{table: [[*key, n] for key, n in getattr(tally, table).ranked()]
           for table in FOLDED_TABLES},
    }
    rows["errors"] = [[*row, tally.error_traces.get(tuple(row[:2])) or ""]
                      for row in rows["errors"]]
    for table, (file, columns) in TABLES.items():
        with open(run_dir / file, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            writer.writerows(rows[table])
    write_json(run_dir / COUNTERS, {
        **counters, "hitl": dict(tally.hitl), "arrivals": {
            **tally.arrivals, "late_ms_max": tally.arrival_late_max_ms},
        "requests_unaccounted": tally.unaccounted, "bucket_s": bucket_s,
        "client_queue": {"requests": tally.queued[0], "total_ms": round(tally.queued[1], 1),
                         "max_ms": round(tally.queued[2], 1)},
        "folded": {table: getattr(tally, table).folded() for table in FOLDED_TABLES}})


def read_table(run_dir: Path, table: str) -> list[dict]:
    """Rows of one probe table as dicts of text; an absent table reads as empty."""
    file, _ = TABLES[table]
    path = run_dir / file
    if not path.is_file():
        return []
    with open(path, newline="") as source:
        return list(csv.DictReader(source))


def append_event(run_dir: Path | None, kind: str, **details) -> None:
    if run_dir is None:
        return
    with open(run_dir / EVENTS, "a") as out:
        out.write(json.dumps({"at": now_iso(), "event": kind, **details}, default=str) + "\n")


def read_events(run_dir: Path) -> list[dict]:
    path = run_dir / EVENTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_run_files(run_dir: Path, run_id: str, scenario: Scenario, *, host: str | None,
                    workers: int, time_scale: float, user_scale: float) -> None:
    """What a run directory holds before the load starts: its settings and the scenario
    resolved (the file, its seed and target, and the text of every template it uses)."""
    phases = plan_stages(scenario, time_scale, user_scale)
    write_json(run_dir / RUN_SETTINGS, {
        "run_id": run_id, "esr_version": __version__, "created_at": now_iso(),
        "scenario_name": scenario.name, "scenario_file": str(Path(scenario.file).resolve()),
        "scenario_sha256": scenario.sha256, "seed": scenario.seed,
        "host": host or scenario.target, "workers": workers,
        "time_scale": time_scale, "user_scale": user_scale,
        "planned_duration_s": max(p.end for p in phases),
        "slo": [asdict(check) for check in scenario.slo.checks],
        "slo_window_s": scenario.slo.window, "abort_on_fail": scenario.slo.abort_on_fail,
        "phases": [asdict(p) for p in phases],
    })
    source = yaml.safe_load(scenario.source)  # as it was checked, within the caps
    resolved = {**source, "seed": scenario.seed, "target": host or scenario.target,
                "esr_run": {"run_id": run_id, "esr_version": __version__,
                            "time_scale": time_scale, "user_scale": user_scale,
                            "workers": workers, "scenario_sha256": scenario.sha256},
                "esr_templates": {g.name: _template_text(g.template, scenario)
                                  for g in scenario.citizens}}
    (run_dir / RESOLVED_SCENARIO).write_text(
        yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def _template_text(name: str, scenario: Scenario) -> str:
    path = template_file(name, Path(scenario.file).parent)  # None: outside the scenario's folder
    if path is None or not path.is_file():
        return ""
    with open(path, encoding="utf-8", errors="replace") as text:
        return text.read(MAX_FILE_BYTES)
