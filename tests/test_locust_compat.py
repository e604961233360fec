"""The seam with Locust, geventhttpclient and hdrh: one test per thing ESR relies on that
they do not document (esr/engine/locust_compat.py, esr/histograms.py), each failing if a new
version changes it.

Everything here is real and in this process: runners, a master with a worker over zmq on
127.0.0.1, sessions against a small gevent HTTP server, Locust's web UI app through Flask's
test client, HDR histograms. To try a new version of a library:
    ESR_ALLOW_UNTESTED_LIBRARIES=1 .venv/bin/python -m pytest tests/test_locust_compat.py
"""

from __future__ import annotations

import configparser
import csv
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import gevent
import locust.runners
import locust.stats
import numpy as np
import pytest
from flask import request
from gevent.pywsgi import WSGIServer
from geventhttpclient.client import HTTPClient, HTTPClientPool
from geventhttpclient.connectionpool import SSLConnectionPool
from geventhttpclient.useragent import RetriesExceeded
from locust import LoadTestShape, User, constant, task
from locust.argument_parser import get_empty_argument_parser, setup_parser_arguments
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.html import DEFAULT_BUILD_PATH
from locust.rpc import Message
from locust.runners import STATE_INIT, STATE_RUNNING, MasterRunner, WorkerRunner

from esr import pool
from esr.engine import locust_compat as compat
from esr.errors import EXIT_RUN_ERROR, UntestedLibrary
from esr.histograms import (
    HDR_RANGE,
    add_encoded,
    counts_of,
    decoded,
    merged,
    new_histogram,
    percentile_ms,
    record_values,
    set_totals,
)

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "esr" / "engine" / "locustfile.py"
# Read before any test shrinks them: what esr/engine/lost_workers.py's figures assume.
LOCUST_HEARTBEAT_INTERVAL = locust.runners.HEARTBEAT_INTERVAL
LOCUST_HEARTBEAT_LIVENESS = locust.runners.HEARTBEAT_LIVENESS
WAIT_S = 10.0  # the longest any condition below is waited for


class Idle(User):
    wait_time = constant(60)

    @task
    def idle(self):
        pass


class Over(LoadTestShape):
    def tick(self):
        return None  # a shape at its end: Locust quits a headless run, stops one in the web UI


