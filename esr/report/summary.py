"""summary.json from a run directory alone: the stable interface pipelines read.

Runs outside the gevent load process. Percentiles come from ESR's HDR histograms
(merged across time buckets), clamped to the exact maximum so p99 never exceeds max.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from hdrh.histogram import HdrHistogram

from esr.bounded import DISTINCT_VALUES_MAX, top_and_other
from esr.errors import BadInput
from esr.histograms import decoded, merged, percentile_ms
from esr.run_directory import (
    COUNTERS,
    RUN_SETTINGS,
    SUMMARY,
    read_events,
    read_json,
    read_table,
    write_json,
)
from esr.scenario.model import AGE_BANDS

# The four-fifths rule: a cohort approved at under 80% of the best cohort's rate is flagged.
IMPACT_RATIO_FLOOR = 0.8
# The best cohort is chosen among those with at least this many citizens (when any has),
# so five lucky applicants cannot set the bar for everyone.
MIN_REFERENCE_COHORT = 20
# Metrics of the run as a whole: not scored per phase, window or endpoint.
RUN_LEVEL_METRICS = ("impact_ratio_min", "recovery_time_s")
# Recovery after a chaos action is judged against the run's SLOs, or these where it sets none.
RECOVERY_DEFAULTS = {"error_rate": 0.01, "p95_ms": None}


def summarise(run_dir: Path) -> dict:
    """The summary of a run directory, built afresh from its files and written beside them
    (summary.json); a folder that is no run directory is bad input."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_SETTINGS).is_file():
        raise BadInput(f"{run_dir} is not an ESR run directory (it has no {RUN_SETTINGS}); "
                       "give the folder that `esr-locust run` wrote, e.g. reports/<run-id>")
    summary = build_summary(run_dir)
    write_json(run_dir / SUMMARY, summary)
    return summary


def build_summary(run_dir) -> dict:
    settings = read_json(run_dir / RUN_SETTINGS)
    counters = read_json(run_dir / COUNTERS) if (run_dir / COUNTERS).is_file() else {}
    lost_workers = counters.get("lost_workers", [])
    started, ended = counters.get("started_at"), counters.get("ended_at")
    duration_s = _seconds_between(started, ended)
    latency = _decoded(read_table(run_dir, "latency"))
    endpoints, total = _latency(latency, duration_s)
    journeys = read_table(run_dir, "journeys")
    by_outcome = Counter()
    for row in journeys:
        by_outcome[row["outcome"]] += int(row["citizens"])
    cohorts = _cohorts(journeys)
    routes, routes_other = target_values(run_dir, counters, "routes", lambda r: r["route"])
    reasons, reasons_other = target_values(run_dir, counters, "legal_blocks",
                                           lambda r: r["reason"])
    errors, errors_other = target_values(run_dir, counters, "errors",
                                         lambda r: (r["endpoint"], r["kind"]),
                                         value_of=lambda key: key[1])
    traces = error_traces(run_dir)
    summary = {
        "run_id": settings["run_id"],
        "esr_version": settings["esr_version"],
        "scenario": {"name": settings["scenario_name"], "sha256": settings["scenario_sha256"],
                     "seed": settings["seed"], "file": settings["scenario_file"]},
        "started_at": started, "ended_at": ended, "duration_s": duration_s,
        "workers": settings["workers"],
        "requests": total,
        "endpoints": endpoints,
        "citizens": {"total": sum(by_outcome.values()), "by_outcome": dict(by_outcome),
                     "frustrated": sum(int(r["citizens"]) for r in journeys
                                       if r["frustrated"] == "True")},
        "cohorts": cohorts,
        "by_trait": _by_trait(read_table(run_dir, "traits")),
        "routes": _with_other(routes, routes_other),
        "legal_blocks": _with_other(reasons, reasons_other),
        "hitl": {"paused": counters.get("hitl", {}).get("paused", 0),
                 "skipped": counters.get("hitl", {}).get("skipped", 0)},
        "arrivals": arrival_figures(counters.get("arrivals", {}), lost_workers),
        "errors": [{"endpoint": endpoint, "kind": kind, "count": n,
                    "trace_id": traces.get((endpoint, kind))}
                   for (endpoint, kind), n in errors] + ([{
                       "endpoint": "", "kind": errors_other["label"],
                       "count": errors_other["count"], "trace_id": None}]
                       if errors_other["count"] else []),
        # What the target named beyond the DISTINCT_VALUES_MAX values kept of each kind.
        "folded": {"routes": routes_other, "legal_blocks": reasons_other,
                   "errors": errors_other},
        "chaos": _with_recovery(chaos_actions(read_events(run_dir)), latency, started,
                                settings.get("slo", [])),
        "lost": {"workers": lost_workers,
                 "requests_unreported_max": sum(w.get("unreported_max", 0) for w in lost_workers),
                 "requests_unaccounted": counters.get("requests_unaccounted", 0)},
        # Requests that waited for a free socket (connections.FileBudget): their wait is not in
        # their latency.
        "client_queue": counters.get("client_queue") or {"requests": 0, "total_ms": 0.0,
                                                          "max_ms": 0.0},
        "complete": bool(counters),
        "settings": {k: settings[k] for k in ("host", "time_scale", "user_scale")},
        "events": len(read_events(run_dir)),
    }
    summary["aborted"] = counters.get("aborted")
    summary["load_generator"] = load_generator(counters, duration_s, summary["errors"])
    summary["slo"] = evaluate_slos(settings.get("slo", []), summary)
    if settings.get("slo_window_s"):
        windowed = worst_windows(settings.get("slo", []), summary, latency,
                                 settings["slo_window_s"])
        summary["slo"]["checks"] += windowed
    if summary["aborted"]:
        summary["slo"]["checks"].append({
            "name": "not aborted", "metric": "abort_on_fail", "threshold": None,
            "actual": summary["aborted"]["reason"], "passed": False})
    summary["slo"]["passed"] = all(c["passed"] for c in summary["slo"]["checks"])
    return summary


