"""A pool of standing workers serving the service's runs, one after another (esr/pool.py).

The offer a master makes and a worker checks, and the lobby, are tested here directly. The
whole story runs on a virtual LAN of network namespaces (tests/hosts.py): the demo target, the
service with `--pool`, three standing worker hosts, one more that joins mid-run, and a stranger
of another ESR version; three runs of two scenarios without restarting any worker, counted
against the target, the third with a worker host cut off.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from commands import free_port, served
from hosts import Lan, NamespacesUnavailable, virtual_lan
from services import make_token, running_service, wait_for_status

from esr import __version__, pool
from esr.engine.messages import NO_RUN, SCENARIO_WANTED
from esr.scenario.reader import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SMALL = """
esr: 1
scenario: "pool %(name)s"
seed: %(seed)s
citizens:
  - {name: applicants, template: %(template)s, count: %(count)s,
     behavior: {think_time: 100ms..300ms, patience: 10s}}
load_profile: {ramp_up: 1s, sustain: %(sustain)s}
report: {formats: [json]}
"""


def scenario(**values) -> str:
    return SMALL % {"name": "a", "seed": 1, "template": "low_income", "count": 12,
                    "sustain": "4s", **values}


# ---- the offer ---------------------------------------------------------------------------------


def test_an_offer_carries_the_scenario_and_the_templates_beside_it(tmp_path):
    (tmp_path / "mine.yml").write_text((ROOT / "esr/population/templates/seniors.yml")
                                       .read_text().replace("seniors", "mine", 1))
    text = scenario().replace("template: low_income", "template: mine.yml") + \
        "  # a second group from the built-in templates\n"
    text = text.replace("load_profile", "  - {name: others, template: veterans, count: 3}\n"
                        "load_profile")
    (tmp_path / "s.yml").write_text(text)
    offer = pool.offer_of(load_scenario(tmp_path / "s.yml"))
    assert offer["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert offer["version"] == __version__ and offer["file"] == "s.yml"
    assert set(offer["templates"]) == {"mine.yml"}  # built-in templates every worker has

    unpacked = pool.unpack_offer(offer, tmp_path / "worker")
    assert unpacked == tmp_path / "worker" / "s.yml"
    assert load_scenario(unpacked).sha256 == offer["sha256"]


@pytest.mark.parametrize("change, refusal", [
    ({"version": "0.0.0-other"}, "the master runs ESR '0.0.0-other', this worker ESR"),
    ({"sha256": "0" * 64}, "does not match its SHA-256"),
    ({"templates": {"../outside.yml": "x"}}, "names a file outside its folder: '../outside.yml'"),
    ({"templates": {"/etc/cron.d/x": "x"}}, "names a file outside its folder"),
    ({"source": None}, "does not match"),
    ({"file": {"not": "a name"}}, None),
])
def test_a_worker_refuses_an_offer_of_another_version_or_hash_or_place(tmp_path, change,
                                                                       refusal):
    (tmp_path / "s.yml").write_text(scenario())
    offer = {**pool.offer_of(load_scenario(tmp_path / "s.yml")), **change}
    if refusal is None:  # odd but harmless values are read as text
        pool.unpack_offer(offer, tmp_path / "w")
        return
    with pytest.raises(pool.OfferRefused, match=refusal.replace("(", r"\(")):
        pool.unpack_offer(offer, tmp_path / "w")
    assert not (tmp_path / "outside.yml").exists()
    with pytest.raises(pool.OfferRefused, match="not an ESR scenario offer"):
        pool.unpack_offer({"file": "s.yml"}, tmp_path / "w")


# ---- the lobby ---------------------------------------------------------------------------------


def test_the_lobby_answers_no_run_lists_who_asked_and_frees_its_address(monkeypatch):
    port = free_port()
    lobby = pool.Lobby(("127.0.0.1", port))
    lobby.open()
    try:
        asker = pool.Asker(("127.0.0.1", port), "w1_pool_test")
        kind, _ = asker.ask({"version": "9.9", "host": "h" * 500,
                             "capacity": {"open_files": 1024, "memory_bytes": True, "x": 1}})
        assert kind == NO_RUN
        (seen,) = lobby.workers()
        assert seen["id"] == "w1_pool_test" and seen["host"] == "h" * 200
        assert seen["version"] == "9.9" and seen["capacity"] == {"open_files": 1024}
        monkeypatch.setattr(pool, "LOBBY_FORGETS_S", 0.0)
        time.sleep(0.01)
        assert lobby.workers() == []  # not heard lately
    finally:
        lobby.close()
    assert pool.Asker(("127.0.0.1", port), "w2").ask({}) is None  # nobody answers now
    import zmq  # the address is free again, for a run's master

    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    sock.close(linger=0)
    lobby.open()  # and the lobby takes it back after the run
    try:
        assert pool.Asker(("127.0.0.1", port), "w3").ask({})[0] == NO_RUN
    finally:
        lobby.close()


def test_the_lobby_ignores_what_is_not_an_ask():
    port = free_port()
    lobby = pool.Lobby(("127.0.0.1", port))
    lobby.open()
    try:
        import zmq

        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send(b"\xc1 not msgpack")
        sock.send(pool.frame("esr_other", {}, "x"))
        sock.send(pool.frame(SCENARIO_WANTED, ["not", "a", "dict"], "x"))
        assert not sock.poll(300)  # no answer to any of them
        sock.close(linger=0)
        assert pool.Asker(("127.0.0.1", port), "w").ask({})[0] == NO_RUN  # still answering
        assert [w["id"] for w in lobby.workers()] == ["w"]
    finally:
        lobby.close()


def offering(offer: dict):
    """A stand-in master on 127.0.0.1 that answers every ask with `offer`: (port, stop)."""
    import threading

    import zmq

    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    done = threading.Event()

    def answer() -> None:
        while not done.is_set():
            if sock.poll(0):
                who, raw = sock.recv_multipart()
                sock.send_multipart([who, pool.frame("esr_scenario", offer, "master")])
            time.sleep(0.01)
        sock.close(linger=0)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()

    return port, stop


def test_a_standing_worker_refuses_a_scenario_it_cannot_read_and_starts_nothing(tmp_path):
    import io
    import threading

    from esr.launcher import worker_command

    source = "esr: 1\nscenario: broken\ncitizens: [{template: no_such_template, count: 1}]\n"
    port, stop = offering({"file": "s.yml", "source": source, "templates": {},
                           "sha256": hashlib.sha256(source.encode()).hexdigest(),
                           "version": __version__})
    log, started = io.StringIO(), []

    def command(scenario):
        started.append(scenario)
        return worker_command(scenario, ("127.0.0.1", port))

    standing = pool.StandingWorker(("127.0.0.1", port), command, log=log)
    serving = threading.Thread(target=standing.serve, daemon=True)
    serving.start()
    try:
        deadline = time.monotonic() + 20
        while "refusing" not in log.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        standing.stop()
        serving.join(timeout=20)
        stop()
    said = log.getvalue()
    assert "refusing the master's scenario: " in said and "no_such_template" in said, said
    assert standing.child is None and not serving.is_alive()  # no Locust worker was started
    assert len(started) == 1


# ---- the service with a pool -------------------------------------------------------------------


def test_a_pool_address_taken_or_misused_is_said_before_serving(tmp_path, esr_cli):
    lobby = pool.Lobby(("127.0.0.1", port := free_port()))
    lobby.open()
    try:
        taken = esr_cli("serve", "--data", str(tmp_path), "--bind", "127.0.0.1:0",
                        "--pool", f"127.0.0.1:{port}")
    finally:
        lobby.close()
    assert taken.returncode == 2 and f"--pool 127.0.0.1:{port}: cannot listen" in taken.stderr
    for options, said in ((["--min-workers", "2"], "--min-workers needs --pool HOST:PORT"),
                          (["--pool", f"127.0.0.1:{port}", "--max-running", "2"],
                           "--pool runs one run at a time"),
                          (["--pool", f"127.0.0.1:{port}", "--workers", "2"],
                           "--workers starts local workers")):
        result = esr_cli("serve", "--data", str(tmp_path), *options)
        assert result.returncode == 2 and said in result.stderr, result


def test_a_run_short_of_standing_workers_ends_in_error_saying_why(tmp_path, target):
    demo_target = target
    port = free_port()
    with running_service(tmp_path / "data", "--pool", f"127.0.0.1:{port}", "--min-workers",
                         "2", "--pool-wait", "2s") as service:
        token = service.token("housing", "--allow-target", demo_target)
        with service.client(token) as client:
            assert client.get("/v1/pool").json() == {
                "enabled": True, "address": f"127.0.0.1:{port}", "min_workers": 2,
                "busy": False, "workers": []}
            run_id = client.post("/v1/runs", json={"scenario": scenario(),
                                                   "host": demo_target}).json()["id"]
            run = wait_for_status(client, run_id, ("error",), timeout_s=60)
            assert run["reason"].startswith(
                f"run {run_id}: fewer than 2 workers joined at 127.0.0.1:{port} within 2 s")
            # The lobby holds the address again for the next run.
            assert pool.Asker(("127.0.0.1", port), "w").ask({})[0] == NO_RUN


# ---- on a LAN of hosts -------------------------------------------------------------------------

POOL_PORT, API_PORT, TARGET_PORT = 5557, 8088, 8080
STANDING = ["pool-1", "pool-2", "pool-3"]
HOSTS = ["target", "service", *STANDING, "late", "stranger"]
OTHER_VERSION = "0.0.0-other"
class Pool:
    """The service, its target and its workers on the LAN, and the API as seen from it."""

    def __init__(self, lan: Lan, tmp_path: Path):
        self.lan, self.logs, self.data = lan, tmp_path / "logs", tmp_path / "data"
        self.logs.mkdir()
        self.data.mkdir()
        self.target = f"http://target:{TARGET_PORT}"
        self.token = ""

    def start(self, host: str, *argv: str, python: list[str] | None = None) -> None:
        command = python or [sys.executable, "-m", "esr.cli"]
        self.lan[host].start([*command, *argv], cwd=self.logs, env=dict(os.environ),
                             stdout=self.logs / f"{host}.out", stderr=self.logs / f"{host}.err")

    def worker(self, host: str) -> None:
        self.start(host, "worker", "--master", f"service:{POOL_PORT}")

    def api(self, method: str, path: str, body: str = "") -> dict:
        status, answer = self.lan["target"].fetch(
            method, f"http://service:{API_PORT}{path}", body,
            {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
        assert status in (200, 202), (status, answer[-800:])
        return json.loads(answer)

    def served(self, run_id: str) -> dict:
        return self.lan["service"].get_json(f"{self.target}/admin/stats?run={run_id}")

    def log(self, host: str) -> str:
        return (self.logs / f"{host}.err").read_text(errors="replace") + \
            (self.logs / f"{host}.out").read_text(errors="replace")

    def wait(self, condition: Callable[[], object], what: str, timeout_s: float = 60) -> object:
        deadline = time.monotonic() + timeout_s
        while not (value := condition()):
            assert time.monotonic() < deadline, f"no {what} after {timeout_s} s" + "".join(
                f"\n--- {host} ---\n{self.log(host)[-1500:]}" for host in ("service", "pool-1"))
            time.sleep(0.3)
        return value

    def submit(self, text: str) -> str:
        run = self.api("POST", "/v1/runs", json.dumps({"scenario": text, "host": self.target}))
        self.wait(lambda: self.api("GET", f"/v1/runs/{run['id']}")["status"] == "running",
                  f"run {run['id']} running")
        return run["id"]

    def finished(self, run_id: str, timeout_s: float = 120) -> dict:
        run = self.wait(lambda: (r := self.api("GET", f"/v1/runs/{run_id}"))["status"] in (
            "passed", "failed", "error") and r, f"run {run_id} ended", timeout_s)
        assert run["status"] in ("passed", "failed"), f"{run}" + "".join(
            f"\n--- {host} ---\n{self.log(host)[-1500:]}" for host in ("service", "pool-1"))
        return self.api("GET", f"/v1/runs/{run_id}/summary")

    def counters(self, run_id: str) -> dict:
        (path,) = self.data.rglob(f"{run_id}/esr_counters.json")
        return json.loads(path.read_text())

    def pool_hosts(self) -> dict[str, dict]:
        return {worker["host"]: worker for worker in self.api("GET", "/v1/pool")["workers"]}


@pytest.fixture
def lan() -> Lan:
    try:
        with virtual_lan(HOSTS) as lan:
            yield lan
    except NamespacesUnavailable as error:
        pytest.skip(f"network namespaces are not available here: {error}")


@pytest.mark.slow(reason="a LAN of seven hosts, three runs, and a worker host cut off that "
                  "Locust must miss")
def test_standing_workers_serve_run_after_run_join_mid_run_and_survive_a_cut(lan, tmp_path):
    p = Pool(lan, tmp_path)
    p.start("target", "target", "--host", "0.0.0.0", "--port", str(TARGET_PORT))
    p.start("service", "serve", "--data", str(p.data), "--bind", f"0.0.0.0:{API_PORT}",
            "--workers", "0", "--pool", f"0.0.0.0:{POOL_PORT}", "--min-workers", "3",
            "--pool-wait", "60s")
    p.token = make_token(p.data, "housing", "--allow-target", p.target)
    p.wait(lambda: lan["service"].listening(API_PORT) and lan["target"].listening(TARGET_PORT),
           "the service and the target listening")
    for host in STANDING:
        p.worker(host)
    # A standing worker of another ESR version: refused by its own check of every offer.
    p.start("stranger", "worker", "--master", f"service:{POOL_PORT}", python=[
        sys.executable, "-c", f"import sys, esr; esr.__version__ = {OTHER_VERSION!r}; "
        "from esr.cli import main; sys.exit(main(sys.argv[1:]))"])
    p.wait(lambda: set(p.pool_hosts()) == {*STANDING, "stranger"}, "the lobby listing the pool")
    assert p.pool_hosts()["stranger"]["version"] == OTHER_VERSION
    assert p.pool_hosts()["pool-1"]["capacity"]["open_files"] > 0

    # Two runs of two scenarios, nobody restarted: each counted exactly against the target.
    first = p.submit(scenario(name="first"))
    first_summary = p.finished(first)
    second_text = scenario(name="second", seed=2, template="seniors", count=20, sustain="10s")
    second = p.submit(second_text)
    p.wait(lambda: (w := p.pool_hosts()) and all(w.get(h, {}).get("citizens") for h in STANDING),
           "the run's workers with citizens in /v1/pool")
    assert p.api("GET", "/v1/pool")["busy"] is True
    p.worker("late")  # joins the run in progress and gets citizens
    p.wait(lambda: p.pool_hosts().get("late", {}).get("citizens"), "the late worker's citizens")
    second_summary = p.finished(second)
    for run_id, summary in ((first, first_summary), (second, second_summary)):
        served = p.served(run_id)
        assert summary["requests"]["total"] == served["requests"]["total"] > 50, run_id
        assert summary["lost"]["workers"] == [] and summary["requests"]["failures"] == 0
    assert first_summary["scenario"]["name"] == "pool first"
    assert second_summary["scenario"]["name"] == "pool second"
    assert p.counters(first)["workers"] == 3 and p.counters(second)["workers"] == 4

    # A third run, a worker host cut off in it: the bound holds, the others take its citizens.
    third = p.submit(scenario(name="third", count=30, sustain="30s"))
    p.wait(lambda: (w := p.pool_hosts()) and sum(x["citizens"] or 0 for x in w.values()) == 30,
           "all 30 citizens running")
    time.sleep(4)  # every worker has reported
    lan.cut("pool-3")
    # The master calls it lost after 8 missed heartbeats, and the others take its citizens.
    p.wait(lambda: (w := p.pool_hosts()) and "pool-3" not in w and sum(
        x["citizens"] or 0 for x in w.values()) == 30, "the others holding all 30 citizens", 25)
    summary = p.finished(third, timeout_s=150)
    served = p.served(third)["requests"]["total"]
    (lost,) = summary["lost"]["workers"]
    assert lost["worker"].startswith("pool-3_")
    assert 0 <= served - summary["requests"]["total"] <= summary["lost"]["requests_unreported_max"]
    assert summary["requests"]["total"] > 0

    # The stranger never ran a Locust worker, so never sent a request.
    stranger = p.log("stranger")
    assert f"the master runs ESR '{__version__}', this worker ESR {OTHER_VERSION}" in stranger
    assert "Starting Locust" not in stranger
    for host in (*STANDING, "late"):
        assert p.log(host).count("Starting Locust") == (3 if host != "late" else 2), host


# ---- workers that know their limits ------------------------------------------------------------


def test_capacity_in_citizens_is_the_lesser_of_files_and_memory():
    assert pool.citizens_held_by({}) is None
    assert pool.citizens_held_by({"open_files": 20_000}) == 20_000 - pool.FILES_KEPT
    assert pool.citizens_held_by({"open_files": 100}) == 0
    gib = 1024 ** 3
    by_memory = (gib - pool.PROCESS_BYTES) // pool.CITIZEN_BYTES
    assert pool.citizens_held_by({"open_files": 1_000_000, "memory_bytes": gib}) == by_memory
    # Citizens who hang up between steps hold a file only while a request is in flight.
    assert pool.citizens_held_by({"open_files": 100, "memory_bytes": gib},
                                 a_file_each=False) == by_memory
    assert pool.trimmed({"a": 10, "b": 5, "c": 1}, 7) == {"a": 4, "b": 2, "c": 1}
    assert pool.trimmed({"a": 3}, 5) == {"a": 3}
    assert sum(pool.trimmed({"a": 333, "b": 333, "c": 334}, 500).values()) == 500


def test_citizens_keep_a_file_each_only_if_some_pause_keeps_its_connection(tmp_path):
    from esr.engine.connections import keeps_connections

    def scenario_with(think: str, step: str = "") -> object:
        (tmp_path / "s.yml").write_text(scenario(
            name="x").replace("think_time: 100ms..300ms", f"think_time: {think}") + step)
        return load_scenario(tmp_path / "s.yml")

    assert keeps_connections(scenario_with("100ms..300ms"), 1.0)
    assert not keeps_connections(scenario_with("60s..120s"), 1.0)
    assert keeps_connections(scenario_with("60s..120s"), 0.01)  # 0.6 s pauses, scaled
    assert keeps_connections(scenario_with("60s..120s", "journey:\n  - {name: look, request: "
                                                        "GET /status, think_time: 1s}\n"), 1.0)


FILES = 400  # each worker's open-files limit: it holds FILES - FILES_KEPT citizens
CROWD = """
esr: 1
scenario: "more than the workers hold"
citizens:
  - {name: applicants, template: low_income, count: 250, behavior: {think_time: 1s..2s}}
  - {name: seniors, template: seniors, count: 150, behavior: {think_time: 1s..2s}}
