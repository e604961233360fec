"""The seam between ESR and the internals of Locust and geventhttpclient, in one module.

ESR needs more of Locust than its documented API offers: workers that start no citizens
before the master has checked their scenario, a final report sent at once, citizens that
hang up while they think, a tab of its own in the web UI. Every use of something Locust or
geventhttpclient does not document (an underscore name, a replaced method, an overridden
private hook, a __class__ swap, a module constant read or set, a raw rpc Message, the shape
of an attribute) is made here, under a RELIES ON comment saying exactly what it takes for
granted; tests/test_locust_compat.py has a test per reliance, which fails when a version
changes it. hdrh's internals are named in esr/histograms.py instead: the report builder
shares them, and must never import Locust.

At import, the installed versions are checked against TESTED, the ranges those tests
passed with; outside them, UntestedLibrary (exit 3). To move a pin: install the new
version, run `ESR_ALLOW_UNTESTED_LIBRARIES=1 python -m pytest tests/test_locust_compat.py`,
mend here what fails, then move TESTED and the pins in setup.cfg together.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata

from esr import __version__
from esr.errors import UntestedLibrary

logger = logging.getLogger(__name__)

# ---- versions ----------------------------------------------------------------------------------

# Per library: the first version tests/test_locust_compat.py passed with, and the first one it
# has not been run against (a minor release may move any internal).
TESTED = {
    "locust": ("2.47.0", "2.48"),
    "geventhttpclient": ("2.6.1", "2.7"),
    "hdrhistogram": ("0.10.8", "0.11"),
}
ALLOW_UNTESTED = "ESR_ALLOW_UNTESTED_LIBRARIES"  # =1: warn instead, to try a new version


def release(version: str) -> tuple[int, ...]:
    """The numbers that lead a version: "2.47.0" -> (2, 47, 0), "2.48.0rc1" -> (2, 48, 0)."""
    numbers = []
    for part in version.split("."):
        digits = re.match(r"\d*", part).group()
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(numbers)


def untested_libraries(version_of: Callable[[str], str] = metadata.version) -> list[str]:
    """One line for each library installed in a version outside TESTED."""
    found = []
    for name, (first, below) in TESTED.items():
        try:
            installed = version_of(name)
        except metadata.PackageNotFoundError:
            installed = "(none)"
        if not release(first) <= release(installed) < release(below):
            found.append(f"{name} {installed} is installed, but ESR {__version__} relies on "
                         f"internals of {name} tested from {first} to below {below}")
    return found


def check_tested_versions(version_of: Callable[[str], str] = metadata.version,
                          environ: Mapping[str, str] = os.environ) -> None:
    """Refuse libraries outside TESTED (UntestedLibrary, exit 3), unless ALLOW_UNTESTED=1."""
    problems = untested_libraries(version_of)
    if not problems:
        return
    if environ.get(ALLOW_UNTESTED) == "1":
        logger.warning("%s; trying anyway (%s=1)", "; ".join(problems), ALLOW_UNTESTED)
        return
    tested = " ".join(f"'{name}>={first},<{below}'" for name, (first, below) in TESTED.items())
    raise UntestedLibrary(problems, f"install tested versions (pip install {tested}), or set "
                          f"{ALLOW_UNTESTED}=1 to try these (see esr/engine/locust_compat.py)")


check_tested_versions()  # before the imports below: an untested Locust may lack what they name

import gevent  # noqa: E402
import locust.runners  # noqa: E402
import locust.stats  # noqa: E402
import zmq.green as zmq  # noqa: E402
from geventhttpclient.client import HTTPClientPool  # noqa: E402
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool  # noqa: E402
from geventhttpclient.url import URL  # noqa: E402
from geventhttpclient.useragent import UnsupportedRedirectSchemeError  # noqa: E402
from locust.rpc import Message  # noqa: E402
from locust.runners import STATE_MISSING, STATE_RUNNING  # noqa: E402
from locust.user.task import DefaultTaskSet  # noqa: E402
from locust.user.users import LOCUST_STATE_WAITING  # noqa: E402
from zmq.utils.monitor import recv_monitor_message  # noqa: E402

# ---- the run: runners, workers and what they tell each other (the roles) -------------------------


def miss_workers_after(heartbeats: int) -> None:
    """Have the master call a worker missing after this many unanswered heartbeats (Locust: 3).
    Set before the master starts."""
    # RELIES ON: locust.runners.HEARTBEAT_LIVENESS, read by the master each time a worker
    # connects or sends a heartbeat (MasterRunner.client_listener), and counted down once per
    # HEARTBEAT_INTERVAL by MasterRunner.heartbeat_worker.
    locust.runners.HEARTBEAT_LIVENESS = heartbeats


def heartbeat_interval_s() -> float:
    """How often master and workers send each other heartbeats."""
    # RELIES ON: locust.runners.HEARTBEAT_INTERVAL, slept between heartbeats on both sides.
    return locust.runners.HEARTBEAT_INTERVAL


def worker_report_interval_s() -> float:
    """How often a worker reports to its master (report_to_master, then worker_report)."""
    # RELIES ON: locust.runners.WORKER_REPORT_INTERVAL, slept between reports by
    # WorkerRunner.stats_reporter.
    return locust.runners.WORKER_REPORT_INTERVAL


def worker_index(runner) -> int:
    """This process's index among the workers: 0 in a single process (or with no runner yet),
    -1 on a worker the master has not acknowledged yet."""
    # RELIES ON: WorkerRunner.worker_index (set from the master's "ack", -1 before it) and
    # LocalRunner.worker_index (0); a MasterRunner has none.
    return getattr(runner, "worker_index", 0) if runner is not None else 0


def workers_ever_connected(runner, besides: set[str] = frozenset()) -> int:
    """How many workers a master has given an index to (those since gone included), but
    `besides` (senders of other messages, which Locust indexes too)."""
    # RELIES ON: MasterRunner.worker_indexes, {worker id: index}, kept for every worker seen.
    return len(set(runner.worker_indexes) - set(besides))


def users_on_worker(runner, worker: str) -> int:
    """The users a master's worker reported running."""
    # RELIES ON: MasterRunner.clients[id].user_count, from the worker's last report.
    node = runner.clients.get(worker)
    return node.user_count if node is not None else 0


