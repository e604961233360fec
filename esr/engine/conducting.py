"""The side of a run that conducts it (a single process, or a master): the timeline, chaos,
the tally of what every process reported, live progress, a stop that loses nothing, and
the run's files.

The end of a run follows the order LOCUST_NOTES.md (the team's notes on Locust) found reliable: the
conductor stops the citizens (they finish the request they are in), each worker sends
its remainder from its own test_stop, the master waits for every worker's final report
(master.py), and only then lets Locust quit and writes the probe tables.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import gevent

from esr import __version__
from esr.engine import locust_compat as compat
from esr.engine.chaos import Chaos, Fault
from esr.engine.probes import Tally
from esr.engine.run import Run
from esr.engine.web_runs import WebRuns
from esr.engine.web_ui import add_esr_to_web_ui
from esr.histograms import duration_bounds_ms
from esr.run_directory import LIVE, append_event, now_iso, write_json, write_tables
from esr.scenario.stages import Phase

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
# live.json names at most this many endpoints (the busiest): enough for any journey, and
# the file stays small whatever a locustfile names its requests.
LIVE_ENDPOINTS_MAX = 100


class Conducting(Run):
    # How far behind the conductor hears of requests (a master: the workers' report interval).
    report_lag_s = 0.0

    def __init__(self, environment, scenario):
        super().__init__(environment, scenario)
        self.tally = Tally()
        self.run_dir = Path(self.options.run_dir) if self.options.run_dir else None
        self.phase: Phase | None = None
        self.chaos: Chaos | None = None
        self.aborted: dict | None = None
        self.started_at: str | None = None
        self.held_back = HeldBack()
        self.started_s = 0.0  # time.time() at the run's start: live figures count from it
        self.runs_started = 0  # a run's number tells a loop of an earlier run to end
        self.ended_at: str | None = None
        self._finishing = None  # the greenlet of the graceful stop, once asked
        self._progress = None
        self.web_runs = WebRuns(self) if environment.web_ui is not None else None
        # Locust quits as soon as the shape greenlet ends, which our stop ends first: that
        # quit waits for the graceful stop, or the workers' last reports would be dropped.
        compat.before_quitting(environment.runner, self.wait_for_finish)
        if self.web_runs is None:
            gevent.signal_handler(signal.SIGUSR1, self.finish)
        else:
            add_esr_to_web_ui(self)
            # Ctrl-C in `esr-locust ui`, or docker stop: end the run in progress, then leave.
            gevent.signal_handler(signal.SIGUSR1, self.web_runs.shut_down)
            gevent.signal_handler(signal.SIGTERM, self.web_runs.shut_down)

    # ---- what roles differ in ----------------------------------------------------------------

    def collect(self) -> None:
        """Fold in what this process's own citizens did (a master has none)."""

    def reporting_workers(self) -> set[str]:
        """The workers whose final reports the stop waits for."""
        return set()

    def await_final_reports(self, expected: set[str]) -> None:
        """Wait for the expected workers' last reports (a single process has none)."""

    def spread_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def workers_now(self) -> int:
        return 0

    def pool_now(self) -> list[dict]:
        return []  # a single process has no workers

    def citizens_held(self) -> int | None:
        """How many citizens the run's load processes can hold in all (None: no limit known)."""
        return None

    def citizens_allowed(self, wanted: int) -> int:
        """The citizens the shape may ask for: what the load processes hold, at most."""
        return self.held_back.allowed(wanted, self.citizens_held(), self.workers_now(),
                                      self.run_dir)

    def results_of_workers(self) -> dict:
        return {"workers": 0, "lost_workers": []}

    def watch(self) -> None:
        """Called every progress tick (a master looks for lost workers)."""

    # ---- the run's life ----------------------------------------------------------------------

    def begin_run(self, run_id: str, run_dir: Path) -> None:
        """A run of its own in this process (a start in the web UI): id, directory, tally."""
        self.set_run(run_id, self.time_scale, self.user_scale)
        self.run_dir = run_dir
        self.tally = Tally()
        self.ended_at = self.aborted = self.phase = None

    @property
    def finishing(self) -> bool:
        return self._finishing is not None

    def on_test_start(self, environment, **kwargs) -> None:
        if self.web_runs is not None:
            self.web_runs.begin()  # a new run id and directory before anything uses them
        super().on_test_start(environment, **kwargs)
        self._finishing = None
        if self.web_runs is None:
            # Locust installs its own SIGTERM handler only after a headless shape ends.
            gevent.signal_handler(signal.SIGTERM, self.finish)
        self.started_at = now_iso()
        self.started_s = time.time()
        self.runs_started += 1
        append_event(self.run_dir, "test_start", run_id=self.run_id,
                     phases=[vars(p) for p in self.phases])
        if self._progress is None or self._progress.dead:
            self._progress = gevent.spawn(self._progress_loop)
        self.faults = []
        self.chaos = Chaos(self.scenario.chaos, host=environment.host or self.scenario.target,
                           time_scale=self.time_scale, run_dir=self.run_dir, started=self.started_s,
                           granted=self.options.granted,
                           spread=self.spread_fault,
                           changed=self._chaos_changed)
        self.chaos.start()
        if self.scenario.slo.abort_on_fail:
            gevent.spawn(AbortOnFail(self).watch)

    def on_test_stop(self, environment, **kwargs) -> None:
        super().on_test_stop(environment, **kwargs)
        if self.web_runs is not None:
            self.web_runs.stopped()

    def phase_entered(self, phase: Phase) -> None:
        if phase != self.phase:
            self.phase = phase
            append_event(self.run_dir, "phase", name=phase.name, citizens=phase.citizens,
                         start_s=phase.start, end_s=phase.end)

    # ---- a stop that loses nothing -----------------------------------------------------------

    def finish(self, *_) -> None:
        """End the run gracefully: at the shape's end, on SIGUSR1 (Ctrl-C in `esr-locust run`)
        or SIGTERM (docker stop)."""
        if self._finishing is None:
            self._finishing = gevent.spawn(self._finish)

    def finish_in(self, seconds: float) -> None:
        """finish() in so many seconds, unless this run has ended by then (in the web UI,
        another may have started)."""
        run_number = self.runs_started
        gevent.spawn_later(seconds, lambda: self.runs_started == run_number and self.finish())

    def _finish(self) -> None:
        if self.chaos is not None:
            self.chaos.end()
        append_event(self.run_dir, "stopping", phase=self.phase.name if self.phase else None)
        expected = self.reporting_workers()
        self.environment.runner.stop()  # citizens finish their request; workers report the rest
        self.await_final_reports(expected)

    def wait_for_finish(self) -> None:
        finishing = self._finishing
        if finishing is not None and finishing is not gevent.getcurrent():
            finishing.join()

    def on_quitting(self, environment, **kwargs) -> None:
        super().on_quitting(environment, **kwargs)
        if self.web_runs is not None:
            self.web_runs.await_concluded()
        if self.ended_at is None and (self.started_at is not None or self.web_runs is None):
            self.write_results()
        # Request failures are findings for the report, not a failed process; the
        # launcher decides the exit code from the SLOs.
        environment.process_exit_code = 0
        # Locust's CSV writer (--csv) rewrites its files once a second, and not at exit: now,
        # so they hold the last requests too.
        compat.write_csv_files_now(environment)

    def write_results(self) -> None:
        """The run's probe tables and counters, once every process has reported."""
        self.collect()
        self.ended_at = now_iso()
        if self.run_dir is None:
            return
        append_event(self.run_dir, "test_end")
        write_tables(self.run_dir, self.tally, {
            "run_id": self.run_id, "started_at": self.started_at, "ended_at": self.ended_at,
            **self.results_of_workers(), "esr_version": __version__,
            "time_scale": self.time_scale, "user_scale": self.user_scale,
            "aborted": self.aborted, "citizens_held_back": self.held_back.most or None,
            "load_processes": {name: process.figures()
                               for name, process in sorted(self.tally.load.items())}})
        self._write_live(final=True)
        self.held_back = HeldBack()  # a shape's first tick comes before test_start: reset here

    # ---- live progress -----------------------------------------------------------------------

    def _progress_loop(self) -> None:
        while True:
            gevent.sleep(PROGRESS_INTERVAL_S)
            if self.ended_at is not None:  # the final figures are written; don't overwrite them
                return
            self.collect()
            self.watch()
            self._write_live(final=False)

    def _chaos_changed(self) -> None:
        if self.ended_at is None:  # the final figures, once written, stay
            self._write_live(final=False)

    def _write_live(self, final: bool) -> None:
        if self.run_dir is None:
            return
        write_json(self.run_dir / LIVE, live_figures(self, final))


