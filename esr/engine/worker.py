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
from esr.engine.arrivals import WORKERS_READY_S, Handover, Share, handovers_of
from esr.engine.chaos import Fault
from esr.engine.connections import keeps_connections
from esr.engine.lost_workers import WATCH_INTERVAL_S, silence_limit_s
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
        self._silence = _Silence(silence_limit_s(compat.worker_report_interval_s()))
        self.arrival_handovers: list[Handover] = []  # the open model's, as the master says
        runner = environment.runner
        runner.register_message(messages.WELCOME, self._on_welcome)
        runner.register_message(messages.RUN, lambda msg, **_: self._take_run(msg.data))
        runner.register_message(messages.HANDOVER,
                                lambda msg, **_: self._take_handovers(msg.data["handovers"]))
        runner.register_message(messages.FAULT,
                                lambda msg, **_: self.faults.append(Fault(**msg.data)))
        runner.register_message(messages.ACK, lambda msg, **_: self._silence.acked(msg.data))
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
        self._silence.heard_now()  # the master speaks: its silence counts from here
        sharing, me = list(settings["workers"]), compat.worker_id(self.environment.runner)
        self.arrival_share = Share(sharing.index(me) if me in sharing else -1,
                                   max(len(sharing), 1))
        started = float(settings["started_s"])
        self.schedule_origin = started + WORKERS_READY_S if started else None
        self.arrival_handovers = handovers_of(settings["handovers"])
        if self.in_test:
            self.prepare()

    def prepare(self) -> None:
        super().prepare()
        if self.arrivals:  # joining a run in progress: the handovers made before it joined
            self.arrivals.hand_over(self.arrival_handovers)

    def _take_handovers(self, wire: list) -> None:
        """A worker sharing the open model's arrivals was lost: from the instant the master
        set, the survivors take its arrivals (messages.HANDOVER)."""
        self.arrival_handovers = handovers_of(wire)
        if self.arrivals:
            self.arrivals.hand_over(self.arrival_handovers)

    def _on_report_to_master(self, client_id, data, **_) -> None:
        runner = self.environment.runner
        data[messages.DRAINED] = drained = self.probes.drain()
        data[messages.REQUESTS] = requests_in(drained)
        data[messages.CITIZENS] = max(runner.user_count, compat.users_asked_of(runner))
        data.update(self._silence.report(self.requests_sent, self.requests_in_flight))
        if self.arrivals:
            data[messages.ARRIVALS_GIVEN] = list(self.arrivals.given)
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

    def on_quitting(self, environment, **kwargs) -> None:
        self._silence.quitting = True
        super().on_quitting(environment, **kwargs)

    def _stop_citizens_when_the_master_is_silent(self) -> None:
        """A worker cut off from its master stops its citizens: the master has handed them
        to other workers by now, and what they would send could never be reported. Cut off
        means its reports go unacknowledged (messages.ACK), whatever else comes through."""
        runner = self.environment.runner
        skipped = False
        while not self._silence.quitting:
            slept = time.monotonic()
            gevent.sleep(WATCH_INTERVAL_S)
            if time.monotonic() - slept > 2 * WATCH_INTERVAL_S and not skipped:
                skipped = True  # this process was too busy to read its messages: the ack
                continue  # may be waiting; the next verdict counts (lost_workers.py)
            skipped = False
            silent_s = self._silence.silent_s()
            if silent_s > self._silence.limit_s and runner.state in (STATE_SPAWNING,
                                                                     STATE_RUNNING):
                logger.error("no report of this worker acknowledged for %.1f s: stopping its "
                             "citizens", silent_s)
                runner.stop()

    def _admit_citizens(self) -> None:
        """Locust may hand a worker citizens the moment it connects, before the master has
        checked its scenario: a worker starts none until the master has welcomed it. One
        refused is told to quit instead, having sent nothing the report would miss. Nor does
        it start more than it can hold (its open files and memory: pool.citizens_held_by),
        whatever it is handed (a master shares citizens out evenly, and hands a lost worker's
        to the others at once)."""
        def admit(counts: dict[str, int]) -> dict[str, int] | None:
            if not self._welcomed.wait(WELCOME_TIMEOUT_S):
                logger.error("the master has not welcomed this worker in %.0f s (is it an ESR "
                             "master of version %s?): running no citizens", WELCOME_TIMEOUT_S,
                             __version__)
                return None
            most = citizens_held_by(capacity(), a_file_each=keeps_connections(
                self.scenario, self.time_scale))  # the run's scales came with the welcome
            if most is not None and sum(counts.values()) > most:
                logger.warning("asked for %d citizens, this worker holds %d (open files and "
                               "memory): running %d", sum(counts.values()), most, most)
                return trimmed(counts, most)
            return counts

        compat.admit_users(self.environment.runner, admit)


class _Silence:
    """How long the master has not acknowledged this worker's reports, by this worker's clock:
    counted from the drain of the latest report acknowledged, or from the master's latest run
    settings if later (a worker given citizens starts the clock)."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.heard_at = time.monotonic()  # the drain of the latest report acknowledged
        self.latest_ack: list[float] | None = None  # [master's "at", our clock on arrival]
        self.sent_reported = 0  # requests started, as of the previous report
        self.quitting = False  # the process is quitting: nothing left to watch

    def heard_now(self) -> None:
        self.heard_at = max(self.heard_at, time.monotonic())

    def acked(self, ack: dict) -> None:
        self.heard_at = max(self.heard_at, float(ack["sent_at"]))
        self.latest_ack = [float(ack["at"]), time.monotonic()]

    def silent_s(self) -> float:
        return time.monotonic() - self.heard_at

    def report(self, sent: int, in_flight: int) -> dict:
        """The keys a report carries for the master's ledger (messages.py)."""
        keys = {messages.SENT_AT: time.monotonic(), messages.STARTED: sent - self.sent_reported,
                messages.IN_FLIGHT: in_flight}
        if self.latest_ack is not None:
            keys[messages.ACKED] = self.latest_ack
        self.sent_reported = sent
        return keys