def wait_until(condition, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        gevent.sleep(0.01)


def locust_options(*args: str):
    """Locust's own options, parsed as its command line would be (no config files read)."""
    parser = get_empty_argument_parser(default_config_files=[])
    setup_parser_arguments(parser)
    return parser.parse_args(list(args))


# ---- versions ----------------------------------------------------------------------------------


def test_the_installed_libraries_are_tested_versions():
    assert compat.untested_libraries() == []


def test_an_untested_version_is_refused_with_what_to_do():
    def version_of(name):
        return {"locust": "2.48.0", "geventhttpclient": "2.6.3", "hdrhistogram": "0.10.8"}[name]

    with pytest.raises(UntestedLibrary) as refused:
        compat.check_tested_versions(version_of, environ={})
    error = refused.value
    assert error.exit_code == EXIT_RUN_ERROR == 3
    assert error.lines()[0].startswith("locust 2.48.0 is installed, but ESR ")
    assert "tested from 2.47.0 to below 2.48" in error.lines()[0]
    assert len(error.lines()) == 2  # geventhttpclient 2.6.3 is inside its range
    assert "ESR_ALLOW_UNTESTED_LIBRARIES=1" in error.lines()[1]
    compat.check_tested_versions(version_of, environ={"ESR_ALLOW_UNTESTED_LIBRARIES": "1"})


def test_versions_compare_by_their_leading_numbers():
    assert compat.release("2.47.0") == (2, 47, 0)
    assert compat.release("2.48.0rc1") == (2, 48, 0)
    assert compat.release("2.47.1.dev3+g123") == (2, 47, 1)
    assert compat.release("2.47.0") < compat.release("2.48") <= compat.release("2.48.0")


def test_the_pins_in_setup_cfg_are_tested_versions():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    pins = dict(line.split("==") for line in setup["options"]["install_requires"].split()
                if "==" in line)
    for name, (first, below) in compat.TESTED.items():
        assert compat.release(first) <= compat.release(pins[name]) < compat.release(below), name


def test_the_locustfile_says_why_and_exits_3_on_an_untested_locust(tmp_path):
    pretend = f"""
import importlib.metadata as metadata, runpy, sys
installed = metadata.version
metadata.version = lambda name: "2.48.0" if name == "locust" else installed(name)
sys.argv = ["locust", "-f", {str(LOCUSTFILE)!r}, "--list"]
runpy.run_module("locust", run_name="__main__")
"""
    env = {**os.environ, "ESR_SCENARIO": str(ROOT / "examples" / "demo.yml")}
    env.pop("ESR_ALLOW_UNTESTED_LIBRARIES", None)
    result = subprocess.run([sys.executable, "-c", pretend], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "esr: locust 2.48.0 is installed, but ESR " in result.stderr
    assert "Traceback" not in result.stderr


# ---- the run: runners and their messages (for run.py) ------------------------------------------


@contextmanager
def master_and_worker(master_options=None):
    """A master and one worker in this process, talking over zmq on 127.0.0.1: heartbeats ten
    times as often as Locust's, reports only when asked (and the first, as the worker starts)."""
    with mock.patch.object(locust.runners, "HEARTBEAT_INTERVAL", 0.1), \
            mock.patch.object(locust.runners, "WORKER_REPORT_INTERVAL", 600):
        master_env = Environment(user_classes=[Idle],
                                 parsed_options=master_options or locust_options())
        master = master_env.create_master_runner("127.0.0.1", 0)
        worker = Environment(user_classes=[Idle]).create_worker_runner("127.0.0.1",
                                                                      master.server.port)
        try:
            wait_until(lambda: worker.client_id in master.clients)
            yield master, worker
        finally:
            for runner in (worker, master):
                runner.user_greenlets.kill(block=True)
                runner.greenlet.kill(block=True)
            worker.client.close(linger=0)
            master.server.close(linger=0)


def start_users(master, worker, count: int) -> None:
    starting = gevent.spawn(master.start, count, 100)
    wait_until(lambda: worker.user_count == count)
    # The master waits up to a second for reports, then tells the workers spawning is
    # complete: over before the test closes its sockets, or that message fails loudly later.
    starting.join(timeout=WAIT_S)
    starting.kill()  # (never left running, even on a machine too busy to finish in time)


def test_the_master_calls_a_worker_missing_after_the_heartbeats_set(monkeypatch):
    monkeypatch.setattr(locust.runners, "HEARTBEAT_LIVENESS", locust.runners.HEARTBEAT_LIVENESS)
    compat.miss_workers_after(50)
    with master_and_worker() as (master, worker):
        node = master.clients[worker.client_id]
        assert node.heartbeat > 40  # counted down from 50, Locust's 3 long gone
        gevent.sleep(0.3)  # heartbeats come back, each setting the count to 50 again
        assert node.heartbeat > 40


def test_the_intervals_are_the_constants_locust_sleeps():
    # lost_workers.py's figures: Locust calls a worker missing after 3 heartbeats, 1 s apart.
    assert (LOCUST_HEARTBEAT_INTERVAL, LOCUST_HEARTBEAT_LIVENESS) == (1, 3)
    assert "HEARTBEAT_INTERVAL" in MasterRunner.heartbeat_worker.__code__.co_names
    assert "HEARTBEAT_INTERVAL" in WorkerRunner.heartbeat.__code__.co_names
    assert compat.heartbeat_interval_s() == locust.runners.HEARTBEAT_INTERVAL
    assert "WORKER_REPORT_INTERVAL" in WorkerRunner.stats_reporter.__code__.co_names
    assert compat.worker_report_interval_s() == locust.runners.WORKER_REPORT_INTERVAL == 3


def test_runners_tell_their_index_and_the_users_asked_of_them():
    local = Environment(user_classes=[Idle]).create_local_runner()
    assert compat.worker_index(local) == 0 and compat.worker_index(None) == 0
    with master_and_worker() as (master, worker):
        assert compat.worker_index(worker) == 0  # from the master's ack
        assert compat.workers_ever_connected(master) == 1
        start_users(master, worker, 2)
        assert compat.users_asked_of(worker) == 2
        wait_until(lambda: compat.users_on_worker(master, worker.client_id) == 2)
        assert compat.users_on_worker(master, "gone") == 0


# ---- the pool: standing workers speak Locust's framing outside Locust (esr/pool.py) ------------


def test_the_pool_frames_messages_as_locust_does():
    message = Message("esr_scenario", {"source": "é", "n": [1, 2.5]}, "host_pool_1")
    assert pool.frame(message.type, message.data, message.node_id) == message.serialize()
    back = Message.unserialize(pool.frame("esr_no_run", {}, "lobby"))
    assert pool.unframe(message.serialize()) == (message.type, message.data, message.node_id)
    assert (back.type, back.data, back.node_id) == ("esr_no_run", {}, "lobby")


def test_a_master_hears_a_stranger_itself_and_answers_it_by_its_identity():
    """A standing worker asks a run's master for its scenario before it is any worker: the
    master hears it ahead of Locust (compat.hear_strangers), which would give the asker a
    worker index and, with no worker connected, call itself stopped; replies reach it."""
    import zmq.green as zmq

    with master_and_worker() as (master, worker):
        compat.hear_strangers(master, "esr_test_ask", lambda msg: master.send_message(
            "esr_test_answer", {"to": msg.data["n"]}, client_id=msg.node_id))
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, b"stranger_pool_1")
        sock.connect(f"tcp://127.0.0.1:{master.server.port}")
        try:
            sock.send(pool.frame("esr_test_ask", {"n": 7}, "stranger_pool_1"))
            assert sock.poll(int(WAIT_S * 1000))
            assert pool.unframe(sock.recv()) == ("esr_test_answer", {"to": 7}, "stranger_pool_1")
        finally:
            sock.close(linger=0)
        assert "stranger_pool_1" not in master.clients  # a worker only once it says ready
        assert compat.workers_ever_connected(master) == 1  # not indexed
        assert compat.workers_ever_connected(master, besides={worker.client_id}) == 0
        assert master.state == STATE_INIT  # Locust never handled it



class Often(Idle):
    weight = 3


class Seldom(Idle):
    weight = 1


def test_a_process_starts_more_users_itself_by_weight_once_its_spawn_is_complete():
    """The open model's pool grows in each process (arrivals.py): users started locally, by
    the classes' weights, counted as the runner counts its own."""
    runner = Environment(user_classes=[Often, Seldom]).create_local_runner()
    try:
        assert not compat.spawning_complete(runner)  # no spawn yet
        runner.start(4, spawn_rate=100)
        wait_until(lambda: compat.spawning_complete(runner))
        running = compat.start_more_users(runner, 8)
        after = runner.user_classes_count
        assert sum(after.values()) == runner.user_count == 12
        assert (after["Often"], after["Seldom"]) == (9, 3)  # 3:1
        assert running == after  # the counts to go on from, without a walk over the users
        running = compat.start_more_users(runner, 4, running)
        assert running == runner.user_classes_count == {"Often": 12, "Seldom": 4}
    finally:
        runner.quit()


def test_a_worker_hears_heartbeats_from_its_master():
    with master_and_worker() as (_, worker):
        wait_until(lambda: compat.last_heard_from_master(worker) is not None)
        assert abs(compat.last_heard_from_master(worker) - time.time()) < 60


def test_the_master_knows_its_workers_and_which_went_missing():
    with master_and_worker() as (master, worker):
        assert compat.connected_workers(master) == {worker.client_id}
        assert compat.worker_id(worker) == worker.client_id  # the master's name for it
        assert compat.missing_workers(master) == []
        worker.greenlet.kill(block=True)  # silent from now on: no heartbeats
        wait_until(lambda: compat.missing_workers(master) == [worker.client_id])
        assert compat.connected_workers(master) == set()


def test_the_master_knows_how_many_users_it_dispatched_to_each_worker():
    with master_and_worker() as (master, worker):
        assert compat.users_dispatched(master) == {worker.client_id: 0}
        start_users(master, worker, 3)
        assert compat.users_dispatched(master) == {worker.client_id: 3}


def test_the_master_sees_a_worker_s_connection_close_at_once():
    """lost_workers.py dates a killed worker's end by its connection closing."""
    closed, reopened = [], []
    with master_and_worker() as (master, worker):
        assert compat.watch_worker_connections(
            master, lambda worker_id, at: closed.append((worker_id, at)), reopened.append)
        received = []
        master.environment.events.worker_report.add_listener(
            lambda client_id, data: received.append(client_id))
        received.clear()
        compat.send_final_report_now(worker)  # Locust's messages still arrive, whole
        wait_until(lambda: worker.client_id in received)
        gevent.sleep(0.3)  # heartbeats over the same connection: nothing reopened
        worker.greenlet.kill(block=True)
        # What it sent before is read first (a message read after the close would count as
        # the worker speaking again: the safe reading, a looser bound).
        gevent.sleep(0.2)
        before = time.time()
        worker.client.close(linger=0)  # as a killed process's kernel closes its socket
        wait_until(lambda: closed)
        ((worker_id, at),) = closed
        assert worker_id == worker.client_id and before <= at < before + 1
        assert reopened == []


def test_a_final_report_goes_at_once():
    with master_and_worker() as (master, worker):
        received = []
        master.environment.events.worker_report.add_listener(
            lambda client_id, data: received.append(data))
        wait_until(lambda: received)  # the report a worker sends as it starts
        worker.environment.events.report_to_master.add_listener(
            lambda client_id, data: data.update(esr="final"))
        compat.send_final_report_now(worker)
        wait_until(lambda: any(data.get("esr") == "final" for data in received))


def test_a_worker_told_to_quit_reports_once_more_and_quits():
    with master_and_worker() as (master, worker):
        received = []
        master.environment.events.worker_report.add_listener(
            lambda client_id, data: received.append(data))
        wait_until(lambda: received)  # the report a worker sends as it starts
        worker.environment.events.report_to_master.add_listener(
            lambda client_id, data: data.update(esr="last"))
        compat.tell_worker_to_quit(master, worker.client_id)
        wait_until(lambda: len(worker.greenlet) == 0)  # its loops have ended
        wait_until(lambda: any(data.get("esr") == "last" for data in received))


def test_a_worker_starts_only_the_users_admitted():
    with master_and_worker() as (master, worker):
        asked = []

        def admit(counts):
            asked.append(dict(counts))
            if len(asked) == 1:
                return None  # refused: none start
            return {name: min(n, 2) for name, n in counts.items()}  # at most 2

        compat.admit_users(worker, admit)
        starting = gevent.spawn(master.start, 1, 100)
        wait_until(lambda: asked)
        assert worker.user_count == 0
        starting.kill()
        start_users(master, worker, 2)
        starting = gevent.spawn(master.start, 5, 100)
        wait_until(lambda: len(asked) == 3)
        # Over before the sockets close (start_users says why: left running, it failed later
        # and its traceback landed in another test's captured stderr).
        starting.join(timeout=WAIT_S)
        starting.kill()
        assert asked[1:] == [{"Idle": 2}, {"Idle": 5}] and worker.user_count == 2


def test_a_message_sent_at_the_masters_test_start_comes_before_the_users():
    """messages.RUN: the run's id and scales, sent by the master's test_start listener, reach
    a worker ahead of the spawn message (one connection, in order), so before its test_start
    and before any of its users."""
    with master_and_worker() as (master, worker):
        seen = []
        master.environment.events.test_start.add_listener(
            lambda **_: master.send_message("esr_run", {"run_id": "run-7"}))
        worker.register_message("esr_run", lambda msg, **_: seen.append(
            ("message", msg.data["run_id"], worker.user_count)))
        worker.environment.events.test_start.add_listener(lambda **_: seen.append(("start",)))
        start_users(master, worker, 1)
        assert seen[:2] == [("message", "run-7", 0), ("start",)]


def test_rebalancing_is_switched_on_in_the_options():
    with master_and_worker() as (master, _):
        assert not master.rebalancing_enabled()
        compat.enable_rebalancing(master.environment)
        assert master.rebalancing_enabled()


def test_a_stopped_worker_is_ready_again_at_once():
    with master_and_worker() as (master, worker):
        master.environment.stop_timeout = 60
        start_users(master, worker, 1)
        assert worker.environment.stop_timeout == 60  # the spawn message brought it
        assert worker.worker_state == STATE_RUNNING
        worker.environment.events.test_stop.add_listener(
            lambda **_: compat.ready_again_at_once(worker.environment))
        master.server.send_to_client(Message("stop", None, worker.client_id))
        wait_until(lambda: worker.worker_state == STATE_INIT)  # not after 60 s


def test_what_must_come_first_runs_before_locust_quits():
    environment = Environment(user_classes=[Idle], shape_class=Over(),
                              parsed_options=locust_options("--headless"))
    runner = environment.create_local_runner()
    order = []
    quit_now = runner.quit
    runner.quit = lambda: (order.append("quit"), quit_now())
    compat.before_quitting(runner, lambda: order.append("first"))
    runner.start_shape()
    wait_until(lambda: order)
    wait_until(lambda: len(order) == 2)
    assert order == ["first", "quit"]
    runner.quit()  # as Locust's shutdown() does again after a headless end
    assert order == ["first", "quit"]


def test_a_user_knows_it_was_asked_to_stop():
    users = []

    class Noticing(compat.StopNotice, Idle):
        def on_start(self):
            users.append(self)

    environment = Environment(user_classes=[Noticing], stop_timeout=5)
    runner = environment.create_local_runner()
    runner.start(1, 100)
    wait_until(lambda: users)
    assert not users[0].stop_asked
    runner.stop()  # graceful: a stop timeout is set, as ESR always sets one
    assert users[0].stop_asked
    runner.quit()


def test_a_graceful_stop_does_not_wait_for_each_waiting_user_in_turn():
    """Locust waits for every user it stops gracefully; a user's own stop() did too, holding
    one blocked greenlet (and its stack) per user at once: memory rose at every stop."""
    users, acted = [], []

    class Noticing(compat.StopNotice, User):
        wait_time = constant(60)

        def on_start(self):
            users.append(self)

        @task
        def act(self):
            acted.append(self)

    environment = Environment(user_classes=[Noticing], stop_timeout=5)
    runner = environment.create_local_runner()
    runner.start(3, 100)
    wait_until(lambda: len(acted) == 3)
    gevent.sleep(0.05)  # each is waiting now
    first = users[0]
    assert first.stop() is True  # killed, not waited for
    assert not first.greenlet.dead and first.stop_asked
    wait_until(lambda: first.greenlet.dead)
    runner.stop()  # Locust waits for the others
    assert all(user.greenlet.dead and user.stop_asked for user in users)
    runner.quit()


@pytest.mark.parametrize("waits_itself", [False, True])
def test_a_user_that_waits_in_wait_time_goes_on_without_a_second_turn(waits_itself):
    """Locust gives the event loop a turn (sleep(0)) after each task, a wait_time of 0 too;
    a user that waits in wait_time itself goes on at once, and sleeps for a pause."""
    order = []

    class Arriving(User):
        def on_start(self):
            if waits_itself:
                compat.no_turn_after_waiting(self)

        def wait_time(self):
            return 0 if order.count("task") < 5 else 60

        @task
        def act(self):
            order.append("task")

    def other():
        while True:
            order.append("other")
            gevent.sleep(0)

    environment = Environment(user_classes=[Arriving], stop_timeout=5)
    runner = environment.create_local_runner()
    runner.start(1, 100)
    others = gevent.spawn(other)
    wait_until(lambda: order.count("task") == 5)
    gevent.sleep(0.05)
    first, last = order.index("task"), len(order) - order[::-1].index("task")
    assert ("other" in order[first:last]) is not waits_itself
    assert order.count("task") == 5  # a wait_time of 60: it sleeps
    others.kill()
    runner.quit()


def test_the_environment_and_the_shape_carry_esr_s_run():
    environment = Environment(user_classes=[Idle], shape_class=Over())
    assert not hasattr(environment, "esr") and not hasattr(environment, "esr_dialer")
    environment.esr = environment.esr_dialer = "ESR's"  # Environment has no __slots__
    runner = environment.create_local_runner()
    assert environment.shape_class.runner is runner and runner.environment.esr == "ESR's"


# ---- Locust's CSV files (for conducting.py) -----------------------------------------------------

CSV_LOCUSTFILE = """
from locust import LoadTestShape, User, constant, events, task

from esr.engine import locust_compat

locust_compat.write_csv_files_on_demand()


class Idle(User):
    wait_time = constant(60)

    @task
    def idle(self):
        pass


class Over(LoadTestShape):
    def tick(self):
        return None  # headless: Locust quits at once, its CSV writer having had its first turn


@events.quitting.add_listener
def after_the_writers_last_turn(environment, **_):
    environment.stats.log_request("POST", "/late", 42, 10)
    environment.stats.log_error("POST", "/late", "late error")
    assert locust_compat.write_csv_files_now(environment)
    environment.process_exit_code = 0
"""


def test_csv_files_are_written_on_demand_with_the_figures_as_they_stand(tmp_path):
    """What happens as Locust quits, after its CSV writer's last turn, reaches the files."""
    locustfile = tmp_path / "csv_locustfile.py"
    locustfile.write_text(CSV_LOCUSTFILE)
    prefix = tmp_path / "out" / "locust"
    result = subprocess.run([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
                             "--csv", str(prefix), "--csv-full-history", "--only-summary"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr

    def rows(suffix: str) -> list[list[str]]:
        with open(f"{prefix}_{suffix}.csv", newline="") as table:
            return list(csv.reader(table))

    stats, history = rows("stats"), rows("stats_history")
    failures, exceptions = rows("failures"), rows("exceptions")
    assert stats[0][:4] == ["Type", "Name", "Request Count", "Failure Count"]
    assert [row[:4] for row in stats[1:]] == [["POST", "/late", "1", "1"],
                                              ["", "Aggregated", "1", "1"]]
    assert failures == [["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"],
                        ["POST", "/late", "late error", "1", failures[1][4], failures[1][5]]]
    assert exceptions == [["Count", "Message", "Traceback", "Nodes"]]
    assert history[0][:4] == ["Timestamp", "User Count", "Type", "Name"]
    assert history.count(history[0]) == 1
    last = history[-2:]  # the rows written on demand: the endpoint, then the total
    assert [(row[3], row[-7], row[-6]) for row in last] == [("/late", "1", "1"),
                                                             ("Aggregated", "1", "1")]


# ---- connections: geventhttpclient's pools (for connections.py) --------------------------------


@pytest.fixture
def target():
    """A small HTTP server on 127.0.0.1 that notes the address of every connection."""
    peers: list[tuple[str, int]] = []

    def app(environ, start_response):
        peers.append((environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])))
        path = environ["PATH_INFO"]
        if path == "/broken":
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"broken"]
        headers = [("Content-Type", "text/plain")]
        if path == "/welcome":
            headers.append(("Set-Cookie", "visit=1; Path=/"))
        start_response("200 OK", headers)
        return [environ.get("HTTP_COOKIE", "").encode()]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", peers
    finally:
        server.stop(timeout=1)


