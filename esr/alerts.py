"""Alerts: what someone watching a run should hear about, derived from its live figures.

The load process writes `live.json` about once a second (engine/conducting.py): cumulative
counts (journeys started, requests and failures per endpoint), Locust's rolling p95, and
the chaos actions in force. `LiveAlerts` is fed those documents in order and answers the
alerts each one raises. It is pure: data in, data out, no clock of its own (times are the
run's, `elapsed_s`), no Locust, so the console of `esr-locust run`, the service and tests
all use the same one.

Each alert speaks once per episode, not once a second: an error spike is announced when an
endpoint's error rate over the last WINDOW_S crosses ERROR_SPIKE_RATE, and not again until
it has fallen below ERROR_CALM_RATE (which is announced too); p95 likewise around the
scenario's SLO (or DEFAULT_P95_MS), with P95_BACK_UNDER as the way back; the rate at which
citizens start is announced when it has moved by RATE_CHANGE of the rate last announced;
a chaos action when it starts and when it ends.

With workers, the master hears of requests in each worker's report (every 3 s), so counts
arrive in steps: rates are taken over WINDOW_S, which spans more than one report of each.
An action shorter than the gap between two live figures may not be seen at all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from esr.units import format_duration

if TYPE_CHECKING:  # a light module: whoever watches a run need not load the language
    from esr.scenario.model import Scenario

DEFAULT_P95_MS = 1000.0  # a p95 threshold when the scenario's SLO names none
P95_BACK_UNDER = 0.8  # a p95 episode ends below this share of the threshold
# Error rates and citizens started per second are taken over this window: two intervals of
# workers' reports (Locust's 3 s), so that it always holds two reports of each worker.
WINDOW_S = 6.0
ERROR_MIN_REQUESTS = 20  # an endpoint's window needs this many requests to be judged
ERROR_SPIKE_RATE = 0.10  # an error rate at or above this starts an episode
ERROR_CALM_RATE = 0.05  # ... and below this ends it
RATE_CHANGE = 0.5  # citizens started per second, announced again when moved by half
RATE_MIN = 1.0  # citizens started per second below this are not announced

KINDS = ("citizens_rate", "p95", "error_spike", "chaos")


@dataclass(frozen=True)
class Alert:
    kind: str  # one of KINDS
    message: str  # "ERROR spikes on /eligibility -> 14 %"
    at_s: float  # seconds into the run

    def line(self) -> str:
        """The console's form: "00:08  ERROR spikes on /eligibility -> 14 %"."""
        return f"{clock(self.at_s)}  {self.message}"

    def as_dict(self) -> dict:
        return {**asdict(self), "line": self.line()}


def clock(seconds: float) -> str:
    """Run time as mm:ss, or h:mm:ss from the first hour on."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def p95_slo_ms(scenario: Scenario) -> float | None:
    """The scenario's whole-run p95 ceiling (slo: {p95_ms: …}), if it has one."""
    return next((check.threshold for check in scenario.slo.checks
                 if check.metric == "p95_ms" and check.endpoint is None), None)


@dataclass(frozen=True)
class _Figures:
    """The cumulative counts of one live document."""

    at_s: float
    started: int
    endpoints: dict[str, tuple[int, int]]  # name -> (requests, failures)