def users_asked_of(runner) -> int:
    """How many users this runner was last asked to run (spawning may still be under way)."""
    # RELIES ON: Runner.target_user_classes_count, {class name: users} of the last start,
    # which WorkerRunner.start_worker sets before it spawns.
    return sum(runner.target_user_classes_count.values())


def worker_id(runner) -> str:
    """A worker's id, as its master names it (its `clients` key, the node_id of its messages)."""
    # RELIES ON: WorkerRunner.client_id, the id the worker sends every message under.
    return runner.client_id


def spawning_complete(runner) -> bool:
    """Whether this process has started the users it was asked for (the state after which
    users it starts itself keep their host and are not undone by the spawn in progress)."""
    # RELIES ON: Runner.state turns STATE_RUNNING once a spawn is complete (start_worker sets
    # the classes' host, spawns the difference from user_classes_count, then updates it).
    return runner.state == STATE_RUNNING


def start_more_users(runner, count: int, running: dict[str, int] | None = None
                     ) -> dict[str, int]:
    """Start `count` more users in this process, of the classes furthest below their
    weight's share, as the open model's pool grows (arrivals.py): locally, the master asked
    for none of them. `running`: the users running by class, as this returns them (None:
    counted afresh, a walk over every user); the counts with the new users."""
    # RELIES ON: Runner.spawn_users starts each user as User(environment).start(
    # runner.user_greenlets), the group user_classes_count and user_count read; done here
    # directly, as its debug line walks every user (json.dumps(user_classes_count)) even
    # when not logged: with 600 users, starting one took 137 us that way, 16 us this way
    # (and counting them afresh as many again), as a pool grows one citizen at a time when
    # a slow answer leaves none idle. user_classes_by_name maps the names to classes with
    # their weight.
    classes = runner.user_classes_by_name
    running = dict(runner.user_classes_count if running is None else running)
    total_weight = sum(cls.weight for cls in classes.values())
    for _ in range(count):
        total = sum(running.values()) + 1
        name = max(classes, key=lambda n: classes[n].weight / total_weight * total - running[n])
        running[name] += 1
        classes[name](runner.environment).start(runner.user_greenlets)
    return running