def session_for(url: str, events=None, **kwargs) -> FastHttpSession:
    events = events or Environment().events
    return FastHttpSession(url, request_event=events.request, user=None, **kwargs)


class Noting(compat.ClientPoolHooks):
    made: list

    def client_made(self, client):
        self.made.append(client)


def test_a_session_takes_its_clients_from_its_client_pool(target):
    url, _ = target
    session = session_for(url)
    pool = compat.client_pool_of(session)
    assert type(pool) is HTTPClientPool
    compat.swap_class(pool, type("NotingPool", (Noting,), {"made": []}))
    for _ in range(3):
        session.request("GET", "/")
    assert len(pool.made) == 1  # one host and port: one client, reused
    host, port = url.rsplit("//", 1)[1].split(":")
    assert list(pool.clients) == [(host, int(port))]
    assert HTTPClientPool.get_client(pool, url) is pool.made[0]  # geventhttpclient's own key


def test_clients_send_over_a_connection_pool_whose_hooks_see_each_new_socket(target):
    url, peers = target
    assert type(compat.connection_pool_of(HTTPClient.from_url(url))) is compat.CONNECTION_POOLS[0]
    assert type(compat.connection_pool_of(HTTPClient.from_url("https://127.0.0.1:1/"))) \
        is SSLConnectionPool is compat.CONNECTION_POOLS[1]
    seen = {}

    class Watching(compat.ConnectionPoolHooks):
        def resolve(self, target, lookup):
            seen["target"], seen["answer"] = target, lookup()
            return seen["answer"]

        def before_connect(self, sock, address):
            with pytest.raises(OSError):
                sock.getpeername()  # not connected yet
            sock.bind(("127.0.0.1", 0))
            seen["address"], seen["source"] = address, sock.getsockname()

    client = HTTPClient.from_url(url)
    pool = compat.connection_pool_of(client)
    compat.swap_class(pool, type("WatchingPool", (Watching, type(pool)), {}))
    assert client.get("/").status_code == 200
    port = int(url.rsplit(":", 1)[1])
    assert seen["target"] == ("127.0.0.1", port, False)
    assert [answer[-1] for answer in seen["answer"]] == [("127.0.0.1", port)]  # getaddrinfo's
    assert seen["address"] == ("127.0.0.1", port)
    assert peers[-1] == seen["source"]  # the target saw the address bound before connecting


