"""launcher/deploy has no import cycle among its modules (their length and docstrings: test_boundaries).

The commands (apply) use the dependency levels and the roll, which use the gangs and the
session, never the other way round.

Imports inside functions count too: a function-level import that dodges a cycle at load time
is still a cycle in the design.
"""
from __future__ import annotations

from pathlib import Path


import launcher
from tests.unit.test_boundaries import _dotted, _modules, package_imports

PKG = Path(launcher.__file__).parent


def deploy_graph() -> dict[str, set[str]]:
    """launcher.deploy.X -> the launcher.deploy modules X imports (anywhere in it)."""
    mods = {_dotted(p): p for p in _modules("deploy")}
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


def test_the_deploy_package_has_no_import_cycle():
    found = cycle(deploy_graph())
    assert found is None, " -> ".join(found or [])


def test_the_checker_sees_function_level_imports_and_finds_cycles():
    # the test above would pass vacuously if the graph missed imports made inside functions
    # (cli.py imports launcher.deploy.apply only inside its commands) or could not see a cycle
    assert "launcher.deploy.apply" in package_imports(PKG / "cli.py")
    assert "launcher.deploy.session" in deploy_graph()["launcher.deploy.apply"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
