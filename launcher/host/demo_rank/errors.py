"""Exit codes, and the errors that end a demo rank with one.

0 stopped by SIGTERM/SIGINT; 2 environment (or usage) invalid; 3 ranktable wrong or not completed
in time, or barrier membership wrong (duplicate rank, foreign instance); 4 barrier failed
(timeout, rank 0 unreachable, cannot listen); 5 --fail-barrier; 6 health port unavailable;
7 LLM-DataDist link failed (prompt side cannot listen; decoder side cannot link); 8 --ray: the Ray
cluster gave no placement group, or an actor (its node) died; 17 --crash-after elapsed.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_ENV = 2
EXIT_MISMATCH = 3
EXIT_BARRIER = 4
EXIT_FAIL_BARRIER = 5
EXIT_HEALTH = 6
EXIT_LINK = 7
EXIT_RAY = 8
EXIT_CRASH = 17


class DemoRankError(Exception):
    """A failure that ends the process with `code` and one line of text."""

    code = 1

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class EnvError(DemoRankError):
    """An environment variable is missing or invalid."""

    code = EXIT_ENV


class TableError(DemoRankError):
    """The ranktable is malformed, not completed, or disagrees with the env."""

    code = EXIT_MISMATCH


class BarrierRejected(DemoRankError):
    """A peer's hello cannot belong to this world (duplicate rank, other instance, bad rank)."""

    code = EXIT_MISMATCH


class BarrierFailed(DemoRankError):
    """The world did not meet: timeout, rank 0 unreachable, or rank 0 cannot listen."""

    code = EXIT_BARRIER


class HealthError(DemoRankError):
    """The health endpoint cannot be served."""

    code = EXIT_HEALTH


class LinkError(DemoRankError):
    """An LLM-DataDist link failed: cannot listen, prompt unreachable, or the link was refused."""

    code = EXIT_LINK


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: stop cleanly."""
