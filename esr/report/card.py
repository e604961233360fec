"""The report card's content, computed from a run directory alone (with pandas, after the run).

`read_report_card(run_dir)` returns plain data in the order a reader needs it:
verdict, SLOs (whole run and per phase), time series, endpoints, heat-map, errors,
citizens, cohorts (with the four-fifths rule and a significance test), routes,
legal blocks, human review, chaos. Rendering is elsewhere (report_render.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats as scipy_stats

from esr.histograms import decoded, percentile_ms
from esr.report.summary import (
    RUN_LEVEL_METRICS,
    Figures,
    error_traces,
    evaluate_slos,
    summarise,
    target_values,
)
from esr.run_directory import (
    COUNTERS,
    EVENTS,
    LOCUST_PREFIX,
    RUN_SETTINGS,
    TABLES,
    read_events,
    read_json,
)

SIGNIFICANCE = 0.05  # p-value below which a cohort's difference is called significant
TOP_ERRORS = 10
TOP_VALUES = 20  # routes and legal-block rows a card shows; the rest on one "other" line


@dataclass(frozen=True)
class Missing:
    """A part of the run directory the report could not use, and what that means."""

    file: str
    consequence: str


def read_report_card(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    summary = summarise(run_dir)
    settings = read_json(run_dir / RUN_SETTINGS)
    missing = _missing_parts(run_dir)
    latency = _latency_frame(run_dir, summary)
    phases = _phases(settings, summary)
    events = read_events(run_dir)
    windows = _chaos_windows(summary)
    counters = read_json(run_dir / COUNTERS) if (run_dir / COUNTERS).is_file() else {}
    routes, routes_other = target_values(run_dir, counters, "routes", lambda r: r["route"],
                                         limit=TOP_VALUES)
    errors, errors_other = _errors(run_dir, counters)
    legal, legal_other = _legal_by_cohort(run_dir, counters)
    return {
        "summary": summary,
        "settings": settings,
        "missing": [vars(m) for m in missing],
        "verdict": _verdict(summary, missing),
        "slo_scopes": _slo_scopes(settings, summary, latency, [*phases, *windows]),
        "timeline": _timeline(run_dir, latency, summary),
        "phases": phases,
        "marks": _marks(events, summary),
        "endpoints": _endpoints(summary),
        "heatmap": _heatmap(latency),
        "errors": errors,
        "citizens": _citizens(summary),
        "cohorts": _cohort_tests(summary["cohorts"]),
        "groups": _groups(run_dir),
        "routes": routes,
        "legal_by_cohort": legal,
        # What each table leaves out: "other (K distinct)" lines.
        "other": {"errors": errors_other, "routes": routes_other, "legal_blocks": legal_other},
        "chaos": _chaos_effects(summary, latency),
        "events": events,
    }


# ---- reading -----------------------------------------------------------------------------------


def _missing_parts(run_dir: Path) -> list[Missing]:
    missing = []
    if not (run_dir / COUNTERS).is_file():
        missing.append(Missing(COUNTERS, "the run did not finish writing its results "
                               "(stopped hard, or the load process failed): figures are partial"))
    for table, (file, _) in TABLES.items():
        if not (run_dir / file).is_file():
            missing.append(Missing(file, f"no {table.replace('_', ' ')} figures"))
    for suffix, what in (("_stats_history.csv", "citizens over time"),
                         ("_failures.csv", "first and last seen of errors")):
        if not (run_dir / f"{LOCUST_PREFIX}{suffix}").is_file():
            missing.append(Missing(f"{LOCUST_PREFIX}{suffix}", f"no {what}"))
    if not (run_dir / EVENTS).is_file():
        missing.append(Missing(EVENTS, "no phase or chaos timeline"))
    return missing


def _latency_frame(run_dir: Path, summary: dict) -> pd.DataFrame:
    """One row per endpoint and time bucket, with seconds since the start and histograms."""
    file, columns = TABLES["latency"]
    path = run_dir / file
    frame = pd.read_csv(path, dtype={"endpoint": str}) if path.is_file() else \
        pd.DataFrame(columns=columns)
    start = _epoch(summary.get("started_at")) or (frame["bucket_start"].min()
                                                   if len(frame) else 0.0)
    frame["t"] = frame["bucket_start"].astype(float) - start
    frame["histogram"] = [decoded(h) for h in frame["hdr"]]
    return frame


def _epoch(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


def _figures(rows: pd.DataFrame) -> dict:
    """Requests, failures and percentiles of some latency rows (clamped to the exact max)."""
    figures = Figures()
    for row in rows.itertuples():
        figures.add(row.requests, row.failures, row.total_ms, row.max_ms, row.histogram)
    if not figures.requests:
        return {"requests": 0, "failures": 0, "error_rate": None}
    return {**figures.as_dict(), "error_rate": figures.failures / figures.requests}


# ---- sections ----------------------------------------------------------------------------------


def _verdict(summary: dict, missing: list[Missing]) -> dict:
    failed = [c["name"] for c in summary["slo"]["checks"] if not c["passed"]]
    complete = not any(m.file == COUNTERS for m in missing)
    status = "PASS" if summary["slo"]["passed"] and complete else (
        "FAIL" if failed else "INCOMPLETE")
    return {"status": status, "failed": failed, "complete": complete}


def _phases(settings: dict, summary: dict) -> list[dict]:
    """The planned phases, clipped to what the run actually lasted."""
    duration = summary["duration_s"] or 0
    return [{**p, "end": min(p["end"], duration)} for p in settings.get("phases", [])
            if p["start"] < duration]


def rows_in(latency: pd.DataFrame, start: float, end: float, rule: str) -> pd.DataFrame:
    """Time buckets in a window. Buckets are aligned to the clock, not to events, so a
    bucket can straddle an edge: phases take the buckets whose middle is inside; around a
    fault, 'before' and 'after' take only buckets wholly inside and 'during' any that overlap,
    so a fault's errors never leak into the windows that should be clean."""
    first, last = latency["t"], latency["t"] + latency["bucket_s"]
    if rule == "within":
        return latency[(first >= start) & (last <= end)]
    if rule == "overlap":
        return latency[(first < end) & (last > start)]
    middle = (first + last) / 2
    return latency[(middle >= start) & (middle < end)]


