"""Launching a run: the Locust processes, live progress, a graceful Ctrl-C, and summary.json.

This process never imports Locust or gevent: it starts them as child processes
(one, or a master and N workers on loopback), watches the run directory, and
builds the summary afterwards, so heavy work never stalls the load.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from esr import load_processes
from esr.alerts import LiveAlerts
from esr.errors import EXIT_OK, EXIT_RUN_ERROR, EXIT_SLO_FAILED, BadInput, EsrError
from esr.load_processes import LOCUSTFILE, LoadProcess
from esr.permissions import PERMISSIONS, check, granted_by
from esr.report.summary import build_summary
from esr.run_directory import (
    LIVE,
    LOCUST_PREFIX,
    LOG,
    PID_FILE,
    SUMMARY,
    new_run_id,
    read_json,
    write_json,
    write_run_files,
)
from esr.scenario.model import Scenario
from esr.scenario.reader import load_scenario
from esr.scenario.stages import plan_stages
from esr.units import format_duration
from esr.wire import STOP_TIMEOUT_S

REPORTS_DIR = Path("reports")
# How long workers may take to connect before the run is called off.
WORKERS_CONNECT_TIMEOUT_S = 60
# How often live progress is read while the run goes on.
WATCH_INTERVAL_S = 0.5
# Beyond the planned duration, how long a run may overrun before it is stopped.
OVERRUN_S = STOP_TIMEOUT_S + 60


class RunError(EsrError):
    """The run could not be carried out (target unreachable, workers never connected)."""


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything `esr-locust run` was asked, resolved: the one object the launcher works from."""

    scenario: Path
    host: str | None = None
    workers: int = 0
    run_dir: Path | None = None
    time_scale: float = 1.0
    user_scale: float = 1.0
    run_id: str | None = None
    request_log: Path | None = None  # a raw log of every request, to check ESR's own figures
    # A scenario may make HTTP requests and nothing else: what more it may do, opted in
    # on the command line (esr/permissions.py).
    allow_chaos_commands: bool = False  # shell commands
    allow_chaos_signals: bool = False  # signals to the processes named by pid files
    allow_chaos_containers: bool = False  # docker compose
    bind: tuple[str, int] | None = None  # a master for workers on other hosts: where it listens
    workers_wait_s: float = WORKERS_CONNECT_TIMEOUT_S  # ... and how long it waits for them
    web: tuple[str, int] | None = None  # Locust's web UI here instead of one headless run
    web_login: bool = False  # the web UI asks for ESR_WEB_USER / ESR_WEB_PASSWORD
    reports_dir: Path = Path("reports")  # web UI: each run started there gets a directory here


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    summary: dict
    exit_code: int


def default_workers() -> int:
    return os.cpu_count() or 1


def run(settings: RunSettings, on_progress: Callable[[dict], None] | None = None) -> RunResult:
    """Carry out one run to its end and return its summary (a blocking call)."""
    launch = Launch.prepare(settings)
    launch.start()
    return launch.wait(on_progress)


