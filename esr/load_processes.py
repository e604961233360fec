"""Starting a run's Locust processes, each forked from a warm one (esr/engine/forkserver.py).

The first load process a launching process (the CLI, the service, a standing worker) starts
also starts its fork server, which imports Locust and ESR's engine once; every load process
after it starts without that cost (~0.7 s of CPU each), and sooner. A load process is not
this process's child but the fork server's: LoadProcess stands for it as subprocess.Popen
would (pid, poll, wait, send_signal, terminate, kill, returncode), its exit code told by
the server. This module does not import Locust.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from esr.errors import EsrError

LOCUSTFILE = Path(__file__).resolve().parent / "engine" / "locustfile.py"
# The exit code of a load process whose fork server ended before it: it is gone, how is not
# known (Popen's codes are 0-255, or minus a signal's number).
UNKNOWN_EXIT = 255


class LoadProcessError(EsrError):
    """A load process could not be started."""


class LoadProcess:
    """A Locust process of a run: Popen's interface, for a process this one did not fork."""

    def __init__(self, arguments: list[str], pid: int, pidfd: int, answers: socket.socket):
        self.args = ["locust", *arguments]
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd  # the fork server's: signals never reach a reused pid
        self._answers = answers

    def poll(self) -> int | None:
        return self._wait(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._wait(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                signal.pidfd_send_signal(self._pidfd, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _wait(self, timeout: float | None) -> int | None:
        if self.returncode is None and select.select([self._answers], [], [], timeout)[0]:
            told = self._answers.recv(64)
            if told.startswith(b"exit "):
                self._ended(int(told.split()[1]))
            elif select.select([self._pidfd], [], [], timeout)[0]:
                self._ended(UNKNOWN_EXIT)  # its fork server ended (killed) before it
        return self.returncode

    def _ended(self, code: int) -> None:
        self.returncode = code
        self._answers.close()
        os.close(self._pidfd)


def start(arguments: list[str], env: dict[str, str], output: IO | None = None,
          pid_file: Path | None = None) -> LoadProcess:
    """`python -m locust -f LOCUSTFILE *arguments` with this environment, in this folder, in a
    session of its own, stdin empty, stdout and stderr to `output` (None: this process's)."""
    arguments = ["-f", str(LOCUSTFILE), *arguments]
    request = json.dumps({"arguments": arguments, "env": env, "cwd": os.getcwd(),
                          "pid_file": str(pid_file) if pid_file else None}).encode()
    answers, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with open(os.devnull, "rb") as empty, theirs:
        stdio = [empty.fileno(), *([output.fileno()] * 2 if output else [1, 2])]
        _ForkServer.send(request, [*stdio, theirs.fileno()])
    told, fds, _, _ = socket.recv_fds(answers, 64, 1)
    if not told.startswith(b"pid ") or len(fds) != 1:
        answers.close()
        raise LoadProcessError("a load process could not be started: ESR's fork server "
                               "ended (see the messages above)")
    return LoadProcess(arguments, int(told.split()[1]), fds[0], answers)


class _ForkServer:
    """This process's one fork server, started at its first load process; it ends when
    this process does (its socket closes)."""

    _lock = threading.Lock()
    _control: socket.socket | None = None
    _process: subprocess.Popen | None = None

    @classmethod
    def send(cls, request: bytes, fds: list[int]) -> None:
        with cls._lock:
            if cls._process is None or cls._process.poll() is not None:
                cls._forget()  # none yet, or it has ended (killed)
                cls._control = cls._start()
            try:
                socket.send_fds(cls._control, [request], fds)
            except OSError:  # it ended just now: a new one, once
                cls._forget()
                cls._control = cls._start()
                socket.send_fds(cls._control, [request], fds)

    @classmethod
    def _start(cls) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            cls._process = subprocess.Popen(
                [sys.executable, "-m", "esr.engine.forkserver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True)
        if ours.recv(16) != b"ready":
            ours.close()
            cls._process.wait()
            raise LoadProcessError("ESR's fork server could not start (see the messages "
                                   "above)")
        return ours

    @classmethod
    def leave_to_parent(cls) -> None:
        """In a process forked from this one: the server is its parent's."""
        cls._control = cls._process = None

    @classmethod
    def _forget(cls) -> None:
        if cls._control is not None:
            cls._control.close()
        cls._control = cls._process = None


# A process forked from this one (not exec'd) starts its own server; this one's is not its.
os.register_at_fork(after_in_child=_ForkServer.leave_to_parent)
