"""Report cards, built for the service in child processes forked from one that has the
report builder loaded.

A card is built in a process of its own: charts and layout are heavy, and must not stall
the service. Started afresh for each card (`esr-locust report`), that process spent 2 s of
CPU importing scipy, pandas and matplotlib before building a card in about 1 s. Here each
card's process is forked from multiprocessing's forkserver, a process started with the first
card that imports the builder once: the service itself never loads it, and a card costs its
building alone. The price is that process's memory (about 200 MB) while the service runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import traceback
from pathlib import Path

from esr.errors import EsrError

# The formats built as soon as a run ends; the PDF is built when first asked for.
EAGER_FORMATS = "html,json,junit"
# The end of what a failed build wrote on stderr that the run's reason quotes.
PROBLEM_CHARS = 300

_BUILDERS = multiprocessing.get_context("forkserver")
_BUILDERS.set_forkserver_preload(["esr.report.render", "esr.report.card", "esr.report.charts",
                                  __name__])
_PDF_LOCK = threading.Lock()


def build_report_card(run_dir: Path, formats: str = EAGER_FORMATS) -> str | None:
    """Report card formats, built in a child process; what went wrong, if anything. The PDF
    is built when first asked for, one at a time."""
    with _PDF_LOCK if "pdf" in formats else contextlib.nullcontext():
        answer, sender = _BUILDERS.Pipe(duplex=False)
        builder = _BUILDERS.Process(target=_build, args=(str(run_dir), formats, sender),
                                    name="esr-report-card")
        builder.start()
        sender.close()  # the child's end: the answer comes from the child, or EOF if it dies
        try:
            problem = answer.recv()
        except EOFError:
            problem = None
        finally:
            answer.close()
        builder.join()
    if builder.exitcode != 0 and problem is None:
        problem = f"its process ended with exit code {builder.exitcode}"
    if problem is not None:
        return f"the report card could not be built: {problem.strip()[-PROBLEM_CHARS:]}"
    return None


def _build(run_dir: str, formats: str, answer) -> None:
    """In the child: build the card, and answer None, or what `esr-locust report` would have
    said on stderr in failing (its error lines, or the traceback). Whatever the libraries
    write goes nowhere, as a subprocess's captured output did, not into the service's log."""
    from esr.report.render import parse_formats, write_report_card

    with open(os.devnull, "w") as nowhere:
        os.dup2(nowhere.fileno(), 1)
        os.dup2(nowhere.fileno(), 2)
    problem = None
    try:
        write_report_card(Path(run_dir), parse_formats(formats))
    except EsrError as error:
        problem = "\n".join(f"esr-locust: {line}" for line in error.lines())
    except Exception:
        problem = traceback.format_exc()
    answer.send(problem)
    answer.close()
