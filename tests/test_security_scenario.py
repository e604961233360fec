"""A scenario is input, not code: what a hostile scenario tries, and what stops it.

Each test is written as an attacker would: a scenario that signals an unrelated process,
reads a local file through a pid file, an http URL or a template path, runs docker, or
is too big to parse. The rule (esr/permissions.py): a scenario may make HTTP requests and
nothing else, unless the process that runs it was started with a flag. The CLI runs
in-process where nothing starts; real runs are a few seconds long, against the demo
target on 127.0.0.1, and every process a test starts is ended by its PID.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from esr.cli import main
from esr.engine.chaos import Chaos
from esr.scenario.model import ChaosAction
from esr.scenario.yaml_source import MAX_FILE_BYTES, MAX_VALUES

ROOT = Path(__file__).resolve().parent.parent
# What /etc/passwd starts with ("root:x:0:0:…"): it must never show up anywhere.
PASSWD_HEAD = Path("/etc/passwd").read_text().split(":")[0] + ":x:"


@pytest.fixture
def victim():
    """An unrelated process the scenario would like to kill."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def esr_locust(capsys, *args: str) -> tuple[int, str]:
    """esr-locust in this process: its exit code and what it wrote to stderr."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() sets its own
    return code, capsys.readouterr().err


def scenario(folder: Path, chaos: str = "", citizens: str = "{template: low_income, count: 2}",
             extra: str = "") -> Path:
    path = folder / "s.yml"
    path.write_text(f"""scenario: hostile
citizens: {citizens}
load_profile: {{sustain: 3s}}
report: {{formats: [html]}}
{extra}
chaos:
{chaos or "  []"}
""")
    return path


# ---- signals, and the pid file as a way to read a file ---------------------------------------


def test_signal_chaos_without_the_flag_is_refused_before_anything_starts(tmp_path, capsys,
                                                                         victim):
    path = scenario(tmp_path, f"  - {{action: signal, target: /proc/{victim.pid}/stat, "
                    "signal: KILL, after: 1s}")
    code, err = esr_locust(capsys, "run", path, "--workers", "0", "--host", "http://127.0.0.1:9",
                           "--run-dir", tmp_path / "run")
    assert code == 2, err
    assert f"{path}:7:5: chaos[0]: chaos action 'signal'" in err
    assert "--allow-chaos-signals" in err and "Traceback" not in err
    assert victim.poll() is None and not (tmp_path / "run").exists()


def test_the_locust_process_alone_refuses_it_too(tmp_path, victim):
    """`locust -f locustfiles/esr.py`, no launcher: the Locust process checks at its start."""
    path = scenario(tmp_path, f"  - {{action: signal, target: /proc/{victim.pid}/stat, "
                    "signal: KILL, after: 1s}")
    refused = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "esr.py"),
         "--headless", "--host", "http://127.0.0.1:9", "--loglevel", "WARNING"],
        env={**os.environ, "ESR_SCENARIO": str(path)}, capture_output=True, text=True,
        timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "--esr-allow-chaos-signals" in refused.stderr and "chaos[0]" in refused.stderr
    assert victim.poll() is None


def test_a_refused_action_is_never_performed_whatever_path_reaches_it(tmp_path, victim):
    """Defence in depth: the chaos runner itself refuses what its process was not allowed."""
    pid_file = tmp_path / "victim.pid"
    pid_file.write_text(f"{victim.pid}\n")
    chaos = Chaos((), host="http://127.0.0.1:9", time_scale=1.0, run_dir=None, started=0.0,
                  granted=frozenset(), spread=lambda fault: None)
    outcome = chaos._perform(ChaosAction("signal", str(pid_file), 0, options={"signal": "KILL"}),
                             undo=False)
    assert not outcome.ok and "--esr-allow-chaos-signals" in outcome.detail
    assert victim.poll() is None


class HostileTarget(http.server.BaseHTTPRequestHandler):
    """Answers every chaos request with markup, to see it escaped on the report card."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = b'<script>alert("chaos")</script>'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_with_the_flag_only_a_pid_file_is_signalled_and_no_file_is_echoed(tmp_path, capsys,
                                                                          target, victim):
    hostile = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileTarget)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    try:
        path = scenario(tmp_path, "\n".join([
            f"  - {{action: signal, target: /proc/{victim.pid}/stat, signal: KILL, after: 1s}}",
            "  - {action: signal, target: /etc/passwd, signal: KILL, after: 1s}",
            f"  - {{action: http, target: 'http://127.0.0.1:{hostile.server_port}/', "
            "after: 1s}"]))
        code, err = esr_locust(capsys, "run", path, "--workers", "0", "--host", target,
                               "--run-dir", tmp_path / "run", "--allow-chaos-signals")
    finally:
        hostile.shutdown()
        hostile.server_close()
    assert code in (0, 1), err
    assert victim.poll() is None, "a /proc/<pid>/stat file is not a pid file"
    events = (tmp_path / "run" / "events.jsonl").read_text()
    html = (tmp_path / "run" / "report.html").read_text()
    chaos = [json.loads(line) for line in events.splitlines() if '"chaos"' in line]
    details = {event["target"]: event["detail"] for event in chaos}
    assert details["/etc/passwd"] == "/etc/passwd: not a pid file"
    assert details[f"/proc/{victim.pid}/stat"].endswith("not a pid file")
    for text in (events, html):
        assert PASSWD_HEAD not in text and "(sleep)" not in text
    # What a target answers stays bounded in the event, and is text on the card, not markup.
    assert '<script>alert("chaos")' not in html and "&lt;script&gt;alert(" in html


