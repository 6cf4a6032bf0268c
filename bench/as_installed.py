"""The launcher measured as a user's install has it: with its bytecode written.

`pip install` compiles a package's modules when it installs them, and an editable install writes
them on first import, unless PYTHONDONTWRITEBYTECODE is set, as it is on this machine (and in many
container images). Then every CLI run compiled ~60 modules from source again: 0.15-0.3 s of each
command a bench timed was the compiler, not the launcher. The benches compile once, untimed."""
from __future__ import annotations

import compileall
from pathlib import Path


def byte_compile(package: Path) -> None:
    """Write the pycs of every module under ``package`` (compileall writes them whatever
    PYTHONDONTWRITEBYTECODE says; the import system then reads them)."""
    if not compileall.compile_dir(str(package), quiet=1, workers=1):
        raise SystemExit(f"bench: cannot byte-compile {package}")
