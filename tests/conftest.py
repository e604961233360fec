"""What many test modules share: one demo target for the session, and esr-locust in-process.

`target`: the bundled demo target with its default settings (capacity 8, 5 ms per
application), started once for the whole session and stopped by its PID at the end. Every
run tags its requests with its run id and the target counts them per run
(/admin/stats?run=…, /admin/applicants?run=…), so runs sharing it never see each other's
figures. A module that needs other settings (a slower service, fewer slots) or changes the
target's state for good (kills a service) defines its own `target` fixture, which overrides
this one; a module that defines none gets this one by asking for `target`.

`esr_cli`: `esr.cli.main(argv)` called in this process, as pipx's tests call `run_pipx_cli`:
for the commands whose process boundary is not what is tested (validate, templates,
citizens, schema, compile, report, bad arguments); `esr_cli_run` also lets `run` start its
Locust processes. A real process costs a Python start and
ESR's imports each time; the few tests that check the boundary itself (the exit status of
`python -m esr.cli`, no traceback on stderr) still start one.

Parallel runs: scripts/test runs the suite with pytest-xdist (-n 4), as most of its time is
spent waiting on real runs. The hooks below let a worker that Locust has patched for gevent
hear its controller (wait_for_tests_under_gevent), keep the modules with a costly
module-scoped fixture on one worker (ONE_WORKER_MODULES), and start the long tests first.
Every xdist worker has its own session, so its own demo target, each on a port of its own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from esr.cli import main
from esr.demo.process import demo_target
from esr.launcher import Launch

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        wait_for_tests_under_gevent(config)


# Modules whose tests share a costly module-scoped fixture: in a parallel run, each module's
# tests all go to one worker, so the fixture is made once.
ONE_WORKER_MODULES = {
    "tests/test_report.py": "a real run with two workers and its report card in four formats",
    "tests/test_package.py": "the wheel, built, then installed in a fresh virtualenv",
    "tests/test_demo.py": "a real run of the demo with a master and two workers",
    "tests/test_service_api.py": "a service whose slot a run holds while the module runs",
    "tests/test_service_api_runs.py": "a service, and runs that passed, failed, were cancelled",
    "tests/test_service_page.py": "a service with two agencies' runs and their report cards",
    "tests/test_service_runs.py": "a service, which builds each run's report card",
    "tests/test_target.py": "a demo target of its own, checked for a clean exit at the end",
    "tests/test_trace_context.py": "a traced run with a master and a worker, read by four tests",
}


def pytest_xdist_make_scheduler(config, log):
    """`--dist load` (scripts/test), but with ONE_WORKER_MODULES each handed out whole.

    Any other test is a unit of its own, handed to the next worker free. (xdist's own
    loadgroup does this by xdist_group marks, but it renames the tests to do it, which
    pytest 9 no longer lets a plugin do: each marked test went to any worker.)"""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneWorkerModules(config, log)


def pytest_collection_modifyitems(config, items):
    """In a parallel run, the tests marked slow first, then the other real runs (those that
    use a demo target), then the rest, each as collected: the long ones start early, and the
    many short ones fill the workers' time around them. (A serial run keeps pytest's order,
    which sets each module's fixtures up once.)"""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                     "target" not in item.fixturenames))


def wait_for_tests_under_gevent(config) -> None:
    """Let a pytest-xdist worker whose process Locust patches for gevent go on hearing its
    controller.

    Several test modules run Locust in this process (runners, sessions, the web UI app), and
    `import locust` patches the process for gevent, threads included. An xdist worker hears
    its controller on a real thread, which sets threading.Events the main thread waits on:
    the next test to run, and at the end that thread's own end. Patched, such a wait is a
    greenlet's, which a real thread can never wake (gevent's LoopExit: the worker crashes).
    So Locust patches here first, as in any Locust process, and those two waits poll a flag
    instead (the worker's only waits on that thread)."""
    import locust  # noqa: F401  (gevent's patch_all, before any test module imports it)

    # xdist runs its worker's module as __channelexec__, not as xdist.remote: found by name.
    (worker,) = [plugin for plugin in config.pluginmanager.get_plugins()
                 if type(plugin).__name__ == "WorkerInteractor"]
    # RELIES ON: xdist's WorkerInteractor.torun (a TestQueue) waits on _has_items_event, and
    # execnet's gateway makes each later Event (its join) with execmodel.Event().
    worker.torun._has_items_event = PollingEvent()
    worker.channel.gateway.execmodel.Event = PollingEvent


class PollingEvent:
    """threading.Event's interface, set from any thread, waited for by polling (a greenlet's
    sleep, under gevent): what a real thread may wake a patched main thread with."""

    POLL_S = 0.005

    def __init__(self):
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set and (deadline is None or time.monotonic() < deadline):
            time.sleep(self.POLL_S)  # gevent's sleep, once Locust has patched the process
        return self._set


@pytest.fixture(scope="session")
def target() -> Iterator[str]:
    """The demo target's URL, default settings, shared by the whole session."""
    with demo_target() as url:
        yield url


@dataclass(frozen=True)
class CliResult:
    """What a subprocess.CompletedProcess says, for a command run in this process."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def esr_cli(capsys, monkeypatch) -> Callable[..., CliResult]:
    """Run `esr-locust ARGS` in this process (working directory: the repository)."""
    # Commands that would start Locust fail the test instead: `worker` execs Locust in place
    # of this process, `run`, `master`, `ui` and `demo` start its processes.
    def refuse_exec(path, *_):
        raise AssertionError(f"esr-locust tried to exec {path} in the test process")

    def refuse_start(launch):
        raise AssertionError(f"esr-locust tried to start run {launch.run_id} in the test process")

    monkeypatch.setattr(os, "execve", refuse_exec)
    monkeypatch.setattr(Launch, "start", refuse_start)
    return cli_in_this_process(capsys, monkeypatch)


@pytest.fixture
def esr_cli_run(capsys, monkeypatch) -> Callable[..., CliResult]:
    """`esr_cli` for `run`, which goes ahead: its Locust processes are children of this one
    (os.execve left alone: gevent's subprocess calls it in the forked child), and its report
    card is built here, where the report modules are loaded already (a process of its own
    paid 2 s of CPU importing them)."""
    return cli_in_this_process(capsys, monkeypatch)


def cli_in_this_process(capsys, monkeypatch) -> Callable[..., CliResult]:
    monkeypatch.chdir(ROOT)

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # only this command's output
        sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse: bad arguments, --help, --version
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        finally:
            signal.signal(signal.SIGTERM, sigterm)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
