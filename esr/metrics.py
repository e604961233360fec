"""ESR's figures for Prometheus: what `--metrics-bind` serves (no Locust here).

The names below are the contract with dashboards (deploy/grafana/esr.json) and alert rules:
rename one only with them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from esr.arguments import DEFAULT_METRICS_PORT  # noqa: F401 (the port dashboards expect)
from esr.bounded import clip
from esr.report.summary import cohorts, evaluate_slos
from esr.run_directory import LIVE, RUN_SETTINGS, SUMMARY, read_json


class Metric(NamedTuple):
    kind: str  # counter, gauge or histogram (prometheus-client's families)
    labels: tuple[str, ...]
    help: str


# Names as exported; a counter's samples end in _total, a histogram's in _bucket/_sum/_count.
METRICS: dict[str, Metric] = {
    "esr_run_info": Metric("gauge", ("run", "scenario", "esr_version"),
                           "1 for each run this process reports on"),
    "esr_requests_total": Metric("counter", ("run", "endpoint", "method", "status_class"),
                                 "requests sent, by the class of the answer's status "
                                 "(1xx-5xx; none when no answer came)"),
    "esr_request_failures_total": Metric("counter", ("run", "endpoint", "method"),
                                         "requests counted as failures"),
    "esr_request_duration_seconds": Metric("histogram", ("run", "endpoint"),
                                           "time from sending a request to its answer; the "
                                           "buckets include the scenario's SLO thresholds"),
    "esr_citizens_active": Metric("gauge", ("run",), "citizens running now"),
    "esr_citizens_started_total": Metric("counter", ("run",), "citizen journeys begun"),
    "esr_journeys_total": Metric("counter", ("run", "age_band", "veteran", "outcome"),
                                 "citizen journeys ended, by cohort and outcome"),
    "esr_chaos_in_force": Metric("gauge", ("run", "action", "target"),
                                 "1 while a chaos action is in force"),
    "esr_slo_passing": Metric("gauge", ("run", "check"),
                              "1 while an SLO check passes over the run so far, 0 when not"),
    "esr_arrivals_late_total": Metric("counter", ("run",),
                                      "open model: arrivals that started behind schedule"),
    "esr_arrivals_missed_total": Metric("counter", ("run",),
                                        "open model: arrivals that never started"),
    "esr_workers": Metric("gauge", ("run",), "workers connected to the run's master"),
    "esr_service_queue_length": Metric("gauge", (), "the service's runs waiting to start"),
    "esr_service_runs": Metric("gauge", ("status",), "the service's runs, by status"),
}


# ---- families from a run's files ------------------------------------------------------------

LABEL_CHARS_MAX = 100  # a label value from a scenario is cut there: series stay bounded


def families(run_dirs: list[Path], service: dict | None = None) -> list:
    """Every family, with samples for each run directory that has live figures (live.json)
    and, for the service, its queue: a snapshot read afresh at each scrape."""
    out = {name: _family(name, metric) for name, metric in METRICS.items()}
    for run_dir in run_dirs:
        live = _read(run_dir / LIVE)
        settings = _read(run_dir / RUN_SETTINGS)
        if live is not None and settings is not None:
            _add_run(out, live, settings, _read(run_dir / SUMMARY))
    if service is not None:
        out["esr_service_queue_length"].add_metric([], service["queued"])
        for status, n in sorted(service["by_status"].items()):
            out["esr_service_runs"].add_metric([status], n)
    return list(out.values())


def _family(name: str, metric: Metric):
    kind = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
            "histogram": HistogramMetricFamily}[metric.kind]
    return kind(name, metric.help, labels=metric.labels)


def _add_run(out: dict, live: dict, settings: dict, summary: dict | None) -> None:
    run = live["run_id"]

    def add(name: str, labels: tuple, value: float) -> None:
        out[name].add_metric([run, *(_label(v) for v in labels)], value)

    add("esr_run_info", (settings.get("scenario_name", ""), settings.get("esr_version", "")), 1)
    failures: Counter = Counter()
    for endpoint, method, status_class, n in live.get("answers", []):
        add("esr_requests_total", (endpoint, method, status_class), n)
    for name, figures in live.get("endpoints", {}).items():
        failures[name] += figures["failures"]
    methods = _methods(live)
    for name, n in failures.items():
        add("esr_request_failures_total", (name, methods.get(name, "")), n)
    bounds = [f"{b / 1000:g}" for b in live.get("duration_le_ms", [])] + ["+Inf"]
    for name, counts in live.get("durations", {}).items():
        total_ms = live["endpoints"].get(name, {}).get("total_ms", 0.0)
        out["esr_request_duration_seconds"].add_metric(
            [run, _label(name)], list(zip(bounds, accumulate(counts), strict=True)),
            total_ms / 1000)
    add("esr_citizens_active", (), live.get("citizens", 0))
    add("esr_citizens_started_total", (), live.get("journeys_started", 0))
    for band, veteran, outcome, n in live.get("journeys", []):
        add("esr_journeys_total", (band, str(bool(veteran)).lower(), outcome), n)
    for action in live.get("chaos", []):
        add("esr_chaos_in_force", (action["action"], action["target"]), 1)
    for check, passing in _slo_states(live, settings, summary).items():
        add("esr_slo_passing", (check,), int(passing))
    arrivals = live.get("arrivals", {})
    add("esr_arrivals_late_total", (), arrivals.get("late", 0))
    add("esr_arrivals_missed_total", (), arrivals.get("missed", 0))
    add("esr_workers", (), live.get("workers", 0))


def _methods(live: dict) -> dict[str, str]:
    """Each endpoint's method ("GET|POST" when a name is used with several)."""
    methods: dict[str, set] = {}
    for endpoint, method, _, _ in live.get("answers", []):
        methods.setdefault(endpoint, set()).add(method)
    return {endpoint: "|".join(sorted(m)) for endpoint, m in methods.items()}


