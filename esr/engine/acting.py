"""The side of a run where citizens act (a single process, or a worker): probes, citizens,
arrivals, and the request listener that feeds the probes."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import gevent

from esr.engine import locust_compat as compat
from esr.engine.arrivals import Arrivals, Share
from esr.engine.probes import Probes, bucket_width, response_facts
from esr.engine.run import Run
from esr.histograms import duration_bounds_ms
from esr.population.citizens import CitizenFactory, CitizenStream, identity_pool

# Citizen blocks are dealt to processes in strides of this many, so any worker index
# below it makes citizens no other process makes, and worker 0 makes what one process would.
MAX_WORKERS = 256


class Acting(Run):
    def __init__(self, environment, scenario):
        super().__init__(environment, scenario)
        # Built now, not in the first second of load; only where citizens act (a master has
        # none: ~0.8 s of CPU saved as it starts, beside workers starting on the same cores).
        identity_pool()
        self.probes = self._new_probes()
        self.in_test = False  # between test_start and test_stop
        # A raw log of every request, where this process's own command line says.
        log_dir = self.options.request_log
        self.request_log = open(  # noqa: SIM115 (open for the process's life)
            Path(log_dir) / f"requests-{os.getpid()}.csv", "a") if log_dir else None
        self._streams: dict[int, CitizenStream] = {}
        self._preparing: dict[int, int] = {}  # the block each group's stream has made next
        self.arrival_share = Share(0, 1)  # the open model's: all of them (a worker: its share)
        # When the open model's schedule begins (a worker: the master's start); None: when
        # this process's citizens are ready.
        self.schedule_origin: float | None = None
        environment.events.request.add_listener(self._on_request)
        environment.events.test_stopping.add_listener(self._end_arrivals)
        # Spawned citizens live until the stop: out of the collector's way meanwhile (a
        # full pass over 25,000 of them took seconds, stalling every heartbeat).
        environment.events.spawning_complete.add_listener(lambda **_: gc.freeze())

    def next_citizen(self, group_index: int) -> tuple:
        """The next citizen of a group, as a row of its fields (citizens.CITIZEN_FIELDS)."""
        stream = self._streams.get(group_index)
        if stream is None:
            share = compat.worker_index(self.environment.runner)
            if not 0 <= share < MAX_WORKERS:
                raise RuntimeError(f"worker index {share} beyond ESR's {MAX_WORKERS} workers")
            factory = CitizenFactory(self.scenario, group_index)
            stream = self._streams[group_index] = factory.stream(share, MAX_WORKERS)
        citizen = stream.next_row()
        upcoming = stream.upcoming()
        if upcoming is not None and self._preparing.get(group_index) != upcoming:
            self._preparing[group_index] = upcoming
            gevent.spawn(self._prepare, stream, upcoming)
        return citizen

    @staticmethod
    def _prepare(stream: CitizenStream, block: int) -> None:
        """Make the next block of citizens when the event loop has nothing else to do: made
        when first needed, its milliseconds would make every arrival due meanwhile late."""
        gevent.idle()
        stream.prepare(block)

    def _on_request(self, request_type, name, response_time, response, exception, context,
                    start_time=None, **_):
        status = getattr(response, "status_code", 0) or 0
        facts = context.get("facts")
        if facts is None:  # a request ESR's journey did not make (custom code)
            facts = response_facts(response, status)
        failure = None
        if exception is not None:
            # ESR's journey names its failures (journey.failure_of); Locust's CatchResponseError
            # carries that name as its text.
            failure = str(exception) or type(exception).__name__
        self.probes.request(name, start_time or time.time(), response_time, failure, facts,
                            context.get("cohort"), method=request_type, status=status,
                            trace_id=context.get("trace_id"))
        if self.scenario.hitl_skip:
            self.probes.hitl["skipped"] += 1
        if self.request_log is not None:
            self.request_log.write(f"{name},{response_time!r},{int(failure is not None)}\n")

    def on_test_start(self, environment, **kwargs) -> None:
        super().on_test_start(environment, **kwargs)
        self.in_test = True
        self.prepare()

    def prepare(self) -> None:
        """Probes and arrivals for the run's scales, as they are known now; no fault of an
        earlier run in force."""
        self.probes = self._new_probes()
        self.faults = []
        if self.arrivals:
            self.arrivals.stop()
        self.arrivals = Arrivals.for_run(self) if self.scenario.load_profile.arrival_rate \
            else None

    def _new_probes(self) -> Probes:
        return Probes(bucket_width(self.duration_s), duration_bounds_ms(self.scenario.slo.checks))

    def _end_arrivals(self, **_) -> None:
        if self.arrivals:
            self.arrivals.end()

    def on_test_stop(self, environment, **kwargs) -> None:
        super().on_test_stop(environment, **kwargs)
        self.in_test = False
        if self.arrivals:
            self.arrivals.stop()
        if self.request_log is not None:
            self.request_log.flush()
