"""Dependencies between instances and services: explicit depends_on plus implied edges."""
from __future__ import annotations

from .model import DatasystemSpec, Topology


def dependency_edges(topo: Topology) -> dict[str, tuple[str, ...]]:
    """name -> names it must wait for, explicit first, then implied (in a stable order)."""
    edges: dict[str, tuple[str, ...]] = {}
    for svc in topo.services:
        implied = (svc.spec.etcd,) if isinstance(svc.spec, DatasystemSpec) else ()
        edges[svc.name] = _uniq(svc.depends_on + implied)
    for inst in topo.instances:
        implied = (inst.datasystem,) if inst.datasystem else ()
        edges[inst.name] = _uniq(inst.depends_on + implied)
    return edges


def _uniq(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def find_cycle(edges: dict[str, tuple[str, ...]]) -> list[str] | None:
    """One dependency cycle as a path (a -> b -> a), or None. Unknown names are ignored."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in edges.get(node, ()):
            if dep not in edges:
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for name in edges:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def start_levels(edges: dict[str, tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """Kahn's layering: level k may start once every level < k is ready. Assumes no cycle."""
    done: set[str] = set()
    levels: list[tuple[str, ...]] = []
    remaining = list(edges)
    while remaining:
        level = tuple(n for n in remaining if all(d in done or d not in edges for d in edges[n]))
        if not level:
            raise ValueError("dependency cycle")
        levels.append(level)
        done.update(level)
        remaining = [n for n in remaining if n not in done]
    return tuple(levels)
