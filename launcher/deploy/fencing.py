"""The fencing token a command holds with the deployment lock, as its host calls carry it.

The lock's host issues a token (a counter it raises on every acquisition and take-over); every
host call of the command carries it (``--fence=N``, remote.BOOTSTRAP) and a host refuses one
lower than the highest it has seen, before it switches, starts or stops anything. A command
whose lease was broken and taken over is thus refused everywhere the new holder has been.
"""
from __future__ import annotations

import threading

from ..core.errors import LauncherError


class LeaseLost(LauncherError):
    """This command's deployment lock is no longer its own: it must change nothing more."""


class Fence:
    """The token of a held lock, and why it no longer holds (set once, by any thread)."""

    def __init__(self, token: int, lock_host: str, took_over: bool = False, lock_host_blank: bool = False):
        self.token = token
        self.lock_host = lock_host
        self.took_over = took_over  # from a stale holder, who may still be running
        self.lock_host_blank = lock_host_blank  # it had nothing of the deployment when the lock was taken
        self._lost: str | None = None
        self._mutex = threading.Lock()

    @property
    def lost(self) -> str | None:
        return self._lost

    def lose(self, why: str) -> None:
        with self._mutex:
            if self._lost is None:
                self._lost = why

    def check(self) -> None:
        """LeaseLost when the lock is gone: no host call starts after that."""
        if self._lost is not None:
            raise LeaseLost(self.message())

    def message(self) -> str:
        return (f"stopped: this command lost the deployment lock on {self.lock_host} ({self._lost}); "
                f"its host calls carry fencing token {self.token}, which the hosts now refuse, so it "
                "changed nothing after that")