def _chaos_windows(summary: dict) -> list[dict]:
    """Before, during and after each chaos action, as scopes for the SLO checks."""
    end = summary["duration_s"] or 0
    windows = []
    for action in summary["chaos"]:
        name = f"{action['action']} {action['target']}".strip()
        start, until = action["at_s"], action["until_s"]
        windows.append({"name": f"before {name}", "start": 0.0, "end": start, "rule": "within"})
        if until is not None:
            windows.append({"name": f"during {name}", "start": start, "end": until,
                            "rule": "overlap"})
        windows.append({"name": f"after {name}", "start": until or start, "end": end,
                        "rule": "within"})
    return [w for w in windows if w["end"] > w["start"]]


def _slo_scopes(settings: dict, summary: dict, latency: pd.DataFrame,
                phases: list[dict]) -> list[dict]:
    """Every SLO check for the whole run, then within each phase and chaos window."""
    checks = [c for c in settings.get("slo", []) if c["metric"] not in RUN_LEVEL_METRICS]
    scopes = [{"scope": "whole run", **summary["slo"]}]
    for phase in phases:
        rows = rows_in(latency, phase["start"], phase["end"], phase.get("rule", "midpoint"))
        figures = _figures(rows)
        seconds = phase["end"] - phase["start"]
        scoped = {**summary, "requests": {**figures, "total": figures["requests"],
                                          "rps": figures["requests"] / seconds if seconds
                                          else 0.0},
                  "endpoints": [{"name": name, **_figures(group)}
                                for name, group in rows.groupby("endpoint")],
                  "duration_s": seconds}
        label = f"{phase['name']} ({phase['start']:.3g}s-{phase['end']:.3g}s)"
        scopes.append({"scope": label, **evaluate_slos(checks, scoped)})
    return scopes


