"""The pool: standing workers that serve one run's master after another, and the lobby where
they wait between runs.

A standing worker (`esr-locust worker --master HOST:PORT`, no scenario) asks whoever listens
at the pool address for a scenario. A run's master answers with its offer: the scenario's
text, the template files it names in its own folder, its SHA-256 and the ESR version. The
worker checks all three, writes the files to a private folder and runs a Locust worker of
that scenario, which joins the master as any worker does (HELLO, WELCOME: the master checks
again). When that run ends, it asks again. Between runs the service's lobby answers instead
("no run now") and notes who asked, so the service can show its pool.

The offer is data, not code: the worker reads it as any scenario (a scenario may make HTTP
requests and nothing else), with the permissions of its own command line.

This module never imports Locust or gevent: it speaks Locust's framing (msgpack of
(type, data, node id) over a ZeroMQ DEALER/ROUTER pair, checked against Locust's own in
tests/test_locust_compat.py) itself.
"""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgpack
import zmq

from esr import __version__, load_processes
from esr.engine.messages import NO_RUN, SCENARIO, SCENARIO_WANTED
from esr.errors import BadInput, EsrError
from esr.permissions import file_inside
from esr.population.demographics import DEMOGRAPHICS_DIR, template_file
from esr.run_directory import LIVE
from esr.scenario.model import Scenario

# How long an ask waits for an answer, and how long a worker waits between asks while
# nobody answers (doubling from ASK_AGAIN_S up to ASK_AGAIN_MAX_S).
ANSWER_WAIT_S = 1.0
POLL_S = 0.01  # how often a socket is looked at while waiting
ASK_AGAIN_S = 0.5
ASK_AGAIN_MAX_S = 5.0
# A worker refused an offer (another ESR version, a bad scenario) asks again this much later:
# the same master would make the same offer.
REFUSED_WAIT_S = 10.0
# An offer is a scenario and a few templates of at most 1 MiB each (yaml_source.py).
OFFER_MAX_BYTES = 16 * 1024 * 1024
# How long the lobby tries to take the address a run's master has just left.
BIND_WAIT_S = 3.0
# The lobby lists a worker that asked within this long, and at most this many.
LOBBY_FORGETS_S = 10.0
LOBBY_MAX_WORKERS = 10_000


class OfferRefused(EsrError):
    """A master's offer this worker will not run (another version, hash or bad file)."""


# ---- Locust's framing ------------------------------------------------------------------------


def frame(kind: str, data: object, node_id: str) -> bytes:
    """One message as Locust's rpc.protocol.Message serializes it."""
    return msgpack.dumps((kind, data, node_id))


def unframe(raw: bytes) -> tuple[str, object, str]:
    kind, data, node_id = msgpack.loads(raw, raw=False, strict_map_key=False)
    return str(kind), data, str(node_id)


# ---- the offer -------------------------------------------------------------------------------


def offer_of(scenario: Scenario) -> dict:
    """What a master offers a standing worker: its scenario, as data (SCENARIO)."""
    folder = Path(scenario.file).parent
    templates = {}
    for group in scenario.citizens:
        path = template_file(group.template, folder)
        if path is not None and path.parent != DEMOGRAPHICS_DIR:  # a file next to the scenario
            templates[group.template] = path.read_text()
    return {"file": Path(scenario.file).name, "source": scenario.source,
            "templates": templates, "sha256": scenario.sha256, "version": __version__}


