"""What parsing, expanding and rendering cost per rank, counted in Python calls (not timed: the
count is the same on every machine and under any load).

bench/render_scale.py measures the time of the same stages at 16,384 ranks against its floor;
these bounds keep the per-rank work it found from coming back. Before issue 26 a rank cost
~117 calls to parse (a second walk of the node tree for the alias bounds), ~71 to expand and
~116 to render (a JSON encoder made per small container; each member host formatting the same
gang again); after: ~38, ~47, ~71. Per-rank string building (2026-12-07: env lines cached per
pair, per-owner parts of supervisord.conf made once, a rank's env from its host's shared pairs,
gang entries keyed without encoding them) took expand from ~47 to ~44 and render from ~67
(d591acb) to ~53. Session 14: plain scalars' tags cached by text and a mapping's scalar pairs
built inline took parse from ~38 to ~30; a rank's probe looked up once per host and Program's
own __init__ took expand from ~45 to ~39; manifest entries around cached text and the env's
split by position took render from ~53 to ~50.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import pytest

from launcher.core.expand import _Expander
from launcher.core.load import build_topology
from launcher.core import envfile, render as render_mod
from launcher.core.render import render
from launcher.core.yamlsrc import load_yaml


def _topology(hosts: int, devices: int = 8, per_instance: int = 16) -> str:
    out = ["version: 1", "name: scale", "defaults:", "  ssh: {user: root}", "hosts:"]
    for h in range(hosts):
        out += [f"  - name: node{h:04d}", f"    address: 10.{100 + h // 250}.{h % 250}.1", "    devices:"]
        out += [f"      {d}: 29.{h // 250}.{h % 250}.{d + 1}" for d in range(devices)]
    out.append("instances:")
    for i in range(hosts // per_instance):
        members = ", ".join(f"node{h:04d}" for h in range(i * per_instance, (i + 1) * per_instance))
        out += [f"  - name: model{i:03d}", f"    hosts: [{members}]", "    command: [python3, run.py]"]
    return "\n".join(out) + "\n"


def _calls(fn: Callable[[], Any]) -> tuple[Any, int]:
    """fn's result and how many Python and C functions it called."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
    sys.setprofile(profile)
    try:
        result = fn()
    finally:
        sys.setprofile(None)
    return result, count


def _per_rank(hosts: int) -> dict[str, float]:
    text = _topology(hosts)
    ranks = hosts * 8
    for cache in (envfile.sh_quote, envfile._export, envfile._slot_export, render_mod._entry_parts):
        cache.cache_clear()  # a warm quoting cache from another test would hide the quoting's cost
    src, parse = _calls(lambda: load_yaml(text, "scale.yaml"))
    topo = build_topology(src)
    plan, expand = _calls(lambda: _Expander(topo).run())
    _, rendered = _calls(lambda: render(plan))
    return {"parse": parse / ranks, "expand": expand / ranks, "render": rendered / ranks}


@pytest.fixture(scope="module")
def costs() -> dict[int, dict[str, float]]:
    return {hosts: _per_rank(hosts) for hosts in (32, 128)}


@pytest.mark.parametrize("stage,bound", [("parse", 40), ("expand", 42), ("render", 53)])
def test_a_rank_costs_few_calls(costs: dict[int, dict[str, float]], stage: str, bound: int):
    assert costs[128][stage] <= bound, costs[128]


@pytest.mark.parametrize("stage", ["parse", "expand", "render"])
def test_the_cost_per_rank_does_not_grow_with_the_hosts(costs: dict[int, dict[str, float]], stage: str):
    assert costs[128][stage] <= costs[32][stage] * 1.1, costs