def test_tls_pools_show_the_hook_the_socket_before_wrapping_it():
    listener = socket.create_server(("127.0.0.1", 0))
    closer = gevent.spawn(lambda: [listener.accept()[0].close() for _ in range(3)])
    seen = []

    class Watching(compat.ConnectionPoolHooks):
        def before_connect(self, sock, address):
            seen.append(type(sock).__name__)

    try:
        client = HTTPClient.from_url(f"https://127.0.0.1:{listener.getsockname()[1]}/",
                                     connection_timeout=5, network_timeout=5)
        pool = compat.connection_pool_of(client)
        compat.swap_class(pool, type("WatchingTLSPool", (Watching, SSLConnectionPool), {}))
        with pytest.raises(OSError):  # the listener hangs up on the TLS handshake
            pool.get_socket()
        assert seen == ["socket"]  # the plain socket, before TLS wrapped it
    finally:
        closer.kill()
        listener.close()


def test_idle_connections_close_and_the_pool_dials_again(target):
    url, peers = target
    client = HTTPClient.from_url(url)
    pool = compat.connection_pool_of(client)
    compat.swap_class(pool, type("Hooked", (compat.ConnectionPoolHooks, type(pool)), {}))
    client.get("/").read()
    client.get("/").read()
    assert len(set(peers)) == 1  # kept alive
    idle = list(pool._socket_queue.queue)
    pool.close_idle()
    assert len(idle) == 1 and idle[0].closed
    client.get("/").read()
    assert len(set(peers)) == 2  # dialed again


