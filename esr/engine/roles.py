"""Which part a Locust process plays in an ESR run, chosen once at `init` from its runner,
as Locust chooses its runner classes: a single process, a master, or a worker."""

from __future__ import annotations

import sys

from locust.runners import MasterRunner, WorkerRunner

from esr.engine import locust_compat as compat
from esr.engine.acting import Acting
from esr.engine.conducting import Conducting
from esr.engine.lost_workers import MISSING_AFTER_HEARTBEATS
from esr.engine.master import MasterRun
from esr.engine.messages import IDENTIFY
from esr.engine.run import Run, add_options
from esr.engine.worker import WorkerRun, identity
from esr.errors import EXIT_BAD_INPUT, EsrError
from esr.permissions import check
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
            run = run_for(environment, scenario)
            if isinstance(run, Conducting):  # chaos runs where the run is conducted
                refuse_what_was_not_granted(scenario, run.options.granted)
            environment.esr = run

    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(on_init)
    compat.miss_workers_after(MISSING_AFTER_HEARTBEATS)
    # A worker says who it is before it is one: its master never hands an impostor a citizen.
    compat.identify_before_ready(IDENTIFY, identity(scenario))
    compat.write_csv_files_on_demand()  # at quit, with the final figures (Conducting)


def refuse_what_was_not_granted(scenario: Scenario, granted: frozenset[str]) -> None:
    """A scenario may make HTTP requests and nothing else (permissions.py): without the flags
    on this process's command line, its other chaos actions stop it here, before any load,
    as esr-locust would have (exit 2)."""
    try:
        check(scenario, granted, engine=True)
    except EsrError as error:
        for line in error.lines():
            print(f"esr: {line}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