def last_heard_from_master(runner) -> float | None:
    """When a worker last had a heartbeat from its master (epoch seconds), None before any."""
    # RELIES ON: WorkerRunner.last_heartbeat_timestamp, set on each "heartbeat" message.
    return runner.last_heartbeat_timestamp


def connected_workers(runner) -> set[str]:
    """The ids of a master's workers, but those it has called missing."""
    # RELIES ON: MasterRunner.clients (WorkerNodes), whose .all holds nodes with .id and
    # .state, a missing one's state being STATE_MISSING.
    return {node.id for node in runner.clients.all if node.state != STATE_MISSING}


def missing_workers(runner) -> list[str]:
    """The ids of the workers a master has called missing (their heartbeats ran out)."""
    # RELIES ON: WorkerNodes.missing, the nodes in STATE_MISSING.
    return [node.id for node in runner.clients.missing]


def users_dispatched(runner) -> dict[str, int]:
    """{worker id: users} as a master last dispatched them (a missing worker's are gone)."""
    # RELIES ON: WorkerNode.user_classes_count, {class name: users} the master set as it sent
    # the node its share, emptied when the node goes missing.
    return {node.id: sum(node.user_classes_count.values()) for node in runner.clients.all}


def watch_worker_connections(runner, closed: Callable[[str, float], None],
                             reopened: Callable[[str], None]) -> bool:
    """On a master: closed(worker id, epoch seconds) as a worker's TCP connection closes (its
    process ended, or its host closed the connection: no cut cable closes one), reopened(id)
    when it speaks again over a new one. False if this master's socket cannot be watched."""
    # RELIES ON: MasterRunner.server (rpc.Server) holds its zmq ROUTER as .socket, a
    # zmq.green socket, and receives every worker message through socket.recv_multipart(),
    # whose first frame is the worker's id; pyzmq's Frame.get(zmq.SRCFD) names the file
    # descriptor a frame came over, the one the socket monitor's EVENT_DISCONNECTED reports;
    # a zmq.Socket keeps per-instance attributes in __dict__ (its __setattr__ would take
    # other names for socket options). Locust's reset_connection
    # makes a new Server: from then on nothing is watched (the bound falls back on silence).
    server = getattr(runner, "server", None)
    sock = getattr(server, "socket", None)
    if sock is None or not hasattr(zmq, "SRCFD"):
        return False
    # Each worker's descriptor, as its last message came over; a descriptor reused by a new
    # connection is taken from whoever held it (that one's end goes undated: the monitor's
    # events and the messages are read in no set order between them).
    over: dict[str, int] = {}
    gone: set[str] = set()  # workers whose last connection closed
    receive = sock.recv_multipart

    def recv_multipart(flags=0, copy=True, track=False):
        frames = receive(flags, copy=False, track=track)
        fd, worker = frames[0].get(zmq.SRCFD), frames[0].bytes.decode(errors="replace")
        if over.get(worker) != fd:
            for other in [other for other, its in over.items() if its == fd]:
                del over[other]
            over[worker] = fd
            if worker in gone:
                gone.discard(worker)
                reopened(worker)
        return [frame.bytes for frame in frames] if copy else frames

    sock.__dict__["recv_multipart"] = recv_multipart
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def watch() -> None:
        while not monitor.closed:
            try:
                event = recv_monitor_message(monitor)
            except zmq.ZMQError:  # the master's socket closed (it quits)
                return
            at = time.time()
            for worker in [worker for worker, fd in over.items() if fd == event["value"]]:
                del over[worker]
                gone.add(worker)
                closed(worker, at)

    # RELIES ON: Runner.greenlet, the group of the runner's own greenlets, killed as it quits.
    runner.greenlet.spawn(watch)
    return True


def send_final_report_now(runner) -> None:
    """A worker's report to its master, now rather than at the next interval."""
    # RELIES ON: WorkerRunner._send_stats(), which fires report_to_master and sends the data as
    # a "stats" message at once (stats_reporter calls it every WORKER_REPORT_INTERVAL).
    runner._send_stats()