# ---- a citizen's requests (for journey.py) ----------------------------------------------------


def test_a_session_keeps_cookies_in_the_jar_it_is_given_or_none(target):
    url, _ = target
    session = session_for(url)
    jar = compat.cookie_jar_of(session)
    assert session.client.cookiejar is jar  # the jar its agent uses
    session.request("GET", "/welcome")
    assert [cookie.name for cookie in jar] == ["visit"]
    assert session.request("GET", "/").content == b"visit=1"
    compat.use_cookie_jar(session, None)
    assert session.request("GET", "/").content == b""  # none sent
    session.request("GET", "/welcome")  # none kept
    compat.use_cookie_jar(session, jar)
    jar.clear()
    assert session.request("GET", "/").content == b""


def test_edits_to_request_meta_reach_the_request_listeners(target):
    url, _ = target
    environment = Environment()
    fired = []
    environment.events.request.add_listener(lambda **meta: fired.append(meta))
    session = session_for(url, environment.events)
    with session.request("GET", "/broken", catch_response=True, context={"cohort": 1}) as response:
        meta = compat.request_meta(response)
        assert compat.is_http_error(meta["exception"])  # the status's verdict, already there
        meta["response_time"] += 5000
        meta["context"]["facts"] = {"route": "ai"}
        response.failure("HTTP 500")
    with session.request("GET", "/", catch_response=True) as response:
        assert compat.request_meta(response)["exception"] is None
        response.success()
    broken, fine = fired
    assert broken["response_time"] >= 5000 and fine["response_time"] < 5000
    assert broken["context"] == {"cohort": 1, "facts": {"route": "ai"}}
    assert str(broken["exception"]) == "HTTP 500" and fine["exception"] is None