load_profile: {ramp_up: 1s, sustain: 5s}
report: {formats: [json]}
"""


def run_with_few_files(tmp_path: Path, text: str, target: str, workers: int) -> tuple:
    """`esr-locust run` with its processes' open-files limit at FILES: (its result, summary)."""
    import resource

    (tmp_path / "scenario.yml").write_text(text)

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))

    result = subprocess.run(
        [sys.executable, "-m", "esr.cli", "run", str(tmp_path / "scenario.yml"), "--workers",
         str(workers), "--host", target, "--run-dir", str(tmp_path / "run")],
        preexec_fn=few_files, capture_output=True, text=True, timeout=120)
    return result, json.loads((tmp_path / "run" / "summary.json").read_text())


def test_workers_are_never_handed_more_citizens_than_they_hold(tmp_path, target):
    """Two local workers whose open-files limit holds 144 citizens each, asked for 400: the run
    holds 288, says how many could not start and why, and loses no request."""
    result, summary = run_with_few_files(tmp_path, CROWD, target, workers=2)
    held = 2 * (FILES - pool.FILES_KEPT)
    assert f"{400 - held} citizens could not start: the pool's 2 workers hold {held} " \
           "(open-files limits and memory) — add workers" in summary["load_generator"]["findings"]
    assert summary["load_generator"]["limited"] and result.returncode in (0, 1), result.stderr
    assert "could not start" in result.stderr
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    (held_back,) = [e for e in events if e["event"] == "citizens_held_back"]
    assert (held_back["held"], held_back["workers"]) == (held, 2) and held_back["wanted"] > held
    counters = json.loads((tmp_path / "run" / "esr_counters.json").read_text())
    assert counters["citizens_held_back"] == {"citizens": 400 - held, "wanted": 400,
                                              "held": held, "workers": 2}
    assert summary["requests"]["total"] == served(target, summary["run_id"])["requests"][
        "total"] > 0
    assert summary["requests"]["failures"] == 0
    with open(tmp_path / "run" / "locust_stats_history.csv") as history:
        running = {int(row["User Count"]) for row in csv.DictReader(history)
                   if row["Name"] == "Aggregated"}
    assert max(running) == held


