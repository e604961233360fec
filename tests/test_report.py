"""The report card of a real run: four files, read back the way people and pipelines read them."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest

from esr.engine.probes import Tally
from esr.launcher import RunSettings, run
from esr.report.render import write_report_card
from esr.run_directory import RUN_SETTINGS, write_json, write_tables

SCENARIO = """
scenario: "Report card <check> & co"
seed: 2026
citizens:
  - name: applicants
    template: low_income
    count: 12
    behavior: {think_time: 50ms..300ms}
  - name: seniors
    template: seniors
    count: 12
    traits: {income: {lognormal: {median: 25000, sigma: 0.6}, min: 0, max: 90000}}
    behavior: {think_time: 50ms..300ms}
load_profile: {ramp_up: 1s, sustain: 6s}
slo: {p95_ms: 500, error_rate: 0.02, p99_ms: 0.5}
report: {traits: [disability, language]}
"""


# The tests reading the report card of the real run below: a 7 s run with two workers, then
# all four formats of its card.
ON_A_REAL_RUN = pytest.mark.slow(reason="the report card of a real 7 s run with two workers")


@pytest.fixture(scope="module")
def report(tmp_path_factory, target):
    """One real run against the session's demo target, with a raw log of every request."""
    folder = tmp_path_factory.mktemp("report")
    scenario = folder / "scenario.yml"
    scenario.write_text(SCENARIO)
    result = run(RunSettings(scenario=scenario, host=target, workers=2,
                             run_dir=folder / "run", request_log=folder / "raw"))
    files = write_report_card(result.run_dir)
    return {"result": result, "files": files, "raw": folder / "raw"}


class Page(HTMLParser):
    """What the tests need from the HTML: elements, references, text by id."""

    def __init__(self, html: str):
        super().__init__()
        self.tags, self.references, self.text_by_id, self.rows = [], [], {}, []
        self._open_ids, self._row = [], None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href", "xlink:href", "action", "data"):
            if name in attrs:
                self.references.append(attrs[name])
        if "id" in attrs:
            self._open_ids.append((tag, attrs["id"]))
            self.text_by_id.setdefault(attrs["id"], "")
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        for _, element_id in self._open_ids:
            self.text_by_id[element_id] += data
        if self._row is not None and data.strip():
            self._row.append(data.strip())


@ON_A_REAL_RUN
def test_a_real_run_writes_all_four_files(report):
    assert set(report["files"]) == {"html", "pdf", "json", "junit"}
    for path in report["files"].values():
        assert path.is_file() and path.stat().st_size > 0


@ON_A_REAL_RUN
def test_the_html_says_the_verdict_flags_the_planted_bias_and_loads_nothing(report):
    html = report["files"]["html"].read_text()
    page = Page(html)
    assert page.text_by_id["verdict"].strip() == "FAIL"  # p99 under half a millisecond
    assert "p99_ms" in html
    senior_rows = [row for row in page.rows if row[:2] == ["62+", "no"]]
    assert senior_rows and "FLAGGED" in " ".join(senior_rows[0])
    assert not any("FLAGGED" in " ".join(row) for row in page.rows if row[:1] == ["30-44"])
    assert "chart-heatmap" in page.text_by_id and "<svg" in html.split('id="chart-heatmap"')[1]
    # Self-contained: no scripts, frames or stylesheets to fetch, references inline only.
    assert not {"script", "iframe", "link", "object", "embed"} & set(page.tags)
    assert all(ref.startswith(("data:", "#")) for ref in page.references), page.references
    assert "Report card &lt;check&gt; &amp; co" in html


@ON_A_REAL_RUN
def test_outcomes_by_the_traits_the_scenario_names(report):
    summary = report["result"].summary
    assert set(summary["by_trait"]) == {"disability", "language"}
    for rows in summary["by_trait"].values():
        assert sum(row["citizens"] for row in rows) == summary["citizens"]["total"]
        assert all({"impact_ratio", "flagged", "approval_rate"} <= set(row) for row in rows)
    html = report["files"]["html"].read_text()
    assert 'id="trait-disability"' in html and 'id="trait-language"' in html