def test_redirects_are_followed_on_the_target_and_refused_off_it():
    asked = []

    def app(environ, start_response):
        asked.append(f"{environ['HTTP_HOST'].split(':')[0]} {environ['PATH_INFO']}")
        port = environ["SERVER_PORT"]
        to = {"/here": f"http://127.0.0.1:{port}/landed",  # the same origin
              "/away": f"http://localhost:{port}/landed"}.get(environ["PATH_INFO"])  # another
        start_response("302 Found" if to else "200 OK", [("Location", to)] if to else [])
        return [b""]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        session = session_for(f"http://127.0.0.1:{server.server_port}")
        compat.keep_redirects_on_target(session)
        assert session.request("GET", "/here").status_code == 200
        with session.request("GET", "/away", catch_response=True) as response:
            error = compat.request_meta(response)["exception"]
            response.failure("refused")
    finally:
        server.stop(timeout=1)
    assert asked == ["127.0.0.1 /here", "127.0.0.1 /landed", "127.0.0.1 /away"]
    assert type(compat.transport_cause(error)) is compat.RedirectOffTarget


def failure_of_request(url: str, method: str, **session) -> Exception:
    with session_for(url, **session).request(method, "/", catch_response=True) as response:
        error = compat.request_meta(response)["exception"]
        response.failure("failed")
    return error


def test_failures_on_the_wire_are_named_by_their_cause():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    error = failure_of_request(refused, "GET", connection_timeout=5)
    assert not compat.is_http_error(error)
    assert type(compat.transport_cause(error)) is ConnectionRefusedError
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never answers
        error = failure_of_request(f"http://127.0.0.1:{silent.getsockname()[1]}", "POST",
                                   network_timeout=0.2)
    assert isinstance(error, RetriesExceeded) and not compat.is_http_error(error)
    assert isinstance(compat.transport_cause(error), TimeoutError)


# ---- the web UI (for web_ui.py) ---------------------------------------------------------------


@pytest.fixture
def locust_argv(monkeypatch):
    """Locust's web UI parses sys.argv for its extra options: give it a command line of its own."""
    monkeypatch.setattr(sys, "argv", ["locust"])


