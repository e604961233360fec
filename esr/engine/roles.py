"""Which part a Locust process plays in an ESR run, chosen once at `init` from its runner,
as Locust chooses its runner classes: a single process, a master, or a worker."""

from __future__ import annotations

import locust.runners
from locust.runners import MasterRunner, WorkerRunner

from esr.engine.acting import Acting
from esr.engine.conducting import Conducting
from esr.engine.lost_workers import MISSING_AFTER_HEARTBEATS
from esr.engine.master import MasterRun
from esr.engine.run import Run, add_options
from esr.engine.worker import WorkerRun
from esr.scenario.model import Scenario


class LocalRun(Conducting, Acting):
    """One process: its citizens act, and it conducts the run itself."""

    def collect(self) -> None:
        self.tally.merge(self.probes.drain())


def run_for(environment, scenario: Scenario) -> Run:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return MasterRun(environment, scenario)
    if isinstance(runner, WorkerRunner):
        return WorkerRun(environment, scenario)
    return LocalRun(environment, scenario)


def install(events, scenario: Scenario) -> None:
    """Hook ESR into Locust: its command-line options, and a run on every environment."""

    def on_init(environment, **_):
        if getattr(environment, "esr", None) is None:  # init may fire more than once
            environment.esr = run_for(environment, scenario)

    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(on_init)
    locust.runners.HEARTBEAT_LIVENESS = MISSING_AFTER_HEARTBEATS  # read by the master's loop
