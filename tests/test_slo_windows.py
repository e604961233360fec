"""SLO checks over sliding windows (esr/report/summary.py `worst_windows`): a bad minute
cannot hide in a good half hour.

Latency rows as the run directory holds them, one per endpoint and time bucket, built here
with exactly the failures and latencies each bucket needs; test_chaos.py shows the same
on a real run with a real outage.
"""

from __future__ import annotations

import pytest

from esr.engine.probes import new_histogram
from esr.report.summary import evaluate_slos, worst_windows

T0 = 1_800_000_000.0  # bucket starts are epoch seconds
SUMMARY = {"cohorts": [], "chaos": []}  # what run-level metrics would read


def bucket(second: int, requests: int = 100, failures: int = 0, ms: float = 10.0,
           endpoint: str = "apply") -> tuple[dict, object]:
    histogram = new_histogram()
    histogram.record_value(int(ms * 1000), requests)  # microseconds, as the probes record
    row = {"endpoint": endpoint, "bucket_start": T0 + second, "bucket_s": 1.0,
           "requests": requests, "failures": failures, "total_ms": ms * requests, "max_ms": ms}
    return row, histogram


def check(metric: str, threshold: float, endpoint: str | None = None) -> dict:
    return {"metric": metric, "threshold": threshold, "endpoint": endpoint}


def test_the_worst_window_fails_a_run_that_passes_as_a_whole():
    latency = [bucket(s, failures=60 if s in (4, 5) else 0) for s in range(10)]
    (windowed,) = worst_windows([check("error_rate", 0.4)], SUMMARY, latency, 2.0)
    assert windowed == {"name": "error_rate (every 2s window)", "metric": "error_rate",
                        "threshold": 0.4, "actual": 0.6, "passed": False, "window_s": 2.0,
                        "worst_at_s": 4.0}
    whole = {**SUMMARY, "requests": {"total": 1000, "failures": 120}, "endpoints": []}
    assert evaluate_slos([check("error_rate", 0.4)], whole)["checks"][0]["passed"] is True


def test_a_ceiling_s_worst_window_is_its_highest_and_the_first_of_equals():
    latency = [bucket(s, ms=900.0 if s == 3 else 10.0) for s in range(8)]
    (windowed,) = worst_windows([check("p95_ms", 500)], SUMMARY, latency, 2.0)
    assert windowed["actual"] == pytest.approx(900, rel=0.01) and not windowed["passed"]
    assert windowed["worst_at_s"] == 2.0  # [2, 4) and [3, 5) are equally bad: the first


def test_a_floor_s_worst_window_is_its_lowest():
    # No traffic in second 6: the windows holding it carry half the requests.
    latency = [bucket(s) for s in range(10) if s != 6]
    (windowed,) = worst_windows([check("rps_min", 80)], SUMMARY, latency, 2.0)
    assert (windowed["actual"], windowed["passed"], windowed["worst_at_s"]) == (50.0, False, 5.0)


def test_windows_fit_in_the_run_and_a_short_run_is_one_window():
    latency = [bucket(s, failures=100 if s == 9 else 0) for s in range(10)]
    # The last window starting at second 8 holds the failing second 9 in full.
    (windowed,) = worst_windows([check("error_rate", 0.1)], SUMMARY, latency, 2.0)
    assert (windowed["actual"], windowed["worst_at_s"]) == (0.5, 8.0)
    # A window longer than the run: the run is its one window.
    (whole,) = worst_windows([check("error_rate", 0.1)], SUMMARY, latency, 60.0)
    assert (whole["actual"], whole["worst_at_s"], whole["passed"]) == (0.1, 0.0, True)
    assert worst_windows([check("error_rate", 0.1)], SUMMARY, [], 2.0) == []


def test_endpoint_checks_skip_windows_without_that_endpoint_and_run_metrics_are_not_windowed():
    latency = [bucket(s) for s in range(6)] + [
        bucket(s, endpoint="status", ms=300.0 if s == 4 else 20.0) for s in (1, 4)]
    checks = [check("p95_ms", 100, endpoint="status"), check("impact_ratio_min", 0.8),
              check("recovery_time_s", 30), check("error_rate", 0.01)]
    windowed = worst_windows(checks, SUMMARY, latency, 2.0)
    assert [c["name"] for c in windowed] == ["status p95_ms (every 2s window)",
                                             "error_rate (every 2s window)"]
    status, errors = windowed
    assert status["actual"] == pytest.approx(300, rel=0.01) and status["worst_at_s"] == 3.0
    assert (errors["actual"], errors["passed"]) == (0.0, True)
