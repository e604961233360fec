"""Load processes forked from ESR's fork server behave as `python -m locust` started afresh:
arguments, environment, folder, output, exit code, signals, a session of their own; a run
directory names them in pid files, by which a restarted service finds them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from esr import load_processes
from esr.launcher import Launch, RunSettings, end_process
from esr.run_directory import load_processes_alive, write_pid_file

STEADY = """
scenario: steady
citizens: [{template: seniors, count: 2, behavior: {think_time: 100ms}}]
load_profile: {ramp_up: 1s, sustain: 30s}
report: {formats: [json]}
"""


def started(arguments: list[str], output: Path, env: dict | None = None
            ) -> load_processes.LoadProcess:
    with open(output, "w") as out:
        return load_processes.start(arguments, dict(os.environ) if env is None else env, out)


def test_a_load_process_takes_its_arguments_and_its_exit_code_is_locust_s(tmp_path):
    version = started(["--version"], tmp_path / "version.log")
    assert version.wait(timeout=30) == 0
    assert (tmp_path / "version.log").read_text().startswith("locust 2.")
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo.yml"
    wrong = started(["--no-such-option"], tmp_path / "wrong.log",
                    {**os.environ, "ESR_SCENARIO": str(demo)})
    assert wrong.wait(timeout=30) == 2
    assert "unrecognized arguments: --no-such-option" in (tmp_path / "wrong.log").read_text()
    assert wrong.poll() == 2 and version.poll() == 0  # told once, kept


def test_a_load_process_has_its_own_environment_and_folder(tmp_path, monkeypatch):
    """ESR_SCENARIO names a file relative to the folder the launching process is in when it
    starts the load process; the scenario there is read, and its mistake reported."""
    (tmp_path / "scenario.yml").write_text("scenario: x\ncitizens: []\nload_profil: {}\n")
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "ESR_SCENARIO": "scenario.yml"}
    process = started(["--headless"], tmp_path / "out.log", env)
    assert process.wait(timeout=30) == 1
    output = (tmp_path / "out.log").read_text()
    assert "scenario.yml:3:1: load_profil: unknown key" in output, output
    bare = {k: v for k, v in env.items() if k != "ESR_SCENARIO"}
    process = started(["--headless"], tmp_path / "bare.log", bare)
    assert process.wait(timeout=30) == 1
    assert "set ESR_SCENARIO" in (tmp_path / "bare.log").read_text()


def test_a_load_process_runs_in_a_session_of_its_own_and_takes_signals(tmp_path, target):
    (tmp_path / "scenario.yml").write_text(STEADY)
    launch = Launch.prepare(RunSettings(scenario=tmp_path / "scenario.yml", host=target,
                                        workers=1, run_dir=tmp_path / "run"))
    launch.start()
    try:
        master, worker = launch.processes
        assert load_processes_alive(launch.run_dir) == {"master": master.pid,
                                                        "worker-0": worker.pid}
        for process in launch.processes:
            assert os.getsid(process.pid) != os.getsid(0)  # Ctrl-C at a terminal: not for it
            assert psutil.Process(process.pid).cwd() == os.getcwd()
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(timeout=0.2)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=10) == -signal.SIGKILL
        assert load_processes_alive(launch.run_dir) == {"master": master.pid}
        worker.kill()  # ended: nothing is sent, nothing fails
    finally:
        for process in launch.processes:
            end_process(process)
    assert master.returncode is not None and load_processes_alive(launch.run_dir) == {}


def test_a_pid_file_names_only_the_process_that_started_then(tmp_path):
    """A pid reused by another process is not the run's: the start time tells them apart."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_pid_file(tmp_path / "locust.pid", sleeper.pid)
        assert load_processes_alive(tmp_path) == {"locust": sleeper.pid}
        pid, start = (tmp_path / "locust.pid").read_text().split()
        (tmp_path / "locust.pid").write_text(f"{pid} {int(start) - 1}\n")
        assert load_processes_alive(tmp_path) == {}
        (tmp_path / "worker-0.pid").write_text("12")  # half written as its writer was killed
        assert load_processes_alive(tmp_path) == {}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_run_outlives_its_fork_server(tmp_path, target):
    """Its fork server killed mid-run, a load process goes on to its end and writes its
    results (its exit code unknown: the server would have told it); the next load process
    starts from a new server."""
    (tmp_path / "scenario.yml").write_text(STEADY)
    launch = Launch.prepare(RunSettings(scenario=tmp_path / "scenario.yml", host=target,
                                        workers=0, time_scale=0.1, run_dir=tmp_path / "run"))
    launch.start()
    server = psutil.Process(launch.lead.pid).parent()
    assert server.cmdline()[1:3] == ["-m", "esr.engine.forkserver"]
    server.kill()
    server.wait(timeout=10)
    result = launch.wait()
    assert launch.lead.returncode == load_processes.UNKNOWN_EXIT
    assert result.summary["requests"]["total"] > 0
    again = started(["--version"], tmp_path / "version.log")
    assert again.wait(timeout=30) == 0