def web_ui_for(*options: str, **web):
    environment = Environment(user_classes=[Idle], parsed_options=locust_options(*options))
    environment.create_local_runner()
    web_ui = environment.create_web_ui("127.0.0.1", 0, delayed_start=True, **web)
    web_ui.app.config["SECRET_KEY"] = "test"
    if web_ui.web_login:  # nobody signs in here
        web_ui.login_manager.user_loader(lambda name: None)
    return environment, web_ui


@pytest.mark.usefixtures("locust_argv")
def test_a_tab_of_esr_s_shows_in_locust_s_page_fed_by_its_polls():
    environment, web_ui = web_ui_for()
    base = compat.web_base_path(environment)
    compat.add_tab(web_ui, "esr-tab", "ESR", [("cohort", "Cohort")], [("/esr/report", "Card")])

    @web_ui.app.after_request
    def extend(response):
        if compat.is_stats_poll(request.path, base) and response.is_json:
            compat.add_tab_rows(web_ui, response, "esr-tab", [{"cohort": "18-24"}])
        elif compat.is_index_page(request.path, base) and response.mimetype == "text/html":
            compat.add_script_to_page(response, "/esr/panel.js")
        return response

    client = web_ui.app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert '"extended_tabs":[{"key":"esr-tab","title":"ESR"}]' in page.replace(" ", "")
    assert '"extended_csv_files":[{"href":"/esr/report"' in page.replace(" ", "")
    assert page.count('<script src="/esr/panel.js" defer></script></body>') == 1
    poll = client.get("/stats/requests").get_json()
    assert "stats" in poll  # Locust's own answer, with ESR's rows added
    assert poll["extended_stats"] == [{"key": "esr-tab", "data": [{"cohort": "18-24"}]}]
    bundle = "".join(path.read_text() for path in (Path(DEFAULT_BUILD_PATH) / "assets").glob(
        "*.js"))
    for name in ("extendedTabs", "extendedTables", "extendedCsvFiles", "extendedStats"):
        assert name in bundle  # what Locust's UI reads them as


@pytest.mark.usefixtures("locust_argv")
def test_routes_live_under_the_base_path():
    environment, web_ui = web_ui_for("--web-base-path", "/base")
    base = compat.web_base_path(environment)
    assert base == "/base" and compat.web_base_path(Environment()) == ""
    environment, web_ui = web_ui_for("--web-base-path", "/base", web_base_path=base)
    assert web_ui.app.test_client().get(f"{base}{compat.STATS_PATH}").status_code == 200
    assert compat.is_stats_poll(f"{base}{compat.STATS_PATH}", base)
    assert compat.is_index_page(f"{base}/", base) and compat.is_index_page(base, base)


@pytest.mark.usefixtures("locust_argv")
def test_the_sign_in_page_shows_esr_s_form_and_error():
    # web_ui._add_login: documented by Locust's examples only (web_ui_auth), so checked here.
    _, web_ui = web_ui_for(web_login=True)
    web_ui.auth_args = {"username_password_callback": "/esr/login"}
    client = web_ui.app.test_client()
    with client.session_transaction() as session:
        session["auth_error"] = "Invalid username or password"
    page = client.get("/login").get_data(as_text=True)
    assert '"username_password_callback": "/esr/login"' in page
    assert "Invalid username or password" in page
    with web_ui.app.test_request_context():
        from flask import url_for

        assert url_for("locust.index") == "/" and url_for("locust.login") == "/login"


# ---- hdrh (esr/histograms.py) ------------------------------------------------------------------


@pytest.mark.parametrize("word_size", [4, 8])
def test_counts_are_one_array_that_numpy_shares(word_size):
    histogram = new_histogram(word_size)
    view = counts_of(histogram)
    assert (len(view), view.itemsize) == (histogram.counts_len, word_size)
    histogram.record_value(1234)
    assert view.sum() == 1  # HDR's own recording shows in the view
    view[histogram.get_counts_array_index(5000)] += 2  # and the view's writes in HDR
    set_totals(histogram, 3, 1234, 5000)
    assert histogram.get_count_at_value(5000) == 2
    assert histogram.get_value_at_percentile(100) == histogram.get_highest_equivalent_value(5000)
    again = decoded(histogram.encode().decode("ascii"))  # the totals travel as HDR reads them
    assert again.get_total_count() == 3
    assert again.get_min_value() == histogram.get_lowest_equivalent_value(1234)
    assert again.get_max_value() == histogram.get_highest_equivalent_value(5000)


def test_values_recorded_at_once_land_where_hdr_puts_them():
    values = np.array([1, 2, 127, 128, 255, 256, 1023, 1024, 2**20, 2**31, HDR_RANGE[1]])
    one_by_one, at_once = new_histogram(), new_histogram()
    for value in values.tolist():
        one_by_one.record_value(value)
    record_values(at_once, values)
    assert list(at_once.counts) == list(one_by_one.counts)
    assert (at_once.total_count, at_once.min_value, at_once.max_value) == \
        (one_by_one.total_count, one_by_one.min_value, one_by_one.max_value)


def test_percentiles_follow_hdr_s_own_steps():
    rng = np.random.default_rng(5)
    histogram = new_histogram()
    record_values(histogram, rng.lognormal(9, 1.5, 3000).astype(np.int64) + 1)
    for kind in (histogram, decoded(histogram.encode().decode("ascii")), merged([histogram])):
        for q in (0.1, 50, 95, 99.9, 100):
            assert percentile_ms(kind, q) == kind.get_value_at_percentile(q) / 1000


