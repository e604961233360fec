"""A master's part: it conducts the run and hears its workers — checks each one's scenario,
folds in their reports, notices the lost, and waits for every final report at the stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import gevent

from esr import __version__
from esr.engine import locust_compat as compat
from esr.engine import messages
from esr.engine.arrivals import WORKERS_READY_S, Handover, handover_instant, wire_of
from esr.engine.chaos import Fault
from esr.engine.conducting import Conducting
from esr.engine.connections import keeps_connections
from esr.engine.lost_workers import Report, WorkerLedger
from esr.pool import citizens_held_by, offer_of, plain_capacity
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
        self._identified: set[str] = set()  # workers whose identity was checked: taken in
        self._welcomed: set[str] = set()  # workers whose scenario and version were checked
        self._refused: set[str] = set()
        self._joined: dict[str, dict] = {}  # welcomed workers: their host, version, capacity
        self._offer = offer_of(scenario)  # what a standing worker asking for it gets
        self._cpu_since = (time.process_time(), time.monotonic())  # the master's own CPU
        self.sharing = Sharing()  # the open model's arrivals among the workers
        runner = environment.runner
        environment.events.worker_report.add_listener(self._on_worker_report)
        # Heard ahead of Locust, as standing workers' asks: from a worker not yet connected,
        # Locust would give it a worker index and, with none connected, call itself stopped.
        compat.hear_strangers(runner, messages.IDENTIFY, self._on_identify)
        runner.register_message(messages.HELLO, self._on_hello)
        compat.admit_workers_only_if(runner, lambda worker: worker in self._identified,
                                     self._turn_away)
        compat.hear_strangers(runner, messages.SCENARIO_WANTED, self._on_scenario_wanted)
        # A worker gone missing hands its citizens to the others (Locust's rebalancing).
        compat.enable_rebalancing(environment)
        # A worker's connection closing dates its end (the ledger's bound on what it took),
        # and its arrivals go to the others at once, not after Locust's missed heartbeats.
        compat.watch_worker_connections(runner, self._disconnected, self.ledger.reconnected)

    def run_settings(self) -> dict:
        return messages.run_settings(self.run_id, self.time_scale, self.user_scale,
                                     self.sharing.workers, wire_of(self.sharing.handovers),
                                     self.started_s)

    def on_test_start(self, environment, **kwargs) -> None:
        super().on_test_start(environment, **kwargs)
        self._finals.clear()
        self.ledger.new_run()
        self._cpu_since = (time.process_time(), time.monotonic())
        self.sharing = Sharing(compat.connected_workers(environment.runner) & self._welcomed)
        # Ahead of Locust's spawn messages on the same connection: workers label this run.
        environment.runner.send_message(messages.RUN, self.run_settings())

    def spread_fault(self, fault: Fault) -> None:
        self.environment.runner.send_message(messages.FAULT, fault.wire())

    def workers_now(self) -> int:
        return self.environment.runner.worker_count

    def results_of_workers(self) -> dict:
        # Locust indexes whoever sends it a message, the refused included.
        ever = compat.workers_ever_connected(self.environment.runner, besides=self._refused)
        return {"workers": ever, "lost_workers": self.ledger.entries()}

    def citizens_held(self) -> int | None:
        """Locust shares citizens out evenly: the workers hold as many times as the least of
        them holds (None while one has not said)."""
        workers = compat.connected_workers(self.environment.runner) & set(self._joined)
        a_file_each = keeps_connections(self.scenario, self.time_scale)
        held = [citizens_held_by(self._joined[w]["capacity"], a_file_each=a_file_each)
                for w in workers]
        if not held or None in held:
            return None
        return len(held) * min(held)

    def pool_now(self) -> list[dict]:
        """The workers in this run, as the service shows its pool (live.json)."""
        runner, pool = self.environment.runner, []
        for worker in sorted(compat.connected_workers(runner) & set(self._joined)):
            record = self.ledger.records.get(worker)
            pool.append({**self._joined[worker], "id": worker,
                         "citizens": compat.users_on_worker(runner, worker),
                         "last_heard": record.last_heard if record else None})
        return pool

    # ---- workers joining and reporting ---------------------------------------------------------

    def _on_scenario_wanted(self, msg) -> None:
        """A standing worker asks for the scenario: offered until a headless run ends (in
        the web UI, any time)."""
        taking = self.web_runs is not None or not (self.finishing or self.ended_at)
        self.environment.runner.send_message(
            messages.SCENARIO if taking else messages.NO_RUN, self._offer if taking else {},
            client_id=msg.node_id)

    def _on_identify(self, msg) -> None:
        """A worker about to be one says who it is (before Locust hears it is ready)."""
        reason = refusal(msg.node_id, msg.data, self.scenario)
        if reason is None:
            self._identified.add(msg.node_id)
        else:
            self._refuse(msg.node_id, reason, quit_now=False)  # told why once it says hello

    def _on_hello(self, environment, msg, **_) -> None:
        theirs = msg.data
        reason = refusal(msg.node_id, theirs, self.scenario)
        if reason is not None:
            self._refuse(msg.node_id, reason)
            return
        self.ledger.hello(msg.node_id, time.time())
        self._welcomed.add(msg.node_id)
        self._joined[msg.node_id] = {
            "host": str(theirs.get("host", ""))[:200], "version": theirs["version"],
            "capacity": plain_capacity(theirs.get("capacity"))}
        environment.runner.send_message(messages.WELCOME, self.run_settings(),
                                        client_id=msg.node_id)

    def _turn_away(self, worker: str) -> None:
        """A worker refused when it said who it is hears why when it says hello; one that
        never said is told now."""
        if worker not in self._refused:
            self._refuse(worker, f"worker {worker} did not say which scenario it runs before it "
                         "was ready: not an ESR worker of this version")

    def _refuse(self, worker: str, reason: str, quit_now: bool = True) -> None:
        if worker not in self._refused:
            logger.error("refusing a worker: %s", reason)
            self._refused.add(worker)
            append_event(self.run_dir, "worker_refused", worker=worker, reason=reason)
        if quit_now:
            compat.tell_worker_to_quit(self.environment.runner, worker)

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
        self.ledger.heard(worker, time.time(), report_of(data, self.sharing.workers))
        self.environment.runner.send_message(
            messages.ACK, {"sent_at": data[messages.SENT_AT], "at": time.time()},
            client_id=worker)

    # ---- the stop, and workers lost ------------------------------------------------------------

    def reporting_workers(self) -> set[str]:
        """All workers but those lost or refused. One whose connection closed (its process
        ended) sends no final report: it is lost now, not after the wait for one."""
        connected = compat.connected_workers(self.environment.runner)
        for worker in sorted(connected):
            if self.ledger.ended(worker):
                self._lose(worker, "its connection closed")
        return connected - set(self.ledger.lost)

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

    def _disconnected(self, worker: str, at: float) -> None:
        self.ledger.disconnected(worker, at)
        self._hand_over(worker)

    def _lose(self, worker: str, reason: str) -> None:
        lost = self.ledger.lose(worker, time.time(), reason)
        if lost is not None:
            logger.warning("worker %s lost (%s): at most %d of its requests went unreported",
                           worker, reason, lost["unreported_max"])
            append_event(self.run_dir, "worker_lost", **lost)
            self._hand_over(worker)

    def _hand_over(self, worker: str) -> None:
        """Open model: the survivors take a lost worker's arrivals (Sharing), as its connection
        closes (its process ended) or once it is called lost. Not once the run is stopping (its
        schedule is over), nor before a run (no worker shares one yet)."""
        if not self.scenario.load_profile.arrival_rate or self.finishing:
            return
        # Where the workers' schedule begins (worker.py): half a second after the start.
        handover = self.sharing.hand_over(worker, set(self.ledger.lost),
                                          time.time() - (self.started_s + WORKERS_READY_S))
        if handover is None:
            return
        self.environment.runner.send_message(messages.HANDOVER,
                                             {"handovers": wire_of(self.sharing.handovers)})
        logger.warning("worker %s's arrivals go to the %d others from %g s into the schedule",
                       worker, len(handover.takers), handover.from_s)
        append_event(self.run_dir, "arrivals_handed_over", worker=worker,
                     from_s=handover.from_s,
                     to=[self.sharing.workers[i] for i in handover.takers])


class Sharing:
    """The open model's arrivals among the workers: those connected at the run's start, in
    order (one joining later takes none, or the split would no longer be exact), and the
    changes as workers are lost (arrivals.Handover)."""

    def __init__(self, workers: Iterable[str] = ()):
        self.workers = sorted(workers)
        self.handovers: list[Handover] = []

    def hand_over(self, worker: str, lost: set[str], elapsed_s: float) -> Handover | None:
        """The survivors take `worker`'s arrivals, from an instant of the schedule they all
        hear of first; those due before it went with it (lost_workers.py). None if it took
        none, or nobody is left to."""
        if worker not in self.workers:
            return None
        index = self.workers.index(worker)
        takers = self.handovers[-1].takers if self.handovers else range(len(self.workers))
        survivors = tuple(i for i in takers if i != index and self.workers[i] not in lost)
        if index not in takers or not survivors:
            return None
        self.handovers.append(Handover(handover_instant(elapsed_s, self.handovers), survivors))
        return self.handovers[-1]


def refusal(worker: str, theirs: dict, scenario) -> str | None:
    """Why a worker is refused (its scenario or ESR version differs), or None."""
    if (theirs.get("sha256"), theirs.get("version")) == (scenario.sha256, __version__):
        return None
    return (f"worker {worker} runs {theirs.get('file')} (sha256 "
            f"{str(theirs.get('sha256'))[:16]}, ESR {theirs.get('version')}) but this master "
            f"runs {scenario.file} (sha256 {scenario.sha256[:16]}, ESR {__version__})")


def report_of(data: dict, sharing: list[str]) -> Report:
    """What the ledger reads from a worker's report (messages.py names the keys)."""
    acked = data.get(messages.ACKED)
    arrivals = data[messages.DRAINED]["arrivals"]  # this drain's (probes.Drained)
    given = data.get(messages.ARRIVALS_GIVEN) or []
    return Report(
        sent_at=data[messages.SENT_AT], started=data[messages.STARTED],
        in_flight=data[messages.IN_FLIGHT], requests=data[messages.REQUESTS],
        citizens=data[messages.CITIZENS], acked=tuple(acked) if acked else None,
        arrivals_scheduled=arrivals.get("scheduled", 0),
        # started (on time or late) or dropped: summary.arrival_figures
        arrivals_settled=sum(arrivals.get(key, 0) for key in ("on_time", "late", "missed")),
        arrivals_given=dict(zip(sharing, given, strict=False)))
