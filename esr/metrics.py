"""ESR's figures for Prometheus: what `--metrics-bind` serves (no Locust here).

The names below are the contract with dashboards (deploy/grafana/esr.json) and alert rules:
rename one only with them.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_METRICS_PORT = 9646


class Metric(NamedTuple):
    kind: str  # counter, gauge, histogram, info (prometheus-client's families)
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