def arrival_figures(counts: dict, lost_workers: Iterable[dict] = ()) -> dict:
    """The open model's arrivals: the probes' counts, with what was started, dropped, and
    lost with workers (their sum is what was scheduled), and the lateness percentiles its
    buckets bound (the upper bound of the bucket holding each, or the largest lateness seen
    if lower: never a p99 of 100 ms beside a maximum of 56; None beyond the last bucket).

    A lost worker's arrivals count whole in `scheduled`: all the sharing gave it until the
    others took over (lost_workers.py), not only what its reports counted. Those its reports
    do not say it started or dropped are `lost_with_workers`: it may have started some after
    its last report (their requests reached the target uncounted), no one started the rest."""
    if not counts:
        return {}
    started = counts.get("on_time", 0) + counts.get("late", 0)
    buckets = sorted((int(key.removeprefix("late_ms_le_")), n) for key, n in counts.items()
                     if key.startswith("late_ms_le_"))
    lost = [worker["arrivals"] for worker in lost_workers if worker.get("arrivals")]
    return {**counts, "started": started, "dropped": counts.get("missed", 0),
            "scheduled": counts.get("scheduled", 0) + sum(a["given"] - a["scheduled"]
                                                          for a in lost),
            "lost_with_workers": sum(a["lost"] for a in lost),
            **{f"late_ms_p{q}": _bounded_percentile(buckets, started, q, counts.get("late_ms_max"))
               for q in (50, 99)}}


def _bounded_percentile(buckets: list[tuple[int, int]], total: int, q: float,
                        largest: float | None) -> float | None:
    seen = 0
    for bound, n in buckets:
        seen += n
        if total and seen >= total * q / 100:
            return float(bound) if largest is None else min(float(bound), largest)
    return None


# A load process was the limit when it spent this long above 90% of a core (a short burst,
# such as the start, taints little); so was the open model when an arrival could not start.
BUSY_MIN_S, BUSY_MIN_SHARE = 5.0, 0.1
# What the findings taint: a process short of CPU adds its own wait to every latency; any
# finding means the target was offered less than planned.
CPU_ADVICE = ("Latency percentiles include ESR's own wait for the CPU: they overstate the "
              "target's latency. ")
LIMITED_ADVICE = ("Requests per second understate what the target can serve, and failures "
                  "named above are ESR's, not the target's. Run with more workers (--workers "
                  "N, or more machines) or fewer citizens.")


# Transport failures that are the load process's own limits (journey.transport_failure names
# them), not the target's: what it ran out of, and the remedy.
RAISE_FILES = "raise its open-files limit (ulimit -n) or add workers"
OWN_LIMITS = {"EMFILE": ("files", RAISE_FILES), "ENFILE": ("the system's files", RAISE_FILES),
              "EADDRNOTAVAIL": ("local ports", "add workers")}