def _slo_states(live: dict, settings: dict, summary: dict | None) -> dict[str, bool]:
    """Each SLO check's state: the summary's verdict once written; meanwhile the checks the
    live figures can judge over the run so far (not recovery times or sliding windows)."""
    if summary is not None:
        return {c["name"]: c["passed"] for c in summary["slo"]["checks"]}
    if not live.get("overall"):  # no request folded in yet
        return {}
    checks = [c for c in settings.get("slo", []) if c["metric"] != "recovery_time_s"]
    so_far = {"requests": {**live["overall"], "total": live["overall"]["requests"],
                           "rps": live["overall"]["requests"] / live["elapsed_s"]
                           if live.get("elapsed_s") else 0.0},
              "endpoints": [{"name": name, **figures}
                            for name, figures in live.get("endpoints", {}).items()],
              "cohorts": cohorts((band, veteran, outcome, n)
                                 for band, veteran, outcome, n in live.get("journeys", [])),
              "duration_s": live.get("elapsed_s", 0.0)}
    if not so_far["requests"]["total"]:
        return {}
    return {c["name"]: c["passed"] for c in evaluate_slos(checks, so_far)["checks"]}


def _label(value) -> str:
    return clip(str(value))[:LABEL_CHARS_MAX]


def _read(path: Path) -> dict | None:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


# ---- the endpoint ---------------------------------------------------------------------------


class MetricsServer:
    """http://HOST:PORT/metrics in Prometheus's text format, read afresh from the run
    directories at each scrape (a thread of its own; port 0 picks a free one)."""

    def __init__(self, bind: tuple[str, int], run_dirs: Callable[[], list[Path]],
                 service: Callable[[], dict] | None = None):
        self._run_dirs, self._service = run_dirs, service
        self._scraped = threading.Condition()
        self.scrapes = 0
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._httpd, _ = start_http_server(bind[1], addr=bind[0], registry=registry)
        host = bind[0] if bind[0] not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.url = f"http://{host}:{self._httpd.server_port}/metrics"

    def collect(self):
        try:
            return families(self._run_dirs(), self._service() if self._service else None)
        finally:
            with self._scraped:
                self.scrapes += 1
                self._scraped.notify_all()

    def linger(self, timeout_s: float) -> bool:
        """After a run: when something scraped during it, wait (at most `timeout_s`) for one
        scrape of the final figures, so the last seconds are not lost to Prometheus."""
        with self._scraped:
            seen = self.scrapes
            return seen == 0 or self._scraped.wait_for(lambda: self.scrapes > seen, timeout_s)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def latest_run(reports_dir: Path) -> list[Path]:
    """The run directory whose live figures changed last (the web UI's runs each have one)."""
    lives = [(path.stat().st_mtime, path.parent) for path in reports_dir.glob(f"*/{LIVE}")]
    return [max(lives)[1]] if lives else []
