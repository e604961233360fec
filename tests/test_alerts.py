"""Alerts from live figures (esr/alerts.py): pure data in and out, no Locust, no clock.

Each test feeds LiveAlerts a run's live.json documents, one a second as the load process
writes them, and reads what it says: once per episode, not once a second.
"""

from __future__ import annotations

from pathlib import Path

from esr.alerts import (
    DEFAULT_P95_MS,
    ERROR_MIN_REQUESTS,
    WINDOW_S,
    Alert,
    LiveAlerts,
    clock,
    p95_slo_ms,
)
from esr.scenario.reader import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def live(at_s: float, *, started: int = 0, endpoints: dict | None = None, p95: float | None = 50,
         chaos: list | None = None, citizens: int = 100, final: bool = False) -> dict:
    """A live.json document with the keys alerts read (engine/conducting.py writes them)."""
    return {"run_id": "r", "final": final, "elapsed_s": at_s, "phase": "plateau",
            "citizens": citizens, "journeys_started": started, "p95_ms": p95,
            "endpoints": {name: {"requests": r, "failures": f}
                          for name, (r, f) in (endpoints or {}).items()},
            "chaos": chaos or []}


def feed(alerts: LiveAlerts, documents) -> list[str]:
    return [alert.line() for document in documents for alert in alerts.observe(document)]


def steady_endpoint(seconds: range, per_s: int, failing_share=lambda t: 0.0) -> list[tuple]:
    """Cumulative (requests, failures) of an endpoint asked per_s a second, second by second."""
    totals, requests, failures = [], 0, 0
    for t in seconds:
        requests += per_s
        failures += round(per_s * failing_share(t))
        totals.append((requests, failures))
    return totals


# ---- the form of an alert ----------------------------------------------------------------------


def test_an_alert_reads_as_the_console_shows_it():
    alert = Alert("error_spike", "ERROR spikes on /eligibility -> 14 %", 8.7)
    assert alert.line() == "00:08  ERROR spikes on /eligibility -> 14 %"
    assert alert.as_dict() == {"kind": "error_spike", "at_s": 8.7, "line": alert.line(),
                               "message": "ERROR spikes on /eligibility -> 14 %"}
    assert [clock(s) for s in (0, 59.9, 61, 3599, 3600, 7322, -1)] == [
        "00:00", "00:59", "01:01", "59:59", "1:00:00", "2:02:02", "00:00"]


def test_the_p95_threshold_is_the_scenarios_whole_run_slo_or_a_default():
    demo = load_scenario(ROOT / "examples" / "demo.yml")
    assert p95_slo_ms(demo) == 450
    assert LiveAlerts.for_scenario(demo).p95_threshold == 450
    assert p95_slo_ms(load_scenario(ROOT / "examples" / "hitl_skip.yml")) is None
    assert LiveAlerts().p95_threshold == DEFAULT_P95_MS


# ---- once per episode ---------------------------------------------------------------------------


def test_p95_speaks_once_above_and_once_back_under():
    alerts = LiveAlerts(p95_slo_ms=500)
    p95s = [300, 450, 680, 900, 700, 520, 480, 420, 390, 350, 610, 620]
    lines = feed(alerts, [live(t, p95=p95) for t, p95 in enumerate(p95s, 1)])
    # 480 and 420 are under the SLO but not clearly (80% of it): the episode goes on.
    assert lines == ["00:03  p95 latency: 680 ms, above the SLO of 500 ms",
                     "00:09  p95 latency: 390 ms, back under the SLO of 500 ms",
                     "00:11  p95 latency: 610 ms, above the SLO of 500 ms"]


def test_p95_without_an_slo_is_judged_against_the_default():
    lines = feed(LiveAlerts(), [live(1, p95=None), live(2, p95=900), live(3, p95=1_240)])
    assert lines == ["00:03  p95 latency: 1,240 ms, above 1,000 ms"]