def load_generator(counters: dict, duration_s: float, errors: Iterable[dict] = ()) -> dict:
    """Whether ESR itself, not the target, was the run's limit, said in words."""
    processes = counters.get("load_processes", {})
    findings, short_of_cpu = [], False
    for kind, (want, remedy) in OWN_LIMITS.items():
        failed = sum(error["count"] for error in errors if error["kind"] == kind)
        if failed:
            findings.append(f"{failed:,} requests failed for want of {want} in the load "
                            f"process ({kind}): {remedy}")
    for name, process in sorted(processes.items()):
        if process["busy_s"] >= max(BUSY_MIN_S, BUSY_MIN_SHARE * duration_s):
            short_of_cpu = True
            findings.append(f"{_process_name(name)} used over 90% of a core for "
                            f"{process['busy_s']:.0f} s ({process['peak_share']:.0%} at its "
                            "busiest)")
    missed = counters.get("arrivals", {}).get("missed", 0)
    short_of_cpu = short_of_cpu or bool(missed)  # late arrivals: the process's loop fell behind
    if missed:
        findings.append(f"{missed} arrivals could not start: the target was offered less than "
                        "the planned load")
    queued = counters.get("client_queue") or {}
    if queued.get("requests"):
        findings.append(f"{queued['requests']:,} requests waited for their process to have a "
                        f"file free for a socket (up to {queued['max_ms']:,.0f} ms, "
                        "{:,.0f} ms on average; taken out of their latency)".format(
                            queued["total_ms"] / queued["requests"]))
    held_back = counters.get("citizens_held_back") or {}
    if held_back:
        workers = held_back.get("workers", 0)
        who = f"the pool's {workers} workers hold" if workers else "the load process holds"
        findings.append(f"{held_back['citizens']:,} citizens could not start: {who} "
                        f"{held_back['held']:,} (open-files limits and memory) — add workers")
    return {"limited": bool(findings), "findings": findings,
            "advice": ((CPU_ADVICE if short_of_cpu else "") + LIMITED_ADVICE) if findings
            else None,
            "processes": [{"process": name, **figures}
                          for name, figures in sorted(processes.items())]}


def _process_name(name: str) -> str:
    return {"local": "the load process", "master": "the master"}.get(name, f"worker {name}")


def chaos_actions(events: list[dict]) -> list[dict]:
    """Each chaos action as it happened: when, whether it worked, and when it was undone."""
    actions: dict[int, dict] = {}
    for event in events:
        if event["event"] != "chaos":
            continue
        if event["phase"] == "start":
            actions[event["index"]] = {
                "at_s": event["at_s"], "action": event["action"], "target": event["target"],
                "ok": event["ok"], "detail": event["detail"], "until_s": None, "undo": None}
        elif event["index"] in actions:
            actions[event["index"]].update(until_s=event["at_s"], undo={
                "ok": event["ok"], "detail": event["detail"], "early": event.get("early", False)})
    return [actions[index] for index in sorted(actions)]


def _with_recovery(actions: list[dict], latency: list, started: str | None,
                   checks: list[dict]) -> list[dict]:
    """Each action's recovery time: from its end (its undo, or the action itself) to the
    first time bucket wholly after it that is back within the run's SLOs."""
    if not actions or not latency or not started:
        return actions
    begin = dt.datetime.fromisoformat(started).timestamp()
    limits = {**RECOVERY_DEFAULTS, **{c["metric"]: c["threshold"] for c in checks
                                      if c.get("endpoint") is None}}
    by_bucket: dict[float, list] = defaultdict(list)
    for row, histogram in latency:
        by_bucket[float(row["bucket_start"]) - begin].append((row, histogram))
    healthy = [t for t, rows in sorted(by_bucket.items()) if _healthy(rows, limits)]
    for action in actions:
        end = action["until_s"] if action["until_s"] is not None else action["at_s"]
        back = next((t for t in healthy if t >= end), None)
        action["recovery_s"] = None if back is None else round(back - end, 3)
    return actions


def _healthy(rows: list, limits: dict) -> bool:
    _, figures = _latency(rows, 1.0)
    if not figures["total"]:
        return False
    if limits["error_rate"] is not None and \
            figures["failures"] / figures["total"] > limits["error_rate"]:
        return False
    return limits["p95_ms"] is None or figures["p95_ms"] <= limits["p95_ms"]


def _seconds_between(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    delta = dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)
    return round(delta.total_seconds(), 3)


def _decoded(rows: list[dict]) -> list[tuple[dict, HdrHistogram]]:
    return [(row, decoded(row["hdr"])) for row in rows]


