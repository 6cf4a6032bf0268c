"""Error types and the one place that formats what a user reads about bad input."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True, slots=True)
class Loc:
    """A position in a source file; line and col are 1-based as editors show them."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a topology: where, which field, what is wrong."""

    loc: Loc | None
    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}{self.severity}: {field}{self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class LauncherError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = EXIT_FAILED


class BadInput(LauncherError):
    """The user gave something we refuse (bad file, bad flag); nothing was touched."""

    exit_code = EXIT_BAD_INPUT


class SpecErrors(BadInput):
    """A topology has errors; carries every diagnostic (errors and warnings) found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.errors))

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Order by position in the file so the output reads top to bottom."""
    def key(d: Diagnostic) -> tuple:
        loc = d.loc or Loc("", 0, 0)
        return (loc.file, loc.line, loc.col, d.path, d.message)
    return sorted(set(diags), key=key)