@ON_A_REAL_RUN
def test_the_pdf_has_the_same_verdict_and_cohort_rows_as_text(report):
    text = subprocess.run(["pdftotext", "-layout", str(report["files"]["pdf"]), "-"],
                          capture_output=True, text=True, check=True).stdout
    assert "FAIL" in text and "Report card <check> & co" in text
    senior_lines = [line for line in text.splitlines() if line.strip().startswith("62+")]
    assert senior_lines and "FLAGGED" in " ".join(senior_lines)
    assert "Cohorts: who was turned away?" in text


@ON_A_REAL_RUN
def test_junit_has_one_case_per_slo_check(report):
    summary = report["result"].summary
    suite = ET.parse(report["files"]["junit"]).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(summary["slo"]["checks"]) == 3
    failures = {case.get("name"): case.find("failure") for case in cases}
    assert failures["p99_ms"] is not None and "threshold 0.5" in failures["p99_ms"].get("message")
    assert failures["p95_ms"] is None and failures["error_rate"] is None
    assert suite.get("failures") == "1"


@ON_A_REAL_RUN
def test_percentiles_are_within_one_percent_of_the_raw_log(report):
    raw: dict[str, list[float]] = {}
    for log in report["raw"].glob("requests-*.csv"):
        with open(log) as lines:
            for name, ms, _ in csv.reader(lines):
                raw.setdefault(name, []).append(float(ms))
    summary = json.loads(report["files"]["json"].read_text())
    everything = np.concatenate([np.array(v) for v in raw.values()])
    figures = [(summary["requests"], everything)] + [
        (endpoint, np.array(raw[endpoint["name"]])) for endpoint in summary["endpoints"]]
    for reported, exact in figures:
        assert reported.get("total", reported.get("requests")) == len(exact)
        assert reported["max_ms"] == pytest.approx(exact.max(), abs=0.001)
        for q in (50, 95, 99):
            # Percentile definitions differ by one rank (HDR rounds q*n, numpy may take the
            # ceiling); a sparse tail makes neighbouring ranks far apart, so compare with both.
            low = np.percentile(exact, q, method="lower")
            high = np.percentile(exact, q, method="higher")
            assert 0.99 * low <= reported[f"p{q}_ms"] <= 1.01 * high, (q, reported, low, high)
        assert reported["p99_ms"] <= reported["max_ms"]