def _latency(rows: list[tuple[dict, HdrHistogram]], duration_s: float
             ) -> tuple[list[dict], dict]:
    by_endpoint: dict[str, dict] = {}
    overall = Figures()
    for row, histogram in rows:
        figures = by_endpoint.setdefault(row["endpoint"], Figures())
        for target in (figures, overall):
            target.add(row["requests"], row["failures"], row["total_ms"], row["max_ms"],
                       histogram)
    endpoints = [{"name": name, **figures.as_dict()}
                 for name, figures in sorted(by_endpoint.items())]
    total = {"total": overall.requests, "failures": overall.failures,
             "rps": round(overall.requests / duration_s, 3) if duration_s else 0.0,
             **{k: v for k, v in overall.as_dict().items() if k not in ("requests", "failures")}}
    return endpoints, total


class Figures:
    """Requests, failures and percentiles of some latency rows, percentiles clamped to the
    exact maximum (so p99 never exceeds max); shared by the summary and the report card."""

    def __init__(self):
        self.requests = self.failures = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.histograms = []
        self._merged = None

    def add(self, requests, failures, total_ms, max_ms, histogram: HdrHistogram) -> None:
        self.requests += int(requests)
        self.failures += int(failures)
        self.total_ms += float(total_ms)
        self.max_ms = max(self.max_ms, float(max_ms))
        self.histograms.append(histogram)

    def percentile(self, q: float) -> float:
        if not self.requests:
            return 0.0
        if self._merged is None:
            self._merged = merged(self.histograms)
        return round(min(percentile_ms(self._merged, q), self.max_ms), 3)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "failures": self.failures,
                "avg_ms": round(self.total_ms / self.requests, 3) if self.requests else 0.0,
                "p50_ms": self.percentile(50), "p90_ms": self.percentile(90),
                "p95_ms": self.percentile(95), "p99_ms": self.percentile(99),
                "max_ms": round(self.max_ms, 3)}


def _cohorts(journeys: list[dict]) -> list[dict]:
    return cohorts((row["age_band"], row["veteran"] == "True", row["outcome"],
                    int(row["citizens"])) for row in journeys)


def cohorts(journeys: Iterable[tuple[str, bool, str, int]]) -> list[dict]:
    """Outcomes by age band x veteran, with each cohort's approval rate against the best's,
    from (age band, veteran, outcome, citizens) counts."""
    table: dict[tuple[str, bool], Counter] = defaultdict(Counter)
    for band, veteran, outcome, citizens in journeys:
        table[(band, veteran)][outcome] += citizens
    order = {label: i for i, (_, _, label) in enumerate(AGE_BANDS)}
    ordered = sorted(table.items(), key=lambda kv: (order.get(kv[0][0], -1), kv[0][1]))
    return _rated([{"age_band": band, "veteran": veteran, "citizens": sum(outcomes.values()),
                    "by_outcome": dict(outcomes)} for (band, veteran), outcomes in ordered])


def _rated(rows: list[dict]) -> list[dict]:
    """Approval and rejection rates, and each row's impact ratio against the best row's
    approval rate (the four-fifths rule), the best chosen among rows of sizable groups."""
    for row in rows:
        row["approval_rate"] = row["by_outcome"].get("approved", 0) / row["citizens"]
        row["rejection_rate"] = row["by_outcome"].get("rejected", 0) / row["citizens"]
    sizable = [row for row in rows if row["citizens"] >= MIN_REFERENCE_COHORT] or rows
    best = max((row["approval_rate"] for row in sizable), default=0.0)
    for row in rows:
        row["impact_ratio"] = round(row["approval_rate"] / best, 4) if best else None
        ratio = row["impact_ratio"]
        row["flagged"] = ratio is not None and ratio < IMPACT_RATIO_FLOOR
        row["approval_rate"] = round(row["approval_rate"], 4)
        row["rejection_rate"] = round(row["rejection_rate"], 4)
    return rows


def _by_trait(rows: list[dict]) -> dict:
    """Outcomes by each trait the scenario's report names, with the same rates and flags."""
    table: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for row in rows:
        table[row["trait"]][row["value"]][row["outcome"]] += int(row["citizens"])
    return {trait: _rated([{"value": value, "citizens": sum(outcomes.values()),
                            "by_outcome": dict(outcomes)}
                           for value, outcomes in sorted(values.items())])
            for trait, values in sorted(table.items())}


