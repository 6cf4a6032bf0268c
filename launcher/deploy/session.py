"""A command's clients for every host of a plan, the fan-out across them, and progress lines."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from ..core.plan import Plan
from .interrupt import NEVER, Interrupt
from .remote import HostClient
from .runtime import build_runtime
from .transport import DEFAULT_FORKS, HostsFailed, SshOptions, fan_out, transport_for

Progress = Callable[[str], None]
STATE_TIMEOUT = 30.0  # reading a host's state is quick; a host that does not answer is down
R = TypeVar("R")


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(progress: Progress, t0: float) -> Progress:
    """``progress`` with the time since ``t0`` after each step line (indented), for people and profiles."""
    def say(msg: str) -> None:
        progress(f"{msg}  [{time.monotonic() - t0:.1f} s]" if msg.startswith("  ") else msg)
    return say


@dataclass
class Session:
    """Clients for every host of a plan; closed at the end of a command."""

    plan: Plan
    forks: int = DEFAULT_FORKS
    ssh: SshOptions = field(default_factory=SshOptions)
    progress: Progress = stderr_progress
    interrupt: Interrupt = NEVER  # Ctrl-C: long operations stop at their next safe point

    def __post_init__(self) -> None:
        runtime = build_runtime()
        self.clients = {hp.host.name: HostClient(transport_for(hp.host, self.ssh), hp.root, runtime)
                        for hp in self.plan.hosts}

    def close(self) -> None:
        for c in self.clients.values():
            c.transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lock_host_blank(self) -> bool:
        """The deployment lock's host had nothing of the deployment when this command took the lock."""
        fence = next(iter(self.clients.values())).fence if self.clients else None
        return fence is not None and fence.lock_host_blank

    def ensure_runtimes(self) -> None:
        """Ship the host-side code where it is missing (check and discover need it before any up)."""
        self.each("installing the launcher runtime", lambda c: c.ensure_runtime(c.state()))

    def each(self, what: str, fn: Callable[[HostClient], R], hosts: list[str] | None = None) -> dict[str, R]:
        """``fn`` on the clients of ``hosts`` (default: all), in parallel; HostsFailed naming every failure."""
        names = hosts if hosts is not None else list(self.clients)
        results, failures = self.fan_out(fn, names)
        if failures:
            raise HostsFailed(failures, what)
        return results

    def fan_out(self, fn: Callable[[HostClient], R],
                hosts: list[str] | None = None) -> tuple[dict[str, R], dict[str, BaseException]]:
        """``fn`` on the clients of ``hosts`` (default: all), in parallel: (results, failures) by host."""
        names = hosts if hosts is not None else list(self.clients)
        return fan_out([self.clients[n] for n in names], fn, key=lambda c: c.name, forks=self.forks)


def owners_on(plan: Plan) -> dict[str, list[str]]:
    """owner (instance or service) -> hosts it has programs on, in plan order."""
    out: dict[str, list[str]] = {}
    for hp in plan.hosts:
        for p in hp.programs:
            hosts = out.setdefault(p.owner, [])
            if hp.host.name not in hosts:
                hosts.append(hp.host.name)
    return out
