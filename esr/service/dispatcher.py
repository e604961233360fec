"""The queue: start each queued run when a slot is free, follow it to its report card, and
pick up after a restart.

Each run goes through the same launcher as `esr-locust run` (a Locust master and local
workers, or one process) in a thread of its own; this module only moves it through the
status machine and turns its live figures into events. Load processes run in sessions of
their own, so a service killed with `kill -9` leaves them running: the next start stops
them gracefully (their results are written) and marks the run interrupted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from esr.alerts import LiveAlerts, p95_slo_ms
from esr.errors import EXIT_OK, EXIT_SLO_FAILED, EsrError
from esr.launcher import Launch, RunSettings, exit_code_of, read_live
from esr.pool import ServicePool
from esr.report.summary import build_summary
from esr.run_directory import COUNTERS, LEAD_ROLES, SUMMARY, load_processes_alive, write_json
from esr.service.agencies import Policy
from esr.service.cards import build_report_card
from esr.service.store import (
    CANCELLED,
    ERROR,
    FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    PASSED,
    QUEUED,
    REPORTING,
    RUNNING,
    STARTING,
    STOPPING,
    Run,
    Store,
)
from esr.service.submissions import SCENARIO_FILE
from esr.watching import stats_of

# How often the queue is looked at when nothing wakes it.
POLL_S = 1.0
# How long a load process left over from a killed service may take to stop gracefully.
ORPHAN_STOP_S = 60.0
# How long a load process left starting may take to set up its graceful stop.
ORPHAN_READY_S = 30.0


class Dispatcher:
    def __init__(self, store: Store, *, workers: int = 0, max_running: int = 1,
                 pool: ServicePool | None = None,
                 notify: Callable[[str], None] = lambda run_id: None):
        self.store, self.workers, self.max_running = store, workers, max_running
        self.pool = pool  # standing workers on other hosts, instead of local ones
        self.notify = notify  # told the run id whenever a run has a new event
        self._threads: dict[str, threading.Thread] = {}
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._loop: threading.Thread | None = None

    # ---- the queue ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = threading.Thread(target=self._run_queue, name="esr-queue", daemon=True)
        self._loop.start()

    def wake(self) -> None:
        self._wake.set()

    def _run_queue(self) -> None:
        self._recover()
        while not self._closing.is_set():
            self._start_next()
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _start_next(self) -> None:
        with self._lock:
            running = {run_id for run_id, thread in self._threads.items() if thread.is_alive()}
            self._threads = {run_id: self._threads[run_id] for run_id in running}
            for run in self.store.runs_with_status(QUEUED):
                if len(running) >= self.max_running or self._closing.is_set():
                    return
                token = self.store.token(run.token_id)
                limit = Policy.of(token).max_concurrent if token else 1
                if self.store.count_runs(run.agency, *IN_PROGRESS) >= limit:
                    continue  # the agency's next run waits; another agency's may go first
                if not self._status(run.id, STARTING, only_from=(QUEUED,)):
                    continue  # cancelled meanwhile
                thread = threading.Thread(target=self._execute, args=(run,), daemon=True,
                                          name=f"esr-run-{run.id}")
                self._threads[run.id] = thread
                running.add(run.id)
                thread.start()

    def cancel(self, run: Run) -> None:
        """A queued run ends at once; one in progress stops gracefully and is still reported
        (the stop itself is sent by its Follow, once the load process can take it)."""
        if self._status(run.id, CANCELLED, only_from=(QUEUED,)):
            self._done(run.id, CANCELLED)  # its stream ends as every run's does
            return
        self.store.request_cancel(run.id)
        self._status(run.id, STOPPING, only_from=(STARTING, RUNNING))

    def should_stop(self, run_id: str) -> bool:
        return self._closing.is_set() or self.store.run(run_id).cancel_requested

    def close(self, timeout_s: float = 90.0) -> None:
        """The service is stopping: runs in progress stop gracefully and are reported as
        interrupted; queued runs stay queued for the next start."""
        self._closing.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- one run -----------------------------------------------------------------------------

    def _execute(self, run: Run) -> None:
        try:
            launch = Launch.prepare(RunSettings(
                scenario=run.run_dir / SCENARIO_FILE, host=run.settings.get("host"),
                time_scale=run.settings.get("time_scale", 1.0),
                user_scale=run.settings.get("user_scale", 1.0), run_id=run.id,
                run_dir=run.run_dir, **self._where()))
            if self.pool is not None:
                self.pool.lend(run.run_dir)
            launch.start()
            self.store.set_pids(run.id, [process.pid for process in launch.processes])
            self._status(run.id, RUNNING, only_from=(STARTING,))
            follow = Follow(self, run, launch)
            result = launch.wait(follow)
            follow.last(read_live(run.run_dir))
            self._report(run.id, result.summary, result.exit_code, cut_short=follow.stop_sent)
        except EsrError as error:
            self._end(run.id, ERROR, reason=" ".join(error.lines()))
        except Exception as error:  # a bug must still end the run, never leave it hanging
            self._end(run.id, ERROR, reason=f"internal error: {type(error).__name__}: {error}")
        finally:
            if self.pool is not None:
                self.pool.take_back()
            self._wake.set()

    def _where(self) -> dict:
        """Where a run's citizens act: local workers, or the pool's standing workers."""
        if self.pool is None:
            return {"workers": self.workers}
        pool = self.pool.settings
        return {"workers": pool.min_workers, "bind": pool.address,
                "workers_wait_s": pool.wait_s}

    def _report(self, run_id: str, summary: dict, exit_code: int, cut_short: bool) -> None:
        """The run's end: cancelled or interrupted if it was stopped before its end (by its
        agency, or by the service stopping), else as its SLOs say. A service that stops
        while the report card is built does not make a whole run interrupted."""
        self._status(run_id, REPORTING)
        run = self.store.run(run_id)
        reason = build_report_card(run.run_dir)
        if run.cancel_requested:
            status = CANCELLED
        elif cut_short:
            status = INTERRUPTED
            reason = reason or "the service stopped during the run"
        else:
            status = {EXIT_OK: PASSED, EXIT_SLO_FAILED: FAILED}.get(exit_code, ERROR)
            if status == ERROR:
                reason = reason or "the target answered no request (see the report card)"
        self._end(run_id, status, reason=reason, verdict=verdict_of(summary, exit_code))

    def _end(self, run_id: str, status: str, *, reason: str | None = None,
             verdict: dict | None = None) -> None:
        self._status(run_id, status, reason=reason, verdict=verdict)
        self._done(run_id, status, reason=reason, verdict=verdict)

    def _done(self, run_id: str, status: str, *, reason: str | None = None,
              verdict: dict | None = None) -> None:
        """A run's last event: its live stream ends with it."""
        self.store.append_event(run_id, "done", {"status": status, "verdict": verdict,
                                                 **({"reason": reason} if reason else {})})
        self.notify(run_id)

    def _status(self, run_id: str, status: str, **details) -> bool:
        changed = self.store.set_status(run_id, status, **details)
        if changed:
            self.notify(run_id)
        return changed

    # ---- after a restart ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Runs the last service left in progress: stop what still runs, keep what it gathered,
        mark them interrupted. Queued runs simply stay queued."""
        for run in self.store.runs_with_status(*IN_PROGRESS):
            stop_orphans(run)
            summary = None
            if (run.run_dir / COUNTERS).is_file():
                summary = build_summary(run.run_dir)
                write_json(run.run_dir / SUMMARY, summary)
            problem = build_report_card(run.run_dir) if summary else None
            reason = "the service stopped during the run" + (
                "" if summary else "; the load process left no results")
            self._end(run.id, INTERRUPTED, reason=f"{reason}{'; ' + problem if problem else ''}",
                      verdict=verdict_of(summary, exit_code_of(summary)) if summary else None)


class Follow:
    """What the launcher calls with each live reading of one run: stats events about once a
    second, alerts once per episode, the run's live figures in the store, a cancel noticed."""

    def __init__(self, dispatcher: Dispatcher, run: Run, launch: Launch):
        self.dispatcher, self.store, self.run_id = dispatcher, dispatcher.store, run.id
        self.launch, self.stop_sent = launch, False
        self.alerts = LiveAlerts(p95_slo_ms(launch.scenario))
        self.last_at = None

    def __call__(self, live: dict) -> None:
        # Live figures mean the load process is up and takes a graceful stop (SIGUSR1).
        if not self.stop_sent and self.dispatcher.should_stop(self.run_id):
            self.stop_sent = True
            self.launch.stop()
        if live.get("at") == self.last_at:
            return
        self.last_at = live.get("at")
        stats = stats_of(live)
        self.store.set_live(self.run_id, stats)
        self.store.append_event(self.run_id, "stats", stats)
        for alert in self.alerts.observe(live):
            self.store.append_event(self.run_id, "alert", alert.as_dict())
        if live.get("phase") == "stopping" or live.get("final"):
            self.dispatcher._status(self.run_id, STOPPING, only_from=(RUNNING,))
        self.dispatcher.notify(self.run_id)

    def last(self, live: dict | None) -> None:
        if live is not None:
            self(live)


