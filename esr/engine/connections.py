"""How citizens hold connections: as browsers do, so that 50,000 of them fit on one machine.

A tool that keeps one keep-alive connection per simulated user runs out of sockets
long before 50,000 users: a process may open only so many files (20,000 on the
2-core machines ESR is benchmarked on), one source address has about 28,000
ephemeral ports towards one target address and port, and the target holds a
socket for every idle connection too. A citizen reading a page holds nothing:

- A citizen about to think longer than KEEPALIVE_IDLE_S hangs up first, as browsers
  and servers drop idle keep-alive connections after a few seconds, and dials again
  for its next step; in the open model, one left idle between arrivals hangs up after
  as long (arrivals.py). So sockets held ~ requests in flight + citizens in short
  pauses.
- Dialing again is cheap: the citizen keeps its client objects, and the target's
  address is resolved once per process (and again after RESOLVE_TTL_S), not on every
  connection.
- Against a loopback target, each Locust process connects from loopback source
  addresses of its own (127.1.<worker>.1, …), enough of them that its ephemeral ports
  outnumber the files it may open: it runs out of neither, and workers never compete
  for ports.
- Each process raises its soft limit on open files to the hard limit, and keeps FILES_KEPT
  of them for itself: a citizen whose new socket would take one of those closes it and waits
  for one to be free (FileBudget), rather than failing with EMFILE or starving Locust's own
  connections; the wait is client-side queueing, taken out of the request's duration and
  reported on its own (probes.waited_for_socket).

A citizen that hangs up leaves its side of the connection in TIME_WAIT for 60 s.
Linux reuses such ports for new connections after a second when
net.ipv4.tcp_tw_reuse is 1, or 2 (the default: loopback only), but connect() gets
slower as one address's ports fill up with them: a worker spreads its connections over
SOURCES_PER_WORKER addresses.
"""

from __future__ import annotations

import contextlib
import errno
import math
import resource
import socket
import time
import weakref
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import gevent
import gevent.lock

from esr.engine.locust_compat import (
    CONNECTION_POOLS,
    ClientPoolHooks,
    ConnectionPoolHooks,
    client_pool_of,
    connection_pool_of,
    keep_redirects_on_target,
    swap_class,
    worker_index,
)
from esr.pool import FILES_KEPT
from esr.wire import REQUEST_TIMEOUT_S

# A citizen that will think longer than this closes its connection first (Apache httpd's
# and Node.js's keep-alive timeout: 5 s).
KEEPALIVE_IDLE_S = 5.0
RESOLVE_TTL_S = 60.0  # like a browser's DNS cache; a fixed address for the whole run would
# pin every citizen of a process to one node of a DNS-balanced service
FIRST_SOURCE = IPv4Address("127.1.0.1")  # worker k's source addresses: 127.1.k.1, 127.1.k.2, …
# connect() slows from ~25 us to ~200 us once most of one source address's ports towards the
# target are in TIME_WAIT (measured here, Linux 6.18): a worker's hang-ups spread over this many.
SOURCES_PER_WORKER = 16
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
# A citizen waiting for a file polls this often at first, then at most every MAX_POLL_S; it
# gives up (the request fails with EMFILE) after as long as a request may take.
FIRST_POLL_S, MAX_POLL_S = 0.005, 0.1


def keeps_connections(scenario, time_scale: float) -> bool:
    """Whether a scenario's citizens may keep a connection open all along: some pause (a
    group's think time, or a step's) can be shorter than KEEPALIVE_IDLE_S. Otherwise each
    holds one only while a request is in flight."""
    spans = [group.behavior.think_time for group in scenario.citizens]
    spans += [step.think_time for step in scenario.journey or () if step.think_time]
    return any(span.low * time_scale < KEEPALIVE_IDLE_S for span in spans)


