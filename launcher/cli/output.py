"""What every command writes: its output on stdout (flushed), the topology's warnings on stderr."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.pipeline import Result


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def warn(result: Result) -> None:
    for d in result.warnings:
        print(str(d), file=sys.stderr)
