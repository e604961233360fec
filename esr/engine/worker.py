"""A worker's part: its citizens act, and it reports to its master — the probe data with
every Locust report, the remainder at the stop — starting nothing before the master has
accepted its scenario, and stopping its citizens if the master falls silent."""

from __future__ import annotations

import logging
import socket
import time

import gevent
import gevent.event
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from esr import __version__
from esr.engine import locust_compat as compat
from esr.engine import messages
from esr.engine.acting import Acting
from esr.engine.arrivals import WORKERS_READY_S, Share
from esr.engine.chaos import Fault
from esr.engine.lost_workers import MASTER_SILENCE_S, WATCH_INTERVAL_S
from esr.engine.probes import requests_in
from esr.pool import capacity, citizens_held_by, trimmed

logger = logging.getLogger(__name__)

# How long a worker given citizens waits for the master to accept its scenario.
WELCOME_TIMEOUT_S = 10.0


def identity(scenario) -> dict:
    """What a worker tells its master of itself (messages.IDENTIFY, messages.HELLO)."""
    return {"sha256": scenario.sha256, "version": __version__, "file": scenario.file,
            "host": socket.gethostname(), "capacity": capacity()}


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
        runner.send_message(messages.HELLO, identity(scenario))
        gevent.spawn(self._stop_citizens_when_the_master_is_silent)
        self._admit_citizens()

    def _on_welcome(self, msg, **_) -> None:
        self._take_run(msg.data)
        self._welcomed.set()

    def _take_run(self, settings: dict) -> None:
        """The master's per-run values (messages.RUN). They come ahead of the spawn message,
        except to a worker joining a run in progress, whose citizens wait for the welcome:
        then its probes and arrivals are made again for the run's scales."""
        self.set_run(str(settings["run_id"]), float(settings["time_scale"]),
                     float(settings["user_scale"]))
        sharing, me = list(settings["workers"]), compat.worker_id(self.environment.runner)
        self.arrival_share = Share(sharing.index(me) if me in sharing else -1,
                                   max(len(sharing), 1))
        started = float(settings["started_s"])
        self.schedule_origin = started + WORKERS_READY_S if started else None
        if self.in_test:
            self.prepare()

    def _on_report_to_master(self, client_id, data, **_) -> None:
        runner = self.environment.runner
        data[messages.DRAINED] = drained = self.probes.drain()
        data[messages.REQUESTS] = requests_in(drained)
        data[messages.CITIZENS] = max(runner.user_count, compat.users_asked_of(runner))
        if self._final_pending:
            data[messages.FINAL] = True
            self._final_pending = False

    def on_test_stop(self, environment, **kwargs) -> None:
        super().on_test_stop(environment, **kwargs)
        # The remainder goes now, ahead of the worker's "client_stopped" message.
        self._final_pending = True
        compat.send_final_report_now(environment.runner)
        # Else the worker would sleep out the stop timeout before reading another message,
        # and the master's quit would wait 35 s: the users are stopped already.
        compat.ready_again_at_once(environment)

    def _stop_citizens_when_the_master_is_silent(self) -> None:
        """A worker cut off from its master stops its citizens: the master has handed them
        to other workers by now, and what they would send could never be reported."""
        runner = self.environment.runner
        while True:
            slept = time.monotonic()
            gevent.sleep(WATCH_INTERVAL_S)
            if time.monotonic() - slept > 2 * WATCH_INTERVAL_S:
                continue  # this process was too busy to read its messages: no verdict
            heard = compat.last_heard_from_master(runner)
            if heard and time.time() - heard > MASTER_SILENCE_S \
                    and runner.state in (STATE_SPAWNING, STATE_RUNNING):
                logger.error("no word from the master for %.0f s: stopping this worker's "
                             "citizens", time.time() - heard)
                runner.stop()

    def _admit_citizens(self) -> None:
        """Locust may hand a worker citizens the moment it connects, before the master has
        checked its scenario: a worker starts none until the master has welcomed it. One
        refused is told to quit instead, having sent nothing the report would miss. Nor does
        it start more than it can hold (its open files and memory: pool.citizens_held_by),
        whatever it is handed (a master shares citizens out evenly, and hands a lost worker's
        to the others at once)."""
        most = citizens_held_by(capacity())

        def admit(counts: dict[str, int]) -> dict[str, int] | None:
            if not self._welcomed.wait(WELCOME_TIMEOUT_S):
                logger.error("the master has not welcomed this worker in %.0f s (is it an ESR "
                             "master of version %s?): running no citizens", WELCOME_TIMEOUT_S,
                             __version__)
                return None
            if most is not None and sum(counts.values()) > most:
                logger.warning("asked for %d citizens, this worker holds %d (open files and "
                               "memory): running %d", sum(counts.values()), most, most)
                return trimmed(counts, most)
            return counts

        compat.admit_users(self.environment.runner, admit)