def target_values(run_dir, counters: dict, table: str, key_of, value_of=lambda key: key,
                  limit: int = DISTINCT_VALUES_MAX) -> tuple[list[tuple], dict]:
    """Counts of one table of values the target named, by `key_of(row)`: the `limit` most
    frequent, and "other" (bounded.top_and_other) with what the run already folded."""
    counts: Counter = Counter()
    for row in read_table(run_dir, table):
        counts[key_of(row)] += int(row["count"])
    folded = counters.get("folded", {}).get(table)
    return top_and_other(counts.items(), folded, limit, value_of)


def error_traces(run_dir) -> dict[tuple[str, str], str]:
    """The W3C trace id of one failing request of each kind of error, where one was kept
    (not in runs with trace_context: false, nor in run directories older than the column)."""
    return {(row["endpoint"], row["kind"]): row["trace_id"]
            for row in read_table(run_dir, "errors") if row.get("trace_id")}


def _with_other(kept: list[tuple], other: dict) -> dict:
    """Values by count, most frequent first, then "other (K distinct)" if anything was."""
    counts = dict(kept)
    if other["count"]:  # a value spelled like the label adds to it: no count is lost
        counts[other["label"]] = counts.get(other["label"], 0) + other["count"]
    return counts


def worst_windows(checks: list[dict], summary: dict, latency: list, window: float) -> list[dict]:
    """Each check over every sliding window of the run (stepping a time bucket at a time):
    the worst window is its actual value, so a bad minute cannot hide in a good half hour."""
    by_bucket: dict[float, list] = defaultdict(list)
    for row, histogram in latency:
        by_bucket[float(row["bucket_start"])].append((row, histogram))
    buckets = sorted(by_bucket)
    if not buckets:
        return []
    width = float(latency[0][0]["bucket_s"])
    starts = [b for b in buckets if b + window <= buckets[-1] + width + 1e-9] or buckets[:1]
    windowed = [c for c in checks if c["metric"] not in RUN_LEVEL_METRICS]
    worst: dict[int, tuple] = {}
    for start in starts:
        rows = [item for b in buckets if start <= b < start + window for item in by_bucket[b]]
        endpoints, total = _latency(rows, window)
        scoped = {**summary, "requests": total, "endpoints": endpoints, "duration_s": window}
        for i, result in enumerate(evaluate_slos(windowed, scoped)["checks"]):
            if result["actual"] is None:
                continue
            floor = result["metric"].endswith("_min")
            better = i in worst and (result["actual"] >= worst[i][0] if floor
                                     else result["actual"] <= worst[i][0])
            if not better:
                worst[i] = (result["actual"], start, result["passed"])
    begin = buckets[0]
    return [{"name": f"{_name(check)} (every {window:g}s window)",
             "metric": check["metric"], "threshold": check["threshold"],
             "actual": worst[i][0], "passed": worst[i][2], "window_s": window,
             "worst_at_s": round(worst[i][1] - begin, 3)}
            for i, check in enumerate(windowed) if i in worst]


def _name(check: dict) -> str:
    return f"{check['endpoint']} {check['metric']}" if check.get("endpoint") else check["metric"]


def evaluate_slos(checks: list[dict], summary: dict) -> dict:
    """Each SLO check against the run; thresholds named *_min are floors, the rest ceilings."""
    results = []
    for check in checks:
        metric, threshold, endpoint = check["metric"], check["threshold"], check.get("endpoint")
        actual = _actual(metric, summary, endpoint)
        floor = metric.endswith("_min")
        passed = actual is not None and (actual >= threshold if floor else actual <= threshold)
        name = _name(check)
        results.append({"name": name, "metric": metric, "threshold": threshold,
                        "actual": actual, "passed": passed})
    return {"passed": all(r["passed"] for r in results), "checks": results}


def _actual(metric: str, summary: dict, endpoint: str | None) -> float | None:
    if metric == "impact_ratio_min":
        ratios = [c["impact_ratio"] for c in summary["cohorts"] if c["impact_ratio"] is not None]
        return min(ratios) if ratios else None
    if metric == "recovery_time_s":  # the slowest recovery; never recovered fails the check
        times = [a.get("recovery_s") for a in summary["chaos"]]
        return None if None in times else max(times, default=0.0)
    figures = summary["requests"]
    if endpoint is not None:
        figures = next((e for e in summary["endpoints"] if e["name"] == endpoint), None)
        if figures is None:
            return None
    requests = figures.get("total", figures.get("requests", 0))
    if metric == "error_rate":
        return round(figures["failures"] / requests, 6) if requests else None
    if metric == "rps_min":
        return summary["requests"]["rps"] if endpoint is None else (
            round(requests / summary["duration_s"], 3) if summary["duration_s"] else None)
    return figures.get(metric) if requests else None
