"""What the agent's helpers (members, gang start, followers, the agent port, /metrics) may use of the agent.

They take the agent as this protocol, not as agent.py's class, so the host side has no import
cycle: agent.py uses its helpers, never the other way round. Imported for type checking only.
"""
from __future__ import annotations

import threading
from typing import Callable, Protocol, TypeVar

from .messages import Verifier

T = TypeVar("T")
R = TypeVar("R")


class AgentApi(Protocol):
    root: str
    locks: dict[str, threading.Lock]   # per gang: one restart, start or follow at a time
    pending: dict[str, dict]           # a report that came in while its gang was being restarted
    verifier: Verifier
    busy: int                          # gang work under way (state/agent-busy)

    def task(self, fn: Callable[..., object], *args: object) -> None: ...

    def each(self, fn: Callable[[T], R], items: list[T]) -> list[R | BaseException]: ...

    def conf(self) -> dict: ...

    def send(self, peer: dict, body: dict, timeout: float = ...) -> dict: ...

    def local_start(self, group: str, snapshot: bool = True) -> dict: ...

    def all_members(self, gang: dict, op: str) -> list[dict]: ...

    def dispatch(self, body: dict) -> dict: ...
