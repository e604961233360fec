"""The benchmark scripts still run (their figures are read by people, never asserted)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# benchmarks/engine.py's start_nginx looks there too (Debian installs it in /usr/sbin).
NGINX = bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists())


def test_citizens_benchmark_runs_and_prints_a_ratio():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "citizens.py"), "--citizens", "4096"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "citizens/s" in out and "ratio ESR / naive" in out


def test_report_benchmark_runs_on_a_small_synthetic_run():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "report.py"), "--requests", "20000",
                          "--endpoints", "5", "--seconds", "120"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "report card, all four formats" in out and "report.html" in out


@pytest.mark.slow(reason="four Locust deployments, a master and a worker each: bare and ESR, "
                  "small and full")
def test_crowd_benchmark_runs_a_small_crowd():
    # One worker: the distributed path all the same, at two thirds of the processes.
    out = subprocess.run([sys.executable, str(BENCHMARKS / "crowd.py"), "--citizens", "500",
                          "--workers", "1", "--seconds", "5", "--ramp", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "spawn: every citizen active after" in out and "ratio ESR / bare" in out, out
    assert "peak open per worker" in out and "EMFILE 0, EADDRNOTAVAIL 0" in out, out


@pytest.mark.slow(reason="four Locust processes in turn: ESR and bare Locust, then both under "
                  "tracemalloc")
def test_crowd_benchmark_measures_one_process_each():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "crowd.py"), "--one-process",
                          "--citizens", "200", "--spawn-rate", "200", "--journey", "two-step",
                          "--traces", "3"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "ratio ESR / bare" in out and "peak (with the stop)" in out, out
    assert "KB per citizen, traced" in out, out


@pytest.mark.slow(reason="rounds of bare Locust and ESR against nginx, each a few seconds")
@pytest.mark.skipif(not NGINX, reason="benchmarks/engine.py needs nginx (apt-get install "
                    "nginx-light)")
def test_engine_benchmark_runs_a_short_round():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "engine.py"), "--seconds", "6",
                          "--rounds", "1", "--idle-citizens", "400"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "ratio ESR / bare" in out and "memory per idle user" in out, out


@pytest.mark.slow(reason="seven real runs against nginx, the shortest each: some 45 s")
@pytest.mark.skipif(not NGINX, reason="benchmarks/open_model.py needs nginx (apt-get install "
                    "nginx-light)")
def test_open_model_benchmark_runs_every_step_briefly():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "open_model.py"), "--seconds", "1",
                          "--repeat", "1", "--short", "1", "--long", "2", "--memory-rate", "200"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    figures = r"scheduled [\d,]+, started [\d,]+, dropped [\d,]+; lateness p50 .+ ms"
    for step in (r"1\. capacity, closed model .*: [\d,]+ requests/s",
                 rf"2\. arrivals at 85% .*\n   [\d,]+/s \(capacity .*\): {figures}",
                 rf"3\. arrivals at 3x it \([\d,]+/s\): {figures}",
                 r"the run took [\d.]+ s from Locust's start",
                 r"4\. memory at 200/s: 1 s [\d,]+ MB, 2 s [\d,]+ MB \(ratio [\d.]+",
                 rf"5\. a master and 2 workers, [\d,]+/s: {figures}.*the workers' shares "
                 r"[\d,]+, [\d,]+ of [\d,]+"):
        assert re.search(step, out), (step, out)


@pytest.mark.skipif(not NGINX, reason="benchmarks/bare_open_loop.py needs nginx (apt-get "
                    "install nginx-light)")
def test_bare_open_loop_benchmark_runs_a_short_round():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bare_open_loop.py"), "--seconds",
                          "0.5", "--rounds", "1", "--fractions", "0.85"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r"arrivals at 85% .*\n  closed [\d,]+/s \(\d+ us a request\), open [\d,]+/s "
                     r"\(\d+ us, [\d.]+x the closed runs'\), lateness p99 [\d.]+ ms", out), out


@pytest.mark.slow(reason="two real runs through esr-locust serve, one of them watched")
def test_service_benchmark_runs_with_a_few_watchers():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "service.py"), "--watchers", "5",
                          "--reads", "20", "--lists", "3", "--time-scale", "0.4",
                          "--window", "1", "--workers", "0"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "submit -> first request at the target" in out and "listing all 1,00" in out, out
    assert "5/5 watchers got every one and the end" in out, out
