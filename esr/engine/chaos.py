"""Chaos on the load's timeline: faults injected by the master at `after`, undone after `duration`.

Only the master (or the single process) runs actions. Each start and undo is an
event in events.jsonl with its result; a failed action is recorded and the run
goes on. Anything left broken when the run ends (a service killed "for 10m" in a
run that stopped early) is undone then, so the target is left as it was found.
Before each action runs, permissions.py decides whether this process may run it
(HTTP only, unless started with a flag); requests go out through an opener that
speaks http and https only, redirects included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import gevent

from esr.permissions import is_http_url, refused_outcome, runs_containers
from esr.run_directory import append_event
from esr.scenario.model import ChaosAction
from esr.scenario.reader import signal_number
from esr.units import parse_duration

HTTP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
DETAIL_LIMIT = 500  # characters of a response or a command's output kept in the event
PID_FILE_LIMIT = 64  # bytes read of a pid file: a pid and a newline, nothing else
_PID = re.compile(r"\s*([1-9][0-9]{0,9})\s*")


def parse_delay_ms(value: object) -> float:
    """A latency action's delay (validated as a duration when the scenario was loaded)."""
    return parse_duration(value) * 1000


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are followed to http and https URLs only (urllib would also follow ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_http_url(newurl):
            raise urllib.error.HTTPError(req.full_url, code, "redirect to a URL other than "
                                         "http(s) refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# urllib's default opener also reads file:, ftp: and data: URLs: this one has no handler for them.
_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                 urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                 urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(),
                 urllib.request.HTTPErrorProcessor()):
    _OPENER.add_handler(_handler)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Fault:
    """A client-side fault every process applies to matching requests until `until` (epoch s)."""

    kind: str  # latency | error_rate
    endpoint: str | None  # a step name; None for every request
    amount: float  # added ms, or the share of requests failed
    until: float

    def applies(self, name: str, now: float) -> bool:
        return now < self.until and self.endpoint in (None, name)

    def wire(self) -> dict:  # msgpack-safe, for the master's message to its workers
        return {"kind": self.kind, "endpoint": self.endpoint, "amount": self.amount,
                "until": self.until}


class Chaos:
    """The chaos actions of one run, scheduled on the run's clock."""

    def __init__(self, actions, *, host: str, time_scale: float, run_dir, started: float,
                 granted: frozenset[str], spread: Callable[[Fault], None],
                 changed: Callable[[], None] = lambda: None):
        self.actions = actions
        self.spread = spread  # sends a fault to every process that runs citizens
        # Told when an action comes in force or ends: live figures say so at once (an outage
        # shorter than their interval would otherwise go unseen).
        self.changed = changed
        self.host = host.rstrip("/")
        self.time_scale = time_scale
        self.run_dir = run_dir
        self.started = started
        self.granted = granted  # the permissions this process was started with
        self._pending: list[gevent.Greenlet] = []
        self._undos: dict[int, tuple[gevent.Greenlet, ChaosAction]] = {}
        self._in_force: dict[int, dict] = {}  # lasting actions started and not yet undone

    def start(self) -> None:
        for index, action in enumerate(self.actions):
            self._pending.append(gevent.spawn_later(action.after * self.time_scale, self._start,
                                                    index, action))

    def end(self) -> None:
        """The run is over: cancel what has not started; undo now what is still in force."""
        for greenlet in self._pending:
            greenlet.kill(block=False)
        for index, (greenlet, action) in list(self._undos.items()):
            if not greenlet.dead:
                greenlet.kill(block=False)
                self._undo(index, action, early=True)

    def in_force(self) -> list[dict]:
        """The lasting actions started (and not failed) whose undo has not come, for live
        figures: {index, action, target, since_s, for_s}, for_s None when it lasts to the end."""
        return list(self._in_force.values())

    def _start(self, index: int, action: ChaosAction) -> None:
        outcome = self._perform(action, undo=False)
        self._record(index, action, "start", outcome)
        if outcome.ok and action.action in UNDO:
            self._in_force[index] = {
                "index": index, "action": action.action, "target": action.target,
                "since_s": round(time.time() - self.started, 3),
                "for_s": action.duration * self.time_scale if action.duration is not None
                else None}
            self.changed()
        if action.duration is not None and UNDO.get(action.action):
            self._undos[index] = (gevent.spawn_later(action.duration * self.time_scale,
                                                     self._undo, index, action), action)

    def _undo(self, index: int, action: ChaosAction, early: bool = False) -> None:
        if self._in_force.pop(index, None) is not None:
            self.changed()
        outcome = self._perform(action, undo=True)
        self._record(index, action, "undo", outcome, early=early)
        self._undos.pop(index, None)

    def _perform(self, action: ChaosAction, undo: bool) -> Outcome:
        refused = refused_outcome(action, self.granted)
        if refused:  # the Locust process refuses such runs at start; this guards every path
            return Outcome(False, refused)
        perform = (UNDO if undo else DO)[action.action]
        try:
            return perform(self, action)
        except Exception as error:  # an action that fails is a finding, never a crash
            return Outcome(False, f"{type(error).__name__}: {error}"[:DETAIL_LIMIT])

    def _record(self, index: int, action: ChaosAction, phase: str, outcome: Outcome,
                **extra) -> None:
        append_event(self.run_dir, "chaos", index=index, phase=phase, action=action.action,
                     target=action.target, at_s=round(time.time() - self.started, 3),
                     ok=outcome.ok, detail=outcome.detail[:DETAIL_LIMIT], **extra)

    # ---- the actions -------------------------------------------------------------------------

    def _service(self, action: ChaosAction, verb: str) -> Outcome:
        """A compose project's service through `docker compose`, else the demo target's admin
        endpoint."""
        if runs_containers(action):
            command = ["docker", "compose", "-p", str(action.options["compose_project"]),
                       "kill" if verb == "kill" else "start", action.target]
            return self._run(command)
        return self._request("POST", f"{self.host}/admin/services/{action.target}/{verb}",
                             {}, None)

    @staticmethod
    def _run(command: list[str] | str) -> Outcome:
        done = subprocess.run(command, shell=isinstance(command, str), capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
        output = (done.stdout + done.stderr).strip()[-DETAIL_LIMIT:]
        return Outcome(done.returncode == 0, f"exit {done.returncode}: {output}")

    def _http(self, action: ChaosAction) -> Outcome:
        options = action.options or {}
        url = action.target if not action.target.startswith("/") else \
            f"{self.host}{action.target}"
        body = options.get("body")
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        return self._request(options.get("method", "POST"), url, options.get("headers") or {},
                             body)

    @staticmethod
    def _request(method: str, url: str, headers: dict, body: str | None) -> Outcome:
        if not is_http_url(url):
            return Outcome(False, "refused: chaos requests http:// and https:// URLs only")
        request = urllib.request.Request(url, method=method, headers=headers,
                                         data=body.encode() if body is not None else None)
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
                text = response.read(DETAIL_LIMIT).decode(errors="replace")
                return Outcome(True, f"HTTP {response.status} {text}".strip())
        except urllib.error.HTTPError as error:
            return Outcome(False, f"HTTP {error.code} {error.reason}")
        except (urllib.error.URLError, OSError) as error:
            return Outcome(False, f"{url}: {getattr(error, 'reason', error)}")

    def _fault(self, action: ChaosAction) -> Outcome:
        options = action.options or {}
        if action.action == "latency":
            amount = parse_delay_ms(options.get("delay", 0))
        else:
            amount = float(options.get("rate", 1.0))
        scaled = action.duration * self.time_scale if action.duration is not None else None
        until = time.time() + scaled if scaled is not None else float("inf")
        fault = Fault(action.action, options.get("endpoint"), amount, until)
        self.spread(fault)
        where = f"on {fault.endpoint}" if fault.endpoint else "on every request"
        what = f"+{amount:g} ms" if action.action == "latency" else f"{amount:.0%} failed"
        return Outcome(True, f"{what} {where}")

    def _signal(self, action: ChaosAction, undo: bool = False) -> Outcome:
        # Only a stopped process can be given back: the undo is always CONT.
        number = signal_number("CONT" if undo else (action.options or {}).get("signal", "TERM"))
        pid = read_pid_file(action.target)
        if number is None or pid is None:
            # Never the file's content: the target may be any file on this machine.
            return Outcome(False, f"{action.target}: not a pid file" if pid is None
                           else "unknown signal")
        os.kill(pid, number)
        return Outcome(True, f"{number.name} sent to pid {pid}")

    def _command(self, action: ChaosAction) -> Outcome:
        return self._run(str((action.options or {}).get("command")))


def read_pid_file(path: str) -> int | None:
    """The pid a pid file holds, or None unless it holds a pid (and a newline) and nothing else."""
    # Non-blocking: a FIFO named as the target must not stall this (gevent) process.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as pid_file:
        held = pid_file.read(PID_FILE_LIMIT + 1) or b""
    match = _PID.fullmatch(held.decode("ascii", errors="replace"))
    return int(match.group(1)) if match and len(held) <= PID_FILE_LIMIT else None


DO: dict[str, Callable[[Chaos, ChaosAction], Outcome]] = {
    "kill_pod": lambda chaos, action: chaos._service(action, "kill"),
    "stop_service": lambda chaos, action: chaos._service(action, "kill"),
    "restore_service": lambda chaos, action: chaos._service(action, "restore"),
    "http": lambda chaos, action: chaos._http(action),
    "signal": lambda chaos, action: chaos._signal(action),
    "command": lambda chaos, action: chaos._command(action),
    "latency": lambda chaos, action: chaos._fault(action),
    "error_rate": lambda chaos, action: chaos._fault(action),
}
UNDO: dict[str, Callable[[Chaos, ChaosAction], Outcome]] = {
    # Client-side faults end by themselves at `until`; their undo only says so.
    "latency": lambda chaos, action: Outcome(True, "ended"),
    "error_rate": lambda chaos, action: Outcome(True, "ended"),
    "kill_pod": lambda chaos, action: chaos._service(action, "restore"),
    "stop_service": lambda chaos, action: chaos._service(action, "restore"),
    "signal": lambda chaos, action: chaos._signal(action, undo=True),
}
