"""The web UI as an attacker sees it: real ESR and Locust processes, real HTTP.

Each test is a hole that was open (issue 11, items 1 and 7): Locust's /swarm form writing
ESR's own options (or Locust's: files written where the poster says), a cross-site form
post starting load, a web UI listening beyond loopback by default, a login cookie other
sites' requests carry, errors answered as HTTP 200.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
from commands import esr_locust, free_port, served
from test_web_ui import Server, status, wait_for_workers

from esr.demo.process import demo_target
from esr.launcher import LOCUSTFILE

SCENARIO = """
scenario: attacked
seed: 11
citizens: {template: students, count: 4, behavior: {think_time: 100ms..300ms}}
load_profile: {ramp_up: 1s, sustain: 3s}
report: {formats: [html]}
"""
EVIL = "http://evil.example"
REPORT_TIMEOUT_S = 90


@pytest.fixture
def target():
    """A target of its own per test: every request it counts came from that test."""
    with demo_target() as url:
        yield url


def write_scenario(folder: Path, text: str = SCENARIO) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scenario.yml"
    path.write_text(text)
    return path


def ask(method: str, url: str, fields: dict | None = None,
        headers: dict | None = None) -> tuple[int, http.client.HTTPMessage, str]:
    """One request as a hostile client sends it: headers as given, redirects not followed."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = urlencode(fields) if fields is not None else None
    form = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    try:
        connection.request(method, parts.path, body=body, headers={**form, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode(errors="replace")
    finally:
        connection.close()


def serve_ui(folder: Path, *arguments: str, env: dict | None = None) -> tuple[Server, str]:
    port = free_port()
    server = Server(esr_locust("ui", *arguments, "--web-bind", f"127.0.0.1:{port}"), folder,
                    env=env)
    url = f"http://127.0.0.1:{port}"
    server.wait_until_serving(url + "/esr/status")
    return server, url


def wait_for_report(url: str) -> dict:
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    while (now := status(url))["report"] not in ("ready", "failed"):
        assert time.monotonic() < deadline, now
        time.sleep(0.5)
    assert now["report"] == "ready", now
    return now


# ---- item 1: the /swarm form and ESR's own options ---------------------------------------------


def test_a_swarm_post_cannot_move_the_run_dir_or_the_request_log(tmp_path, target):
    scenario = write_scenario(tmp_path)
    reports, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    elsewhere.mkdir()
    server, url = serve_ui(tmp_path, str(scenario), "--workers", "1", "--host", target,
                           "--reports-dir", str(reports))
    try:
        wait_for_workers(url, 1)
        assert "esr_reports_dir" not in ask("GET", url + "/")[2]  # no form field for it
        posted = {"esr_reports_dir": str(elsewhere), "esr_request_log": str(elsewhere),
                  "esr_run_dir": str(elsewhere / "run"), "esr_run_id": "named-by-the-form"}
        code, _, body = ask("POST", url + "/swarm", posted)
        assert code == 400 and all(name in body for name in posted), body
        assert status(url)["state"] == "ready"  # refused: nothing started
        code, _, body = ask("POST", url + "/swarm", {})  # the UI's own form
        assert code == 200 and json.loads(body)["success"], body
        run_id = wait_for_report(url)["run_id"]
        code, _, _ = ask("GET", f"{url}/esr/runs/{run_id}/report.html")
    finally:
        server.end()
    assert code == 200
    assert sorted(elsewhere.rglob("*")) == []
    run_dir = reports / run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (run_dir / "report.html").is_file()
    # The worker labelled its requests with the run's id, from its master, not the form's.
    assert summary["requests"]["total"] == served(target, run_id)["requests"]["total"] > 0
    assert "named-by-the-form" not in served(target)["runs"]


def test_a_swarm_post_cannot_turn_chaos_commands_on(tmp_path, target):
    """Plain `locust -f`: ESR's switches are refused as form fields, and what the process was
    started with is all it has (a scenario with a command and no flag does not even start:
    tests/test_security_scenario.py)."""
    scenario = write_scenario(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", target,
                     "--web-host", "127.0.0.1", "--web-port", str(port),
                     "--esr-reports-dir", str(tmp_path / "reports")], tmp_path,
                    env={"ESR_SCENARIO": str(scenario)})
    try:
        server.wait_until_serving(url + "/esr/status")
        for switch in ("esr_allow_chaos_commands", "esr_allow_chaos_signals",
                       "esr_allow_chaos_containers"):
            code, _, body = ask("POST", url + "/swarm", {switch: "true"})
            assert code == 400 and switch in body, body
        assert status(url)["state"] == "ready"
    finally:
        server.end()


def test_a_swarm_post_cannot_have_locust_write_files_where_it_says(tmp_path):
    scenario = write_scenario(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    server, url = serve_ui(tmp_path, str(scenario), "--workers", "0", "--host",
                           "http://127.0.0.1:9", "--reports-dir", str(tmp_path / "reports"))
    try:
        code, _, body = ask("POST", url + "/swarm", {
            "json_file": str(elsewhere / "stats"), "html_file": str(elsewhere / "page.html"),
            "csv_prefix": str(elsewhere / "csv")})
        time.sleep(2)
        state = status(url)["state"]
    finally:
        server.end()  # Locust writes those files as it exits
    assert code == 400 and "json_file" in body, body
    assert state == "ready"
    assert not elsewhere.exists()


# ---- item 7: cross-site posts, exposure, cookies, errors ---------------------------------------


def test_a_cross_site_post_starts_no_load_and_a_same_site_one_does(tmp_path, target):
    scenario = write_scenario(tmp_path)
    server, url = serve_ui(tmp_path, str(scenario), "--workers", "0", "--host", target,
                           "--reports-dir", str(tmp_path / "reports"))
    try:
        # A page on another site posts the form, aimed at a host of its choosing.
        for headers in ({"Origin": EVIL}, {"Referer": f"{EVIL}/attack.html"},
                        {"Origin": "null"}):
            code, _, body = ask("POST", url + "/swarm", {"host": target, "user_count": "5",
                                                         "spawn_rate": "5"}, headers)
            assert code == 403, (headers, code, body)
        for path in ("/stop", "/stats/reset"):
            assert ask("POST", url + path, {}, {"Origin": EVIL})[0] == 403
        time.sleep(2)
        assert status(url)["state"] == "ready"
        assert served(target)["requests"]["total"] == 0
        # The UI's own page posts from its own origin: the run goes ahead.
        code, _, body = ask("POST", url + "/swarm", {}, {"Origin": url})
        assert code == 200 and json.loads(body)["success"], body
        wait_for_report(url)
    finally:
        server.end()
    assert served(target)["requests"]["total"] > 0


LISTENING = """
import json, sys, psutil
launcher = psutil.Process(int(sys.argv[1]))
print(json.dumps(sorted({(c.laddr.ip, c.laddr.port) for p in [launcher, *launcher.children(True)]
                         for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN})))
"""


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP sockets a process and its children listen on, read in its own network."""
    found = subprocess.run(["nsenter", "--target", str(pid), "--net", sys.executable, "-c",
                            LISTENING, str(pid)], capture_output=True, text=True, timeout=30)
    return {tuple(pair) for pair in json.loads(found.stdout or "[]")}


def master_in_a_network_of_its_own(folder: Path, *arguments: str,
                                   env: dict | None = None) -> tuple[Server, set]:
    """`esr-locust master --web` in a fresh network namespace (port 8089 is free there and
    nothing it binds is reachable from outside), until its web UI listens."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare/nsenter (util-linux) are not installed")
    scenario = write_scenario(folder)
    server = Server(["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"',
                     "sh", *esr_locust("master", str(scenario), "--web", "--host",
                                       "http://127.0.0.1:9", *arguments)], folder, env=env)
    deadline = time.monotonic() + 60
    while True:
        sockets = listening(server.process.pid)
        if any(port == 8089 for _, port in sockets):
            return server, sockets
        if server.process.poll() is not None and "unshare" in server.log.read_text():
            pytest.skip(f"cannot make a network namespace here: {server.log.read_text()}")
        assert server.process.poll() is None, server.log.read_text()
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.3)


