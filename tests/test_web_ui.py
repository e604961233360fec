"""ESR in Locust's web UI: runs started from the browser, the ESR tab, report cards, login.

A real `esr-locust ui` (a master and a worker) against the real demo target, driven
by Debian's Chromium through Playwright; the login and compose-mode checks speak HTTP.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from commands import esr_locust, free_port, served
from scraping import scrape

from esr.launcher import end_process

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "reports" / "screenshots"
SCENARIO = """
scenario: from the browser
seed: 5
citizens:
  - {name: seniors, template: seniors, count: 10, behavior: {think_time: 100ms..300ms}}
  - {name: young, template: students, count: 10, behavior: {think_time: 100ms..300ms}}
load_profile: {ramp_up: 1s, sustain: 12s}
"""


class Server:
    """An ESR web UI process, ended by PID (SIGTERM: a graceful end) when the test is done."""

    def __init__(self, command: list[str], tmp_path: Path, env: dict | None = None):
        self.log = tmp_path / "ui.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})

    def wait_until_serving(self, url: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        raise AssertionError(f"no web UI at {url}:\n{self.log.read_text()}")

    def end(self) -> None:
        end_process(self.process, grace_s=60)


@pytest.fixture
def ui(tmp_path, target):
    scenario = tmp_path / "scenario.yml"
    scenario.write_text(SCENARIO)
    port, metrics_port = free_port(), free_port()
    server = Server(esr_locust("ui", str(scenario), "--workers", "1", "--host", target,
                               "--web-bind", f"127.0.0.1:{port}",
                               "--reports-dir", str(tmp_path / "reports"),
                               "--metrics-bind", str(metrics_port)), tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_until_serving(url + "/esr/status")
        wait_for_workers(url, 1)
        yield url, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        server.end()
    assert server.process.returncode == 0, server.log.read_text()


def status(url: str, opener=urllib.request.urlopen) -> dict:
    with opener(url + "/esr/status", timeout=10) as response:
        return json.loads(response.read())


def wait_for_workers(url: str, count: int) -> None:
    """Until `count` workers have connected to the web UI's master: a start before any has
    is refused by Locust ("You can't start a distributed test before at least one worker
    processes has connected"), and its run never starts its citizens."""
    deadline = time.monotonic() + 30
    while json.loads(urllib.request.urlopen(url + "/worker-count", timeout=5).read())[
            "worker_count"] < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers connected"
        time.sleep(0.2)


def launch_chromium(playwright):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    return playwright.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def cohort_citizens(page) -> int:
    """Citizens counted in the ESR tab's table (its second column), over every cohort."""
    cells = page.locator("table tbody tr td:nth-child(2)").all_inner_texts()
    return sum(int(cell) for cell in cells if cell.strip().isdigit())


def test_a_run_started_in_the_browser_shows_cohorts_live_and_links_its_report_card(
        ui, target, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    ui, metrics = ui
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page_errors = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(ui + "/")
            page.get_by_role("button", name="Start").click()
            page.get_by_role("tab", name="ESR citizens").click()
            # The tab fills while the run goes on, and keeps growing.
            page.wait_for_function("document.querySelectorAll('table tbody tr').length >= 2",
                                   timeout=30_000)
            first = cohort_citizens(page)
            time.sleep(4)
            later = cohort_citizens(page)
            assert 0 < first < later, (first, later)
            during = scrape(metrics)  # Prometheus follows the run the browser started
            headers = page.locator("table thead th").all_inner_texts()
            assert headers[:3] == ["Cohort", "Citizens", "Approved"], headers
            # When the run ends, the panel links its report card.
            link = page.locator("#esr-report-link")
            link.wait_for(state="visible", timeout=90_000)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOTS / "esr-tab.png"
            page.screenshot(path=str(shot), full_page=True)
            with page.context.expect_page() as opened:
                link.click()
            card = opened.value
            card.wait_for_load_state()
            assert card.locator("#verdict").inner_text().strip() in ("PASS", "FAIL")
            seen_in_tab = cohort_citizens(page)
        finally:
            browser.close()
    assert page_errors == []
    assert shot.stat().st_size > 20_000
    # The report card's run is the one the browser started, counted as the target counted it.
    (run_dir,) = (tmp_path / "reports").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["total"] == served(target, run_dir.name)["requests"]["total"] > 0
    assert summary["citizens"]["total"] >= seen_in_tab >= later
    final = scrape(metrics)
    assert 0 < during.total("esr_requests_total", run=run_dir.name) < \
        final.total("esr_requests_total", run=run_dir.name) == summary["requests"]["total"]


def test_esr_routes_ask_for_the_login_that_web_login_requires(tmp_path, target):
    scenario = tmp_path / "scenario.yml"
    scenario.write_text(SCENARIO)
    refused = subprocess.run(esr_locust("ui", str(scenario), "--web-login"), capture_output=True,
                             text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                         if k != "ESR_WEB_PASSWORD"})
    assert refused.returncode == 2 and "ESR_WEB_PASSWORD" in refused.stderr
    assert "Traceback" not in refused.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(esr_locust("ui", str(scenario), "--workers", "0", "--host", target,
                               "--web-bind", f"127.0.0.1:{port}", "--web-login",
                               "--reports-dir", str(tmp_path / "reports")), tmp_path,
                    env={"ESR_WEB_USER": "planner", "ESR_WEB_PASSWORD": "s3cret"})
    try:
        server.wait_until_serving(url + "/login")
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        for path in ("/esr/status", "/esr/report", "/esr/panel.js"):
            with opener.open(url + path, timeout=10) as response:
                assert urllib.parse.urlparse(response.url).path == "/login", path
        sign_in = url + "/esr/login"
        for user, password in (("planner", "wrong"), ("someone", "s3cret"), ("", "")):
            form = urllib.parse.urlencode({"username": user, "password": password}).encode()
            with opener.open(sign_in, data=form, timeout=10) as response:
                assert urllib.parse.urlparse(response.url).path == "/login"
        form = urllib.parse.urlencode({"username": "planner", "password": "s3cret"}).encode()
        with opener.open(sign_in, data=form, timeout=10) as response:
            assert urllib.parse.urlparse(response.url).path == "/"
        assert status(url, opener.open)["state"] == "ready"
    finally:
        server.end()


def test_a_web_master_with_a_worker_on_another_host_runs_what_the_browser_starts(tmp_path,
                                                                               target):
    """The compose file's default: `master --web`, workers joining by address."""
    scenario = tmp_path / "scenario.yml"
    # No PDF: the browser test's run builds the card in every format through the web UI. Nor
    # its 12 s, which let the browser watch the tab grow: here only the run's end is awaited.
    scenario.write_text(SCENARIO.replace("sustain: 12s", "sustain: 3s")
                        + "report: {formats: [html]}\n")
    web, workers = free_port(), free_port()
    url = f"http://127.0.0.1:{web}"
    master = Server(esr_locust("master", str(scenario), "--web", "--web-bind",
                               f"127.0.0.1:{web}", "--bind", f"127.0.0.1:{workers}",
                               "--host", target, "--run-dir", str(tmp_path / "reports")),
                    tmp_path)
    worker = subprocess.Popen(esr_locust("worker", str(scenario), "--master",
                                         f"127.0.0.1:{workers}"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        master.wait_until_serving(url + "/esr/status")
        wait_for_workers(url, 1)
        started = urllib.request.urlopen(url + "/swarm", data=b"", timeout=10)
        assert json.loads(started.read())["success"]
        deadline = time.monotonic() + 90
        while status(url)["report"] != "ready":
            assert time.monotonic() < deadline, status(url)
            time.sleep(0.5)
        run_id = status(url)["run_id"]
    finally:
        master.end()
        end_process(worker)
    summary = json.loads((tmp_path / "reports" / run_id / "summary.json").read_text())
    assert summary["requests"]["total"] == served(target, run_id)["requests"]["total"] > 0
    assert (tmp_path / "reports" / run_id / "report.html").is_file()
