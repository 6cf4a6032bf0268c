"""Run a job after every trigger, but once for a burst of triggers that arrive while it runs.

The agent polls supervisord and rewrites its snapshot on every process state event. A gang stop
or start is a burst of them (STOPPING, then STOPPED, for each rank of the host), and each poll
costs the agent and supervisord an XML-RPC round trip: on the testbed's 2 cores, 64 hosts'
agents and supervisords spent 1.4 of the 4.3 CPU s of a gang restart's stop phase on them.
A poll reads the state as it is when the poll runs, so one poll after the last event of a burst
sees everything the skipped ones would have seen; a trigger is never lost (one that arrives
during a run causes one more run).
"""
from __future__ import annotations

import sys
import threading
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Callable


class Coalescer:
    """``trigger()`` returns at once; ``job`` runs on one daemon thread, after each trigger or burst."""

    def __init__(self, job: Callable[[], None], name: str = "coalesce",
                 on_error: Callable[[Exception], None] | None = None):
        self._job, self._on_error = job, on_error
        self._cond = threading.Condition()
        self._triggered = self._done = 0  # triggers so far; of those, how many a finished run saw
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def trigger(self) -> None:
        with self._cond:
            self._triggered += 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Whether every trigger so far has had a run that began after it (within timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done == self._triggered, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._triggered > self._done)
                seen = self._triggered  # a trigger after this point gets a run of its own
            try:
                self._job()
            except Exception as exc:  # a failed run must not end the runs after it
                if self._on_error is not None:
                    self._on_error(exc)
                else:
                    sys.excepthook(*sys.exc_info())
            finally:
                with self._cond:
                    self._done = seen
                    self._cond.notify_all()