def tell_worker_to_quit(runner, worker_id: str) -> None:
    """Have a master tell one worker to stop its users, send a last report and quit."""
    # RELIES ON: the master's rpc server (MasterRunner.server.send_to_client) and the raw
    # "quit" Message, which a worker obeys as it does at MasterRunner.quit.
    runner.server.send_to_client(Message("quit", None, worker_id))


def identify_before_ready(kind: str, data: dict) -> None:
    """Every worker of this process sends `kind` with `data` to its master just before
    Locust's client_ready, on the same connection: its master reads it first."""
    # RELIES ON: WorkerRunner.connect_to_master() sends "client_ready" when the runner is made
    # (again on each retry, and after a "reconnect"), self.client (rpc.Client, whose send
    # keeps order) and self.client_id being set before it is first called.
    connect = locust.runners.WorkerRunner.connect_to_master
    if getattr(connect, "esr_identifies", False):
        return

    def identify_then_connect(runner) -> None:
        runner.client.send(Message(kind, data, runner.client_id))
        connect(runner)

    identify_then_connect.esr_identifies = True
    locust.runners.WorkerRunner.connect_to_master = identify_then_connect


def admit_workers_only_if(runner, identified: Callable[[str], bool],
                          turned_away: Callable[[str], None]) -> None:
    """A master takes a worker in (its list of workers, a share of the users) only if
    identified(worker id). Any other's client_ready is answered (so that it finishes
    starting, and can be told why it is refused), then turned_away(worker id) is called:
    it never gets a user."""
    # RELIES ON: MasterRunner.handle_message(client_id, msg), looked up on the instance by
    # client_listener; its "client_ready" case adds the worker to clients and to the users'
    # dispatch and answers "ack" {"index"}, without which the worker never finishes starting.
    handle = runner.handle_message

    def screened(client_id, msg) -> None:
        if msg.type == "client_ready" and not identified(msg.node_id):
            runner.server.send_to_client(Message("ack", {"index": -1}, msg.node_id))
            turned_away(msg.node_id)
            return
        handle(client_id, msg)

    runner.handle_message = screened


def hear_strangers(runner, kind: str, listener: Callable[[object], None]) -> None:
    """A master hands messages of `kind` to listener(msg) itself, from anyone, before Locust
    sees them: Locust gives every sender of a custom message a worker index (the next worker
    then gets a higher one), and calls itself stopped after any message while it has no
    worker."""
    # RELIES ON: MasterRunner.handle_message(client_id, msg), looked up on the instance by
    # client_listener; a custom message's case calls get_worker_index(msg.node_id) (which
    # hands out the next index), then check_stopped().
    handle = runner.handle_message

    def heard(client_id, msg) -> None:
        if msg.type == kind:
            listener(msg)
            return
        handle(client_id, msg)

    runner.handle_message = heard


def admit_users(runner, admit: Callable[[dict[str, int]], dict[str, int] | None]) -> None:
    """Of the users its master sends ({class name: users} in all), a worker runs those
    admit(counts) answers (which may wait first); None: it starts none."""
    # RELIES ON: a WorkerRunner runs each "spawn" message as self.start_worker(user_classes_count)
    # in a greenlet of its own (handle_message), looked up on the instance: a replacement there
    # sees every start; start_worker brings the running users to the counts it is given.
    start_worker = runner.start_worker

    def start_admitted(user_classes_count, **kwargs):
        admitted = admit(user_classes_count)
        if admitted is not None:
            start_worker(admitted, **kwargs)

    runner.start_worker = start_admitted


def before_quitting(runner, first: Callable[[], None]) -> None:
    """Whenever Locust quits this runner, `first()` runs to its end before it does; once it
    has quit, asking again does nothing."""
    # RELIES ON: Locust quits a runner through runner.quit() looked up on the instance: at a
    # headless shape's end (Runner.shape_worker), on --run-time or a signal (main's shutdown).
    # A headless run's end quits twice (main's stop_and_optionally_quit, then shutdown()),
    # and each MasterRunner.quit tells every worker to quit and sleeps 0.5 s for their last
    # reports: the second would only repeat that (ESR has had every final report by then).
    quit_now = runner.quit
    quit_done = False

    def quit_after_first() -> None:
        nonlocal quit_done
        if quit_done:
            return
        first()
        quit_done = True  # before quit_now(), which may end the greenlet it runs in
        quit_now()

    runner.quit = quit_after_first


