"""No side of the package (core, deploy, host, cli) has an import cycle among its modules.

(Their length and docstrings: test_boundaries.) In deploy the commands (apply) use the dependency
levels and the roll, which use the gangs and the session, never the other way round; in host the
agent uses its helpers (members, gang start, followers), which see it only through a small protocol.

Imports inside functions count too: a function-level import that dodges a cycle at load time
is still a cycle in the design.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import launcher
from tests.unit.test_boundaries import SIDES, _dotted, _modules, package_imports

PKG = Path(launcher.__file__).parent


def graph_of(side: str) -> dict[str, set[str]]:
    """launcher.SIDE.X -> the launcher.SIDE modules X imports (anywhere in it)."""
    mods = {_dotted(p): p for p in _modules(side)}
    return {m: {i for i in package_imports(p) if i in mods and i != m} for m, p in mods.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first one repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        if m in path:
            return path[path.index(m):] + [m]
        if m in done:
            return None
        path.append(m)
        for n in sorted(graph.get(m, ())):
            found = visit(n)
            if found:
                return found
        path.pop()
        done.add(m)
        return None

    for m in sorted(graph):
        found = visit(m)
        if found:
            return found
    return None


@pytest.mark.parametrize("side", SIDES)
def test_the_side_has_no_import_cycle(side):
    found = cycle(graph_of(side))
    assert found is None, " -> ".join(found or [])


def test_the_checker_sees_function_level_imports_and_finds_cycles():
    # the test above would pass vacuously if the graph missed imports made inside functions
    # (the CLI imports launcher.deploy.apply only inside its commands) or could not see a cycle
    assert "launcher.deploy.apply" in package_imports(PKG / "cli" / "remote.py")
    assert "launcher.deploy.session" in graph_of("deploy")["launcher.deploy.apply"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
