"""How long a gang's leader waits before restarting it: at once the first time, then backing off.

As torchrun's elastic agent and LeaderWorkerSet do, a gang's first restart inside the restart
window is immediate (a single crash costs no more than the restart itself); from the second
one on, the leader waits BACKOFF_INITIAL seconds, doubling each time, at most BACKOFF_MAX, so
a rank that keeps crashing does not spin the whole gang. The budget (restart_max in
restart_window) is the agent's; this is only the wait.
"""
from __future__ import annotations

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0


def restart_backoff(restarts_in_window: int) -> float:
    """Seconds to wait before the next restart, given how many the window already holds."""
    if restarts_in_window <= 0:
        return 0.0
    return min(BACKOFF_INITIAL * 2 ** (restarts_in_window - 1), BACKOFF_MAX)


def restart_when(backoff: float) -> str:
    """The leader's log words for it."""
    return f"restart in {backoff:.0f} s" if backoff else "restart at once (first in the window)"
