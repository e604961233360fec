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
citizens, schema, compile, report, bad arguments). A real process costs a Python start and
ESR's imports each time; the few tests that check the boundary itself (the exit status of
`python -m esr.cli`, no traceback on stderr) still start one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from esr.cli import main
from esr.demo.process import demo_target
from esr.launcher import Launch

ROOT = Path(__file__).resolve().parent.parent


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
    monkeypatch.chdir(ROOT)

    # Commands that would start Locust fail the test instead: `worker` execs Locust in place
    # of this process, `run`, `master`, `ui` and `demo` start its processes.
    def refuse_exec(path, *_):
        raise AssertionError(f"esr-locust tried to exec {path} in the test process")

    def refuse_start(launch):
        raise AssertionError(f"esr-locust tried to start run {launch.run_id} in the test process")

    monkeypatch.setattr(os, "execve", refuse_exec)
    monkeypatch.setattr(Launch, "start", refuse_start)

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
