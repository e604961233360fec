"""A worker's part: its citizens act, and it reports to its master — the probe data with
every Locust report, the remainder at the stop — starting nothing before the master has
accepted its scenario, and stopping its citizens if the master falls silent."""

from __future__ import annotations

import logging
import time

import gevent
import gevent.event
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from esr import __version__
from esr.engine import messages
from esr.engine.acting import Acting
from esr.engine.chaos import Fault
from esr.engine.lost_workers import MASTER_SILENCE_S, WATCH_INTERVAL_S

logger = logging.getLogger(__name__)

# How long a worker given citizens waits for the master to accept its scenario.
WELCOME_TIMEOUT_S = 10.0


class WorkerRun(Acting):
    def __init__(self, environment, scenario):
        super().__init__(environment, scenario)
        self._final_pending = False  # the next report is the last of this run
        self._welcomed = gevent.event.Event()
        runner = environment.runner
        runner.register_message(messages.WELCOME, self._on_welcome)
        runner.register_message(messages.RUN, lambda msg, **_: self._take_run(msg.data))
        runner.register_message(messages.FAULT,
                                lambda msg, **_: self.faults.append(Fault(**msg.data)))
        environment.events.report_to_master.add_listener(self._on_report_to_master)
        # Tell the master which scenario this worker runs: it refuses a different one.
        runner.send_message(messages.HELLO, {
            "sha256": scenario.sha256, "version": __version__, "file": scenario.file})
        gevent.spawn(self._stop_citizens_when_the_master_is_silent)
        self._hold_citizens_until_welcomed()

    def _on_welcome(self, msg, **_) -> None:
        self._take_run(msg.data)
        self._welcomed.set()

    def _take_run(self, settings: dict) -> None:
        """The master's per-run values (messages.RUN). They come ahead of the spawn message,
        except to a worker joining a run in progress, whose citizens wait for the welcome:
        then its probes and arrivals are made again for the run's scales."""
        self.set_run(str(settings["run_id"]), float(settings["time_scale"]),
                     float(settings["user_scale"]))
        if self.in_test:
            self.prepare()

    def _on_report_to_master(self, client_id, data, **_) -> None:
        runner = self.environment.runner
        data[messages.DRAINED] = drained = self.probes.drain()
        data[messages.REQUESTS] = sum(row[2] for row in drained["latency"])  # [name, bucket, n…]
        data[messages.CITIZENS] = max(runner.user_count,
                                      sum(runner.target_user_classes_count.values()))
        if self._final_pending:
            data[messages.FINAL] = True
            self._final_pending = False

    def on_test_stop(self, environment, **kwargs) -> None:
        super().on_test_stop(environment, **kwargs)
        # The remainder goes now, ahead of the worker's "client_stopped" message.
        self._final_pending = True
        environment.runner._send_stats()
        # Locust's worker next sleeps out the stop timeout before it reads another
        # message, so the master's quit would wait 35 s: the users are stopped already.
        # (The next spawn message brings the master's stop timeout back.)
        environment.stop_timeout = 0

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
        start_worker = runner.start_worker

        def start_when_welcomed(user_classes_count, **kwargs):
            if not self._welcomed.wait(WELCOME_TIMEOUT_S):
                logger.error("the master has not welcomed this worker in %.0f s (is it an "
                             "ESR master of version %s?): running no citizens",
                             WELCOME_TIMEOUT_S, __version__)
                return
            start_worker(user_classes_count, **kwargs)

        runner.start_worker = start_when_welcomed