def unpack_offer(offer: dict, folder: Path) -> Path:
    """Check an offer (its scenario's hash, the ESR version) and write its files into
    `folder`; the scenario file's path. Raises OfferRefused."""
    try:
        name, source = str(offer["file"]), str(offer["source"])
        sha256, version = str(offer["sha256"]), str(offer["version"])
        templates = {str(k): str(v) for k, v in dict(offer.get("templates") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise OfferRefused("the master's offer is not an ESR scenario offer") from None
    if version != __version__:
        raise OfferRefused(f"the master runs ESR {version[:40]!r}, this worker ESR "
                           f"{__version__}: run the same version on both")
    if hashlib.sha256(source.encode()).hexdigest() != sha256:
        raise OfferRefused("the scenario the master sent does not match its SHA-256")
    files = {Path(name).name or "scenario.yml": source, **templates}
    for relative, text in files.items():
        path = file_inside(folder, relative)
        if path is None:  # a template names a file outside the scenario's folder
            raise OfferRefused(f"the offer names a file outside its folder: {relative[:80]!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder / (Path(name).name or "scenario.yml")


def capacity() -> dict:
    """What this process can hold, as a worker says when it joins: the open files it may have
    (each citizen's connection is a file; a Locust process raises its soft limit to the hard
    one) and the memory available to it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # Linux allows no more than fs.nr_open
        hard = _number_in("/proc/sys/fs/nr_open", 1_048_576)
    return {"open_files": hard, "memory_bytes": _memory_available()}


def _number_in(path: str, default: int) -> int:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return default


# What holding citizens costs a Locust process (README's Figures, benchmarks/crowd.py: 33.4 KB a
# citizen with its connection at 100,000 citizens; a worker's own RSS ~110 MB), and the files
# it keeps for itself (its master's and the target's name lookups, logs, zmq, spare).
CITIZEN_BYTES = 33_400
PROCESS_BYTES = 110 * 1024 * 1024
FILES_KEPT = 256


def citizens_held_by(capacity: dict, *, a_file_each: bool = True) -> int | None:
    """How many citizens a process with this capacity can hold: their memory within what it
    has, and, if each may keep a connection open all along (`a_file_each`: pauses short
    enough to keep it, connections.keeps_connections), one file each within its open-files
    limit. None if it did not say. (Citizens who hang up between steps hold a file only
    while a request is in flight; if those ever outnumber the files, they wait for one:
    connections.FileBudget.)"""
    limits = []
    if capacity.get("open_files") and a_file_each:
        limits.append(max(0, capacity["open_files"] - FILES_KEPT))
    if capacity.get("memory_bytes"):
        limits.append(max(0, (capacity["memory_bytes"] - PROCESS_BYTES) // CITIZEN_BYTES))
    return min(limits) if limits else None


def trimmed(counts: dict[str, int], most: int) -> dict[str, int]:
    """Counts by class cut down to `most` in all, each in proportion (largest remainders)."""
    total = sum(counts.values())
    if total <= most:
        return dict(counts)
    shares = {name: n * most / total for name, n in counts.items()}
    cut = {name: int(share) for name, share in shares.items()}
    for name in sorted(shares, key=lambda n: cut[n] - shares[n])[:most - sum(cut.values())]:
        cut[name] += 1
    return cut


def _memory_available() -> int:
    try:  # a container's limit, where there is one (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            return int(limit)
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ---- asking ----------------------------------------------------------------------------------


class Asker:
    """Asks the pool address one question at a time, each on a fresh connection: whoever
    listens there (a run's master, the lobby, nobody) changes between asks."""

    def __init__(self, master: tuple[str, int], identity: str):
        self.address = f"tcp://{_bracketed(master[0])}:{master[1]}"
        self.identity = identity
        self.context = zmq.Context.instance()

    def ask(self, data: dict) -> tuple[str, dict] | None:
        """The answer to SCENARIO_WANTED (its kind and data), or None if nobody answered."""
        sock = self.context.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.IDENTITY, self.identity.encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, OFFER_MAX_BYTES)
            sock.setsockopt(zmq.IPV6, 1)
            sock.connect(self.address)
            sock.send(frame(SCENARIO_WANTED, data, self.identity))
            if not _readable(sock, ANSWER_WAIT_S):
                return None
            kind, answer, _ = unframe(sock.recv())
            return kind, answer if isinstance(answer, dict) else {}
        except (zmq.ZMQError, ValueError, msgpack.UnpackException):
            return None
        finally:
            sock.close(linger=0)


def _readable(sock, wait_s: float) -> bool:
    """Whether a message came within wait_s. Polled without blocking, with sleeps between:
    in a process gevent has patched (a test's), threads are greenlets, and a blocking poll
    would stop them all."""
    deadline = time.monotonic() + wait_s
    while not sock.poll(0):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---- the standing worker ---------------------------------------------------------------------


class StandingWorker:
    """`esr-locust worker --master HOST:PORT` without a scenario: serves one run after another.

    `worker_arguments(scenario_path)` is the Locust worker to start for a scenario, its
    arguments and environment (the launcher's); each is forked from this process's fork
    server (load_processes.py), which imports Locust once for all the runs it serves."""

    def __init__(self, master: tuple[str, int], worker_arguments, *, log=sys.stderr):
        self.master = master
        self.worker_arguments = worker_arguments
        self.identity = f"{socket.gethostname()}_pool_{uuid.uuid4().hex[:12]}"
        self.asker = Asker(master, self.identity)
        self.log = log
        self.child: load_processes.LoadProcess | None = None
        self.stopping = threading.Event()
        self._said = ""  # the last state line written, so waiting is said once

    def serve(self) -> int:
        wait = ASK_AGAIN_S
        while not self.stopping.is_set():
            answer = self.asker.ask(self._about_me())
            if answer is None or answer[0] != SCENARIO:
                self._say(f"waiting for a run at {self.master[0]}:{self.master[1]}"
                          + ("" if answer else " (nobody answers yet)"))
                wait = ASK_AGAIN_S if answer else min(wait * 2, ASK_AGAIN_MAX_S)
                self.stopping.wait(wait)
                continue
            wait = ASK_AGAIN_S
            with tempfile.TemporaryDirectory(prefix="esr-pool-") as folder:
                try:
                    scenario = unpack_offer(answer[1], Path(folder))
                    arguments, env = self.worker_arguments(scenario)  # reads it as any scenario
                except EsrError as refusal:
                    self._say("refusing the master's scenario: " + " ".join(refusal.lines()))
                    self.stopping.wait(REFUSED_WAIT_S)
                    continue
                self._say(f"running {scenario.name} (sha256 {answer[1]['sha256'][:16]}) "
                          f"for the master at {self.master[0]}:{self.master[1]}")
                self._run(arguments, env)
        return 0

    def stop(self, *_) -> None:
        """End serving; a Locust worker running is stopped gracefully (it reports first)."""
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def _run(self, arguments: list[str], env: dict) -> None:
        """A Locust worker of the run, to its end: it quits when the master says, or when it
        has not heard the master for Locust's 60 s (its citizens stop long before:
        lost_workers.py)."""
        from esr.launcher import end_process  # not at the top: a Locust master imports this module

        self.child = load_processes.start(arguments, env)
        try:
            self.child.wait()
        finally:
            end_process(self.child, grace_s=40.0)  # a graceful stop reports what it has first
            self._said = ""

    def _about_me(self) -> dict:
        return {"version": __version__, "host": socket.gethostname(), "capacity": capacity()}

    def _say(self, line: str) -> None:
        if line != self._said:
            self._said = line
            print(f"esr-locust worker: {line}", file=self.log, flush=True)


# ---- the lobby -------------------------------------------------------------------------------


class Lobby:
    """The pool address while no run's master holds it: answers standing workers "no run now"
    and remembers who asked (the service's view of its pool between runs)."""

    def __init__(self, address: tuple[str, int]):
        self.address = f"tcp://{_bracketed(address[0])}:{address[1]}"
        self.seen: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self.error: str | None = None

    def open(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing.clear()
        self._bound.clear()
        self.error = None
        self._thread = threading.Thread(target=self._answer, name="esr-pool-lobby", daemon=True)
        self._thread.start()
        self._bound.wait(BIND_WAIT_S + 1)

    def close(self) -> None:
        """Free the address (a run's master binds it next)."""
        if self._thread is None:
            return
        self._closing.set()
        self._thread.join()
        self._thread = None

    def workers(self) -> list[dict]:
        """The standing workers that asked lately, newest first."""
        now = time.time()
        with self._lock:
            return sorted((dict(w) for w in self.seen.values()
                           if now - w["last_heard"] <= LOBBY_FORGETS_S),
                          key=lambda w: -w["last_heard"])

    def _answer(self) -> None:
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # asks are small
        sock.setsockopt(zmq.IPV6, 1)
        deadline = time.monotonic() + BIND_WAIT_S
        while True:
            try:
                sock.bind(self.address)
                break
            except zmq.ZMQError as error:  # a master that just left may still hold it
                if error.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    self.error = f"cannot listen on {self.address}: {error}"
                    sock.close(linger=0)
                    self._bound.set()
                    return
                time.sleep(0.1)
        self._bound.set()
        try:
            while not self._closing.is_set():
                if not _readable(sock, 0.2):
                    continue
                frames = sock.recv_multipart()
                if len(frames) != 2:
                    continue
                try:
                    kind, data, _ = unframe(frames[1])
                except (ValueError, msgpack.UnpackException):
                    continue
                if kind == SCENARIO_WANTED and isinstance(data, dict):
                    self._note(frames[0].decode(errors="replace")[:200], data)
                    sock.send_multipart([frames[0], frame(NO_RUN, {}, "lobby")])
        finally:
            sock.close(linger=0)

    def _note(self, identity: str, data: dict) -> None:
        about = {"id": identity, "host": str(data.get("host", ""))[:200],
                 "version": str(data.get("version", ""))[:40],
                 "capacity": plain_capacity(data.get("capacity")),
                 "citizens": 0, "last_heard": time.time()}
        with self._lock:
            if identity not in self.seen and len(self.seen) >= LOBBY_MAX_WORKERS:
                return  # a flood of made-up workers: the real ones are listed already
            self.seen[identity] = about
            for stale in [k for k, w in self.seen.items()
                          if time.time() - w["last_heard"] > LOBBY_FORGETS_S]:
                del self.seen[stale]


def plain_capacity(value: object) -> dict:
    """A capacity as a worker said it, kept to its known whole numbers."""
    if not isinstance(value, dict):
        return {}
    return {key: int(value[key]) for key in ("open_files", "memory_bytes")
            if isinstance(value.get(key), int) and not isinstance(value.get(key), bool)}


# ---- the service's pool ------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSettings:
    """`esr-locust serve --pool HOST:PORT --min-workers N --pool-wait S`."""

    address: tuple[str, int]
    min_workers: int = 1  # a run starts once this many standing workers have joined it
    wait_s: float = 60.0  # ... or is an error after waiting this long for them


class ServicePool:
    """A service's standing workers: between runs the lobby holds the pool address (and sees
    who asks); during a run its master does, and lists who joined in live.json."""

    def __init__(self, settings: PoolSettings):
        self.settings = settings
        self.lobby = Lobby(settings.address)
        self._run_dir: Path | None = None

    def open(self) -> None:
        self.lobby.open()
        if self.lobby.error:
            raise BadInput(f"--pool {self.settings.address[0]}:{self.settings.address[1]}: "
                           f"{self.lobby.error}; choose another address")

    def lend(self, run_dir: Path) -> None:
        """A run's master is about to bind the address."""
        self.lobby.close()
        self._run_dir = run_dir

    def take_back(self) -> None:
        self._run_dir = None
        self.lobby.open()

    def close(self) -> None:
        self.lobby.close()

    def view(self) -> dict:
        """What GET /v1/pool shows: the address, and the workers with their host, ESR
        version, capacity, citizens and when they were last heard (epoch seconds). Never
        which run they serve: agencies never see each other's runs."""
        host, port = self.settings.address
        busy = self._run_dir is not None
        workers = _workers_in(self._run_dir) if busy else self.lobby.workers()
        return {"address": f"{host}:{port}", "min_workers": self.settings.min_workers,
                "busy": busy, "workers": workers}


def _workers_in(run_dir: Path) -> list[dict]:
    try:
        live = json.loads((run_dir / LIVE).read_text())
    except (OSError, ValueError):
        return []  # the master is starting, or waits for its workers
    return [_plain_worker(worker) for worker in live.get("pool") or [] if isinstance(worker, dict)]


def _plain_worker(worker: dict) -> dict:
    """A worker as live.json lists it, with nothing in it longer or stranger than it should be
    (its host and capacity come from the worker itself)."""
    def number(value: object) -> float | None:
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    return {"id": str(worker.get("id", ""))[:200], "host": str(worker.get("host", ""))[:200],
            "version": str(worker.get("version", ""))[:40],
            "capacity": plain_capacity(worker.get("capacity")),
            "citizens": number(worker.get("citizens")),
            "last_heard": number(worker.get("last_heard"))}
