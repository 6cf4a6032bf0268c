"""Process helpers for the testbed: run many short commands at once, tell live PIDs from dead.

Stdlib only. Kept apart from the testbed logic so that both `up` and `down` (possibly in
another process, after a crash) share one definition of "this PID is still our process".
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


class TestbedError(RuntimeError):
    """A testbed could not be brought up, used, or torn down; the message says what and where."""

    __test__ = False  # not a pytest test class despite the name


# Commands started at once; 2 cores saturate long before this, it only bounds open pipes.
_PARALLEL = 32


def run_checked(argv: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command; on failure raise with the command and its stderr (not a bare exit code)."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def run_parallel(commands: Iterable[Sequence[str]]) -> None:
    """Run independent commands concurrently (key generation, netns creation); fail on the first error."""
    pending = [list(c) for c in commands]
    while pending:
        batch, pending = pending[:_PARALLEL], pending[_PARALLEL:]
        procs = [
            (argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True))
            for argv in batch
        ]
        errors = []
        for argv, proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()}")
        if errors:
            raise TestbedError("; ".join(errors))


def start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot), or None if it is gone or a zombie.

    Stored next to every PID we record, so a later `down` never kills an unrelated process
    that happens to reuse the number.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    state, started = fields[0], int(fields[19])
    # A zombie has exited already; it only waits to be reaped (pitfall 11: it can linger).
    return None if state in ("Z", "X") else started


def alive(pid: int | None, started: int | None) -> bool:
    """True if `pid` is running and is the same process that was recorded (same start time)."""
    return pid is not None and started is not None and start_time(pid) == started


def kill(pid: int, started: int | None, sig: int = signal.SIGKILL) -> None:
    """Signal `pid` only if it is still the recorded process."""
    if started is None or alive(pid, started):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def netns_pids(netns_files: Iterable[Path]) -> dict[Path, list[int]]:
    """PIDs whose network namespace is one of `netns_files` (/run/netns/NAME), in one /proc scan.

    This is what `ip netns pids NAME` does, done once for all hosts instead of once per host.
    Zombies have no namespaces left and are not listed.
    """
    wanted: dict[tuple[int, int], Path] = {}
    for f in netns_files:
        try:
            st = os.stat(f)
        except FileNotFoundError:
            continue
        wanted[(st.st_dev, st.st_ino)] = f
    found: dict[Path, list[int]] = {f: [] for f in wanted.values()}
    if not wanted:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue
        owner = wanted.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