def live_figures(run: Conducting, final: bool) -> dict:
    """live.json: the run's figures so far, for the console, the service and Prometheus."""
    # Locust keeps a cheap rolling p95 of the last seconds; ESR's exact ones are for reports.
    # Counts are cumulative, so a reader (esr/alerts.py) takes rates over its own window.
    stats = run.environment.stats.total
    return {
        "run_id": run.run_id, "final": final, "at": now_iso(),
        "elapsed_s": round(time.time() - run.started_s, 3),
        "phase": run.phase.name if run.phase else "starting",
        "citizens": run.environment.runner.user_count,
        "journeys_started": run.tally.started,
        "rps": round(stats.current_rps, 1),
        "requests": run.tally.requests, "failures": run.tally.failures,
        "p95_ms": stats.get_current_response_time_percentile(0.95),
        "chaos": run.chaos.in_force() if run.chaos is not None else [],
        "outcomes": dict(run.tally.outcomes()), "workers": run.workers_now(),
        "pool": run.pool_now(),
        "duration_le_ms": list(duration_bounds_ms(run.scenario.slo.checks)),
        **run.tally.live(LIVE_ENDPOINTS_MAX)}


class HeldBack:
    """The citizens a shape asked for beyond what the load processes hold: noted once (an
    event) and at their most (`most`, for esr_counters.json)."""

    def __init__(self):
        self.most: dict = {}

    def allowed(self, wanted: int, holds: int | None, workers: int, run_dir) -> int:
        if holds is None or wanted <= holds:
            return wanted
        if wanted - holds > self.most.get("citizens", 0):
            if not self.most:
                logger.warning("%d citizens cannot start: the load processes hold %d",
                               wanted - holds, holds)
                append_event(run_dir, "citizens_held_back", wanted=wanted, held=holds,
                             workers=workers)
            self.most = {"citizens": wanted - holds, "wanted": wanted, "held": holds,
                         "workers": workers}
        return holds


class AbortOnFail:
    """Stops a run when an SLO fails over a whole window, as k6's abortOnFail does."""

    def __init__(self, run: Conducting):
        self.run = run
        self.run_number = run.runs_started  # the run watched (the web UI starts others)

    def watch(self) -> None:
        run = self.run
        window = run.scenario.slo.window * run.time_scale
        began = time.time()
        # Until this run ends: its stop, or (Stop in the web UI) the next run's start.
        while not run.finishing and run.runs_started == self.run_number:
            gevent.sleep(1.0)
            now = time.time() - run.report_lag_s  # judge a window that has arrived
            if now - began < window:
                continue
            run.collect()
            breach = run.tally.breach(run.scenario.slo.checks, now - window, now)
            if breach:
                run.aborted = {"at_s": round(time.time() - began, 3), "reason": breach}
                append_event(run.run_dir, "aborted", reason=breach)
                run.finish()
                return
