"""pytest fixtures for the network-namespace testbed.

Enable once in tests/conftest.py:  pytest_plugins = ["tests.testbed.fixtures"]

- `testbed_factory` (session): `make(n)` builds a fresh testbed of n hosts; every testbed it
  made is torn down at the end of the session, also after failures or an interrupted run.
- `testbed` (module): one shared testbed per test module, of `TESTBED_HOSTS` hosts (a module
  global, default 4; `TESTBED_CLOCKS = True`: hosts' clocks can be set off, `tb.set_clock`),
  torn down when the module is done.
Both skip, with the reason, where a testbed cannot be built (not root, no netns, no sshd).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .core import Testbed, unavailable_reason

SKIP_PREFIX = "testbed needs root and network namespaces"
DEFAULT_HOSTS = 4


def skip_unless_available() -> None:
    """Skip the calling test/fixture with a clear reason if this machine cannot host a testbed."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"{SKIP_PREFIX}: {reason}")


@pytest.fixture(scope="session")
def testbed_factory() -> Iterator[Callable[..., Testbed]]:
    skip_unless_available()
    made: list[Testbed] = []

    def make(n: int = DEFAULT_HOSTS, **kw: Any) -> Testbed:
        tb = Testbed.up(n, **kw)
        made.append(tb)
        return tb

    try:
        yield make
    finally:
        _down_all(made)


@pytest.fixture(scope="module")
def testbed(request: pytest.FixtureRequest, testbed_factory: Callable[..., Testbed]) -> Iterator[Testbed]:
    tb = testbed_factory(getattr(request.module, "TESTBED_HOSTS", DEFAULT_HOSTS),
                         clocks=getattr(request.module, "TESTBED_CLOCKS", False))
    try:
        yield tb
    finally:
        tb.down()  # now, not at session end: later modules get the memory and names back


def _down_all(testbeds: list[Testbed]) -> None:
    """Tear down every testbed even if one teardown fails; then report the failures."""
    errors = []
    for tb in reversed(testbeds):
        try:
            tb.down()  # idempotent: tests that already called down() are fine
        except Exception as exc:  # keep going: one failure must not leak the others
            errors.append(f"{tb.root}: {exc}")
    if errors:
        raise RuntimeError("testbed teardown failed: " + "; ".join(errors))