class Launch:
    """A run in progress, with its directory and its Locust processes; or, with the web UI,
    Locust's processes serving it (each run started there makes its own directory)."""

    def __init__(self, settings: RunSettings, scenario: Scenario, run_id: str | None,
                 run_dir: Path | None):
        self.settings, self.scenario = settings, scenario
        self.run_id, self.run_dir = run_id, run_dir
        self.processes: list[LoadProcess] = []
        self.planned_s = max(p.end for p in plan_stages(scenario, settings.time_scale,
                                                         settings.user_scale))

    @classmethod
    def prepare(cls, settings: RunSettings, reports_dir: Path | None = None) -> Launch:
        _check_settings(settings)
        scenario = load_scenario(settings.scenario)
        check(scenario, granted_by(settings))  # before anything starts or is written
        if settings.web is not None:
            return cls(settings, scenario, None, None)
        run_id = settings.run_id or new_run_id(scenario.name)
        run_dir = settings.run_dir or (reports_dir or REPORTS_DIR) / run_id
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInput(f"cannot create the run directory {run_dir}: {error.strerror}") \
                from None
        launch = cls(settings, scenario, run_id, run_dir.resolve())
        write_run_files(launch.run_dir, run_id, scenario, host=settings.host,
                        workers=settings.workers, time_scale=settings.time_scale,
                        user_scale=settings.user_scale)
        return launch

    # ---- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        common = ["--host", s.host or self.scenario.target,
                  "--esr-time-scale", repr(s.time_scale), "--esr-user-scale", repr(s.user_scale),
                  *self._mode_arguments()]
        granted = granted_by(s)
        common += [p.engine_flag for p in PERMISSIONS if p.name in granted]
        # Each process's own command line names where it logs: a worker takes no ESR option
        # from its master (only the run's id and scales, messages.RUN).
        own_log = []
        if s.request_log is not None:
            s.request_log.mkdir(parents=True, exist_ok=True)
            own_log = ["--esr-request-log", str(s.request_log.resolve())]
        common += own_log
        if s.workers == 0:
            self._spawn("locust", common)
            return
        host, port = s.bind or ("127.0.0.1", _free_port())
        expect = [] if s.web else ["--expect-workers", str(s.workers),
                                   "--expect-workers-max-wait", str(math.ceil(s.workers_wait_s))]
        self._spawn("master", [*common, "--master", "--master-bind-host", host,
                               "--master-bind-port", str(port), *expect])
        if s.bind is not None:
            return  # the workers are started on their own hosts (esr-locust worker)
        for index in range(s.workers):
            self._spawn(f"worker-{index}", ["--worker", "--master-host", "127.0.0.1",
                                            "--master-port", str(port), "--loglevel", "WARNING",
                                            *own_log])

    def _mode_arguments(self) -> list[str]:
        s = self.settings
        if s.web is None:
            return ["--esr-run-id", self.run_id, "--esr-run-dir", str(self.run_dir),
                    "--headless", "--only-summary", "--csv", str(self.run_dir / LOCUST_PREFIX),
                    "--csv-full-history", "--loglevel", "WARNING"]
        return ["--web-host", s.web[0], "--web-port", str(s.web[1]),
                "--esr-reports-dir", str(s.reports_dir.resolve()), "--loglevel", "INFO",
                *(["--web-login"] if s.web_login else [])]

    def _spawn(self, role: str, arguments: list[str]) -> None:
        env = {**os.environ, "ESR_SCENARIO": str(Path(self.scenario.file).resolve())}
        if self.run_dir is None:  # the web UI: Locust's log is the console's, as with `locust`
            self.processes.append(load_processes.start(arguments, env))
            return
        with open(self.run_dir / LOG.format(role=role), "w") as log:
            self.processes.append(load_processes.start(
                arguments, env, log, pid_file=self.run_dir / PID_FILE.format(role=role)))

    @property
    def lead(self) -> LoadProcess:
        """The process that runs the shape and writes the results: the master, or the only one."""
        return self.processes[0]

    def stop(self) -> None:
        """Ask for a graceful stop: citizens finish their request, everything is written."""
        if self.lead.poll() is None:
            self.lead.send_signal(signal.SIGUSR1)

    def serve(self) -> int:
        """Web UI: serve until Ctrl-C (or SIGTERM), which ends a run in progress gracefully
        (its report card is built) before Locust exits."""
        try:
            self.lead.wait()
        except KeyboardInterrupt:
            self.stop()
            print("\nesr-locust: ending the run in progress, if any, and its report card; "
                  "press Ctrl-C again to leave at once", file=sys.stderr)
            try:
                self.lead.wait()
            except KeyboardInterrupt:
                self._kill_all()
        finally:
            self._end_workers()
        return EXIT_OK if self.lead.returncode == 0 else EXIT_RUN_ERROR

    def wait(self, on_progress: Callable[[dict], None] | None = None) -> RunResult:
        deadline = time.monotonic() + self.planned_s + OVERRUN_S + (
            self.settings.workers_wait_s if self.settings.workers else 0)
        stopping_since = None
        try:
            for live in self._watch():
                if on_progress and live:
                    on_progress(live)
                if time.monotonic() > deadline and stopping_since is None:
                    self.stop()
                    stopping_since = time.monotonic()
                if stopping_since and time.monotonic() - stopping_since > OVERRUN_S:
                    self._kill_all()
        except KeyboardInterrupt:
            self.stop()
            print("\nesr-locust: stopping gracefully (citizens finish their requests); "
                  "press Ctrl-C again to abandon the run", file=sys.stderr)
            try:
                for live in self._watch():
                    if on_progress and live:
                        on_progress(live)
            except KeyboardInterrupt:
                self._kill_all()
        finally:
            self._end_workers()
        return self._result()

    def _watch(self) -> Iterator[dict | None]:
        while True:
            try:
                self.lead.wait(timeout=WATCH_INTERVAL_S)  # returns as soon as it ends
            except subprocess.TimeoutExpired:
                yield read_live(self.run_dir)
                continue
            yield read_live(self.run_dir)
            return

    def _end_workers(self) -> None:
        """Workers have delivered their final reports before the master quits, but a worker
        still sleeps out Locust's stop timeout before it reads the quit: end it after a moment."""
        deadline = time.monotonic() + (2 if self.lead.returncode == 0 else 0)
        for process in self.processes[1:]:  # the moment of grace is one for all of them
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                end_process(process)

    def _kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def _result(self) -> RunResult:
        if not (self.run_dir / "esr_counters.json").is_file():
            log = self.run_dir / LOG.format(role="master" if self.settings.workers else "locust")
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() \
                else []
            reason = self._workers_missing() if self.settings.workers and any(
                "Gave up waiting" in line for line in tail) else "the load process failed"
            raise RunError(f"run {self.run_id}: {reason}; see {log}"
                           + ("".join(f"\n  {line}" for line in tail) if tail else ""))
        summary = build_summary(self.run_dir)
        write_json(self.run_dir / SUMMARY, summary)
        return RunResult(self.run_id, self.run_dir, summary, exit_code_of(summary))


    def _workers_missing(self) -> str:
        s = self.settings
        if s.bind is None:
            return "workers never connected"
        return (f"fewer than {s.workers} worker{'s' if s.workers > 1 else ''} joined at "
                f"{s.bind[0]}:{s.bind[1]} within {s.workers_wait_s:g} s (start them with "
                f"`esr-locust worker --master HOST:{s.bind[1]}`)")


