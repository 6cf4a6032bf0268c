"""Start order: dependency edges (explicit depends_on plus implied), cycles and levels.

Implied edges:
- a datasystem service waits for its etcd; an instance waits for its datasystem;
- LLM-DataDist (seeds 000, 001): a decoder instance waits for every prompt instance it links
  to, because the prompt side must listen before the decoder side links. `up` then starts
  the prompts first and starts a decoder only once its prompts pass their own readiness
  probe (there is no implied probe: without one a prompt is ready once its processes run).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from .model import DatasystemSpec, Topology

if TYPE_CHECKING:
    from .plan import LinkMember


def dependency_edges(topo: Topology) -> dict[str, tuple[str, ...]]:
    """name -> names it must wait for, explicit first, then implied (in a stable order)."""
    edges: dict[str, tuple[str, ...]] = {}
    for svc in topo.services:
        implied: tuple[str, ...] = (svc.spec.etcd,) if isinstance(svc.spec, DatasystemSpec) else ()
        edges[svc.name] = _uniq(svc.depends_on + implied)
    links = link_edges(topo)
    for inst in topo.instances:
        implied = (inst.datasystem,) if inst.datasystem else ()
        implied += inst.restart_with  # restarted once they are ready again: started once they are ready
        implied += tuple(p for (d, p) in links if d == inst.name)
        edges[inst.name] = _uniq(inst.depends_on + implied)
    return edges


def link_edges(topo: Topology) -> dict[tuple[str, str], str]:
    """(decoder instance, prompt instance) -> the first link (comm_name) that implies the edge.

    In file order. An instance linked to itself (prompt and decoder clusters in one instance)
    gives no edge: validation refuses that topology with its own message."""
    by_id = {c.id: c for c in topo.dd_clusters}
    out: dict[tuple[str, str], str] = {}
    for link in topo.dd_links:
        members = [by_id[c] for c in link.clusters if c in by_id]
        prompts = [c.instance for c in members if c.role == "prompt"]
        for d in (c.instance for c in members if c.role == "decoder"):
            for p in prompts:
                if p != d:
                    out.setdefault((d, p), link.name)
    return out


def relink_after(links: Sequence[tuple[str, Sequence[LinkMember]]], restarted: Iterable[str]) -> list[str]:
    """The decoder instances to restart, after `restarted`, because they link to one of them.

    LLMDataDist.link() does not survive the peer's restart: a decoder linked to a prompt
    instance that restarts has to link again, and only a restart makes the demo (and a real
    server that links once at start-up) do that. Restarting a decoder needs nothing else: the
    prompt side keeps listening and accepts the new link. `links` is Plan.links; plan order."""
    again = set(restarted)
    out: dict[str, None] = {}
    for _name, members in links:
        if any(m.role == "prompt" and m.instance in again for m in members):
            out.update((m.instance, None) for m in members if m.role == "decoder" and m.instance not in again)
    return list(out)


def restart_with_after(restart_with: Mapping[str, Sequence[str]], restarted: Iterable[str]) -> list[str]:
    """The instances to restart, after `restarted`, because they say `restart_with:` one of them,
    transitively (what follows a follower restarts too); in the plan's order. `restart_with` is
    Plan.restart_with (follower -> what it restarts with)."""
    again = set(restarted)
    out: dict[str, None] = {}
    grew = True
    while grew:
        grew = False
        for follower, leaders in restart_with.items():
            if follower not in again and any(x in again for x in leaders):
                again.add(follower)
                out[follower] = None
                grew = True
    return list(out)


def restart_after(links: Sequence[tuple[str, Sequence[LinkMember]]], restart_with: Mapping[str, Sequence[str]],
                  restarted: Iterable[str]) -> list[str]:
    """Everything a restart of `restarted` restarts afterwards: the decoders linked to a restarted
    prompt (relink_after) and the instances that restart with one (restart_with_after), and so on."""
    done = list(dict.fromkeys(restarted))
    out: dict[str, None] = {}
    while True:
        more = [n for n in relink_after(links, done) + restart_with_after(restart_with, done) if n not in out]
        if not more:
            return list(out)
        out.update(dict.fromkeys(more))
        done += more


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