def test_the_web_ui_listens_on_loopback_unless_told_and_warns_when_open(tmp_path):
    warning = "beyond loopback, with no login"
    cases = {"default": ((), {}), "open": (("--web-bind", "0.0.0.0:8089"), {}),
             "open with a login": (("--web-bind", "0.0.0.0:8089", "--web-login"),
                                   {"ESR_WEB_PASSWORD": "s3cret"})}
    seen = {}
    for name, (arguments, env) in cases.items():
        server, sockets = master_in_a_network_of_its_own(tmp_path / name.replace(" ", "-"),
                                                         *arguments, env=env)
        server.end()
        seen[name] = ({ip for ip, port in sockets if port == 8089},
                      warning in server.log.read_text())
    assert seen == {"default": ({"127.0.0.1"}, False), "open": ({"0.0.0.0"}, True),
                    "open with a login": ({"0.0.0.0"}, False)}


def test_the_login_cookie_stays_on_this_site_and_errors_keep_their_status(tmp_path):
    scenario = write_scenario(tmp_path)
    server, url = serve_ui(tmp_path, str(scenario), "--workers", "0", "--host",
                           "http://127.0.0.1:9", "--web-login",
                           env={"ESR_WEB_USER": "planner", "ESR_WEB_PASSWORD": "s3cret"})
    credentials = {"username": "planner", "password": "s3cret"}
    hostile = quote("<script>alert(1)</script>")
    try:
        assert ask("POST", url + "/esr/login", credentials, {"Origin": EVIL})[0] == 403
        code, headers, _ = ask("POST", url + "/esr/login", credentials, {"Origin": url})
        assert code == 302 and urlsplit(headers["Location"]).path == "/"
        cookie = next(c for c in headers.get_all("Set-Cookie") if c.startswith("session="))
        signed_in = {"Cookie": cookie.split(";")[0]}
        assert ask("GET", url + "/esr/status", headers=signed_in)[0] == 200
        unknown_run = ask("GET", f"{url}/esr/runs/{hostile}/report.html", headers=signed_in)
        unknown_file = ask("GET", f"{url}/esr/runs/x/{hostile}", headers=signed_in)
        refused = ask("POST", f"{url}/esr/{hostile}", {}, {"Origin": EVIL, **signed_in})
    finally:
        server.end()
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict"} <= attributes, cookie
    for code, _, body in (unknown_run, unknown_file):
        assert code == 404 and "<script>" not in body, (code, body)
    code, headers, body = refused
    assert code == 403 and "<script>" not in body and "&lt;script&gt;" in body, body
    assert headers["Content-Type"].startswith("text/plain")


def test_a_rebound_name_and_the_user_class_editor_are_refused(tmp_path):
    """DNS rebinding: another site's name pointed at 127.0.0.1 reaches the UI with that name
    as Host; and Locust's /user editor would change the compiled citizens' attributes."""
    scenario = write_scenario(tmp_path)
    server, url = serve_ui(tmp_path, str(scenario), "--workers", "0", "--host",
                           "http://127.0.0.1:9", "--reports-dir", str(tmp_path / "reports"))
    try:
        code, _, body = ask("POST", url + "/swarm", {}, {"Host": "evil.example:8089"})
        assert code == 421 and "evil.example" in body, body
        assert ask("GET", url + "/stats/requests", None, {"Host": "evil.example"})[0] == 421
        assert ask("GET", url + "/stats/requests", None, {"Host": "localhost"})[0] == 200
        code, _, body = ask("POST", url + "/user", None,
                            {"Content-Type": "application/json"})
        assert code == 403, body
        assert status(url)["state"] == "ready"
    finally:
        server.end()