def end_process(process: subprocess.Popen | LoadProcess, grace_s: float = 5.0) -> None:
    """Ask a child process to stop (SIGTERM), insist (SIGKILL) after grace_s, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_arguments(scenario: Path, master: tuple[str, int]) -> tuple[list[str], dict]:
    """A Locust worker of the master's run of this scenario: its arguments after the
    locustfile, and its environment."""
    load_scenario(scenario)  # bad input is reported here, clearly, not by Locust
    env = {**os.environ, "ESR_SCENARIO": str(Path(scenario).resolve())}
    return ["--worker", "--master-host", master[0], "--master-port", str(master[1])], env


def worker_command(scenario: Path, master: tuple[str, int]) -> tuple[list[str], dict]:
    """The Locust worker an `esr-locust worker` becomes (it replaces its own process)."""
    arguments, env = worker_arguments(scenario, master)
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *arguments], env


def exit_code_of(summary: dict) -> int:
    requests = summary["requests"]
    unreachable = requests["total"] > 0 and requests["failures"] == requests["total"] and all(
        " " not in error["kind"] for error in summary["errors"])  # transport errors only
    if requests["total"] == 0 or unreachable:
        return EXIT_RUN_ERROR
    return EXIT_OK if summary["slo"]["passed"] else EXIT_SLO_FAILED


def _check_settings(settings: RunSettings) -> None:
    if settings.web_login and not os.environ.get("ESR_WEB_PASSWORD"):
        raise BadInput("--web-login needs a password: set ESR_WEB_PASSWORD (and ESR_WEB_USER, "
                       "default 'esr') in the environment")
    if settings.workers < 0:
        raise BadInput(f"--workers must be 0 or more, got {settings.workers}")
    for name in ("time_scale", "user_scale"):
        value = getattr(settings, name)
        if not value > 0:
            raise BadInput(f"--{name.replace('_', '-')} must be above 0, got {value}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_live(run_dir: Path) -> dict | None:
    try:
        return read_json(run_dir / LIVE)
    except (OSError, ValueError):
        return None


# ---- the console ---------------------------------------------------------------------------------


class ProgressLine:
    """One updating line on a terminal; a plain line every few seconds elsewhere (CI logs).
    With `alerts`, each alert the live figures raise is a line of its own, as it happens,
    above the progress line ("00:08  ERROR spikes on /eligibility -> 14 %")."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, stream=sys.stderr, alerts: LiveAlerts | None = None):
        self.stream = stream
        self.tty = stream.isatty()
        self.alerts = alerts
        self.last_plain = 0.0
        self.ended = False

    def __call__(self, live: dict) -> None:
        if self.ended:  # the final figures stay on screen until the process exits: once is enough
            return
        self.ended = bool(live.get("final"))
        for alert in self.alerts.observe(live) if self.alerts else ():
            self.stream.write(("\r\033[K" if self.tty else "") + alert.line() + "\n")
        text = describe_progress(live)
        if self.tty:
            self.stream.write("\r\033[K" + text)
            if live.get("final"):
                self.stream.write("\n")
        elif live.get("final") or time.monotonic() - self.last_plain >= self.PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            self.stream.write(text + "\n")
        self.stream.flush()


def describe_progress(live: dict) -> str:
    requests = live.get("requests", 0)
    error_rate = live.get("failures", 0) / requests if requests else 0.0
    p95 = live.get("p95_ms")
    outcomes = live.get("outcomes") or {}
    shown = " ".join(f"{name} {n}" for name, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    return (f"[{live.get('phase', '?')}] citizens {live.get('citizens', 0)} | "
            f"{live.get('rps', 0):.0f} req/s | p95 {f'{p95:.0f} ms' if p95 else '-'} | "
            f"errors {error_rate:.1%} | {requests} requests | {shown or 'no journeys yet'}")


def describe_plan(settings: RunSettings, launch: Launch) -> str:
    where = "one process" if settings.workers == 0 else \
        f"a master and {settings.workers} worker{'s' if settings.workers > 1 else ''}"
    return (f"esr-locust: run {launch.run_id}: '{launch.scenario.name}' against "
            f"{settings.host or launch.scenario.target}, {format_duration(launch.planned_s)} "
            f"planned, {where}")