WAITING = """
esr: 1
scenario: "more connections than files"
citizens:
  - {name: applicants, template: low_income, count: 250, behavior: {think_time: 50ms..150ms}}
load_profile: {ramp_up: 1s, sustain: 4s}
report: {formats: [json]}
"""


def test_citizens_wait_for_a_free_file_rather_than_fail(tmp_path, target):
    """One process under a 400-file limit (144 for citizens), 250 citizens who keep their
    connections between short thoughts: none fails with EMFILE; those that waited for a file
    are counted, their wait kept out of their latency; the target saw every request counted."""
    result, summary = run_with_few_files(tmp_path, WAITING, target, workers=0)
    assert summary["requests"]["failures"] == 0, (summary["errors"], result.stderr[-2000:])
    queued = summary["client_queue"]
    assert queued["requests"] > 0 and 0 < queued["max_ms"] < 30_000
    assert any("requests waited for their process to have a file free" in finding
               for finding in summary["load_generator"]["findings"])
    assert summary["requests"]["total"] == served(target, summary["run_id"])["requests"][
        "total"] > 250


def test_the_page_s_pool_table_escapes_what_workers_say_of_themselves():
    from esr.service.api import PoolOut, PoolWorker
    from esr.service.page import _TEMPLATES

    worker = PoolWorker(id="w<1>", host="<script>alert(1)</script>", version="0.1.0",
                        capacity={"open_files": 20000, "memory_bytes": 2 * 1024 ** 3},
                        citizens=12, last_heard=time.time() - 3)
    html = _TEMPLATES.get_template("pool.html.j2").render(pool=PoolOut(
        enabled=True, address="0.0.0.0:5557", min_workers=2, busy=True, workers=[worker]))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "w&lt;1&gt;" in html and "2.0 GiB" in html and "20000" in html
    assert "serving a run" in html and "a run starts with 2" in html
    assert "s ago" in html
    empty = _TEMPLATES.get_template("pool.html.j2").render(pool=PoolOut(
        enabled=True, address="0.0.0.0:5557", min_workers=2))
    assert "esr-locust worker --master 0.0.0.0:5557" in empty
    assert _TEMPLATES.get_template("pool.html.j2").render(pool=PoolOut(enabled=False)).strip() \
        == ""
