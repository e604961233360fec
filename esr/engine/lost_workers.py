"""The master's ledger of its workers: when each was last heard and how fast it sent.

A worker lost mid-run (killed, its host cut off) took with it the requests it made
after its last report. Nobody can count those, but they can be bounded: the worker
stops its citizens once it has not heard the master for MASTER_SILENCE_S, so it sent
for at most that long after the master last heard it (plus the time the master took
to notice), at no more than its busiest rate so far, plus one request in flight per
citizen. The ledger works that bound out; it never touches Locust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from esr.run_directory import iso_at

# Locust calls a worker missing after 3 unanswered heartbeats (1 s apart), which a worker
# busy with tens of thousands of citizens misses while well (a full garbage collection
# alone can take 2 s): the master waits this many before moving its citizens.
MISSING_AFTER_HEARTBEATS = 8
# A worker that has not heard its master for this long stops its citizens: the master has
# given them to other workers by then.
MASTER_SILENCE_S = 10.0
# How often the worker checks that silence, and the master its workers' state.
WATCH_INTERVAL_S = 1.0


@dataclass
class WorkerRecord:
    last_heard: float  # epoch seconds of its last report (or hello)
    citizens: int = 0  # at its last report: those it ran, or was asked to run if more
    peak_rate_per_citizen: float = 0.0  # requests per second per citizen, busiest report


class WorkerLedger:
    def __init__(self):
        self.records: dict[str, WorkerRecord] = {}
        self.lost: dict[str, dict] = {}

    def hello(self, worker: str, now: float) -> None:
        self.records.setdefault(worker, WorkerRecord(last_heard=now))

    def heard(self, worker: str, now: float, requests: int, citizens: int) -> None:
        """A report from `worker`: `requests` completed since its previous one."""
        record = self.records.get(worker)
        if record is None:  # its hello has not arrived yet: this report starts the record
            self.records[worker] = WorkerRecord(last_heard=now, citizens=citizens)
            return
        interval = now - record.last_heard
        if interval > 0 and requests:
            # Per citizen, over the fewer citizens of the two ends: never an underestimate.
            running = max(1, min(record.citizens, citizens) or citizens)
            record.peak_rate_per_citizen = max(record.peak_rate_per_citizen,
                                               requests / interval / running)
        record.last_heard, record.citizens = now, max(citizens, 0)

    def lose(self, worker: str, now: float, reason: str) -> dict | None:
        """Record `worker` as lost (once); what the report says about it."""
        if worker in self.lost:
            return None
        record = self.records.get(worker) or WorkerRecord(last_heard=now)
        unheard_s = max(0.0, now - record.last_heard) + MASTER_SILENCE_S + WATCH_INTERVAL_S
        unreported = math.ceil(record.peak_rate_per_citizen * record.citizens * unheard_s) \
            + record.citizens
        self.lost[worker] = {"worker": worker, "at": iso_at(now), "reason": reason,
                             "last_report_at": iso_at(record.last_heard),
                             "citizens": record.citizens, "unreported_max": unreported}
        return self.lost[worker]

    @property
    def unreported_max(self) -> int:
        return sum(entry["unreported_max"] for entry in self.lost.values())
