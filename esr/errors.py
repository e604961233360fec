"""ESR's one error family: each kind carries the exit code the CLI returns for it."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_SLO_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RUN_ERROR = 3


class EsrError(Exception):
    """Base of every error ESR reports to a user; never shown with a traceback."""

    exit_code = EXIT_RUN_ERROR

    def lines(self) -> list[str]:
        return [str(self)]


class BadInput(EsrError):
    """The user's input (arguments, files) cannot be used as given."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a scenario or template, located to the character."""

    file: str
    line: int  # 1-based; 0 when the problem has no place in the file
    column: int  # 1-based
    path: str  # key path such as citizens[1].template; "" for the document itself
    message: str  # what is wrong and what was expected
    hint: str = ""  # how to fix it, when we can tell

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}:{key} {self.message}{hint}"


class UntestedLibrary(EsrError):
    """Locust, geventhttpclient or hdrh is installed in a version ESR's reliances on its
    internals were not tested with (esr/engine/locust_compat.py says which and why)."""

    exit_code = EXIT_RUN_ERROR

    def __init__(self, problems: list[str], hint: str):
        self.problems, self.hint = problems, hint
        super().__init__("; ".join([*problems, hint]))

    def lines(self) -> list[str]:
        return [*self.problems, self.hint]


class ScenarioError(BadInput):
    """Every problem found in one pass over a scenario and the templates it uses."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.path))
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__("\n".join([head, *map(str, self.problems)]))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]
