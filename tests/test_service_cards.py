"""The service's report cards (esr/service/cards.py): each built in a child forked from one
process that has the report builder loaded, never in the service's own process.

Checked in a process of the service's kind, started for the test (the test process itself
runs Locust's gevent, under which multiprocessing does not work): two run directories get
their cards, a folder that is not one gets the error `esr-locust report` would have printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from esr.engine.probes import Probes, Tally
from esr.run_directory import REPORT_CARD, RUN_SETTINGS, write_json, write_tables

START = 1_800_000_000.0
AS_THE_SERVICE = """
import json, sys
from pathlib import Path
from esr.service.cards import build_report_card

answers = [build_report_card(Path(folder)) for folder in sys.argv[1:]]
print(json.dumps({"answers": answers, "builder_loaded_here": "esr.report.render" in sys.modules,
                  "pandas_loaded_here": "pandas" in sys.modules}))
"""


def run_directory(folder: Path, run_id: str) -> Path:
    """What a short run leaves: its settings, probe tables and counters."""
    probes = Probes(bucket_s=1.0)
    for i in range(40):
        probes.request("apply", START + i / 10, 20.0 + i, None, {"route": "standard"},
                       ("30-44", False))
        probes.journey("applicants", "30-44", False, "approved", False)
    tally = Tally()
    tally.merge(probes.drain())
    folder.mkdir()
    write_json(folder / RUN_SETTINGS, {
        "run_id": run_id, "esr_version": "test", "scenario_name": "cards", "seed": 1,
        "scenario_file": "cards.yml", "scenario_sha256": "0" * 64, "host": "http://127.0.0.1:9",
        "workers": 0, "time_scale": 1, "user_scale": 1,
        "slo": [{"metric": "p95_ms", "threshold": 500.0, "endpoint": None}],
        "phases": [{"name": "plateau", "start": 0, "end": 4, "citizens": 2, "spawn_rate": 2}]})
    write_tables(folder, tally, {"run_id": run_id, "started_at": "2027-01-15T08:00:00+00:00",
                                 "ended_at": "2027-01-15T08:00:04+00:00", "workers": 0,
                                 "lost_workers": []})
    return folder


def test_cards_are_built_in_children_and_a_failure_answers_what_went_wrong(tmp_path):
    first, second = run_directory(tmp_path / "first", "one"), run_directory(tmp_path / "second",
                                                                          "two")
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    done = subprocess.run([sys.executable, "-c", AS_THE_SERVICE, str(first), str(not_a_run),
                           str(second)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    told = json.loads(done.stdout)
    built, failed, built_again = told["answers"]
    assert built is None and built_again is None
    for folder in (first, second):
        for fmt in ("html", "json", "junit"):
            assert (folder / REPORT_CARD[fmt]).stat().st_size > 0, (folder, fmt)
        assert not (folder / REPORT_CARD["pdf"]).exists()  # built when first asked for
    assert json.loads((second / REPORT_CARD["json"]).read_text())["run_id"] == "two"
    assert failed.startswith("the report card could not be built: esr-locust: ")
    assert "not an ESR run directory" in failed and "Traceback" not in failed
    assert not told["builder_loaded_here"] and not told["pandas_loaded_here"]
    assert done.stderr == ""  # the builders' output stays out of the service's log