@ON_A_REAL_RUN
def test_a_real_browser_shows_it_without_console_errors(report, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, requests = [], []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report["files"]["html"].resolve().as_uri())
            assert page.inner_text("#verdict").strip() == "FAIL"
            assert page.locator("#cohort-table tr.flagged").count() >= 1
            shot = tmp_path / "report-card.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert shot.stat().st_size > 10_000


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_markup_from_the_target_is_escaped(tmp_path):
    """Endpoint names, error messages, routes and block reasons all come from the target."""
    tally = Tally()
    from esr.engine.probes import Probes

    probes = Probes(bucket_s=1.0)
    for i in range(50):
        probes.request(f"apply {HOSTILE}", 1_800_000_000 + i / 10, 20.0 + i,
                       f"HTTP 500 {HOSTILE}", {"route": f"route {HOSTILE}",
                                              "blocked": f"HIPAA{HOSTILE}"}, ("62+", True))
        probes.journey("g", "62+", True, "error", False)
    tally.merge(probes.drain())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / RUN_SETTINGS, {
        "run_id": "hostile", "esr_version": "test", "scenario_name": f"scenario {HOSTILE}",
        "scenario_file": "x.yml", "scenario_sha256": "0" * 64, "seed": 1, "host": HOSTILE,
        "workers": 0, "time_scale": 1, "user_scale": 1, "slo": [
            {"metric": "p95_ms", "threshold": 10.0, "endpoint": f"apply {HOSTILE}"}],
        "phases": [{"name": "plateau", "start": 0, "end": 5, "citizens": 1, "spawn_rate": 1}]})
    lost = {"worker": f"pool_{HOSTILE}", "at": "2027-01-15T08:00:03+00:00",
            "reason": "its connection closed", "last_report_at": "2027-01-15T08:00:02+00:00",
            "citizens": 12, "unreported_max": 31, "sending_window_s": 0.4,
            "sending_ended_by": "disconnected", "requests_reported": 40}
    write_tables(run_dir, tally, {"run_id": "hostile", "started_at": "2027-01-15T08:00:00+00:00",
                                  "ended_at": "2027-01-15T08:00:05+00:00", "workers": 2,
                                  "lost_workers": [lost]})
    files = write_report_card(run_dir, ("html", "pdf"))
    html = files["html"].read_text()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html or \
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    page = Page(html)
    assert "script" not in page.tags and "img" not in page.tags
    # A lost worker's line says the bound and the window it stands on (its id is the worker's).
    assert (f"worker pool_{HOSTILE} at 2027-01-15T08:00:03+00:00 (its connection closed; last "
            "report 2027-01-15T08:00:02+00:00): it reported 40 request(s); at most 31 of its "
            "requests were never reported — its 12 citizen(s) may have sent for up to 0.4 s "
            "after its last report, until its process ended") in " ".join(
                page.text_by_id["lost"].split())
    text = subprocess.run(["pdftotext", str(files["pdf"]), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert 'alert("x")' in text  # shown as text, not run


@ON_A_REAL_RUN
def test_a_partial_run_directory_still_reports_what_is_missing(report, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(report["result"].run_dir, partial)
    (partial / "esr_counters.json").unlink()
    (partial / "locust_stats_history.csv").unlink()
    files = write_report_card(partial, ("html",))
    page = Page(files["html"].read_text())
    assert page.text_by_id["verdict"].strip() in ("INCOMPLETE", "FAIL")
    html = files["html"].read_text()
    assert "esr_counters.json" in html and "locust_stats_history.csv" in html


def test_not_a_run_directory_is_bad_input(tmp_path, esr_cli):
    result = esr_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert "not an ESR run directory" in result.stderr and "Traceback" not in result.stderr


def test_the_pdf_shows_inline_images_and_fetches_nothing(tmp_path):
    """The heat-map's cells are a PNG inside its SVG (a data: URL): the PDF must show them,
    and load nothing else, not even a local file."""
    import base64
    import io

    from PIL import Image

    from esr.report.render import write_pdf

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(png, format="PNG")
    (tmp_path / "local.png").write_bytes(png.getvalue())
    inline = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    write_pdf(f'<p>inline <img src="{inline}"> and local <img src="file://{tmp_path}/local.png">'
              f'<svg width="20" height="20"><image href="{inline}" width="8" height="8"/></svg>',
              tmp_path / "card.pdf")
    listed = subprocess.run(["pdfimages", "-list", str(tmp_path / "card.pdf")],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(listed) - 2 == 2  # a header of two lines, then one line per image shown


def test_a_load_process_above_90_percent_cpu_is_named_as_the_limit(tmp_path):
    """The verdict says when ESR, not the target, was the limit (summary, card, console)."""
    tally = Tally()
    from esr.engine.probes import Probes

    probes = Probes(bucket_s=1.0)
    for i in range(20):
        probes.request("apply", 1_800_000_000 + i / 2, 20.0, None, {}, ("62+", False),
                       method="POST", status=200)
    tally.merge(probes.drain(), process="worker-b")  # its requests, and this test's own CPU
    for _ in range(8):  # eight seconds at 97% of a core, then one idle
        tally.add_load("worker-a", 0.97, 1.0)
    tally.add_load("worker-a", 0.1, 1.0)
    tally.add_load("master", 0.2, 9.0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / RUN_SETTINGS, {
        "run_id": "busy", "esr_version": "test", "scenario_name": "busy", "scenario_file": "x.yml",
        "scenario_sha256": "0" * 64, "seed": 1, "host": "http://127.0.0.1:1", "workers": 1,
        "time_scale": 1, "user_scale": 1, "slo": [],
        "phases": [{"name": "plateau", "start": 0, "end": 10, "citizens": 1, "spawn_rate": 1}]})
    write_tables(run_dir, tally, {
        "run_id": "busy", "started_at": "2027-01-15T08:00:00+00:00",
        "ended_at": "2027-01-15T08:00:10+00:00", "workers": 1, "lost_workers": [],
        "load_processes": {name: p.figures() for name, p in tally.load.items()}})
    files = write_report_card(run_dir, ("html", "json"))
    generator = json.loads(files["json"].read_text())["load_generator"]
    assert generator["limited"]
    assert generator["findings"][-1].startswith("worker worker-a used over 90% of a core for 8 s")
    busy = {p["process"]: p["busy_s"] for p in generator["processes"]}
    assert (busy["master"], busy["worker-a"]) == (0.0, 8.0)
    said = " ".join(Page(files["html"].read_text()).text_by_id["load-generator"].split())
    assert said.startswith("The load generator, not the target, was the limit: worker worker-a")
    assert "more workers" in said
