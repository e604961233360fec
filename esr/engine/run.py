"""A Locust process's part in an ESR run: what every role shares.

Locust splits its runners by role; ESR does the same, once, at `init` (roles.py):
a single process both acts (citizens, probes: acting.py) and conducts (the timeline,
the tally, chaos, the results: conducting.py); a master conducts and hears its
workers (master.py); a worker acts and reports to its master (worker.py). From
`init` on, `environment.esr` is the process's run.

ESR's options are read once, when the process starts (`EngineOptions`): Locust's web
form writes any posted field that matches an option into `parsed_options`, so they
are never read from there again. A worker takes its per-run values from its master
by ESR's own message (messages.RUN), not from the options Locust forwards.
"""

from __future__ import annotations

import gc
import random
import sys
from dataclasses import dataclass

from esr.engine import locust_compat as compat
from esr.engine.chaos import Fault
from esr.engine.journey import DEFAULT_STEP, StepRenderer
from esr.permissions import PERMISSIONS, granted_by, named_on
from esr.scenario.model import Scenario
from esr.scenario.stages import Phase, plan_stages
from esr.units import Span
from esr.wire import HITL_SKIP_HEADER, STOP_TIMEOUT_S, SYNTHETIC_HEADER, USER_AGENT, baggage

ADHOC_RUN_ID = "esr-adhoc"  # requests of a process given no run id (plain `locust -f`)


def add_options(parser, **_) -> None:
    """ESR's options on Locust's command line (`init_command_line_parser`)."""
    group = parser.add_argument_group("ESR")
    group.add_argument("--esr-run-dir", default="", help="ESR run directory")
    group.add_argument("--esr-run-id", default="", help="label sent as X-ESR-Synthetic")
    group.add_argument("--esr-time-scale", type=float, default=1.0,
                       help="multiply the scenario's durations by this")
    group.add_argument("--esr-user-scale", type=float, default=1.0,
                       help="multiply the scenario's citizen counts by this")
    for permission in PERMISSIONS:  # a scenario may make HTTP requests, and only these more
        group.add_argument(permission.engine_flag, action="store_true", default=False,
                           help=permission.help)
    group.add_argument("--esr-request-log", default="",
                       help="folder for a raw log of every request (for checking ESR's "
                            "figures; costly, not for load)")
    group.add_argument("--esr-reports-dir", default="reports",
                       help="web UI: where each run started from the browser gets its "
                            "run directory and report card")
    compat.hide_from_web_form(parser, "esr_")


@dataclass(frozen=True)
class EngineOptions:
    """ESR's options as the process was started with them; nothing posted can change them."""

    run_id: str = ""
    run_dir: str = ""
    time_scale: float = 1.0
    user_scale: float = 1.0
    request_log: str = ""
    reports_dir: str = "reports"
    granted: frozenset[str] = frozenset()  # permissions beyond HTTP (permissions.py)

    @classmethod
    def read(cls, parsed_options, argv: list[str]) -> EngineOptions:
        values = {name: getattr(parsed_options, f"esr_{name}", default)
                  for name, default in vars(cls()).items() if name != "granted"}
        # A permission counts only when its flag is on the command line itself: Locust also
        # reads options from locust.conf or pyproject.toml in the working directory.
        granted = granted_by(parsed_options, engine=True) & named_on(argv, engine=True)
        return cls(**values, granted=granted)


class Run:
    """The scenario, the run's settings (id, scales, stage table), and the test's life events.

    Roles extend `on_test_start`, `on_test_stop` and `on_quitting`, calling super()."""

    def __init__(self, environment, scenario: Scenario):
        self.environment = environment
        self.scenario = scenario
        self.options = EngineOptions.read(environment.parsed_options, sys.argv)
        self.renderers = [StepRenderer(step) for step in scenario.journey or (DEFAULT_STEP,)]
        self.jitter_ms = scenario.network_jitter_ms
        self.report_traits = scenario.report_traits
        self.random = random.Random()
        self.faults: list[Fault] = []  # client-side chaos in force (latency, error_rate)
        self.arrivals = None  # the open model's schedule, where citizens act (acting.py)
        # Requests this process's citizens started, and those not answered yet: what a lost
        # worker may have had the target count without reporting it (lost_workers.py).
        self.requests_sent = self.requests_in_flight = 0
        # Citizens stopped without a timeout would be killed mid-request (Locust's default 0,
        # as in its web UI): always give them time to finish. Workers get the master's value.
        compat.give_users_time_to_stop(environment, STOP_TIMEOUT_S)
        self.run_id, self.time_scale, self.user_scale = ADHOC_RUN_ID, 1.0, 1.0
        self.headers: dict[str, str] = {}
        self._baggage: dict[str, str] = {}  # by age band
        self._contexts: dict[tuple, dict] = {}  # by cohort
        self.phases: tuple[Phase, ...] = ()
        self.set_run(self.options.run_id or ADHOC_RUN_ID, self.options.time_scale or 1.0,
                     self.options.user_scale or 1.0)
        events = environment.events
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)
        compat.warm_up_stop()

    def set_run(self, run_id: str, time_scale: float, user_scale: float) -> None:
        """Name the run and scale it: what each request carries, and the stage table."""
        self.run_id, self.time_scale, self.user_scale = run_id, time_scale, user_scale
        self.headers = {SYNTHETIC_HEADER: run_id, "User-Agent": USER_AGENT,
                        **({HITL_SKIP_HEADER: "true"} if self.scenario.hitl_skip else {})}
        self._baggage = {}
        self.phases = plan_stages(self.scenario, time_scale, user_scale)

    def baggage(self, age_band: str) -> str | None:
        """The W3C baggage a citizen of this age band sends with each request (wire.py), or
        None if the scenario says trace_context: false."""
        if not self.scenario.trace_context:
            return None
        text = self._baggage.get(age_band)
        if text is None:  # one per age band: a handful
            text = self._baggage[age_band] = baggage(self.run_id, age_band)
        return text

    def cohort_context(self, age_band: str, veteran: bool) -> dict:
        """What a citizen of this cohort adds to its requests' context (User.context): one
        dict per cohort, shared, never changed (Locust merges it into a new dict)."""
        context = self._contexts.get((age_band, veteran))
        if context is None:  # one per cohort: a handful
            context = self._contexts[age_band, veteran] = {"cohort": (age_band, veteran)}
        return context

    @property
    def duration_s(self) -> float:
        return max(phase.end for phase in self.phases)

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def think(self, span: Span, rng) -> float:
        low, high = span.low, span.high
        return (low if low == high else rng.uniform(low, high)) * self.time_scale

    # ---- the test's life -------------------------------------------------------------------

    def on_test_start(self, environment, **_) -> None:
        # What exists by now (modules, identity pools, compiled templates) lives as long as
        # the process: out of the collector's way, full collections during load are cheap.
        gc.collect()
        gc.freeze()

    def on_test_stop(self, environment, **_) -> None:
        gc.unfreeze()  # the stopped citizens may go

    def on_quitting(self, environment, **_) -> None:
        pass