def verdict_of(summary: dict, exit_code: int) -> dict:
    requests = summary["requests"]
    return {"exit_code": exit_code, "slo_passed": summary["slo"]["passed"],
            "requests": requests["total"], "failures": requests["failures"],
            "p95_ms": requests["p95_ms"], "citizens": summary["citizens"]["total"],
            "checks": [{"name": c["name"], "passed": c["passed"], "actual": c["actual"],
                        "threshold": c["threshold"]} for c in summary["slo"]["checks"]]}


def stop_orphans(run: Run) -> None:
    """End the load processes a killed service left for this run: the lead (the master, or
    the only process) gracefully, so it writes its results; the rest after it.

    They are found by their pid files in the run directory rather than by the pids the store
    recorded: a service killed between starting them and recording them leaves them too. A
    lead that has not yet set up its graceful stop would die of SIGUSR1 with nothing
    written, so it is given until it catches the signal."""
    pids = load_processes_alive(Path(run.run_dir))
    lead = next((pids[role] for role in LEAD_ROLES if role in pids), None)
    if lead is not None and _catches_when_ready(lead, run, signal.SIGUSR1) and \
            _signal(lead, signal.SIGUSR1):
        deadline = time.monotonic() + ORPHAN_STOP_S
        while _belongs_to(lead, run) and time.monotonic() < deadline:
            time.sleep(0.2)
    for pid in pids.values():
        if _belongs_to(pid, run):
            _signal(pid, signal.SIGKILL)


def _belongs_to(pid: int, run: Run) -> bool:
    """Whether pid is alive and one of this run's load processes (pids are reused)."""
    return pid in load_processes_alive(Path(run.run_dir)).values()


def _catches_when_ready(pid: int, run: Run, number: int) -> bool:
    """Wait (up to ORPHAN_READY_S) until the process has a handler for the signal."""
    deadline = time.monotonic() + ORPHAN_READY_S
    while _belongs_to(pid, run):
        try:
            caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return False
        if int(caught.split()[1], 16) >> (number - 1) & 1:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return False


def _signal(pid: int, number: int) -> bool:
    try:
        os.kill(pid, number)
        return True
    except OSError:
        return False
