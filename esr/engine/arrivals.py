"""The open model: arrivals due at a fixed rate, whether or not a citizen is free to take them.

A scheduler puts each arrival's due time in a queue; idle citizens take them in
order, and the probes record how late each started. Arrivals never wait for the
target, so an overloaded service shows up as lateness instead of being hidden.
"""

from __future__ import annotations

import math
import time

import gevent
import gevent.queue

from esr.scenario.stages import open_model_pool

ARRIVAL_BACKLOG = 100_000  # arrivals due but not started; beyond this they count as missed
SCHEDULE_TICK_S = 0.01


class Arrivals:
    def __init__(self, run, rate: float, pool: int):
        self.run, self.rate, self.pool = run, rate, pool
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.greenlet = gevent.spawn(self._schedule)

    @classmethod
    def for_run(cls, run) -> Arrivals:
        scenario = run.scenario
        rate = scenario.load_profile.arrival_rate * run.user_scale / run.time_scale
        return cls(run, rate, open_model_pool(scenario, run.time_scale, run.user_scale))

    def next(self) -> float:
        return self.queue.get()

    def _schedule(self) -> None:
        last = time.time()
        due = 0.0
        while True:
            gevent.sleep(SCHEDULE_TICK_S)
            now = time.time()
            runner = self.run.environment.runner
            share = min(1.0, runner.user_count / self.pool) if self.pool else 1.0
            due += self.rate * share * (now - last)
            last = now
            for k in range(math.floor(due)):
                if self.queue.qsize() >= ARRIVAL_BACKLOG:
                    self.run.probes.arrivals["missed"] += 1
                else:
                    self.queue.put(now - (math.floor(due) - 1 - k) / max(self.rate * share, 1e-9))
            due -= math.floor(due)

    def stop(self) -> None:
        self.greenlet.kill(block=False)