# ---- http chaos: http and https only ---------------------------------------------------------


def test_http_chaos_to_a_file_url_is_a_problem_at_validate(tmp_path, capsys):
    path = scenario(tmp_path, "  - {action: http, target: 'file:///etc/passwd', method: GET, "
                    "after: 1s}")
    code, err = esr_locust(capsys, "validate", path)
    assert code == 2
    assert f"{path}:7:" in err and "chaos[0].target" in err and "http://" in err


def test_http_chaos_never_fetches_a_file_url_even_unvalidated():
    chaos = Chaos((), host="http://127.0.0.1:9", time_scale=1.0, run_dir=None, started=0.0,
                  granted=frozenset(), spread=lambda fault: None)
    for url in ("file:///etc/passwd", "<URL:file:///etc/passwd>", "ftp://127.0.0.1/x"):
        outcome = chaos._perform(ChaosAction("http", url, 0, options={"method": "GET"}),
                                 undo=False)
        assert not outcome.ok and PASSWD_HEAD not in outcome.detail, url
        assert "http://" in outcome.detail, url


# ---- containers ------------------------------------------------------------------------------


def test_kill_pod_with_a_compose_project_needs_the_containers_flag(tmp_path, capsys):
    path = scenario(tmp_path, "  - {action: kill_pod, target: svc-fee, compose_project: esr, "
                    "after: 1s}")
    code, err = esr_locust(capsys, "run", path, "--workers", "0", "--host", "http://127.0.0.1:9",
                           "--run-dir", tmp_path / "run")
    assert code == 2, err
    assert f"{path}:7:5: chaos[0]: chaos action 'kill_pod' runs docker compose" in err
    assert "--allow-chaos-containers" in err and not (tmp_path / "run").exists()


# ---- template paths --------------------------------------------------------------------------


def test_a_template_outside_the_scenario_folder_is_refused_unread(tmp_path, capsys):
    path = scenario(tmp_path, citizens="{template: /etc/passwd, count: 2}")
    code, err = esr_locust(capsys, "validate", path)
    assert code == 2
    assert "citizens.template: template files must be inside the scenario's folder" in err
    assert PASSWD_HEAD not in err and "root" not in err.replace(str(tmp_path), "")


def test_a_file_that_is_not_a_template_is_not_quoted(tmp_path, capsys):
    (tmp_path / "secret.yml").write_text("password hunter2 and more\n")
    path = scenario(tmp_path, citizens="{template: ./secret.yml, count: 2}")
    code, err = esr_locust(capsys, "validate", path)
    assert code == 2 and "not a demographic template" in err
    assert "hunter2" not in err


@pytest.mark.parametrize("how", ["dot-dot", "symlink"])
def test_a_template_path_cannot_climb_out_of_the_scenario_folder(tmp_path, capsys, how):
    good = (ROOT / "demographics" / "seniors.yml").read_text().replace("template: seniors",
                                                                       "template: outside")
    (tmp_path / "outside.yml").write_text(good)  # a good template, in the wrong place
    folder = tmp_path / "scenarios"
    folder.mkdir()
    name = "../outside.yml"
    if how == "symlink":
        (folder / "inside.yml").symlink_to(tmp_path / "outside.yml")
        name = "./inside.yml"
    path = scenario(folder, citizens=f"{{template: '{name}', count: 2}}")
    code, err = esr_locust(capsys, "validate", path)
    assert code == 2, err
    assert "template files must be inside the scenario's folder" in err


# ---- size --------------------------------------------------------------------------------------


def test_a_scenario_over_the_size_cap_is_refused_unparsed(tmp_path, capsys):
    path = scenario(tmp_path)
    padding = "# " + "x" * 1021 + "\n"  # a valid scenario, made 2 MiB long by comments
    with path.open("a") as file:
        file.write(padding * (2 * MAX_FILE_BYTES // len(padding) + 1))
    code, err = esr_locust(capsys, "validate", path)
    assert code == 2
    assert f"{path.stat().st_size:,} bytes" in err and f"{MAX_FILE_BYTES:,}" in err


def test_too_many_values_fail_where_the_cap_is_crossed(tmp_path, capsys):
    """300,000 values in a 600 KB flat list: given up at the first value over the cap, as the
    parser streams the file, not after building all of them."""
    path = tmp_path / "s.yml"
    path.write_text("[" + ",".join(["1"] * 300_000) + "]\n")
    code, err = esr_locust(capsys, "validate", path)
    assert code == 2
    # The root list is the first value; its item number MAX_VALUES - 1 (0-based) is one too many.
    column = 2 + 2 * (MAX_VALUES - 1)
    assert f"{path}:1:{column}: more than {MAX_VALUES:,} values" in err
