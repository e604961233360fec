"""ESR inside a Locust process: settings, probes, citizens, and a stop that loses nothing.

`install(events, scenario)` is called by the locustfile at import. From Locust's
`init` on, `environment.esr` is the process's `EsrRun`. Probes attach through
the environment's event hooks; workers ship drained probe data with every
Locust report, and the master (or the single process) folds it into one tally.

The end of a run follows the order ../shared/LOCUST_NOTES.md found reliable:
the master stops the workers (citizens finish the request they are in), each
worker sends its remainder from its own test_stop, the master waits for every
worker's final report, and only then quits and writes the probe tables.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import gevent
import gevent.event
import gevent.queue
import locust.runners
from locust.rpc import Message
from locust.runners import (
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    WORKER_REPORT_INTERVAL,
    MasterRunner,
    WorkerRunner,
)
from locust.stats import CSV_STATS_INTERVAL_SEC

from . import __version__
from .chaos import Chaos, Fault
from .citizens import CitizenFactory, identity_pool
from .journey import DEFAULT_STEP, StepRenderer
from .options import EsrOptions, fix_options, hide_from_web_form
from .probes import Probes, Tally, response_facts
from .rundir import EVENTS, LIVE, append_event, new_run_id, now_iso, write_json, write_tables
from .scenario import Scenario
from .stages import Phase, open_model_pool, plan_stages
from .units import Span
from .wire import HITL_SKIP_HEADER, STOP_TIMEOUT_S, SYNTHETIC_HEADER, USER_AGENT
from .workers import MASTER_SILENCE_S, MISSING_AFTER_HEARTBEATS, WATCH_INTERVAL_S, WorkerLedger

logger = logging.getLogger(__name__)

# Citizen blocks are dealt to processes in strides of this many, so any worker index
# below it makes citizens no other process makes, and worker 0 makes what one process would.
MAX_WORKERS = 256
PROGRESS_INTERVAL_S = 1.0
# How long the master waits, after the workers stopped, for their final reports.
FINAL_REPORT_TIMEOUT_S = 15.0
# How long a worker given citizens waits for the master to accept its scenario.
WELCOME_TIMEOUT_S = 10.0
ARRIVAL_BACKLOG = 100_000  # arrivals due but not started; beyond this they count as missed


def install(events, scenario: Scenario) -> None:
    """Hook ESR into Locust: its command-line options, and an EsrRun on every environment."""

    def add_options(parser, **_):
        group = parser.add_argument_group("ESR")
        group.add_argument("--esr-run-dir", default="", help="ESR run directory")
        group.add_argument("--esr-run-id", default="", help="label sent as X-ESR-Synthetic")
        group.add_argument("--esr-time-scale", type=float, default=1.0,
                           help="multiply the scenario's durations by this")
        group.add_argument("--esr-user-scale", type=float, default=1.0,
                           help="multiply the scenario's citizen counts by this")
        group.add_argument("--esr-allow-chaos-commands", action="store_true", default=False,
                           help="let the scenario's chaos actions run shell commands")
        group.add_argument("--esr-request-log", default="",
                           help="folder for a raw log of every request (for checking ESR's "
                                "figures; costly, not for load)")
        group.add_argument("--esr-reports-dir", default="reports",
                           help="web UI: where each run started from the browser gets its "
                                "run directory and report card")
        hide_from_web_form(parser)  # every --esr-* option, wherever it was added

    def on_init(environment, **_):
        if getattr(environment, "esr", None) is None:  # init may fire more than once
            environment.esr = EsrRun(environment, scenario)

    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(on_init)
    locust.runners.HEARTBEAT_LIVENESS = MISSING_AFTER_HEARTBEATS  # read by the master's loop


@dataclass(frozen=True, kw_only=True)
class RunValues:
    """What a worker must know of each run, from its master in ESR's own messages (at its
    welcome, and at each start in the web UI): never from Locust's form or spawn message."""

    run_id: str
    time_scale: float
    user_scale: float

    @classmethod
    def of(cls, options: EsrOptions) -> RunValues:
        """The values this process's own command line gives."""
        return cls(run_id=getattr(options, "run_id", "") or "esr-adhoc",
                   time_scale=getattr(options, "time_scale", 1.0) or 1.0,
                   user_scale=getattr(options, "user_scale", 1.0) or 1.0)

    @classmethod
    def received(cls, data: dict) -> RunValues:
        return cls(run_id=str(data["run_id"]), time_scale=float(data["time_scale"]),
                   user_scale=float(data["user_scale"]))


