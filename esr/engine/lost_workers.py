"""The master's ledger of its workers: what each reported, and the bound on what a lost one
took with it.

A worker lost mid-run (killed, its host cut off) took with it the requests it made after its
last report. Nobody can count those, but they can be bounded. What the target received from
it and no report counted is at most the requests in flight when it drained its last report
(counted exactly, at that drain) plus those it started afterwards, until it stopped sending:

- its process ended (killed, crashed): the master sees its connection close at once, and the
  worker sent nothing after that (taken on trust: a connection reset by something between
  them, the worker living on and unable to reconnect, would be taken for its end too);
- it was cut off: it stops its citizens once no report of its own has been acknowledged for
  silence_limit_s() (the master acknowledges each report it receives, messages.ACK), judged
  every WATCH_INTERVAL_S by its own clock — so at most sending_after_last_report_s() after the
  last report the master received, however long the master takes to call it missing. A
  master cannot tell a host cut off from everything from one that still reaches the target:
  the bound is the latter's.

Requests started in that window are bounded by the worker's busiest rate so far (request
starts per second per citizen, between two reports, by the worker's clock) with a margin
(RATE_MARGIN), times its citizens and the window, plus the excess a rate allows over a short
window: three standard deviations of a Poisson count, never more than one request per
citizen. In the open model the schedule sets the pace and the pool's citizens come and go
with it: there the bound takes the worker's busiest pace itself (request starts per second),
with no cap per citizen. The ledger works the bound out; it never touches Locust.

In the open model, a lost worker also took its arrivals with it: the sharing gave it a share
of the schedule until the survivors took over (arrivals.Handover), or until the run's end.
Its own reports cannot tell that share; the others' can (each judges every arrival of the
schedule, and reports how many each worker was given: messages.ARRIVALS_GIVEN). What it was
given and its reports do not say it started or dropped went with it: it may have started
some after its last report (their requests are within the bound above), no one started the
others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from esr.run_directory import iso_at

# Locust calls a worker missing after 3 unanswered heartbeats (1 s apart), which a worker
# busy with tens of thousands of citizens misses while well (a full garbage collection
# alone can take 2 s): the master waits this many before moving its citizens.
MISSING_AFTER_HEARTBEATS = 8
# How late a report's acknowledgement may come, beyond the interval between reports, before
# its worker stops its citizens. A worker's own stalls (a full garbage collection of a big
# one takes ~2 s) skip a verdict instead; the master freezes what it holds from the start of
# a run (gc.freeze), and acknowledges within milliseconds here. Longer would loosen the bound
# for a whole-host cut (lost_workers' docstring), shorter risk stopping a well worker.
ACK_GRACE_S = 2.0
# How often a worker checks that silence, and the master its workers' state.
WATCH_INTERVAL_S = 0.25
# A worker whose own loop was late skips one verdict (it may not have read the ack waiting
# for it), and judges the next one: between two verdicts, at most this many intervals.
WATCH_INTERVALS_PER_VERDICT = 3
# The most a count of request starts exceeds what its rate expects, in standard deviations.
EXCESS_SIGMAS = 3.0
# A worker's pace may rise past the busiest seen so far (the target answering faster): the
# bound takes this much more. A worker killed 2.5 s after a report, on this 2-core machine
# with other tests running, had started 9% more than its busiest pace allowed.
RATE_MARGIN = 1.2


def silence_limit_s(report_interval_s: float) -> float:
    """A worker stops its citizens once no report of its own sent this long ago or later has
    been acknowledged: the master has given its citizens to others, or soon will."""
    return report_interval_s + ACK_GRACE_S


def sending_after_last_report_s(report_interval_s: float) -> float:
    """The longest a cut-off worker sends after the last report its master received."""
    return silence_limit_s(report_interval_s) + WATCH_INTERVALS_PER_VERDICT * WATCH_INTERVAL_S


@dataclass(frozen=True)
class Report:
    """What the ledger reads from one worker report (messages.py names the keys)."""

    sent_at: float  # the worker's clock (monotonic seconds) as it drained the report
    started: int  # requests started since its previous report
    in_flight: int  # requests started and not yet answered, at that drain
    requests: int  # requests the report counts (answered)
    citizens: int  # citizens it runs, or was asked to run if more
    acked: tuple[float, float] | None = None  # its latest ack: (master's clock as sent,
    # worker's clock as received)
    # Open model: its arrivals scheduled, and started or dropped, since its previous report;
    arrivals_scheduled: int = 0
    arrivals_settled: int = 0
    # and the arrivals the sharing gave each worker so far, by its judgment.
    arrivals_given: dict[str, int] = field(default_factory=dict)


@dataclass
class WorkerRecord:
    last_heard: float  # the master's clock (epoch seconds) at its last report, or hello
    sent_at: float | None = None  # the worker's clock at that report's drain
    citizens: int = 0  # at its last report (or the master's last dispatch, if more)
    in_flight: int = 0  # at its last report
    peak_rate_per_citizen: float = 0.0  # request starts per second per citizen, busiest
    peak_rate: float = 0.0  # request starts per second, busiest (the open model's measure)
    reported: int = 0  # requests its reports counted, all told
    # A lower bound on (master's epoch clock - worker's clock): each ack was received after
    # the master sent it. None before the first ack came back.
    clock_offset: float | None = None
    disconnected_at: float | None = None  # the master's clock as its connection closed
    assigned: int = 0  # citizens the master last dispatched to it
    arrivals_scheduled: int = 0  # open model: the arrivals its reports counted scheduled,
    arrivals_settled: int = 0  # and started or dropped, this run


class WorkerLedger:
    def __init__(self, report_interval_s: float):
        self.sending_after_last_report_s = sending_after_last_report_s(report_interval_s)
        self.records: dict[str, WorkerRecord] = {}
        self.lost: dict[str, dict] = {}
        # Open model: the arrivals the sharing gave each worker, the most any report said.
        self.arrivals_given: dict[str, int] = {}

    def new_run(self) -> None:
        """A run starts (the web UI starts one after another): no worker lost yet, no request
        reported, no arrival given."""
        self.lost.clear()
        self.arrivals_given.clear()
        for record in self.records.values():
            record.reported = record.arrivals_scheduled = record.arrivals_settled = 0

    def hello(self, worker: str, now: float) -> None:
        self.records.setdefault(worker, WorkerRecord(last_heard=now))

    def heard(self, worker: str, now: float, report: Report) -> None:
        """A report from `worker`, received at `now` (the master's clock)."""
        record = self.records.setdefault(worker, WorkerRecord(last_heard=now))
        if record.sent_at is not None and report.sent_at > record.sent_at and report.started:
            # Per citizen, over the fewer citizens of the two ends: never an underestimate.
            running = max(1, min(record.citizens, report.citizens) or report.citizens)
            rate = report.started / (report.sent_at - record.sent_at)
            record.peak_rate = max(record.peak_rate, rate)
            record.peak_rate_per_citizen = max(record.peak_rate_per_citizen, rate / running)
        if report.acked is not None:
            master_sent, worker_received = report.acked
            offset = master_sent - worker_received
            record.clock_offset = offset if record.clock_offset is None \
                else max(record.clock_offset, offset)
        record.last_heard, record.sent_at = now, report.sent_at
        record.citizens, record.in_flight = max(report.citizens, 0), max(report.in_flight, 0)
        record.reported += report.requests
        record.disconnected_at = None  # reporting: its connection is open again
        record.arrivals_scheduled += report.arrivals_scheduled
        record.arrivals_settled += report.arrivals_settled
        for given_to, given in report.arrivals_given.items():
            # Each report counts up to its drain: the latest judgment counts most.
            self.arrivals_given[given_to] = max(self.arrivals_given.get(given_to, 0), given)

    def assigned(self, worker: str, citizens: int) -> None:
        """The citizens the master's last dispatch gave `worker` (a worker that reported
        fewer may have been given more since)."""
        if worker in self.records:
            self.records[worker].assigned = citizens

    def disconnected(self, worker: str, at: float) -> None:
        """`worker`'s connection to the master closed at `at`: its process ended."""
        if worker in self.records:
            self.records[worker].disconnected_at = at

    def ended(self, worker: str) -> bool:
        """Whether `worker`'s connection closed (its process ended) and was not reopened."""
        record = self.records.get(worker)
        return record is not None and record.disconnected_at is not None

    def reconnected(self, worker: str) -> None:
        if worker in self.records:
            self.records[worker].disconnected_at = None

    def sending_window(self, record: WorkerRecord, now: float) -> tuple[float, str]:
        """How long after its last report's drain `record`'s worker may have sent, and what
        ended it: "disconnected" (its process ended) or "silence" (it stopped itself)."""
        if record.sent_at is None:  # never reported: from its hello, by the master's clock
            return now - record.last_heard + self.sending_after_last_report_s, "silence"
        window = self.sending_after_last_report_s
        if record.disconnected_at is not None and record.clock_offset is not None:
            # The report left no later than its drain, seen in the master's clock no earlier
            # than sent_at + clock_offset; the process ended before the master saw it close.
            until_closed = record.disconnected_at - (record.sent_at + record.clock_offset)
            if until_closed < window:
                return max(0.0, until_closed), "disconnected"
        return window, "silence"

    def lose(self, worker: str, now: float, reason: str) -> dict | None:
        """Record `worker` as lost (once); what the report says about it."""
        if worker in self.lost:
            return None
        record = self.records.get(worker) or WorkerRecord(last_heard=now)
        window, ended = self.sending_window(record, now)
        citizens = max(record.citizens, record.assigned)
        in_flight = record.in_flight if record.sent_at is not None else citizens
        self.lost[worker] = {
            "worker": worker, "at": iso_at(now), "reason": reason,
            "last_report_at": iso_at(record.last_heard), "citizens": citizens,
            "unreported_max": in_flight + self._starts_at_most(worker, record, window),
            "sending_window_s": round(window, 3), "sending_ended_by": ended,
            "requests_reported": record.reported}
        return self.lost[worker]

    def _starts_at_most(self, worker: str, record: WorkerRecord, window: float) -> int:
        """The most requests `worker` started in the window after its last report."""
        def busiest(measure) -> float:  # its own, or if it never reported twice, any worker's
            return RATE_MARGIN * (measure(record) or max(map(measure, self.records.values()),
                                                          default=0.0))

        citizens = max(record.citizens, record.assigned)
        if self.arrivals_of(worker) is not None:
            # The open model: the schedule sets the pace, and the citizens come and go with
            # it (a pool that grows as the target slows): the worker's own busiest pace.
            return starts_at_most(busiest(lambda r: r.peak_rate) * window, None)
        return starts_at_most(busiest(lambda r: r.peak_rate_per_citizen) * citizens * window,
                              citizens)

    def entries(self) -> list[dict]:
        """The lost workers, with the requests each reported (some may come after the loss)."""
        for worker, entry in self.lost.items():
            entry["requests_reported"] = self.records.get(worker, WorkerRecord(0)).reported
            arrivals = self.arrivals_of(worker)
            if arrivals is not None:
                entry["arrivals"] = arrivals
        return list(self.lost.values())

    def arrivals_of(self, worker: str) -> dict | None:
        """Open model (None otherwise): the arrivals the sharing gave `worker` ("given"), those
        its reports counted scheduled, and started or dropped ("settled"); the rest went with
        it ("lost")."""
        record = self.records.get(worker, WorkerRecord(0))
        if worker not in self.arrivals_given and not record.arrivals_scheduled:
            return None
        # No other's report may have come (every worker lost): what it scheduled, at least.
        given = max(self.arrivals_given.get(worker, 0), record.arrivals_scheduled)
        return {"given": given, "scheduled": record.arrivals_scheduled,
                "settled": record.arrivals_settled, "lost": given - record.arrivals_settled}

    @property
    def unreported_max(self) -> int:
        return sum(entry["unreported_max"] for entry in self.lost.values())


def starts_at_most(expected: float, citizens: int | None) -> int:
    """The most requests `citizens` start in a window where their rate expects `expected`:
    the excess over the expectation is at most EXCESS_SIGMAS standard deviations of a Poisson
    count (citizens' think times make their starts more regular than Poisson), and at most
    one per citizen (each citizen's phase) when their number is fixed (None: the open model's
    pool, which grows as it must)."""
    if expected <= 0:
        return 0
    excess = math.ceil(EXCESS_SIGMAS * math.sqrt(expected))
    return math.ceil(expected) + (excess if citizens is None else min(citizens, excess))
