"""A master's part: it conducts the run and hears its workers — checks each one's scenario,
folds in their reports, notices the lost, and waits for every final report at the stop."""

from __future__ import annotations

import logging
import time

import gevent

from esr import __version__
from esr.engine import locust_compat as compat
from esr.engine import messages
from esr.engine.chaos import Fault
from esr.engine.conducting import Conducting
from esr.engine.lost_workers import Report, WorkerLedger
from esr.run_directory import append_event

logger = logging.getLogger(__name__)

# How long the master waits, after the workers stopped, for their final reports.
FINAL_REPORT_TIMEOUT_S = 15.0


class MasterRun(Conducting):
    report_lag_s = compat.worker_report_interval_s()  # workers report every few seconds

    def __init__(self, environment, scenario):
        super().__init__(environment, scenario)
        self.ledger = WorkerLedger(self.report_lag_s)  # workers heard from, and those lost
        self._finals: set[str] = set()  # workers whose final report has come
        self._welcomed: set[str] = set()  # workers whose scenario and version were checked
        self._refused: set[str] = set()
        self._cpu_since = (time.process_time(), time.monotonic())  # the master's own CPU
        # The workers sharing the open model's arrivals: those connected at the start (one
        # joining later takes none, or the split would no longer be exact).
        self._sharing: list[str] = []
        runner = environment.runner
        environment.events.worker_report.add_listener(self._on_worker_report)
        runner.register_message(messages.HELLO, self._on_hello)
        # A worker gone missing hands its citizens to the others (Locust's rebalancing).
        compat.enable_rebalancing(environment)
        # A worker's connection closing dates its end (the ledger's bound on what it took).
        compat.watch_worker_connections(runner, self.ledger.disconnected,
                                        self.ledger.reconnected)

    def run_settings(self) -> dict:
        return messages.run_settings(self.run_id, self.time_scale, self.user_scale,
                                     self._sharing, self.started_s)

    def on_test_start(self, environment, **kwargs) -> None:
        super().on_test_start(environment, **kwargs)
        self._finals.clear()
        self.ledger.lost.clear()
        self._cpu_since = (time.process_time(), time.monotonic())
        self._sharing = sorted(compat.connected_workers(environment.runner) & self._welcomed)
        # Ahead of Locust's spawn messages on the same connection: workers label this run.
        environment.runner.send_message(messages.RUN, self.run_settings())

    def spread_fault(self, fault: Fault) -> None:
        self.environment.runner.send_message(messages.FAULT, fault.wire())

    def workers_now(self) -> int:
        return self.environment.runner.worker_count

    def results_of_workers(self) -> dict:
        return {"workers": compat.workers_ever_connected(self.environment.runner),
                "lost_workers": self.ledger.entries()}

    # ---- workers joining and reporting ---------------------------------------------------------

    def _on_hello(self, environment, msg, **_) -> None:
        theirs = msg.data
        if (theirs["sha256"], theirs["version"]) == (self.scenario.sha256, __version__):
            self.ledger.hello(msg.node_id, time.time())
            self._welcomed.add(msg.node_id)
            environment.runner.send_message(messages.WELCOME, self.run_settings(),
                                            client_id=msg.node_id)
            return
        reason = (f"worker {msg.node_id} runs {theirs['file']} (sha256 {theirs['sha256'][:16]}, "
                  f"ESR {theirs['version']}) but this master runs {self.scenario.file} "
                  f"(sha256 {self.scenario.sha256[:16]}, ESR {__version__})")
        logger.error("refusing a worker: %s", reason)
        self._refused.add(msg.node_id)
        append_event(self.run_dir, "worker_refused", worker=msg.node_id, reason=reason)
        compat.tell_worker_to_quit(environment.runner, msg.node_id)

    def _on_worker_report(self, client_id, data, **_) -> None:
        if client_id not in self._welcomed:  # refused, or never said which scenario it runs:
            return  # another scenario's figures (or anyone's) must not mix with ours
        if messages.DRAINED in data:
            self.tally.merge(data[messages.DRAINED], process=client_id)
            self._heard(client_id, data)
        if data.get(messages.FINAL):
            self._finals.add(client_id)

    def _heard(self, worker: str, data: dict) -> None:
        """A report into the ledger, acknowledged: its worker stops its citizens when its
        reports go unacknowledged (lost_workers.py)."""
        now = time.time()
        acked = data.get(messages.ACKED)
        self.ledger.heard(worker, now, Report(
            sent_at=data[messages.SENT_AT], started=data[messages.STARTED],
            in_flight=data[messages.IN_FLIGHT], requests=data[messages.REQUESTS],
            citizens=data[messages.CITIZENS], acked=tuple(acked) if acked else None))
        self.environment.runner.send_message(
            messages.ACK, {"sent_at": data[messages.SENT_AT], "at": time.time()},
            client_id=worker)

    # ---- the stop, and workers lost ------------------------------------------------------------

    def reporting_workers(self) -> set[str]:
        """All workers but those lost or refused."""
        return compat.connected_workers(self.environment.runner) - set(self.ledger.lost)

    def await_final_reports(self, expected: set[str]) -> None:
        deadline = time.monotonic() + FINAL_REPORT_TIMEOUT_S
        while not expected <= self._finals and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for worker in sorted(expected - self._finals):
            self._lose(worker, "no final report")

    def watch(self) -> None:
        # The master folds every worker's reports in: it can be the limit too.
        (cpu, wall), (cpu_then, wall_then) = (time.process_time(), time.monotonic()), \
            self._cpu_since
        self._cpu_since = (cpu, wall)
        self.tally.add_load("master", cpu - cpu_then, wall - wall_then)
        for worker, citizens in compat.users_dispatched(self.environment.runner).items():
            if citizens:  # a missing worker's share is emptied: it keeps its last
                self.ledger.assigned(worker, citizens)
        for worker in compat.missing_workers(self.environment.runner):
            if worker not in self.ledger.lost and worker not in self._refused:
                self._lose(worker, "missed heartbeats")

    def _lose(self, worker: str, reason: str) -> None:
        lost = self.ledger.lose(worker, time.time(), reason)
        if lost is not None:
            logger.warning("worker %s lost (%s): at most %d of its requests went unreported",
                           worker, reason, lost["unreported_max"])
            append_event(self.run_dir, "worker_lost", **lost)