def _timeline(run_dir: Path, latency: pd.DataFrame, summary: dict) -> dict:
    """Throughput, errors and percentiles per time bucket; citizens per second."""
    series = {"rps": [], "errors": [], "p50": [], "p95": [], "p99": []}
    for t, rows in latency.groupby("t"):
        width = float(rows["bucket_s"].iloc[0])
        figures = _figures(rows)
        series["rps"].append((t, figures["requests"] / width))
        series["errors"].append((t, figures["failures"] / width))
        for q in (50, 95, 99):
            series[f"p{q}"].append((t, figures.get(f"p{q}_ms")))
    history = run_dir / f"{LOCUST_PREFIX}_stats_history.csv"
    citizens = []
    if history.is_file():
        frame = pd.read_csv(history)
        frame = frame[frame["Name"] == "Aggregated"]
        start = _epoch(summary.get("started_at")) or 0
        citizens = [(float(ts) - start, int(n)) for ts, n in
                    zip(frame["Timestamp"], frame["User Count"], strict=True)]
    series["citizens"] = citizens
    return series


def _marks(events: list[dict], summary: dict) -> list[tuple[float, str]]:
    start = _epoch(summary.get("started_at"))
    if start is None:
        return []
    marks = []
    for event in events:
        if event["event"] == "chaos":
            label = f"{event['action']} {event['target']}".strip()
            marks.append((event["at_s"], label + (" ends" if event["phase"] == "undo" else "")))
        elif event["event"] in ("stopping", "worker_lost"):
            marks.append((_epoch(event["at"]) - start, event["event"].replace("_", " ")))
    return marks


def _chaos_effects(summary: dict, latency: pd.DataFrame) -> list[dict]:
    """Each action with its effect: errors and percentiles before it and while it lasted."""
    rows = []
    for action in summary["chaos"]:
        start, end = action["at_s"], action["until_s"] or action["at_s"]
        during = _figures(rows_in(latency, start, end, "overlap")) if end > start else None
        rows.append({**action, "before": _figures(rows_in(latency, 0.0, start, "within")),
                     "during": during})
    return rows


def _endpoints(summary: dict) -> list[dict]:
    """Endpoint rows, each marked with the SLO checks it breaches."""
    rows = []
    for endpoint in summary["endpoints"]:
        breaches = []
        for check in summary["slo"]["checks"]:
            metric, threshold = check["metric"], check["threshold"]
            scoped = check["name"] == f"{endpoint['name']} {metric}" or check["name"] == metric
            value = endpoint.get(metric) if metric != "error_rate" else (
                endpoint["failures"] / endpoint["requests"] if endpoint["requests"] else None)
            if scoped and value is not None and not metric.endswith("_min") and value > threshold:
                breaches.append(check["name"])
        rows.append({**endpoint, "breaches": breaches})
    return rows


def _heatmap(latency: pd.DataFrame) -> dict:
    """Endpoints x time buckets, the p95 of each cell (None where nothing was sent)."""
    if not len(latency):
        return {"rows": [], "columns": [], "values": []}
    columns = sorted(latency["t"].unique().tolist())
    position = {t: i for i, t in enumerate(columns)}
    rows = sorted(latency["endpoint"].unique().tolist())
    values = {name: [None] * len(columns) for name in rows}
    for record in latency.itertuples():
        p95 = percentile_ms(record.histogram, 95)
        values[record.endpoint][position[record.t]] = round(min(p95, record.max_ms), 3)
    return {"rows": rows, "columns": columns, "values": [values[name] for name in rows]}


