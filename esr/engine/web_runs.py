"""Runs started from Locust's web UI: every start in the browser is a run of its own, with
its own id, directory and tally; a stopped run gets its files and its report card."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import gevent
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from esr.run_directory import EVENTS, new_run_id, write_run_files
from esr.wire import STOP_TIMEOUT_S

logger = logging.getLogger(__name__)

# The workers' last reports (master.FINAL_REPORT_TIMEOUT_S), the files, and the report card.
CONCLUDE_TIMEOUT_S = 135.0
# Ctrl-C or SIGTERM: the run's stop, its final reports, and its card, then the UI ends.
SHUT_DOWN_GRACE_S = 75.0


class WebRuns:
    def __init__(self, run):
        self.run = run  # the conducting run (conducting.py) whose web UI this is
        self.report_card: dict | None = None  # the last run's report card, when built
        self._concluding = None  # the greenlet writing a stopped run's files

    def begin(self) -> None:
        """A start in the browser: a new id, directory and tally."""
        run, options = self.run, self.run.options
        # Named on the command line, the run id and directory are every run's (the last wins).
        run_id = options.run_id or new_run_id(run.scenario.name)
        run_dir = Path(options.run_dir or Path(options.reports_dir) / run_id).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / EVENTS).unlink(missing_ok=True)
        run.begin_run(run_id, run_dir)
        write_run_files(run_dir, run_id, run.scenario, host=run.environment.host or None,
                        workers=run.workers_now(), time_scale=run.time_scale,
                        user_scale=run.user_scale)
        self.report_card = {"run_id": run_id, "state": "running", "run_dir": str(run_dir)}

    def stopped(self) -> None:
        self._concluding = gevent.spawn(self._conclude)

    def _conclude(self) -> None:
        """A browser run has stopped (at its end, or Stop pressed): its files, its report card."""
        run = self.run
        if run.finishing:
            run.wait_for_finish()
        else:  # Stop pressed: Locust has stopped the workers already
            if run.chaos is not None:
                run.chaos.end()
            run.await_final_reports(run.reporting_workers())
        run.write_results()
        self.report_card["state"] = "building"
        # A process of its own: building the card is CPU work that would stall this one.
        formats = ",".join(run.scenario.report_formats)
        process = subprocess.Popen(
            [sys.executable, "-m", "esr.cli", "report", str(run.run_dir), "--format", formats],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, error = process.communicate()
        self.report_card["state"] = "ready" if process.returncode == 0 else "failed"
        if process.returncode:
            self.report_card["error"] = error.strip().splitlines()[-1:]
            logger.error("the report card of %s failed: %s", run.run_id, error.strip())

    def await_concluded(self) -> None:
        if self._concluding is not None:
            self._concluding.join(timeout=CONCLUDE_TIMEOUT_S)

    def shut_down(self, *_) -> None:
        """Ctrl-C or SIGTERM: end the run in progress gracefully, then stop serving, so
        Locust exits."""
        gevent.spawn(self._shut_down)

    def _shut_down(self) -> None:
        run = self.run
        if run.environment.runner.state in (STATE_SPAWNING, STATE_RUNNING):
            run.finish()
        deadline = time.monotonic() + STOP_TIMEOUT_S + SHUT_DOWN_GRACE_S
        while self.report_card and self.report_card["state"] in ("running", "building") \
                and time.monotonic() < deadline:
            gevent.sleep(0.2)
        run.environment.web_ui.stop()
