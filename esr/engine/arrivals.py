"""The open model: arrivals on a schedule, whether or not a citizen is free to take them.

One schedule for the whole run (evenly spaced, or a seeded Poisson process), of which each
load process takes its share: arrival k goes to process k mod N, so the split is exact; when
a worker is lost, the others take its arrivals from an instant of the schedule the master
sets (a Handover), so from then on none goes to no one, and none to two. At its instant an
arrival is offered to the idle citizens; when none is idle, the process
starts more (up to its cap), and an arrival that cannot start within DROP_AFTER_S of its
instant is dropped and counted (k6's dropped_iterations), never queued for later: lateness
stays bounded, and a generator that cannot keep up shows as drops, not as the target's
latency. The citizen idle last takes the next arrival (a stack, not a queue), so those idle
longest stay idle, and retire once enough others are idle: the pool follows the concurrency
the target asks for, never the number of arrivals or the run's length.
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import count, takewhile
from typing import NamedTuple

import gevent
from gevent.hub import Waiter

from esr.engine import locust_compat as compat
from esr.engine.connections import KEEPALIVE_IDLE_S

DROP_AFTER_S = 0.1  # an arrival not started this long after its instant is dropped
# With workers, the schedule begins this long after the master's start, once every worker's
# first citizens are ready (their spawn takes tens of ms), so their shares line up exactly.
WORKERS_READY_S = 0.5
# A lost worker's arrivals go to the others from a whole second of the schedule at least this
# far ahead of the master's decision: every survivor hears of it before (a message takes
# milliseconds), and all switch at that one instant.
HANDOVER_S = 1.0
# An idle citizen hangs up after this long (before servers close idle connections, see
# connections.py), and retires if enough others are idle.
RETIRE_AFTER_S = 0.8 * KEEPALIVE_IDLE_S
RETIRE_CHECK_S = 0.25  # how often idle citizens are looked at
LAG_CHECK_S = 0.05  # how often the process checks that its event loop keeps time
LAGGING_S = 0.02  # a loop this late: the process is short of CPU, and grows no more citizens
SPARE_S = 0.05  # the idle citizens kept: this many seconds' worth of arrivals (at least 2)
# Arrivals offered, behind schedule, between two turns given to the citizens. At 3,400/s
# on one core, 9 interleaved pairs of runs: 8 dropped 5,095 arrivals in all, 32 dropped
# 11,502 (fewer in 6 pairs, more in 2); 256, or a turn every 2 ms, dropped more.
YIELD_EVERY = 8
OFFER_TICK_S = 0.001  # the shortest the schedule sleeps
# Each citizen may hold one connection (a file descriptor) and ~40 KB: the default cap
# leaves room for the process's own files and half its share of the memory available.
CITIZEN_BYTES = 40_000
FILES_KEPT = 200


class Share(NamedTuple):
    """This process's place among the run's load processes at its start: it takes arrivals k
    with k % count == index (and, after a Handover, some of a lost process's)."""

    index: int
    count: int


class Handover(NamedTuple):
    """From `from_s` seconds into the schedule (a whole second) on, the arrivals of the load
    processes not among `takers` go to those that are (indices of the run's first Share):
    those of a lost worker, to the survivors."""

    from_s: float
    takers: tuple[int, ...]


def handovers_of(wire: list) -> list[Handover]:
    """Handovers as they travel (messages.HANDOVER: [[from_s, [takers]], ...])."""
    return [Handover(float(from_s), tuple(int(i) for i in takers)) for from_s, takers in wire]


def wire_of(handovers: Sequence[Handover]) -> list:
    """Handovers as they travel: handovers_of's input."""
    return [[handover.from_s, list(handover.takers)] for handover in handovers]


def taker(k: int, at: float, count: int, handovers: Sequence[Handover]) -> int:
    """Which load process (its index among the `count` of the run's start) takes arrival k,
    due `at` seconds into the schedule: the one place the sharing is decided.

    Dealt round: k to k mod count. A handover in force by `at` deals the arrivals of each
    process it leaves out round its takers in turn (that process's i-th to taker i mod M), an
    exact split again; the takers keep their own arrivals, so one that hears of a handover
    late misses only the lost process's arrivals, and never starts one another took."""
    owner, turn = k % count, k // count
    for handover in handovers:
        if at < handover.from_s:
            break
        if owner not in handover.takers:
            owner, turn = (handover.takers[turn % len(handover.takers)],
                           turn // len(handover.takers))
    return owner


def handover_instant(elapsed_s: float, handovers: Sequence[Handover]) -> float:
    """The instant of the schedule from which a handover decided `elapsed_s` into it applies:
    a whole second at least HANDOVER_S ahead, never before an earlier handover's."""
    earlier = handovers[-1].from_s if handovers else 0.0
    return float(max(math.ceil(elapsed_s + HANDOVER_S), earlier))


def schedule(rate: float, duration_s: float, spacing: str, seed: int) -> Iterator[float]:
    """The whole run's arrival instants, in seconds from its start."""
    rng = random.Random(seed)
    k, at = 0, 0.0
    while True:
        at = k / rate if spacing == "uniform" else at + rng.expovariate(rate)
        if at >= duration_s:
            return
        yield at
        k += 1


def default_cap(processes: int) -> int:
    """Citizens one process may hold: what its open-files limit and its share of the
    memory available allow."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    files = files if files != resource.RLIM_INFINITY else 1_000_000
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(files - FILES_KEPT, available // 2 // processes // CITIZEN_BYTES))


class Idle:
    """A citizen waiting for an arrival: woken with False to take one, True to retire."""

    __slots__ = ("waiter", "since", "hang_up", "hung_up", "woken")

    def __init__(self, hang_up: Callable[[], None]):
        self.waiter = Waiter()
        self.since = time.monotonic()
        self.hang_up = hang_up
        self.hung_up = self.woken = False


class Arrivals:
    def __init__(self, run, rate: float, duration_s: float, spacing: str, seed: int,
                 share: Share, max_citizens: float | None, origin: float | None = None):
        self.run, self.rate, self.share, self.origin = run, rate, share, origin
        self.max_citizens = max_citizens  # for the whole run, scaled; None: what fits
        self.handovers: list[Handover] = []  # the master's, in order (a worker lost)
        self._fit(share.count)
        self.start = time.time()
        self.offered: deque[float] = deque()  # instants offered, not taken yet, oldest first
        self.idle: deque[Idle] = deque()  # citizens waiting in next(), the latest idle last
        self.lagging = False  # the event loop runs late: short of CPU, grow no more
        self.ended_at: float | None = None  # when the process began to stop its citizens
        # Arrivals the sharing gave each process (by its index) so far, this one's included:
        # the master counts a lost worker's whole share from them (lost_workers.py).
        self.given = [0] * share.count
        self.judged = 0  # arrivals of the schedule judged so far (they are 0 .. judged - 1)
        self._firsts: list[int] = []  # the first arrival due at or after each whole second
        self._schedule = enumerate(schedule(rate, duration_s, spacing, seed))
        self._held: tuple[int, float] | None = None  # the next arrival, until judged
        # The citizens running by class, as the pool last grew: counted afresh (a walk over
        # them all) at most every RETIRE_CHECK_S, as citizens retire.
        self._running: dict[str, int] | None = None
        self._hub = gevent.get_hub()
        self.greenlet = gevent.spawn(self._offer)
        self._watches = [gevent.spawn(self._watch_lag), gevent.spawn(self._retire_idle)]

    @classmethod
    def for_run(cls, run) -> Arrivals:
        profile = run.scenario.load_profile
        return cls(run, profile.arrival_rate * run.user_scale / run.time_scale,
                   profile.sustain * run.time_scale, profile.arrival_spacing,
                   run.scenario.seed, run.arrival_share,
                   profile.max_citizens * run.user_scale if profile.max_citizens else None,
                   run.schedule_origin)

    def _fit(self, processes: int) -> None:
        """This process's cap on citizens, and the idle ones it keeps, for a load shared by
        `processes` (fewer once a worker is lost: each survivor takes more)."""
        self.spare = max(2, math.ceil(self.rate / processes * SPARE_S))
        self.cap = math.ceil(self.max_citizens / processes) if self.max_citizens \
            else default_cap(processes)

    # ---- a citizen's side ----------------------------------------------------------------------

    def next(self, hang_up: Callable[[], None]) -> float | None:
        """The instant of the next arrival this citizen takes, once due; None when it should
        retire (idle for long, with enough others idle)."""
        while True:
            while self.offered:
                due = self.offered.popleft()
                if time.time() - due <= DROP_AFTER_S:
                    return due
                self._drop()
            idle = Idle(hang_up)
            self.idle.append(idle)
            try:
                retire = idle.waiter.get()
            finally:
                if not idle.woken:  # stopped while idle
                    self.idle.remove(idle)
            if retire:
                return None

    def begin(self, due: float) -> bool:
        """Whether the citizen that took the arrival due then may start it now: not when the
        process ran too late meanwhile (it is dropped instead), so lateness stays bounded."""
        late = time.time() - due
        if late > DROP_AFTER_S:
            self._drop()
            return False
        self.run.probes.arrival(late)
        return True

    # ---- the schedule's side -------------------------------------------------------------------

    def _offer(self) -> None:
        # The schedule counts from a moment the master set (a single process: from when its
        # citizens are ready), so the workers' shares interleave exactly; what falls due
        # before a worker's first citizens are ready (one starved of CPU as it started) is
        # its share all the same, dropped: the run's schedule is the count, not the worker's.
        runner = self.run.environment.runner
        while not compat.spawning_complete(runner):
            gevent.sleep(0.005)
        ready = time.time()
        self.start = self.origin or ready
        for n in count(1):
            arrival = self._next()
            if arrival is None:
                return
            k, at = arrival
            due = self.start + at
            wait = due - time.time()
            if due >= ready and wait > 0:
                # At least a millisecond: at thousands a second, what falls due meanwhile is
                # offered at once on waking, a timer for a batch instead of one each.
                gevent.sleep(max(wait, OFFER_TICK_S))
            elif n % YIELD_EVERY == 0:
                gevent.sleep(0)  # behind schedule: let the citizens take what is offered
            # Every arrival of the schedule is judged at its instant, whoever takes it, so a
            # handover heard by then counts (judged as the process read ahead, one would go
            # by the sharing of that earlier moment).
            if not self._judge(k, at):
                continue
            if due < ready:
                self._missed()
                continue
            self._drop_stale()
            self.run.probes.arrivals["scheduled"] += 1
            self.offered.append(due)
            if self.idle:
                # The citizen idle last: its connection and its memory are the warmest, and
                # those idle longest stay so, to retire when the load needs fewer.
                self._wake(self.idle.pop(), retire=False)
            else:
                self._grow(1)

    def _next(self) -> tuple[int, float] | None:
        """The schedule's next arrival, (k, at), held until judged: one waited for when the
        process stops is judged by the stop."""
        if self._held is None:
            self._held = next(self._schedule, None)
        return self._held

    def _judge(self, k: int, at: float) -> bool:
        """Whether arrival k, due `at` into the schedule, is this process's, by the sharing
        known now; counted for whoever takes it."""
        self._held = None
        while at >= len(self._firsts):
            self._firsts.append(k)
        self.judged = k + 1
        owner = taker(k, at, self.share.count, self.handovers)
        self.given[owner] += 1
        return owner == self.share.index

    def hand_over(self, handovers: Sequence[Handover]) -> None:
        """The master's handovers so far (messages.HANDOVER), those not known yet taken in
        order: arrivals due from a handover's instant are judged by it. Those this process
        had judged already (it heard late: its event loop stalled past HANDOVER_S) and now
        takes are past: they are scheduled and dropped, so the count loses none."""
        for handover in handovers[len(self.handovers):]:
            before = list(self.handovers)
            self.handovers.append(handover)
            self._fit(len(handover.takers))
            second = int(handover.from_s)
            if second >= len(self._firsts):
                continue  # not judged that far yet
            for k in range(self._firsts[second], self.judged):
                was = taker(k, handover.from_s, self.share.count, before)
                now = taker(k, handover.from_s, self.share.count, self.handovers)
                if was != now:
                    self.given[was] -= 1
                    self.given[now] += 1
                    if now == self.share.index:
                        self._missed()

    def _wake(self, idle: Idle, retire: bool) -> None:
        idle.woken = True
        self._hub.loop.run_callback(idle.waiter.switch, retire)

    def _drop_stale(self) -> None:
        now = time.time()
        while self.offered and now - self.offered[0] > DROP_AFTER_S:
            self.offered.popleft()
            self._drop()

    def _grow(self, wanted: int) -> None:
        """More citizens for arrivals no idle one took, up to the cap; none while Locust is
        still starting the first ones (their host and count are set as it does)."""
        runner = self.run.environment.runner
        room = self.cap - runner.user_count
        if room > 0 and not self.lagging and compat.spawning_complete(runner):
            self._running = compat.start_more_users(runner, min(wanted, room), self._running)

    def _watch_lag(self) -> None:
        """More citizens cannot help a process short of CPU: they make it later still."""
        while True:
            slept = time.monotonic()
            gevent.sleep(LAG_CHECK_S)
            self.lagging = time.monotonic() - slept - LAG_CHECK_S > LAGGING_S

    def _retire_idle(self) -> None:
        """Citizens idle for long hang up (before the target closes their connections), and
        those beyond the spare ones retire, the longest idle first."""
        while True:
            gevent.sleep(RETIRE_CHECK_S)
            self._running = None
            since = time.monotonic() - RETIRE_AFTER_S
            while len(self.idle) > self.spare and self.idle[0].since < since:
                idle = self.idle.popleft()
                idle.hang_up()
                self._wake(idle, retire=True)
            long_idle = list(takewhile(lambda idle, before=since: idle.since < before, self.idle))
            for idle in long_idle:
                if not idle.hung_up:
                    idle.hang_up()
                    idle.hung_up = True

    def _drop(self) -> None:
        self.run.probes.arrivals["missed"] += 1

    def _missed(self) -> None:
        """One of this process's arrivals it could never offer: scheduled, and dropped."""
        self.run.probes.arrivals["scheduled"] += 1
        self._drop()

    def unstarted(self, due: float) -> None:
        """An arrival offered and not started when the process stopped: dropped if it was
        already too late to start, else cut by the stop (it could still have started in time:
        not the generator's failing, nor part of the run's schedule)."""
        if self.ended_at is not None and due >= self.ended_at - DROP_AFTER_S:
            self.run.probes.arrivals["scheduled"] -= 1
        else:
            self._drop()

    def end(self) -> None:
        """As the process begins to stop its citizens: no more arrivals are offered. The
        schedule ends here, not at its planned end, when the stop comes first (the run's
        clock started before this process's citizens were ready): what would fall due while
        the citizens stop is not part of the run."""
        if self.ended_at is None:
            self.ended_at = time.time()
            self.greenlet.kill(block=True)
            gevent.killall(self._watches, block=False)

    def stop(self) -> None:
        """At the run's end: the arrivals due and not started, offered or not, are dropped, so
        started + dropped is exactly the count scheduled; those due in the last DROP_AFTER_S
        before the stop are cut by it, not counted (unstarted)."""
        self.end()
        while self.offered:
            self.unstarted(self.offered.popleft())
        cutoff = self.ended_at - DROP_AFTER_S
        while (arrival := self._next()) is not None and self.start + arrival[1] < cutoff:
            if self._judge(*arrival):
                self._missed()