def ready_again_at_once(environment) -> None:
    """Call in a worker's test_stop: it tells its master it is ready again straight away,
    instead of first sleeping out the stop timeout (its users have stopped already). The
    master's next spawn message brings the stop timeout back."""
    # RELIES ON: on a "stop" message a worker fires test_stop, then sleeps
    # environment.stop_timeout, read after test_stop, before sending "client_ready"; each
    # "spawn" message sets stop_timeout to the master's (WorkerRunner.handle_message).
    environment.stop_timeout = 0


def hide_from_web_form(parser, prefix: str) -> None:
    """Locust's web UI renders a form field for each custom option: none for these."""
    # RELIES ON: argparse's parser._actions, and LocustArgumentParser.args_included_in_web_ui
    # (what ui_extra_args_dict renders) taking the actions whose include_in_web_ui is true.
    for action in parser._actions:
        if action.dest.startswith(prefix):
            action.include_in_web_ui = False


def give_users_time_to_stop(environment, seconds: float) -> None:
    """Users asked to stop get at least this long to finish their task (Locust's default is
    none: they are killed mid-request); a worker takes its master's value with each spawn."""
    # RELIES ON: Runner.stop() waiting environment.stop_timeout for users to finish.
    environment.stop_timeout = max(environment.stop_timeout or 0, seconds)


def warm_up_stop() -> None:
    """Pay now, before any load, what a runner's stop() first costs: its debug line names its
    caller with inspect, whose first use maps every loaded module to its file (20-40 ms).
    Paid in the stop, it held the event loop while open-model arrivals fell due."""
    # RELIES ON: Runner.stop(), which local and worker runners use, calls inspect.getframeinfo(
    # inspect.stack()[1][0]) whatever the log level; inspect keeps its module-by-file map.
    inspect.getframeinfo(inspect.stack()[0][0])


def enable_rebalancing(environment) -> None:
    """A worker gone missing has its users moved to the others (Locust's --enable-rebalancing)."""
    # RELIES ON: MasterRunner.rebalancing_enabled() reads parsed_options.enable_rebalancing
    # whenever a worker goes missing or joins.
    if environment.parsed_options is not None:
        environment.parsed_options.enable_rebalancing = True


# ---- Locust's CSV files (--csv) -----------------------------------------------------------------


class _CSVFilesWrittenOnDemand(locust.stats.StatsCSVFileWriter):
    """Locust's CSV writer, which also writes its files when asked (write_csv_files_now)."""

    def __init__(self, environment, *args, **kwargs):
        super().__init__(environment, *args, **kwargs)
        environment.esr_csv_files = self

    def write_now(self) -> None:
        """One turn of stats_writer's loop, now: the files as the figures stand."""
        # RELIES ON: stats_writer writes each file's header once, then every
        # CSV_STATS_INTERVAL_SEC rewrites _stats.csv, _failures.csv and _exceptions.csv after
        # their header and appends one set of rows to _stats_history.csv, with no yield in a
        # turn (so a turn here never lands inside one of its own); requests_csv, failures_csv
        # and exceptions_csv write a header and the rows, _stats_history_data_rows(writer,
        # now) a set of history rows; the file handles are its *_filehandle attributes, which
        # close_files flushes and closes.
        for handle, writer, write in (
                (self.requests_csv_filehandle, self.requests_csv_writer, self.requests_csv),
                (self.failures_csv_filehandle, self.failures_csv_writer, self.failures_csv),
                (self.exceptions_csv_filehandle, self.exceptions_csv_writer,
                 self.exceptions_csv)):
            handle.seek(0)
            write(writer)
            handle.truncate()
            handle.flush()
        history = self.stats_history_csv_filehandle
        if history.tell() == 0:  # before stats_writer's first turn
            self.stats_history_csv_writer.writerow(self.stats_history_csv_columns)
        self._stats_history_data_rows(self.stats_history_csv_writer, time.time())
        history.flush()