def test_an_error_spike_is_said_once_then_its_end():
    seconds = range(1, 41)
    # /eligibility: 40 requests a second, 35% of them failing from second 11 to 20.
    eligibility = steady_endpoint(seconds, 40, lambda t: 0.35 if 11 <= t <= 20 else 0.0)
    status = steady_endpoint(seconds, 30)
    lines = feed(LiveAlerts(), [live(t, endpoints={"/eligibility": e, "/status": s})
                                for t, e, s in zip(seconds, eligibility, status, strict=True)])
    # Over the last 6 s: 2 failing seconds of 6 are 12% (the threshold is 10%); the end once
    # the window holds no failing second (below 5%), said once.
    assert lines == ["00:12  ERROR spikes on /eligibility -> 12 %",
                     "00:26  errors on /eligibility back to 0 %"]


def test_the_error_rate_is_over_the_last_window_and_needs_enough_requests():
    alerts = LiveAlerts()
    # Every request failing, but too few of them to judge.
    few = [live(t, endpoints={"/pay": (t * 2, t * 2)}) for t in range(1, 8)]
    assert ERROR_MIN_REQUESTS > 2 * WINDOW_S and feed(alerts, few) == []
    # A long healthy run, then a burst: judged on the window, not diluted by the whole run.
    alerts = LiveAlerts()
    healthy = [live(t, endpoints={"/pay": (100 * t, 0)}) for t in range(1, 301)]
    burst = [live(300 + t, endpoints={"/pay": (30_000 + 100 * t, 50 * t)}) for t in range(1, 3)]
    assert feed(alerts, healthy) == []
    # 50 of the last 600 requests failed (8%), then 100 (17%).
    assert feed(alerts, burst) == ["05:02  ERROR spikes on /pay -> 17 %"]


def test_citizens_started_is_said_when_it_changes_notably():
    rates = [2_000] * 10 + [2_300] * 8 + [4_200] * 8 + [4_000] * 5
    started, documents = 0, []
    for t, rate in enumerate(rates, 1):
        started += rate
        documents.append(live(t, started=started))
    documents.append(live(len(rates) + 1, started=started, citizens=0))  # stopped: no rate
    documents.append(live(len(rates) + 2, started=started, final=True))
    # The first rate needs a window with figures from its start (workers report late); then
    # 2,300/s is no news (+15%), and the rise to 4,200/s is said once, on its way (+62%).
    assert feed(LiveAlerts(), documents) == ["00:07  citizens started: 2,000/s",
                                             "00:21  citizens started: 3,250/s"]


def test_a_chaos_action_is_said_when_it_starts_and_when_it_ends():
    kill = {"index": 0, "action": "kill_pod", "target": "svc-fee", "since_s": 6.02,
            "for_s": 3.0}
    forever = {"index": 1, "action": "latency", "target": "", "since_s": 7.5, "for_s": None}
    documents = [live(6.5, chaos=[kill]), live(7.5, chaos=[kill]), live(8.5, chaos=[kill, forever]),
                 live(9.5, chaos=[forever]), live(10.5, chaos=[forever])]
    assert feed(LiveAlerts(), documents) == [
        "00:06  chaos: kill_pod svc-fee started (for 3s)",
        "00:07  chaos: latency started",
        "00:09  chaos: kill_pod svc-fee ended"]


def test_what_an_actions_end_let_recover_is_said_before_the_end():
    kill = {"index": 0, "action": "kill_pod", "target": "svc-fee", "since_s": 1.0, "for_s": 3}
    alerts = LiveAlerts(p95_slo_ms=100)
    alerts.observe(live(1, p95=500, chaos=[kill]))
    assert [a.message for a in alerts.observe(live(4, p95=10))] == [
        "p95 latency: 10 ms, back under the SLO of 100 ms", "chaos: kill_pod svc-fee ended"]


def test_the_same_document_twice_or_an_older_one_says_nothing_again():
    alerts = LiveAlerts(p95_slo_ms=100)
    document = live(3, p95=500)
    assert len(alerts.observe(document)) == 1
    assert alerts.observe(document) == []  # the launcher reads live.json twice a second
    assert alerts.observe(live(2, p95=10)) == []
    assert alerts.observe({"phase": "starting"}) == []  # no elapsed_s: nothing to place
