"""Locust processes forked from one that has imported Locust and ESR's engine already.

A fresh `python -m locust` spends ~0.7 s of CPU importing Locust (which patches the standard
library for gevent), numpy and ESR before its first citizen, once per process: a run with
two workers three times, the service at every run. This server pays it once per launching
process (esr/load_processes.py starts it at its first load process), then forks each load
process from its warm state, as Locust's own `--processes` forks its workers.

Its protocol, over the socket it is given (AF_UNIX, SOCK_SEQPACKET: a message a packet):
- it sends b"ready" once it has imported what it can (an import that fails here is left
  to the load process, which then fails as a fresh one would, saying why in its log);
- each request is a JSON object {"arguments", "env", "cwd", "pid_file"} with four file
  descriptors: the process's stdin, stdout and stderr, and a socket on which this server
  answers b"pid N" at once, with a pidfd of the process (signals sent through it reach that
  process or none, never one that took its pid), then b"exit CODE" (Popen's returncode)
  once the process ends;
- the socket's end (the launching process is gone) ends the server; its load processes go
  on, as a launcher's would (the service finds them again by their pid files).

Not multiprocessing's forkserver (which builds the service's report cards, cards.py): its
preload would patch its own loop for gevent, and its children run a function and leave by
os._exit, where a load process must be Locust's main, ended by the interpreter's own exit.

A load process is made to look like a fresh one: a session of its own (a Ctrl-C at the
terminal reaches its launcher only), its own stdio, environment, folder and arguments (and
its command line in ps: `python -m locust ...`), and Python's at-fork hooks reseed `random`;
it ends through the interpreter's own exit (atexit, flushing), with Locust's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys

from setproctitle import setproctitle

# Taken before Locust's import patches them for gevent: this server's loop is no greenlet.
_select, _socket, _waitpid = select.select, socket.socket, os.waitpid
MAX_REQUEST_BYTES = 1 << 20  # arguments and an environment
FDS_PER_REQUEST = 4  # stdin, stdout, stderr, the answer socket


def main(argv: list[str]) -> None:
    server = ForkServer(_socket(fileno=int(argv[1])))
    preload()
    server.control.sendall(b"ready")
    server.serve()


def preload() -> None:
    """What every load process imports, imported once. Untested library versions are let
    through (ESR_ALLOW_UNTESTED_LIBRARIES) by each load process's own environment, so here
    never: the engine is preloaded only where that check does not depend on it."""
    os.environ.pop("ESR_ALLOW_UNTESTED_LIBRARIES", None)
    try:
        import locust.main  # noqa: F401  (patches the standard library for gevent)

        import esr.engine.compiler  # noqa: F401
        import esr.engine.roles  # noqa: F401
        import esr.run_directory  # noqa: F401
    except Exception:  # noqa: BLE001 - each load process imports it again, and says why
        pass
    import gc

    gc.collect()
    gc.freeze()  # what every fork shares stays shared (Locust's --processes does so too)


class ForkServer:
    def __init__(self, control: socket.socket):
        self.control = control
        self.running: dict[int, tuple[int, socket.socket]] = {}  # pidfd: (pid, its answers)

    def serve(self) -> None:
        while True:
            readable, _, _ = _select([self.control, *self.running], [], [])
            for pidfd in [fd for fd in readable if fd in self.running]:
                self._report_exit(pidfd)
            if self.control in readable:
                message, fds, _, _ = socket.recv_fds(self.control, MAX_REQUEST_BYTES,
                                                     FDS_PER_REQUEST)
                if not message:
                    return  # the launching process is gone
                self._start(json.loads(message), fds)

    def _start(self, request: dict, fds: list[int]) -> None:
        answer = _socket(fileno=fds[3])
        pid = _fork()
        if pid == 0:
            answer.detach()
            self._leave()
            _become_load_process(request, fds)  # never returns
        for fd in fds[:3]:
            os.close(fd)
        pidfd = os.pidfd_open(pid)  # before it can be reaped: it is this process, and no other
        self.running[pidfd] = (pid, answer)
        # Neither may end the server: the process runs on, and is reaped, whatever befalls.
        with contextlib.suppress(OSError):  # a run directory removed meanwhile
            if request.get("pid_file"):
                from esr.run_directory import write_pid_file

                write_pid_file(request["pid_file"], pid)
        with contextlib.suppress(OSError):  # its launching process stopped waiting for it
            socket.send_fds(answer, [f"pid {pid}".encode()], [pidfd])

    def _report_exit(self, pidfd: int) -> None:
        pid, answer = self.running.pop(pidfd)
        os.close(pidfd)
        _, status = _waitpid(pid, 0)
        with contextlib.suppress(OSError):  # its launching process stopped waiting for it
            answer.sendall(f"exit {os.waitstatus_to_exitcode(status)}".encode())
        answer.close()

    def _leave(self) -> None:
        """In a load process just forked: nothing of the server's stays open in it."""
        os.close(self.control.detach())
        for pidfd, (_, answer) in self.running.items():
            os.close(pidfd)
            answer.close()


def _fork() -> int:
    """os.fork, with gevent's hub made anew in the child once Locust has patched gevent in."""
    if "gevent" in sys.modules:
        from gevent.os import fork_gevent

        return fork_gevent()
    return os.fork()


def _become_load_process(request: dict, fds: list[int]) -> None:
    os.setsid()
    for fd, standard in zip(fds[:3], (0, 1, 2), strict=True):
        os.dup2(fd, standard)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    # Before the environment changes: the title takes the space of this process's first one.
    setproctitle(" ".join([sys.executable, "-m", "locust", *request["arguments"]]))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import locust

    sys.argv = [os.path.join(os.path.dirname(locust.__file__), "__main__.py"),
                *request["arguments"]]
    sys.path[0] = os.getcwd()  # as `python -m` sets it
    from locust.main import main as locust_main

    locust_main()  # ends the process by SystemExit, out through this server's frames
    sys.exit(0)


if __name__ == "__main__":
    main(sys.argv)