class LiveAlerts:
    """Feed it each live.json document of one run, in order; it returns the new alerts."""

    def __init__(self, p95_slo_ms: float | None = None, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.p95_threshold = p95_slo_ms or DEFAULT_P95_MS
        self.p95_is_slo = p95_slo_ms is not None
        # Figures of the last window and one older (the window's base); the run's start
        # is the first base: everything counted is zero there.
        self._history: deque[_Figures] = deque([_Figures(0.0, 0, {})])
        self._rate_announced: float | None = None
        self._p95_above = False
        self._spiking: set[str] = set()  # endpoints in an error episode
        self._chaos: dict[object, dict] = {}  # actions in force, by index

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> LiveAlerts:
        return cls(p95_slo_ms(scenario))

    def observe(self, live: dict) -> list[Alert]:
        """The alerts this document raises; none for one no newer than the last seen."""
        at_s = live.get("elapsed_s")
        if not isinstance(at_s, (int, float)) or at_s <= self._history[-1].at_s:
            return []
        now = _Figures(float(at_s), int(live.get("journeys_started") or 0), {
            name: (int(figures.get("requests", 0)), int(figures.get("failures", 0)))
            for name, figures in (live.get("endpoints") or {}).items()})
        self._history.append(now)
        while len(self._history) > 2 and self._history[1].at_s <= now.at_s - self.window_s:
            self._history.popleft()
        base = self._history[0]
        started, ended = self._chaos_alerts(live.get("chaos") or [], now.at_s)
        alerts = [*started, *self._p95_alerts(live.get("p95_ms"), now.at_s),
                  *self._error_alerts(base, now)]
        # Only over a window that had figures from its start (workers' first reports come
        # seconds into the run), and not once the citizens are stopped (the last reports
        # come in a lump): neither would be a rate worth saying.
        if base.started and live.get("citizens") and not live.get("final"):
            alerts += self._rate_alerts(base, now)
        # What an action's end let recover is said before the end itself (stable sort).
        return sorted([*alerts, *ended], key=lambda alert: alert.at_s)

    # ---- each kind -------------------------------------------------------------------------

    def _rate_alerts(self, base: _Figures, now: _Figures) -> list[Alert]:
        rate = (now.started - base.started) / (now.at_s - base.at_s)
        last = self._rate_announced
        if rate < RATE_MIN and last is None:
            return []
        if last is not None and abs(rate - last) < RATE_CHANGE * max(last, RATE_MIN):
            return []
        self._rate_announced = rate
        return [Alert("citizens_rate", f"citizens started: {_per_second(rate)}", now.at_s)]

    def _p95_alerts(self, p95: object, at_s: float) -> list[Alert]:
        if not isinstance(p95, (int, float)):
            return []
        limit = f"{'the SLO of ' if self.p95_is_slo else ''}{self.p95_threshold:,.0f} ms"
        if not self._p95_above and p95 > self.p95_threshold:
            self._p95_above = True
            return [Alert("p95", f"p95 latency: {p95:,.0f} ms, above {limit}", at_s)]
        if self._p95_above and p95 < P95_BACK_UNDER * self.p95_threshold:
            self._p95_above = False
            return [Alert("p95", f"p95 latency: {p95:,.0f} ms, back under {limit}", at_s)]
        return []

    def _error_alerts(self, base: _Figures, now: _Figures) -> list[Alert]:
        alerts = []
        for name, (requests, failures) in now.endpoints.items():
            before_requests, before_failures = base.endpoints.get(name, (0, 0))
            window_requests = requests - before_requests
            if window_requests < ERROR_MIN_REQUESTS:
                continue
            rate = (failures - before_failures) / window_requests
            if name not in self._spiking and rate >= ERROR_SPIKE_RATE:
                self._spiking.add(name)
                alerts.append(Alert("error_spike", f"ERROR spikes on {name} -> {_percent(rate)}",
                                    now.at_s))
            elif name in self._spiking and rate < ERROR_CALM_RATE:
                self._spiking.discard(name)
                alerts.append(Alert("error_spike", f"errors on {name} back to {_percent(rate)}",
                                    now.at_s))
        return alerts

    def _chaos_alerts(self, in_force: list[dict], at_s: float
                      ) -> tuple[list[Alert], list[Alert]]:
        """The actions that started (at their own start time), and those that ended."""
        current = {entry.get("index", (entry.get("action"), entry.get("target"))): entry
                   for entry in in_force if isinstance(entry, dict)}
        started = []
        for key, entry in current.items():
            if key not in self._chaos:
                lasting = entry.get("for_s")
                since = entry.get("since_s")
                started.append(Alert("chaos", f"chaos: {_action(entry)} started"
                                     + (f" (for {format_duration(lasting)})" if lasting else ""),
                                     since if isinstance(since, (int, float)) else at_s))
        ended = [Alert("chaos", f"chaos: {_action(entry)} ended", at_s)
                 for key, entry in self._chaos.items() if key not in current]
        self._chaos = current
        return started, ended


def _action(entry: dict) -> str:
    return " ".join(str(entry[key]) for key in ("action", "target") if entry.get(key))


def _per_second(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"


def _percent(rate: float) -> str:
    return f"{rate * 100:.0f} %"