def write_csv_files_on_demand() -> None:
    """Call at import, in a locustfile: Locust's CSV writer (--csv) made from then on can be
    asked to write its files at once (write_csv_files_now)."""
    # RELIES ON: locust.main.main makes its writer as stats.StatsCSVFileWriter(environment,
    # PERCENTILES_TO_REPORT, csv_prefix, stats_history_enabled), looked up in locust.stats
    # when it does so: after the locustfile is imported.
    locust.stats.StatsCSVFileWriter = _CSVFilesWrittenOnDemand


def write_csv_files_now(environment) -> bool:
    """Have Locust's CSV files (--csv) hold the figures as they stand now, rather than as its
    writer last saw them (it rewrites them once a second, and not as the process ends).
    False when this process writes none."""
    writer = getattr(environment, "esr_csv_files", None)
    if writer is None:
        return False
    writer.write_now()
    return True


# ---- connections: geventhttpclient's pools (connections.py) ------------------------------------

# What an HTTPClient makes its connection pool of (HTTPClient.__init__): SSL for https.
CONNECTION_POOLS = (ConnectionPool, SSLConnectionPool)


def client_pool_of(session) -> HTTPClientPool:
    """A FastHttpSession's pool of clients, one per host and port."""
    # RELIES ON: FastHttpSession.client, its LocustUserAgent, which takes the client for each
    # request from its `clientpool` (LocustUserAgent._urlopen).
    return session.client.clientpool


def connection_pool_of(client) -> ConnectionPool:
    """The pool of connections an HTTPClient sends every request over."""
    # RELIES ON: HTTPClient._connection_pool, made in __init__ as one of CONNECTION_POOLS.
    return client._connection_pool


class RedirectOffTarget(UnsupportedRedirectSchemeError):
    """A response redirected the citizen to another origin (scheme, host, port): not followed,
    so load never lands anywhere but the target it was aimed at. A failure on the wire, as
    geventhttpclient's own refusal of a redirect to another scheme."""


def keep_redirects_on_target(session) -> None:
    """Redirects within the target's origin are followed as before; one to another origin
    fails the request instead (an open redirect must not carry the load elsewhere)."""
    # RELIES ON: LocustUserAgent builds each request, and follows its redirects, through its
    # `request_type` class (FastRequest); CompatRequest.redirect(code, location) re-points the
    # request in place, and _is_same_origin() compares it with the origin it was made for; an
    # exception from redirect() ends the request with it (UserAgent.urlopen), and Locust counts
    # a geventhttpclient ConnectionError as a failed request (FAILURE_EXCEPTIONS).
    agent = session.client
    agent.request_type = _on_target(type(agent).request_type)


@functools.cache
def _on_target(request_type: type) -> type:
    class OnTargetRequest(request_type):
        def redirect(self, code: int, location: str) -> None:
            super().redirect(code, location)
            if not self._is_same_origin():  # the URL stays out of the error: kinds stay few
                raise RedirectOffTarget(None, "redirect to another origin not followed")

    return OnTargetRequest


def swap_class(instance, subclass: type) -> None:
    """Make an object an instance of a subclass of its class, in place: no copy, no memory."""
    # RELIES ON: HTTPClientPool, ConnectionPool and SSLConnectionPool are plain classes (no
    # __slots__, their state in __dict__) that nothing checks by exact type, so a subclass
    # adding only methods and class attributes takes an instance over by __class__ assignment.
    assert issubclass(subclass, type(instance)), (subclass, type(instance))
    instance.__class__ = subclass