def hang_up(session) -> None:
    """Close a FastHttpSession's idle connections; its next request dials again."""
    pool = client_pool_of(session)
    getattr(pool, "hang_up", pool.close)()  # a session not adopted by a Dialer: drop its clients


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses more than fs.nr_open
        ceiling = _read_int("/proc/sys/fs/nr_open", 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        # If refused, the soft limit stays where Locust left it (at least 10,000 if it could).
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ephemeral_ports() -> int:
    """How many local ports one source address has towards one target address and port."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28_232  # Linux's default range, 32768-60999


def source_addresses(worker_index: int, open_files: int, ports: int) -> tuple[str, ...]:
    """Worker k's loopback source addresses: enough that its ports outnumber its open files,
    and at least SOURCES_PER_WORKER, over which the TIME_WAIT of its hang-ups spread thin."""
    count = min(max(SOURCES_PER_WORKER, math.ceil(open_files / ports)), 254)
    first = FIRST_SOURCE + 256 * (worker_index % 256)
    return tuple(str(first + n) for n in range(count))


def bindable(addresses: tuple[str, ...]) -> bool:
    """Whether this host lets a socket bind these addresses (lo holds 127.0.0.0/8 on Linux)."""
    for address in addresses:
        with socket.socket() as probe:
            try:
                probe.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                probe.bind((address, 0))
            except OSError:
                return False
    return True


class FileBudget:
    """The files a process's citizens may have open: all but FILES_KEPT of its limit. Linux
    gives a new file the lowest free number, so a socket numbered at or above the budget means
    at least that many are open: it is closed again, the idle keep-alive connections of every
    citizen are closed (as a browser at its connection limit closes idle ones), and the
    citizen waits for a file to be free."""

    def __init__(self, open_files: int, kept: int = FILES_KEPT):
        self.limit, self.kept = open_files, kept
        self.most = open_files - kept  # none at all: waiting could never help
        self._waited = weakref.WeakKeyDictionary()  # seconds, by the greenlet that waited
        self._pools = weakref.WeakSet()  # the citizens' connection pools, to close idle ones
        self._swept = 0.0  # when their idle connections were last closed
        self._turn = gevent.lock.Semaphore()  # held by the one citizen waiting at the front
        self._waiting = 0  # citizens waiting for a file (newcomers queue behind them)

    def track(self, pool) -> None:
        self._pools.add(pool)

    def open(self, make: Callable[[], socket.socket]) -> socket.socket:
        if self.most <= 0:
            raise OSError(errno.EMFILE, f"the open-files limit ({self.limit}) leaves no file "
                          f"for citizens' sockets (ESR keeps {self.kept} for its process): "
                          "raise it (ulimit -n)")
        if not self._waiting:  # the usual case: nobody waits, and there is a file to spare
            sock = self._within(make)
            if sock is not None:
                return sock
        start = time.monotonic()
        self._waiting += 1
        try:
            # First come, first served: else the files freed go to whoever asks next, and a
            # citizen can wait out its request's whole timeout.
            if not self._turn.acquire(timeout=REQUEST_TIMEOUT_S):
                self._no_file()
            try:
                sock = self._wait_for_file(make, start)
            finally:
                self._turn.release()
        finally:
            self._waiting -= 1
        current = gevent.getcurrent()
        self._waited[current] = self._waited.get(current, 0.0) + time.monotonic() - start
        return sock

    def _within(self, make: Callable[[], socket.socket]) -> socket.socket | None:
        """A new socket if one fits in the budget, else None."""
        try:
            sock = make()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE):
                return None
            raise
        if sock.fileno() < self.most:
            return sock
        sock.close()
        return None

    def _wait_for_file(self, make: Callable[[], socket.socket], start: float) -> socket.socket:
        pause = FIRST_POLL_S
        while (sock := self._within(make)) is None:
            if time.monotonic() - self._swept > MAX_POLL_S:
                self._swept = time.monotonic()
                for pool in list(self._pools):
                    pool.close_idle()
            if time.monotonic() - start > REQUEST_TIMEOUT_S:
                self._no_file()
            gevent.sleep(pause)
            pause = min(pause * 2, MAX_POLL_S)
        return sock

    def _no_file(self) -> None:
        raise OSError(errno.EMFILE, f"no file free for a socket in {REQUEST_TIMEOUT_S:.0f} s "
                      f"({self.most} for citizens)")

    def waited_s(self) -> float:
        """How long the calling citizen waited for files since it last asked (then 0)."""
        if not self._waited:  # the usual case: no citizen waited
            return 0.0
        return self._waited.pop(gevent.getcurrent(), 0.0)


class Dialer:
    """One Locust process's way of opening connections for its citizens."""

    def __init__(self, sources: tuple[str, ...] = (), budget: FileBudget | None = None):
        self.sources = sources
        self.files = budget or FileBudget(raise_open_files_limit())
        self._resolved: dict[tuple, tuple[float, list]] = {}
        self._turn = 0
        # The pool classes citizens use: geventhttpclient's, dialing through this process.
        self.pools = {base: type(f"Citizen{base.__name__}", (_Dialing, base), {"dialer": self})
                      for base in CONNECTION_POOLS}
        self.client_pool = type("CitizenClientPool", (_CitizenClientPool,), {"dialer": self})

    @classmethod
    def of(cls, environment) -> Dialer:
        """The process's dialer, made with the first citizen (the worker's index is known then)."""
        dialer = getattr(environment, "esr_dialer", None)
        if dialer is None:
            open_files = raise_open_files_limit()
            index = worker_index(environment.runner)
            sources = source_addresses(index, open_files, ephemeral_ports())
            dialer = environment.esr_dialer = cls(sources if bindable(sources) else (),
                                                  FileBudget(open_files))
        return dialer

    def adopt(self, session) -> None:
        """Make a FastHttpSession dial through this process (no memory added per citizen), and
        follow no redirect off its target."""
        swap_class(client_pool_of(session), self.client_pool)
        keep_redirects_on_target(session)

    def resolve(self, key: tuple, lookup: Callable[[], list]) -> list:
        now = time.monotonic()
        found = self._resolved.get(key)
        if found is None or found[0] < now:
            found = self._resolved[key] = (now + RESOLVE_TTL_S, lookup())
        return found[1]

    def source_for(self, family: int, address) -> str | None:
        """The source address for a connection to `address`: one of ours if it is loopback."""
        if family != socket.AF_INET or not self.sources or not address[0].startswith("127."):
            return None
        self._turn = (self._turn + 1) % len(self.sources)
        return self.sources[self._turn]


class _Dialing(ConnectionPoolHooks):
    """Mixed into geventhttpclient's connection pools: cached resolution, source addresses."""

    dialer: Dialer

    def resolve(self, target: tuple, lookup: Callable[[], list]) -> list:
        return self.dialer.resolve(target, lookup)

    def open_socket(self, make: Callable[[], socket.socket]) -> socket.socket:
        return self.dialer.files.open(make)

    def before_connect(self, sock, address) -> None:
        source = self.dialer.source_for(sock.family, address)
        if source is not None:
            # The port is picked at connect(), per target address and port, as without a bind.
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))


class _CitizenClientPool(ClientPoolHooks):
    """A citizen's clients (one per host), whose connection pools dial through its process."""

    dialer: Dialer

    def client_made(self, client) -> None:
        pool = connection_pool_of(client)
        swap_class(pool, self.dialer.pools.get(type(pool), type(pool)))
        self.dialer.files.track(pool)

    def hang_up(self) -> None:
        """Close the idle connections, keeping the clients: dialing again needs no new one."""
        for pool in self.connection_pools():
            pool.close_idle()


def _read_int(path: str, default: int) -> int:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return default