class EsrRun:
    """One Locust process's part in a run."""

    def __init__(self, environment, scenario: Scenario):
        self.environment = environment
        self.scenario = scenario
        self.renderers = [StepRenderer(step) for step in scenario.journey or (DEFAULT_STEP,)]
        self.jitter_ms = scenario.network_jitter_ms
        self.report_traits = scenario.report_traits
        self.hitl_skip = scenario.hitl_skip
        self.is_master = isinstance(environment.runner, MasterRunner)
        self.is_worker = isinstance(environment.runner, WorkerRunner)
        # With Locust's web UI, every start in the browser is a run of its own.
        self.web = environment.web_ui is not None
        # ESR's options are read here, once: the web UI's /swarm form may write over
        # parsed_options at every start (options.py).
        self.options = options = fix_options(environment.parsed_options)
        self._named_run = (getattr(options, "run_id", ""), getattr(options, "run_dir", ""))
        run_dir = "" if self.is_worker else self._named_run[1]
        self.run_dir = Path(run_dir) if run_dir else None
        # A worker's are its master's (esr_welcome, esr_run); until then, its own.
        self.run_values = RunValues.of(options)
        self._configured_with: RunValues | None = None
        self._in_test = False
        self.request_log = None
        self.report_card: dict | None = None  # web UI: the last run's report card, when built
        # Citizens stopped without a timeout would be killed mid-request (Locust's default 0,
        # as in its web UI): always give them time to finish. Workers get the master's value.
        environment.stop_timeout = max(environment.stop_timeout or 0, STOP_TIMEOUT_S)
        self.tally = None if self.is_worker else Tally()
        self.random = random.Random()
        identity_pool()  # built now, not in the first second of load
        self.arrivals: Arrivals | None = None
        self._streams: dict[int, object] = {}
        self._finishing = None
        self._concluding = None  # web UI: the greenlet writing a stopped run's files
        self._progress = None
        self._phase: Phase | None = None
        self._finals: set[str] = set()
        self._refused: set[str] = set()
        self._final_pending = False
        self.ledger = WorkerLedger()  # the master's: workers heard from, and those lost
        self.faults: list[Fault] = []  # client-side chaos in force (latency, error_rate)
        self.aborted: dict | None = None
        self.chaos: Chaos | None = None
        self.started_at = self.ended_at = None
        self.configure()
        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        events.quitting.add_listener(self._on_quitting)
        if self.is_master:
            events.worker_report.add_listener(self._on_worker_report)
            environment.runner.register_message("esr_hello", self._on_hello)
            # A worker gone missing hands its citizens to the others (Locust's rebalancing).
            if environment.parsed_options is not None:
                environment.parsed_options.enable_rebalancing = True
        else:
            events.request.add_listener(self._on_request)
            # Spawned citizens live until the stop: out of the collector's way meanwhile (a
            # full pass over 25,000 of them took seconds, stalling every heartbeat).
            events.spawning_complete.add_listener(lambda **_: gc.freeze())
        if self.is_worker:
            environment.runner.register_message("esr_run", self._on_run_values)
            # Tell the master which scenario this worker runs: it refuses a different one.
            environment.runner.send_message("esr_hello", {
                "sha256": scenario.sha256, "version": __version__, "file": scenario.file})
            events.report_to_master.add_listener(self._on_report_to_master)
            environment.runner.register_message(
                "esr_fault", lambda msg, **_: self.faults.append(Fault(**msg.data)))
            gevent.spawn(self._stop_citizens_when_the_master_is_silent)
            self._hold_citizens_until_welcomed()
        else:
            self._hold_quit_until_finished()
            gevent.signal_handler(signal.SIGUSR1, self.finish)
        if self.web:
            from .webui import add_esr_to_web_ui  # Flask and the UI only where a UI runs

            add_esr_to_web_ui(self)
            # Ctrl-C in `esr-locust ui`, or docker stop: end the run in progress, then leave.
            gevent.signal_handler(signal.SIGUSR1, self.shut_down)
            gevent.signal_handler(signal.SIGTERM, self.shut_down)

    # ---- settings --------------------------------------------------------------------------

    def configure(self) -> None:
        """Set up for the run about to start, from its values (a worker's are its master's)."""
        values = self._configured_with = self.run_values
        self.run_id = values.run_id
        # What every request of the run carries, besides the citizen's id (wire conventions).
        self.headers = {SYNTHETIC_HEADER: self.run_id, "User-Agent": USER_AGENT,
                        **({HITL_SKIP_HEADER: "true"} if self.hitl_skip else {})}
        self.time_scale, self.user_scale = values.time_scale, values.user_scale
        self.phases = plan_stages(self.scenario, self.time_scale, self.user_scale)
        duration = max(phase.end for phase in self.phases)
        self.probes = Probes(bucket_width(duration))
        log_dir = getattr(self.options, "request_log", "")
        if log_dir and self.request_log is None:  # configured again at each test start
            self.request_log = open(Path(log_dir) / f"requests-{os.getpid()}.csv", "a")  # noqa: SIM115

    def _on_run_values(self, msg, **_) -> None:
        """A worker: the run's id and scales, from its master (at its welcome, and at each
        start in the web UI, ahead of the spawn message)."""
        self.run_values = RunValues.received(msg.data)
        if self._in_test and self._configured_with != self.run_values:
            # The spawn came first (a worker joining a run): its citizens wait for the
            # welcome, so they start with the run's values.
            self._prepare_citizens()

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def think(self, span: Span, rng) -> float:
        low, high = span.low, span.high
        return (low if low == high else rng.uniform(low, high)) * self.time_scale

    def next_citizen(self, group_index: int) -> dict:
        stream = self._streams.get(group_index)
        if stream is None:
            share = self.environment.runner.worker_index
            if not 0 <= share < MAX_WORKERS:
                raise RuntimeError(f"worker index {share} beyond ESR's {MAX_WORKERS} workers")
            factory = CitizenFactory(self.scenario, group_index)
            stream = self._streams[group_index] = factory.stream(share, MAX_WORKERS)
        return next(stream)

    # ---- probes ----------------------------------------------------------------------------

    def _on_request(self, name, response_time, response, exception, context, start_time=None,
                    **_):
        facts = context.get("facts")
        if facts is None:  # a request ESR's journey did not make (custom code)
            facts = response_facts(response, getattr(response, "status_code", 0) or 0)
        failure = None
        if exception is not None:
            # ESR's journey names its failures (journey.failure_of); Locust's CatchResponseError
            # carries that name as its text.
            failure = str(exception) or type(exception).__name__
        self.probes.request(name, start_time or time.time(), response_time, failure, facts,
                            context.get("cohort"))
        if self.hitl_skip:
            self.probes.hitl["skipped"] += 1
        if self.request_log is not None:
            self.request_log.write(f"{name},{response_time!r},{int(failure is not None)}\n")

    def _on_hello(self, environment, msg, **_):
        theirs = msg.data
        if (theirs["sha256"], theirs["version"]) == (self.scenario.sha256, __version__):
            self.ledger.hello(msg.node_id, time.time())
            environment.runner.send_message("esr_welcome", asdict(self.run_values),
                                            client_id=msg.node_id)
            return
        reason = (f"worker {msg.node_id} runs {theirs['file']} (sha256 {theirs['sha256'][:16]}, "
                  f"ESR {theirs['version']}) but this master runs {self.scenario.file} "
                  f"(sha256 {self.scenario.sha256[:16]}, ESR {__version__})")
        logger.error("refusing a worker: %s", reason)
        self._refused.add(msg.node_id)
        append_event(self.run_dir, "worker_refused", worker=msg.node_id, reason=reason)
        environment.runner.server.send_to_client(Message("quit", None, msg.node_id))

    def _on_report_to_master(self, client_id, data):
        runner = self.environment.runner
        data["esr"] = drained = self.probes.drain()
        data["esr_requests"] = sum(row[2] for row in drained["latency"])  # [name, bucket, n…]
        data["esr_citizens"] = max(runner.user_count,
                                   sum(runner.target_user_classes_count.values()))
        if self._final_pending:
            data["esr_final"] = True
            self._final_pending = False

    def _on_worker_report(self, client_id, data):
        if client_id in self._refused:  # another scenario's figures must not mix with ours
            return
        if "esr" in data:
            self.tally.merge(data["esr"])
            self.ledger.heard(client_id, time.time(), data["esr_requests"], data["esr_citizens"])
        if data.get("esr_final"):
            self._finals.add(client_id)

    def _collect_local(self) -> None:
        if not self.is_master and not self.is_worker:
            self.tally.merge(self.probes.drain())

    # ---- the run's life --------------------------------------------------------------------

    def _on_test_start(self, environment, **_):
        # What exists by now (modules, identity pools, compiled templates) lives as long as
        # the process: out of the collector's way, full collections during load are cheap.
        gc.collect()
        gc.freeze()
        if self.web:
            self._begin_web_run()
        self._in_test = True
        self._prepare_citizens()
        self._finals.clear()
        self.ledger.lost.clear()
        self._finishing = None
        if not self.is_worker and not self.web:
            # Locust installs its own SIGTERM handler only after a headless shape ends.
            gevent.signal_handler(signal.SIGTERM, self.finish)
        if not self.is_worker:
            self.started_at = now_iso()
            append_event(self.run_dir, "test_start", run_id=self.run_id,
                         phases=[vars(p) for p in self.phases])
            if self._progress is None or self._progress.dead:
                self._progress = gevent.spawn(self._progress_loop)
            self._start_chaos()
            if self.scenario.slo.abort_on_fail:
                gevent.spawn(self._abort_on_fail)

    def _prepare_citizens(self) -> None:
        self.configure()
        if self.is_worker or not self.is_master:
            if self.arrivals:
                self.arrivals.stop()
            self.arrivals = Arrivals.for_run(self) if self.scenario.load_profile.arrival_rate \
                else None

    def _abort_on_fail(self) -> None:
        """Stop the run when an SLO fails over a whole window, as k6's abortOnFail does."""
        window = self.scenario.slo.window * self.time_scale
        # The master hears from workers every few seconds: judge a window that has arrived.
        lag = WORKER_REPORT_INTERVAL if self.is_master else 0.0
        began = time.time()
        while self._finishing is None:
            gevent.sleep(1.0)
            now = time.time() - lag
            if now - began < window:
                continue
            self._collect_local()
            breach = self.tally.breach(self.scenario.slo.checks, now - window, now)
            if breach:
                self.aborted = {"at_s": round(time.time() - began, 3), "reason": breach}
                append_event(self.run_dir, "aborted", reason=breach)
                self.finish()
                return

    def _start_chaos(self) -> None:
        self.faults = []
        self.chaos = Chaos(self.scenario.chaos, host=self.environment.host or self.scenario.target,
                           time_scale=self.time_scale, run_dir=self.run_dir, started=time.time(),
                           allow_commands=getattr(self.options, "allow_chaos_commands", False),
                           spread=self._spread_fault)
        self.chaos.start()

    def _spread_fault(self, fault: Fault) -> None:
        if self.is_master:
            self.environment.runner.send_message("esr_fault", fault.wire())
        else:
            self.faults.append(fault)

    def phase_entered(self, phase: Phase) -> None:
        if phase != self._phase:
            self._phase = phase
            append_event(self.run_dir, "phase", name=phase.name, citizens=phase.citizens,
                         start_s=phase.start, end_s=phase.end)

    def _on_test_stop(self, environment, **_):
        gc.unfreeze()  # the stopped citizens may go
        self._in_test = False
        if self.arrivals:
            self.arrivals.stop()
        if self.request_log is not None:
            self.request_log.flush()
        if self.is_worker:
            # The remainder goes now, ahead of the worker's "client_stopped" message.
            self._final_pending = True
            environment.runner._send_stats()
            # Locust's worker next sleeps out the stop timeout before it reads another
            # message, so the master's quit would wait 35 s: the users are stopped already.
            # (The next spawn message brings the master's stop timeout back.)
            environment.stop_timeout = 0
        elif self.web:
            self._concluding = gevent.spawn(self._conclude_web_run)

    def finish(self, *_):
        """End the run gracefully: at the shape's end, on SIGUSR1 (Ctrl-C in `esr-locust run`)
        or SIGTERM (docker stop)."""
        if self._finishing is None and not self.is_worker:
            self._finishing = gevent.spawn(self._finish)

    def _finish(self) -> None:
        if self.chaos is not None:
            self.chaos.end()
        append_event(self.run_dir, "stopping", phase=self._phase.name if self._phase else None)
        expected = self._reporting_workers()
        self.environment.runner.stop()  # citizens finish their request; workers report the rest
        self._await_final_reports(expected)

    def _reporting_workers(self) -> set[str]:
        """The workers whose final reports the run waits for: all but those lost or refused."""
        if not self.is_master:
            return set()
        return {c.id for c in self.environment.runner.clients.all
                if c.state != STATE_MISSING and c.id not in self.ledger.lost}

    def _await_final_reports(self, expected: set[str]) -> None:
        deadline = time.monotonic() + FINAL_REPORT_TIMEOUT_S
        while not expected <= self._finals and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for worker in sorted(expected - self._finals):
            self._lose(worker, "no final report")

    # ---- workers lost mid-run --------------------------------------------------------------

    def _notice_lost_workers(self) -> None:
        for client in self.environment.runner.clients.missing:
            if client.id not in self.ledger.lost and client.id not in self._refused:
                self._lose(client.id, "missed heartbeats")

    def _lose(self, worker: str, reason: str) -> None:
        lost = self.ledger.lose(worker, time.time(), reason)
        if lost is not None:
            logger.warning("worker %s lost (%s): at most %d of its requests went unreported",
                           worker, reason, lost["unreported_max"])
            append_event(self.run_dir, "worker_lost", **lost)

    def _stop_citizens_when_the_master_is_silent(self) -> None:
        """A worker cut off from its master stops its citizens: the master has handed them
        to other workers by now, and what they would send could never be reported."""
        runner = self.environment.runner
        while True:
            slept = time.monotonic()
            gevent.sleep(WATCH_INTERVAL_S)
            if time.monotonic() - slept > 2 * WATCH_INTERVAL_S:
                continue  # this process was too busy to read its messages: no verdict
            heard = runner.last_heartbeat_timestamp
            if heard and time.time() - heard > MASTER_SILENCE_S \
                    and runner.state in (STATE_SPAWNING, STATE_RUNNING):
                logger.error("no word from the master for %.0f s: stopping this worker's "
                             "citizens", time.time() - heard)
                runner.stop()

    def _hold_citizens_until_welcomed(self) -> None:
        """Locust may hand a worker citizens the moment it connects, before the master has
        checked its scenario: a worker starts none until the master has welcomed it. One
        refused is told to quit instead, having sent nothing the report would miss."""
        runner = self.environment.runner
        welcomed = gevent.event.Event()

        def on_welcome(msg, **_):
            self._on_run_values(msg)
            welcomed.set()

        runner.register_message("esr_welcome", on_welcome)
        start_worker = runner.start_worker

        def start_when_welcomed(user_classes_count, **kwargs):
            if not welcomed.wait(WELCOME_TIMEOUT_S):
                logger.error("the master has not welcomed this worker in %.0f s (is it an "
                             "ESR master of version %s?): running no citizens",
                             WELCOME_TIMEOUT_S, __version__)
                return
            start_worker(user_classes_count, **kwargs)

        runner.start_worker = start_when_welcomed

    def _hold_quit_until_finished(self) -> None:
        """Locust quits as soon as the shape greenlet ends, which our stop ends first: make
        that quit wait for the graceful stop, or the workers' last reports are dropped."""
        runner = self.environment.runner
        quit_now = runner.quit

        def quit_after_finish() -> None:
            finishing = self._finishing
            if finishing is not None and finishing is not gevent.getcurrent():
                finishing.join()
            quit_now()

        runner.quit = quit_after_finish

    def _on_quitting(self, environment, **_):
        if self.is_worker:
            return
        if self._concluding is not None:  # a web UI run still writing its files and card
            self._concluding.join(timeout=FINAL_REPORT_TIMEOUT_S + 120)
        if self.ended_at is None and (self.started_at is not None or not self.web):
            self._write_results()
        # Request failures are findings for the report, not a failed process; the
        # launcher decides the exit code from the SLOs.
        environment.process_exit_code = 0
        # Locust's CSV writer wakes once a second and not at exit: one more turn, so its
        # files hold the last requests too.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.25)

    def _write_results(self) -> None:
        """The run's probe tables and counters, once every process has reported."""
        self._collect_local()
        self.ended_at = now_iso()
        if self.run_dir is None:
            return
        append_event(self.run_dir, "test_end")
        runner = self.environment.runner
        write_tables(self.run_dir, self.tally, {
            "run_id": self.run_id, "started_at": self.started_at, "ended_at": self.ended_at,
            "workers": len(runner.worker_indexes) if self.is_master else 0,
            "lost_workers": list(self.ledger.lost.values()), "esr_version": __version__,
            "time_scale": self.time_scale, "user_scale": self.user_scale,
            "aborted": self.aborted})
        self._write_live(final=True)

    # ---- runs started from the web UI ------------------------------------------------------

    def _begin_web_run(self) -> None:
        """A start in the browser is a run of its own: a new id, directory and tally."""
        from .launch import RunSettings, write_run_files  # the launcher never imports Locust

        # Named on the command line, the run id and directory are every run's (the last wins).
        run_id = self._named_run[0] or new_run_id(self.scenario.name)
        run_dir = Path(self._named_run[1] or Path(self.options.reports_dir) / run_id).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / EVENTS).unlink(missing_ok=True)
        self.run_dir, self.run_values = run_dir, replace(self.run_values, run_id=run_id)
        if self.is_master:  # ahead of the spawn messages: the run id labels their requests
            self.environment.runner.send_message("esr_run", asdict(self.run_values))
        values = self.run_values
        write_run_files(run_dir, run_id, self.scenario, RunSettings(
            scenario=Path(self.scenario.file), host=self.environment.host or None,
            workers=self.environment.runner.worker_count if self.is_master else 0,
            time_scale=values.time_scale, user_scale=values.user_scale))
        self.tally = Tally()
        self.ended_at = self.aborted = self._phase = None
        self.report_card = {"run_id": run_id, "state": "running", "run_dir": str(run_dir)}

    def _conclude_web_run(self) -> None:
        """A browser run has stopped (at its end, or Stop pressed): its files, its report card."""
        finishing = self._finishing
        if finishing is not None:
            finishing.join()
        else:  # Stop pressed: Locust has stopped the workers already
            if self.chaos is not None:
                self.chaos.end()
            self._await_final_reports(self._reporting_workers())
        self._write_results()
        self.report_card["state"] = "building"
        # A process of its own: building the card is CPU work that would stall this one.
        formats = ",".join(self.scenario.report_formats)
        process = subprocess.Popen(
            [sys.executable, "-m", "esr.cli", "report", str(self.run_dir), "--format", formats],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, error = process.communicate()
        self.report_card["state"] = "ready" if process.returncode == 0 else "failed"
        if process.returncode:
            self.report_card["error"] = error.strip().splitlines()[-1:]
            logger.error("the report card of %s failed: %s", self.run_id, error.strip())

    def shut_down(self, *_) -> None:
        """Web UI: end the run in progress gracefully, then stop serving, so Locust exits."""
        gevent.spawn(self._shut_down)

    def _shut_down(self) -> None:
        if self.environment.runner.state in (STATE_SPAWNING, STATE_RUNNING):
            self.finish()
        deadline = time.monotonic() + STOP_TIMEOUT_S + FINAL_REPORT_TIMEOUT_S + 60
        while self.report_card and self.report_card["state"] in ("running", "building") \
                and time.monotonic() < deadline:
            gevent.sleep(0.2)
        self.environment.web_ui.stop()

    # ---- live progress ---------------------------------------------------------------------

    def _progress_loop(self) -> None:
        while True:
            gevent.sleep(PROGRESS_INTERVAL_S)
            if self.ended_at is not None:  # the final figures are written; don't overwrite them
                return
            self._collect_local()
            if self.is_master:
                self._notice_lost_workers()
            self._write_live(final=False)

    def _write_live(self, final: bool) -> None:
        if self.run_dir is None:
            return
        # Locust keeps a cheap rolling p95 of the last seconds; ESR's exact ones are for reports.
        stats = self.environment.stats.total
        write_json(self.run_dir / LIVE, {
            "run_id": self.run_id, "final": final, "at": now_iso(),
            "phase": self._phase.name if self._phase else "starting",
            "citizens": self.environment.runner.user_count,
            "rps": round(stats.current_rps, 1),
            "requests": self.tally.requests, "failures": self.tally.failures,
            "p95_ms": stats.get_current_response_time_percentile(0.95),
            "outcomes": dict(self.tally.outcomes()),
            "workers": self.environment.runner.worker_count if self.is_master else 0})


def bucket_width(duration_s: float) -> float:
    """Time buckets for latency: about 120 over the run, on a round number of seconds."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300):
        if duration_s / width <= 120:
            return float(width)
    return 600.0


class Arrivals:
    """Open model: arrivals due at a fixed rate, whether or not a citizen is free to take them.

    A scheduler puts each arrival's due time in a queue; idle citizens take them in
    order, and the probes record how late each started. Arrivals never wait for the
    target, so an overloaded service shows up as lateness instead of being hidden.
    """

    def __init__(self, run: EsrRun, rate: float, pool: int):
        self.run, self.rate, self.pool = run, rate, pool
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.greenlet = gevent.spawn(self._schedule)

    @classmethod
    def for_run(cls, run: EsrRun) -> Arrivals:
        scenario = run.scenario
        rate = scenario.load_profile.arrival_rate * run.user_scale / run.time_scale
        return cls(run, rate, open_model_pool(scenario, run.time_scale, run.user_scale))

    def next(self) -> float:
        return self.queue.get()

    def _schedule(self) -> None:
        last = time.time()
        due = 0.0
        while True:
            gevent.sleep(0.01)
            now = time.time()
            runner = self.run.environment.runner
            share = min(1.0, runner.user_count / self.pool) if self.pool else 1.0
            due += self.rate * share * (now - last)
            last = now
            for k in range(math.floor(due)):
                if self.queue.qsize() >= ARRIVAL_BACKLOG:
                    self.run.probes.arrivals["missed"] += 1
                else:
                    self.queue.put(now - (math.floor(due) - 1 - k) / max(self.rate * share, 1e-9))
            due -= math.floor(due)

    def stop(self) -> None:
        self.greenlet.kill(block=False)