class ConnectionPoolHooks:
    """Mixed in ahead of one of CONNECTION_POOLS: its private hooks as two that may be
    overridden, and a way to drop its idle connections."""

    def resolve(self, target: tuple, lookup: Callable[[], list]) -> list:
        """The getaddrinfo() answer for target, (host, port, IPv4 only): lookup() by default."""
        return lookup()

    def before_connect(self, sock, address) -> None:
        """A new socket about to connect to address: bind it, set options."""

    def open_socket(self, make: Callable[[], object]):
        """A new socket, from make(): may wait first, or make it again."""
        return make()

    # RELIES ON: ConnectionPool._create_tcp_socket(family, socktype, protocol) makes each new
    # socket (before _connect_socket; an OSError from it tries the next address, then fails
    # the request).
    def _create_tcp_socket(self, family, socktype, protocol):
        parent = super()
        return self.open_socket(lambda: parent._create_tcp_socket(family, socktype, protocol))

    # RELIES ON: ConnectionPool._resolve(), called without arguments for each new socket and
    # returning getaddrinfo()'s list, for the pool's _connection_host, _connection_port and
    # disable_ipv6.
    def _resolve(self):
        target = (self._connection_host, self._connection_port, self.disable_ipv6)
        return self.resolve(target, super()._resolve)

    # RELIES ON: ConnectionPool._connect_socket(sock, address), given each new socket before it
    # is connected and returning it connected; SSLConnectionPool's calls it first, then wraps
    # the socket in TLS.
    def _connect_socket(self, sock, address):
        self.before_connect(sock, address)
        return super()._connect_socket(sock, address)

    def close_idle(self) -> None:
        """Close the pool's idle connections; it dials again when next asked."""
        # RELIES ON: ConnectionPool._socket_queue, the gevent queue of idle sockets that
        # get_socket takes from and return_socket puts back into.
        idle = self._socket_queue
        while not idle.empty():
            idle.get_nowait().close()


class ClientPoolHooks(HTTPClientPool):
    """geventhttpclient's pool of clients (one per host and port), told of each new client."""

    def client_made(self, client) -> None:
        """A client just made, for a host and port the pool had none for."""

    # RELIES ON: HTTPClientPool.get_client(url) keeps each client in self.clients under
    # (url.host, url.port), and makes one only when that key is absent.
    def get_client(self, url):
        if not isinstance(url, URL):
            url = URL(url)
        try:
            return self.clients[url.host, url.port]  # as geventhttpclient's own: the hot path
        except KeyError:
            client = super().get_client(url)
        self.client_made(client)
        return client

    def connection_pools(self) -> list[ConnectionPool]:
        return [connection_pool_of(client) for client in self.clients.values()]


# ---- a citizen's requests: FastHttpSession and FastHttpUser (journey.py) ----------------------


def cookie_jar_of(session):
    """The CookieJar a FastHttpSession was made with."""
    # RELIES ON: FastHttpSession.cookiejar, the jar it hands its LocustUserAgent.
    return session.cookiejar


def use_cookie_jar(session, jar) -> None:
    """Have a FastHttpSession keep its cookies in `jar`, or none at all when jar is None."""
    # RELIES ON: the session's LocustUserAgent (session.client) reads its `cookiejar` for every
    # request, and neither sends nor keeps cookies when it is None (UserAgent.urlopen).
    session.client.cookiejar = jar


def request_meta(response) -> dict:
    """What the request event will be fired with, for a `with client.request(...,
    catch_response=True) as response` block: edits made in the block reach every listener."""
    # RELIES ON: ResponseContextManager.request_meta, the dict __exit__ fires the request event
    # with (response_time in ms, context, ...), its "exception" already holding the error of a
    # bad status or a failed transport when the block begins.
    return response.request_meta


def is_http_error(error: Exception) -> bool:
    """Whether a failed request's error came with a response (a bad status), not the wire."""
    # RELIES ON: geventhttpclient's UserAgent attaches the response to a bad status's error as
    # `.response`, which is how FastHttpSession._send_request_safe_mode tells them apart.
    return hasattr(error, "response")


def transport_cause(error: Exception) -> Exception:
    """The error under geventhttpclient's RetriesExceeded, or the error itself."""
    # RELIES ON: RetriesExceeded keeps the last attempt's error as `.original`
    # (UserAgent._handle_retries_exceeded raises it with original=last_error).
    return getattr(error, "original", None) or error


