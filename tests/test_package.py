"""ESR as users install it: a wheel (built by the Dockerfile's own steps) in a fresh virtualenv,
used from a folder outside the repository; and an sdist that carries the same files."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import site
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from commands import served

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# What a run needs besides the modules: a missing one breaks an installed ESR, not a checkout.
PACKAGE_DATA = ("esr/population/templates/low_income.yml", "esr/population/templates/seniors.yml",
                "esr/engine/locustfile.py", "esr/engine/static/panel.js",
                "esr/report/templates/report.html.j2", "esr/demo/scenario.yml")
SCENARIO = """\
scenario: installed
seed: 7
citizens: {template: seniors, count: 4}
load_profile: {ramp_up: 1s, sustain: 2s}
report: {formats: [json, junit]}
"""


def dockerfile_runs() -> list[str]:
    """The Dockerfile's RUN commands, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line[4:].strip() for line in text.splitlines() if line.startswith("RUN ")]


def test_the_image_installs_the_wheel_not_a_source_tree():
    runs = dockerfile_runs()
    assert any(cmd.startswith("pip wheel") and "--no-deps" in cmd for cmd in runs)
    installs = [cmd for cmd in runs if cmd.startswith("pip install")]
    assert installs and all("/dist/*.whl" in cmd and " -e " not in f" {cmd} " for cmd in installs)
    assert "COPY esr" not in DOCKERFILE.read_text()  # only the wheel reaches the image


def build_context(folder: Path) -> Path:
    """The checkout as `COPY . .` puts it in the image: without what .dockerignore names
    (a stale build/ would otherwise slip old modules into the wheel)."""
    ignored = [line.strip().removeprefix("**/") for line in
               (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    shutil.copytree(ROOT, folder, symlinks=True, ignore=shutil.ignore_patterns(*ignored))
    return folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built with the Dockerfile's own command (its /dist a temporary folder)."""
    dist = tmp_path_factory.mktemp("dist")
    source = build_context(tmp_path_factory.mktemp("context") / "src")
    (command,) = [cmd for cmd in dockerfile_runs() if cmd.startswith("pip wheel")]
    args = shlex.split(command.replace("/dist", str(dist)))
    subprocess.run([sys.executable, "-m", *args], cwd=source, check=True, capture_output=True,
                   timeout=300)
    (built,) = dist.glob("esr_locust-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv holding the wheel, installed as the Dockerfile installs it.

    Its dependencies come from this test run's own environment through a .pth line (the
    same pinned versions, without downloading them again); that line does not run the
    .pth files there, so the editable checkout of ESR stays invisible to it. The virtualenv
    has no pip of its own: this environment's pip installs into it (`--python`), as the
    image's pip does (ensurepip cost 5 s of CPU, 20 s on a busy machine)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--disable-pip-version-check", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    venv_site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    Path(venv_site, "esr-test-dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    return venv


def in_folder(venv: Path, folder: Path, *args: str, timeout: float = 120):
    return subprocess.run([str(venv / "bin" / "esr-locust"), *args], cwd=folder,
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_carries_what_a_run_needs(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    modules = {name for name in names if name.endswith(".py")}
    assert modules == {str(p.relative_to(ROOT)) for p in (ROOT / "esr").rglob("*.py")}
    assert len([n for n in names if n.startswith("esr/population/templates/")]) == 6


def test_the_sdist_carries_the_same_files(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (sdist,) = tmp_path.glob("esr_locust-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
    for name in PACKAGE_DATA:
        assert name in members and members[name].isfile(), name  # a file, not a dangling link


def test_an_installed_esr_works_from_any_folder(installed, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    where = subprocess.run([installed / "bin" / "python", "-c", "import esr; print(esr.__file__)"],
                           cwd=folder, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed)), where

    templates = in_folder(installed, folder, "templates")
    assert templates.returncode == 0, templates.stderr
    listed = {line.split()[0] for line in templates.stdout.splitlines() if line.strip()}
    assert {"low_income", "seniors", "veterans", "families", "students", "disabled"} <= listed

    (folder / "demo.yml").write_text((ROOT / "examples" / "demo.yml").read_text())
    validated = in_folder(installed, folder, "validate", "demo.yml")
    assert validated.returncode == 0, validated.stderr


def test_an_installed_esr_runs_a_scenario_with_a_worker(installed, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "scenario.yml").write_text(SCENARIO)
    target = subprocess.Popen([installed / "bin" / "esr-locust", "target", "--port", "0"],
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        url = target.stdout.readline().rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), url
        # One worker: the master and the worker both load the locustfile from the wheel.
        result = in_folder(installed, folder, "run", "scenario.yml", "--host", url,
                           "--workers", "1", "--run-dir", "run", timeout=180)
        assert result.returncode in (0, 1), result.stderr
        summary = json.loads((folder / "run" / "summary.json").read_text())
        assert summary["requests"]["total"] > 0
        assert summary["requests"]["total"] == served(url, summary["run_id"])["requests"]["total"]
    finally:
        target.terminate()
        target.wait(timeout=30)