def _errors(run_dir: Path, counters: dict) -> tuple[list[dict], dict]:
    """The most frequent failures per endpoint, with first and last seen from Locust;
    and the others."""
    seen = {}
    path = run_dir / f"{LOCUST_PREFIX}_failures.csv"
    if path.is_file():
        frame = pd.read_csv(path, dtype=str).fillna("")
        for name, error, first, last in zip(frame["Name"], frame["Error"], frame["First Seen"],
                                            frame["Last Seen"], strict=True):
            # Locust writes CatchResponseError('HTTP 503') where ESR says HTTP 503.
            kind = error.removeprefix("CatchResponseError(").removesuffix(")").strip("'\"")
            seen[(name, kind)] = (_iso(first), _iso(last))
    rows, other = target_values(run_dir, counters, "errors", lambda r: (r["endpoint"], r["kind"]),
                                value_of=lambda key: key[1], limit=TOP_ERRORS)
    traces = error_traces(run_dir)
    return [{"endpoint": name, "kind": kind, "count": n,
             "first_seen": seen.get((name, kind), ("", ""))[0],
             "last_seen": seen.get((name, kind), ("", ""))[1],
             "trace_id": traces.get((name, kind), "")}
            for (name, kind), n in rows], other


def _iso(seen: str) -> str:
    """A time in Locust's failures CSV as HH:MM:SS: ISO 8601 in UTC as Locust 2.47 writes it
    (read as seconds since the epoch, it was shown as nothing), or seconds since the epoch."""
    try:
        when = dt.datetime.fromtimestamp(float(seen), dt.UTC)
    except (TypeError, ValueError):
        try:
            when = dt.datetime.fromisoformat(seen)
        except (TypeError, ValueError):
            return ""
    return when.strftime("%H:%M:%S")


def _citizens(summary: dict) -> dict:
    citizens = summary["citizens"]
    by_outcome = citizens["by_outcome"]
    total = citizens["total"]
    abandoned = by_outcome.get("abandoned", 0)
    frustrated = citizens.get("frustrated", 0)
    arrivals = summary.get("arrivals") or {}
    started = arrivals.get("on_time", 0) + arrivals.get("late", 0)
    return {
        "total": total, "by_outcome": by_outcome,
        "happy": total - frustrated, "frustrated": frustrated, "abandoned": abandoned,
        "arrivals": {**arrivals, "started": started,
                     "late_share": arrivals.get("late", 0) / started if started else None,
                     "late_ms_avg": arrivals.get("late_ms_total", 0) / arrivals["late"]
                     if arrivals.get("late") else None} if started else None,
    }


def _cohort_tests(cohorts: list[dict]) -> list[dict]:
    """Each cohort's approvals against everyone else's: Fisher's exact test on the 2x2 table."""
    approved_all = sum(c["by_outcome"].get("approved", 0) for c in cohorts)
    citizens_all = sum(c["citizens"] for c in cohorts)
    rows = []
    for cohort in cohorts:
        approved = cohort["by_outcome"].get("approved", 0)
        others = citizens_all - cohort["citizens"]
        table = [[approved, cohort["citizens"] - approved],
                 [approved_all - approved, others - (approved_all - approved)]]
        p_value = float(scipy_stats.fisher_exact(table)[1]) if others else None
        rows.append({**cohort, "p_value": p_value, "best": cohort["impact_ratio"] == 1.0,
                     "significant": p_value is not None and p_value < SIGNIFICANCE})
    return rows


def _groups(run_dir: Path) -> list[dict]:
    """Outcomes by citizen group (template), the other trait the scenario names."""
    file, _ = TABLES["journeys"]
    if not (run_dir / file).is_file():
        return []
    frame = pd.read_csv(run_dir / file, dtype={"group": str, "outcome": str})
    if frame.empty:
        return []
    table = frame.pivot_table(index="group", columns="outcome", values="citizens",
                              aggfunc="sum", fill_value=0)
    return [{"group": group, "citizens": int(row.sum()),
             "by_outcome": {k: int(v) for k, v in row.items() if v}}
            for group, row in table.iterrows()]


def _legal_by_cohort(run_dir: Path, counters: dict) -> tuple[list[dict], dict]:
    rows, other = target_values(run_dir, counters, "legal_blocks",
                                lambda r: (r["reason"], r["age_band"], r["veteran"] == "True"),
                                value_of=lambda key: key[0], limit=TOP_VALUES)
    return [{"reason": reason, "age_band": band, "veteran": veteran, "count": n}
            for (reason, band, veteran), n in rows], other