class StopNotice:
    """Mixed into a Locust User ahead of it: `stop_asked` turns True the moment Locust asks
    this user to stop, before the stop lands (a user found waiting is killed a moment later).

    A graceful stop of a user found waiting kills it without waiting for it to die: Locust
    waits for every such user anyway. Locust's own stop() blocks the greenlet it spawned for
    each user until that user is dead, so a stop of N users held N greenlets at once, each
    with its stack copied to the heap: a worker's memory rose ~7 KB a citizen at the stop,
    above all it held during the run (benchmarks/crowd.py --one-process)."""

    __slots__ = ("stop_asked",)  # not a key of the user's __dict__, which it would enlarge

    def __init__(self, *args, **kwargs):
        self.stop_asked = False
        super().__init__(*args, **kwargs)

    # RELIES ON: Locust stops each user through user.stop(force) (Runner.stop_users, graceful
    # or forced), looked up on the instance; Locust has no event for that moment. A graceful
    # stop (force False, only with a stop timeout) adds every user it asks to its stop group
    # and joins that group, killing the rest at the timeout; User.stop kills a user found
    # waiting (state None or waiting) through its group's killone(), which blocks by default.
    def stop(self, force: bool = False):
        self.stop_asked = True
        if not force and self._state in (None, LOCUST_STATE_WAITING):
            self._group.killone(self._greenlet, block=False)
            return True
        return super().stop(force)


class _TurnOnlyToPause(DefaultTaskSet):
    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            gevent.sleep(seconds)


def no_turn_after_waiting(user) -> None:
    """For a user whose wait_time() does its own waiting (an open-model citizen blocks there
    until its next arrival): a wait_time of 0 goes straight on to the next task, without the
    turn of the event loop Locust gives others after each task (gevent.sleep(0)); the wait
    was that turn, and that sleep took 7-13% of a load process in py-spy's profiles."""
    # RELIES ON: User.run makes a DefaultTaskSet (a plain class, no __slots__) as
    # _taskset_instance before on_start, and its run loop waits after each task through
    # TaskSet.wait, which sleeps through self._sleep(self.wait_time()).
    swap_class(user._taskset_instance, _TurnOnlyToPause)


# ---- the web UI (web_ui.py) --------------------------------------------------------------------

STATS_PATH = "/stats/requests"  # what Locust's UI polls every few seconds, under the base path


def web_base_path(environment) -> str:
    """The prefix of every web UI route (--web-base-path), "" without one."""
    # RELIES ON: parsed_options.web_base_path, which Locust gives create_web_ui as the
    # url_prefix of its routes.
    return getattr(environment.parsed_options, "web_base_path", "") or ""


def add_tab(web_ui, key: str, title: str, columns: Iterable[tuple[str, str]],
            downloads: Iterable[tuple[str, str]] = ()) -> None:
    """A tab with a table in Locust's UI (filled by add_tab_rows), and links to downloads.
    `columns` and `downloads` are (key, title) and (href, title) pairs."""
    # RELIES ON: the template_args extended_tabs, extended_tables and extended_csv_files, which
    # WebUI.update_template_args keeps and Locust's React UI reads (as extendedTabs, …): shown
    # only in Locust's example extend_modern_web_ui.py.
    web_ui.template_args.update(
        extended_tabs=[{"title": title, "key": key}],
        extended_tables=[{"key": key, "structure": [{"key": column, "title": heading}
                                                    for column, heading in columns]}],
        extended_csv_files=[{"href": href, "title": text} for href, text in downloads])


def is_stats_poll(path: str, base: str) -> bool:
    return path == f"{base}{STATS_PATH}"


def add_tab_rows(web_ui, response, key: str, rows: list[dict]) -> None:
    """In an after_request hook, on the answer to a stats poll: the rows of the tab `key`."""
    # RELIES ON: the UI's poll of STATS_PATH is answered with a JSON object, to which
    # "extended_stats": [{key, data}] adds the rows of the extended table of that key.
    body = response.get_json()
    body["extended_stats"] = [{"key": key, "data": rows}]
    response.set_data(web_ui.app.json.dumps(body))


def is_index_page(path: str, base: str) -> bool:
    return path in (f"{base}/", base)


def add_script_to_page(response, src: str) -> None:
    """In an after_request hook, on Locust's index page: a script of ESR's, loaded after it."""
    # RELIES ON: the index page Locust serves at {base}/ is its HTML with one </body>.
    page = response.get_data(as_text=True)
    response.set_data(page.replace("</body>", f'<script src="{src}" defer></script></body>', 1))
