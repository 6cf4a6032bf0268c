"""Ctrl-C as a request, not a crash: long commands stop at the next safe point and say where.

`up` and a rolling restart stop at the next point where every host is on one whole generation
(never between a switch and its rollback, never with a gang half started), say where they
stopped, and exit 1. The ssh children run in their own session (transport.py), so the
terminal's SIGINT reaches only this process and a remote call in flight finishes.
"""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Iterator

from ..core.errors import LauncherError


class Interrupted(LauncherError):
    """Stopped on the operator's request at a safe point."""


class Interrupt:
    def __init__(self) -> None:
        self.requested = False

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.requested:
            print("interrupt: still finishing the current step so that no host is left half-way; "
                  "it ends at the next safe point", file=sys.stderr, flush=True)
            return
        self.requested = True
        print("interrupt: stopping at the next safe point (every host on one whole generation)...",
              file=sys.stderr, flush=True)

    def check(self, where: str) -> None:
        """Raise Interrupted, saying ``where`` things stand, if Ctrl-C was pressed."""
        if self.requested:
            raise Interrupted(f"interrupted: {where}")


NEVER = Interrupt()  # for callers that do not take Ctrl-C (tests, library use)


@contextmanager
def deferred_sigint() -> Iterator[Interrupt]:
    """Within the block, SIGINT sets a flag instead of raising KeyboardInterrupt."""
    intr = Interrupt()
    try:
        old = signal.signal(signal.SIGINT, intr._on_signal)
    except ValueError:  # not the main thread: leave signals alone
        yield intr
        return
    try:
        yield intr
    finally:
        signal.signal(signal.SIGINT, old)
