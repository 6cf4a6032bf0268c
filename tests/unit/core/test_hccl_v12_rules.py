"""HCCL's ranktable v1.2 parser rules, applied to every v1.2 table every example config renders.

The rules are written from what HCCL's parser enforces (CANN hcomm topoinfo_ranktableConcise.cc,
hicann/hccl rank_table_config_a3.md; ASCEND_REFERENCE §1.3 and issue 15), not from our renderer:
`violations` knows nothing of launcher.core. Mutated tables prove each rule can fail.
"""
from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from launcher.core.pipeline import compile_text, rendered
from launcher.deploy.files import compile_file
from tests.helpers import CONFIGS

TOP_KEYS = ["status", "version", "server_count", "server_list", "super_pod_list"]  # the A3 guide's example
DEVICE_KEYS = ["device_id", "super_device_id", "device_ip", "rank_id"]


def _decimal(x: Any) -> bool:
    return isinstance(x, str) and x.isdigit()


def _strings_only(node: Any, where: str, out: list[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _strings_only(v, f"{where}.{k}", out)
    elif isinstance(node, list):
        for k, v in enumerate(node):
            _strings_only(v, f"{where}[{k}]", out)
    elif not isinstance(node, str):
        out.append(f"{where}: every value is a string, found {node!r}")


def violations(t: Any, key_order: bool = True) -> list[str]:
    """Every v1.2 rule the table breaks (empty: HCCL's parser would take it)."""
    out: list[str] = []
    if not isinstance(t, dict):
        return ["not an object"]
    _strings_only(t, "", out)
    if t.get("status") != "completed":
        out.append("status must be 'completed'")
    if t.get("version") != "1.2":
        out.append("version must be '1.2'")
    if key_order and [k for k in t if k in TOP_KEYS] != TOP_KEYS:
        out.append(f"top-level keys out of the guide's order: {list(t)}")
    servers = t.get("server_list")
    if not isinstance(servers, list) or not servers:
        return out + ["server_list must be a non-empty list"]
    if t.get("server_count") != str(len(servers)):
        out.append("server_count must equal the length of server_list")
    ids = [s.get("server_id") for s in servers]
    for sid in ids:
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            out.append(f"server_id {sid!r}: non-empty, at most 64 characters")
    if len(set(ids)) != len(ids):
        out.append("server_id must be unique")
    ranks_of: dict[str, list[int]] = {}
    ips: list[str] = []
    sdid_of: dict[str, list[str]] = {}
    for s in servers:
        if "host_ip" in s:
            try:
                ipaddress.ip_address(s["host_ip"])
            except ValueError:
                out.append(f"host_ip {s['host_ip']!r} must be an IP")
        for d in s.get("device", []):
            if key_order and [k for k in d if k in DEVICE_KEYS] != [k for k in DEVICE_KEYS if k in d]:
                out.append(f"device keys out of the guide's order: {list(d)}")
            if not _decimal(d.get("device_id")) or not _decimal(d.get("rank_id")):
                out.append(f"device_id and rank_id must be decimal strings: {d}")
                continue
            ranks_of.setdefault(s["server_id"], []).append(int(d["rank_id"]))
            sdid = d.get("super_device_id")
            if sdid is None or not _decimal(sdid):
                out.append(f"rank {d['rank_id']}: super_device_id missing or not an integer ({sdid!r})")
            else:
                sdid_of.setdefault(s["server_id"], []).append(sdid)
            if "device_ip" in d:
                ips.extend(d["device_ip"].split(","))
    ranks = sorted(r for rs in ranks_of.values() for r in rs)
    if ranks != list(range(len(ranks))):
        out.append(f"rank_id must be contiguous from 0: {ranks}")
    for sid, rs in ranks_of.items():
        if sorted(rs) != list(range(min(rs), min(rs) + len(rs))):
            out.append(f"rank ids of server {sid} interleave with another server's: {sorted(rs)}")
    if len(set(ips)) != len(ips):
        out.append("device_ip must be unique across the table")
    pods = t.get("super_pod_list")
    if not isinstance(pods, list) or not pods:
        return out + ["super_pod_list is required in v1.2"]
    pod_of: dict[str, str] = {}
    pod_ids = [p.get("super_pod_id") for p in pods]
    if any(not p for p in pod_ids) or len(set(pod_ids)) != len(pod_ids):
        out.append(f"super_pod_id must be non-empty and unique: {pod_ids}")
    for p in pods:
        for entry in p.get("server_list", []):
            sid = entry.get("server_id")
            if sid not in ids:
                out.append(f"super_pod_list server {sid!r} is not in server_list")
            if sid in pod_of:
                out.append(f"server {sid!r} is in two pods")
            pod_of[sid] = p.get("super_pod_id")
    if sum(len(p.get("server_list", [])) for p in pods) != len(servers):
        out.append("the pods' servers must add up to server_count")
    for sid in ids:
        if sid not in pod_of:
            out.append(f"server {sid!r} (its ranks) has no pod")
    for pod in set(pod_of.values()):
        sdids = [x for sid in ids if pod_of.get(sid) == pod for x in sdid_of.get(sid, [])]
        if len(set(sdids)) != len(sdids):
            out.append(f"super_device_id must be unique within pod {pod}")
    order = [pod_of.get(sid) for sid in ids]
    runs = [p for k, p in enumerate(order) if k == 0 or order[k - 1] != p]
    if len(runs) != len(set(runs)):
        out.append(f"the servers of one pod must be listed together: {order}")
    if len(pods) > 1 and any("device_ip" not in d for s in servers for d in s.get("device", [])):
        out.append("device_ip is required across pods")
    return out


def v12_tables(config: Path) -> list[tuple[str, dict[str, Any], bool]]:
    """(where, table, is a plain HCCL table) for every v1.2 table the config renders."""
    _, files = rendered(compile_file(str(config)).plan)
    out = []
    for host, tree in files.items():
        for rel, f in tree.items():
            if not rel.endswith(".json"):
                continue
            doc = json.loads(f.content)
            if rel.startswith("ranktables/") and doc.get("version") == "1.2" and "server_list" in doc:
                out.append((f"{host}/{rel}", doc, "group_id" not in doc))
            for link in doc.get("links", []) if rel.startswith("llm_datadist/") else []:
                table = json.loads(link["rank_table"])
                if table.get("version") == "1.2":
                    out.append((f"{host}/{rel}:{link['comm_name']}", table, True))
    return out


ALL = [(c.stem, where, table, plain) for c in sorted(CONFIGS.glob("*.yaml")) for where, table, plain in v12_tables(c)]


def test_the_a3_configs_render_v12_tables_of_every_kind():
    kinds = {(stem, "llm_datadist" in where, "local_ranktable" in where) for stem, where, _, _ in ALL}
    assert ("a3-superpod-2x16", False, False) in kinds
    assert ("a3-two-superpods", False, False) in kinds
    assert ("a3-pd-datadist", True, False) in kinds and ("a3-pd-datadist", False, True) in kinds


@pytest.mark.parametrize("stem,where,table,plain", ALL, ids=[w for _, w, _, _ in ALL])
def test_every_rendered_v12_table_passes_hccl_rules(stem, where, table, plain):
    assert violations(table, key_order=plain) == [], f"{stem}: {where}"


def _two_pods() -> dict[str, Any]:
    tables = [t for stem, w, t, _ in ALL if stem == "a3-two-superpods" and "ranktables/" in w]
    return copy.deepcopy(tables[0])


def _dev(t: dict, s: int, d: int) -> dict:
    return t["server_list"][s]["device"][d]


MUTATIONS: dict[str, tuple[Callable[[dict], Any], str]] = {
    "int value": (lambda t: _dev(t, 0, 0).update(rank_id=0), "every value is a string"),
    "status": (lambda t: t.update(status="initializing"), "status must be"),
    "version": (lambda t: t.update(version="1.0"), "version must be"),
    "server_count": (lambda t: t.update(server_count="3"), "server_count must equal"),
    "long server_id": (lambda t: t["server_list"][0].update(server_id="x" * 65), "at most 64"),
    "duplicate server_id": (lambda t: t["server_list"][1].update(server_id=t["server_list"][0]["server_id"]),
                            "server_id must be unique"),
    "rank gap": (lambda t: _dev(t, 3, 15).update(rank_id="99"), "contiguous from 0"),
    "interleaved ranks": (lambda t: (_dev(t, 0, 15).update(rank_id="16"), _dev(t, 1, 0).update(rank_id="15")),
                          "interleave"),
    "duplicate device_ip": (lambda t: _dev(t, 2, 0).update(device_ip=_dev(t, 0, 0)["device_ip"]),
                            "device_ip must be unique"),
    "no sdid": (lambda t: _dev(t, 1, 3).pop("super_device_id"), "super_device_id missing"),
    "empty sdid": (lambda t: _dev(t, 1, 3).update(super_device_id=""), "super_device_id missing"),
    "duplicate sdid in pod": (lambda t: _dev(t, 1, 3).update(super_device_id=_dev(t, 0, 3)["super_device_id"]),
                              "unique within pod"),
    "no super_pod_list": (lambda t: t.pop("super_pod_list"), "super_pod_list is required"),
    "unknown pod server": (lambda t: t["super_pod_list"][0]["server_list"].append({"server_id": "nobody"}),
                           "not in server_list"),
    "empty pod id": (lambda t: t["super_pod_list"][0].update(super_pod_id=""), "non-empty and unique"),
    "duplicate pod id": (lambda t: t["super_pod_list"][1].update(super_pod_id="0"), "non-empty and unique"),
    "server without pod": (lambda t: t["super_pod_list"][1]["server_list"].pop(), "add up to server_count"),
    "pods interleaved": (lambda t: t["server_list"].insert(1, t["server_list"].pop(2)), "listed together"),
    "no device_ip across pods": (lambda t: _dev(t, 0, 0).pop("device_ip"), "required across pods"),
    "bad host_ip": (lambda t: t["server_list"][0].update(host_ip="node-a"), "must be an IP"),
    "key order": (lambda t: t.update(status=t.pop("status")), "out of the guide's order"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_mutated_table_breaks_its_rule(name):
    table = _two_pods()
    assert violations(table) == []
    mutate, expected = MUTATIONS[name]
    mutate(table)
    found = violations(table)
    assert any(expected in v for v in found), found


def test_the_render_benchmarks_a3_topology_passes_hccl_rules():
    """bench/render_scale.py --a3, small: 48 A3 hosts in 2 SuperPoDs, instances of 16 servers (one
    of them across the pods' boundary)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("render_scale", CONFIGS.parent / "bench" / "render_scale.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    plan = compile_text(bench.topology_text(48, 16, 16, a3=True), "bench.yaml").plan
    tables = [i.ranktable.value() for i in plan.instances]
    assert len(tables) == 3 and [len(t["super_pod_list"]) for t in tables] == [1, 2, 1]
    for t in tables:
        assert violations(t) == []


def test_the_demo_rank_accepts_every_rank_of_a_v12_table():
    """The demo rank (the e2e tests' stand-in for a serving rank) reads v1.2 tables as they are
    rendered: every rank of a3-two-superpods finds its own entry from its env."""
    from launcher.host.demo_rank.identity import check_table, parse_env
    config = CONFIGS / "a3-two-superpods.yaml"
    result = compile_file(str(config))
    inst = result.plan.instances[0]
    table = inst.ranktable.value()
    for hp in result.plan.hosts:
        prog = hp.programs[0]
        env = dict(prog.env)
        for r in (r for r in inst.ranks if r.host == hp.host.name):
            ident = parse_env({**env, "RANK": str(r.rank), "LOCAL_RANK": str(r.local_rank),
                               "DEVICE_ID": str(r.device_id), "LAUNCHER_DEVICE_IP": r.device_ip})
            assert check_table(table, ident).device_ip == r.device_ip