def test_histograms_of_another_word_size_add_in_encoded_or_decoded():
    part = new_histogram(word_size=4)
    record_values(part, np.array([10, 2000, 2000, 3_000_000]))
    total = new_histogram(word_size=8)
    add_encoded(total, part.encode())
    add_encoded(total, part.encode().decode("ascii"))
    assert total.get_total_count() == 8 and total.get_count_at_value(2000) == 4
    # The same histogram as HDR's own decode_and_add makes, totals and percentiles included.
    rng = np.random.default_rng(6)
    other = new_histogram()
    record_values(other, rng.integers(50, 10**7, 5000))
    by_hdr = new_histogram(word_size=8)
    for encoded in (part.encode(), other.encode()):
        by_hdr.decode_and_add(encoded)
    ours = new_histogram()
    add_encoded(ours, new_histogram().encode())  # an empty one changes nothing
    for encoded in (part.encode(), other.encode()):
        add_encoded(ours, encoded)
    assert list(ours.counts) == list(by_hdr.counts)
    assert (ours.total_count, ours.get_min_value(), ours.get_max_value()) == \
        (by_hdr.total_count, by_hdr.get_min_value(), by_hdr.get_max_value())
    assert [ours.get_value_at_percentile(q) for q in (1, 50, 99, 100)] == \
        [by_hdr.get_value_at_percentile(q) for q in (1, 50, 99, 100)]
    wide = decoded(part.encode().decode("ascii"))
    assert wide.counts_len == part.counts_len  # merged() adds counts index by index
    assert merged([wide, part]).get_count_at_value(2000) == 4


def test_options_hidden_from_the_web_form_are_not_rendered():
    parser = get_empty_argument_parser()
    parser.add_argument("--esr-reports-dir", default="reports")
    parser.add_argument("--other", default="")
    assert "esr_reports_dir" in parser.args_included_in_web_ui  # Locust shows custom options
    compat.hide_from_web_form(parser, "esr_")
    shown = set(parser.args_included_in_web_ui)
    assert "other" in shown and "esr_reports_dir" not in shown


def test_a_runner_s_stop_names_its_caller_with_inspect_whose_first_use_is_paid_ahead():
    import inspect as inspect_module

    from locust.runners import LocalRunner, Runner, WorkerRunner

    assert "inspect.getframeinfo(inspect.stack()[1][0])" in inspect_module.getsource(Runner.stop)
    assert WorkerRunner.stop is Runner.stop and "super().stop()" in inspect_module.getsource(
        LocalRunner.stop)
    compat.warm_up_stop()
    # What warm_up_stop paid for stays paid: inspect's map of the loaded modules' files.
    assert inspect_module.getmodule(compat.warm_up_stop) is compat
    assert inspect_module.modulesbyfile, "inspect keeps no module-by-file map any more"


def test_users_get_time_to_stop_and_a_longer_timeout_stays():
    from locust.env import Environment

    environment = Environment()
    compat.give_users_time_to_stop(environment, 30)
    assert environment.stop_timeout == 30
    environment.stop_timeout = 90
    compat.give_users_time_to_stop(environment, 30)
    assert environment.stop_timeout == 90


def test_a_worker_identifies_itself_before_it_is_ready_and_only_the_identified_are_taken_in(
        monkeypatch):
    """messages.IDENTIFY: a worker's first word comes before Locust's client_ready on its
    connection, and a master takes in (clients, users) only the workers identified."""
    monkeypatch.setattr(locust.runners.WorkerRunner, "connect_to_master",
                        locust.runners.WorkerRunner.connect_to_master)  # undone after
    compat.identify_before_ready("esr_test_identify", {"who": "me"})
    compat.identify_before_ready("esr_test_identify", {"who": "twice"})  # patched once only
    heard, turned_away = [], []
    with mock.patch.object(locust.runners, "HEARTBEAT_INTERVAL", 0.1):
        master = Environment(user_classes=[Idle], parsed_options=locust_options()) \
            .create_master_runner("127.0.0.1", 0)
        master.register_message("esr_test_identify",
                                lambda environment, msg, **_: heard.append(msg.data))
        compat.admit_workers_only_if(master, lambda worker: heard == [{"who": "me"}],
                                     turned_away.append)
        worker = Environment(user_classes=[Idle]).create_worker_runner("127.0.0.1",
                                                                      master.server.port)
        stranger = None
        try:
            wait_until(lambda: worker.client_id in master.clients)
            assert heard == [{"who": "me"}] and turned_away == []
            heard.append({"who": "someone else"})  # the next worker is not identified
            stranger = Environment(user_classes=[Idle]).create_worker_runner(
                "127.0.0.1", master.server.port)  # finishes starting: it was answered
            wait_until(lambda: turned_away == [stranger.client_id])
            start_users(master, worker, 2)
            assert stranger.client_id not in master.clients and stranger.user_count == 0
        finally:
            workers = [runner for runner in (worker, stranger) if runner is not None]
            for runner in (*workers, master):
                runner.user_greenlets.kill(block=True)
                runner.greenlet.kill(block=True)
            for runner in workers:
                runner.client.close(linger=0)
            master.server.close(linger=0)
