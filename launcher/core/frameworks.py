"""What each serving stack (``framework:`` on an instance) accepts, checked before anything ships.

The rules are the consumers' own (docs/TOPOLOGY.md "Frameworks", reference §1.3 and §7):
- every ranktable: HCCL's parser wants ``server_id`` non-empty, unique, at most 64 characters;
- ``atb`` (seed 004's ATB launch) and ``mindie-service``: ATB's ``check_ranktable`` wants
  ``server_id`` to be an IP address and its ``safe_open`` a path of ``[0-9A-Za-z_./-]`` only;
- ``mindie-service``: MindIE-LLM's rank table check (2..60 servers, 1..32 devices on each, the
  same count everywhere, rank ids 0..511, a ``container_ip`` on every server), one daemon per
  server, a readable base config.json;
- ``vllm-ascend``: per node its own ``HCCL_IF_IP``; data parallel arguments consistent across
  nodes (``--headless`` and the start rank on all but the first); Mooncake's ``kv_port`` above
  the range its transport takes at random, ``engine_id`` unique. These are checked on the plan,
  once placeholders are filled per host.
Pure: Topology (and Plan) -> (path, message) pairs / Diagnostics.
"""
from __future__ import annotations

import ipaddress
import json
import re
import shlex
from typing import Any, Iterator

from .errors import Diagnostic
from .model import Host, Instance, Topology
from .plan import Plan, Program
from .yamlsrc import Path, format_path

ATB = "atb"
MINDIE = "mindie-service"
VLLM = "vllm-ascend"
IP_SERVER_ID = (ATB, MINDIE)  # consumers that read server_id as an IP address
MAX_SERVER_ID = 64            # HCCL's parser
MINDIE_SERVERS = (2, 60)      # MindIE-LLM ranktable_config.cpp
MINDIE_DEVICES = (1, 32)
MINDIE_MAX_RANK = 511
SAFE_PATH = re.compile(r"[0-9A-Za-z_./-]+")  # ATB file_utils.standardize_path
# set per host by the framework (framework_files.py): a user value would point MindIE elsewhere
MINDIE_ENV = ("MIES_CONTAINER_IP", "HOST_IP", "MIES_CONFIG_JSON_PATH")
KV_PORT_BASE, KV_PORT_PER_NPU = 20000, 1000  # Mooncake's transport takes random ports below this


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _has(topo: Topology, path: Path) -> bool:
    node: Any = topo.locs.data if topo.locs is not None else None
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _server_id_path(topo: Topology, i: int) -> Path:
    return ("hosts", i, "server_id") if _has(topo, ("hosts", i, "server_id")) else ("hosts", i, "address")


def _env_path(topo: Topology, i: int, key: str) -> Path:
    """Where the topology sets ``key`` for instance i; the instance itself when the framework set it."""
    for path in (("instances", i, "env", key), ("defaults", "env", key)):
        if _has(topo, path):
            return path
    return ("instances", i, "name")


def check(topo: Topology) -> list[tuple[Path, str]]:
    """Every problem with the server ids and the frameworks' rules, as (path, message)."""
    out: list[tuple[Path, str]] = []
    index = {h.name: k for k, h in enumerate(topo.hosts)}
    for k, h in enumerate(topo.hosts):
        if len(h.server_id) > MAX_SERVER_ID:  # the address, when server_id is not set
            out.append((_server_id_path(topo, k), f"host {h.name}: server_id {h.server_id!r} is "
                        f"{len(h.server_id)} characters; HCCL's ranktable parser takes at most {MAX_SERVER_ID}"))
    said: set[tuple[str, str]] = set()
    for i, inst in enumerate(topo.instances):
        base = ("instances", i)
        if inst.mindie is not None and inst.framework != MINDIE:
            out.append(((*base, "mindie"), f"instance {inst.name}: `mindie:` needs framework: {MINDIE}"))
        if inst.framework is None:
            continue
        hosts = [(index[n], topo.hosts[index[n]]) for n in inst.hosts if n in index]
        if inst.framework in IP_SERVER_ID:
            for k, h in hosts:
                if not is_ip(h.server_id) and (h.name, "server_id") not in said:
                    said.add((h.name, "server_id"))
                    out.append((_server_id_path(topo, k), f"host {h.name}: server_id {h.server_id!r} is not an IP "
                                f"address; instance {inst.name} ({inst.framework}) reads the ranktable with ATB's "
                                "check_ranktable, which takes only IPs: set server_id to the host's IP"))
                root = h.deploy_dir
                if not SAFE_PATH.fullmatch(root) and (h.name, "deploy_dir") not in said:
                    said.add((h.name, "deploy_dir"))
                    where = ("hosts", k, "deploy_dir") if _has(topo, ("hosts", k, "deploy_dir")) else \
                        ("defaults", "deploy_dir")
                    out.append((where, f"host {h.name}: deploy_dir {root!r} holds a character outside "
                                f"[0-9A-Za-z_./-]; ATB refuses to open a ranktable under it ({inst.name})"))
        if inst.framework == MINDIE:
            out.extend(_mindie(topo, i, inst, hosts))
        if inst.framework == VLLM and inst.processes != "per_host":
            out.append(((*base, "processes"), f"instance {inst.name}: one `vllm serve` (or `ray start`) drives "
                        "all NPUs of a node; set processes: per_host"))
    return out


def _mindie(topo: Topology, i: int, inst: Instance, hosts: list[tuple[int, Host]]) -> Iterator[tuple[Path, str]]:
    base = ("instances", i)
    lo, hi = MINDIE_SERVERS
    if not lo <= len(inst.hosts) <= hi:
        yield ((*base, "hosts"), f"instance {inst.name}: MindIE multi-node takes {lo}..{hi} servers, "
               f"got {len(inst.hosts)}")
    if inst.role != "standalone":
        yield ((*base, "role"), f"instance {inst.name}: {MINDIE} is one multi-node service (role: standalone)")
    if inst.processes != "per_host":
        yield ((*base, "processes"), f"instance {inst.name}: mindieservice_daemon is one process per server "
               "and starts its NPUs' workers itself; set processes: per_host")
    lo, hi = MINDIE_DEVICES
    world = 0
    for k, h in hosts:
        n = len(inst.devices) if inst.devices is not None else len(h.devices)
        world += n
        if not lo <= n <= hi:
            yield ((*base, "devices") if inst.devices is not None else ("hosts", k, "devices"),
                   f"instance {inst.name}: MindIE takes {lo}..{hi} devices per server, host {h.name} has {n}")
    if world - 1 > MINDIE_MAX_RANK:
        yield ((*base, "hosts"), f"instance {inst.name}: {world} ranks; MindIE's rank_id is at most {MINDIE_MAX_RANK}")
    with_ip = [h.name for _, h in hosts if h.container_ip]
    if with_ip and len(with_ip) < len(hosts):
        for k, h in hosts:
            if not h.container_ip:
                yield (("hosts", k), f"host {h.name}: no container_ip, but {', '.join(with_ip)} of instance "
                       f"{inst.name} have one; MindIE needs it on every server (in containers) or on none "
                       "(bare metal: the launcher writes server_id there and sets HOST_IP)")
    for key, _ in inst.env:
        if key in MINDIE_ENV:
            yield (_env_path(topo, i, key), f"{key} is set per host by framework: {MINDIE}; remove it")
    if inst.mindie is None:
        yield (base, f"instance {inst.name}: framework {MINDIE} needs `mindie: {{config: <base config.json>}}`")
        return
    yield from (((*base, "mindie", "config"), m) for m in mindie_base_problems(inst, topo.inputs.get(inst.mindie.config)))


TLS_KEYS = ("interNodeTlsCaPath", "interNodeTlsCaFiles", "interNodeTlsCert", "interNodeTlsPk")


def mindie_base_problems(inst: Instance, data: bytes | None) -> list[str]:
    assert inst.mindie is not None
    name = inst.mindie.config
    if data is None:
        return [f"cannot read {name}"]
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"{name} is not JSON: {exc}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("BackendConfig"), dict):
        return [f"{name} has no BackendConfig object; start from MindIE's conf/config.json"]
    if not isinstance(doc.get("ServerConfig", {}), dict):
        return [f"{name}: ServerConfig is not an object; start from MindIE's conf/config.json"]
    missing = [k for k in TLS_KEYS if k not in doc["BackendConfig"]]
    if inst.mindie.inter_node_tls and missing:
        return [f"inter_node_tls is on but {name} has no BackendConfig.{', BackendConfig.'.join(missing)}"]
    return []


# --- vllm-ascend, on the plan: each host's argv and env once placeholders are filled -------------
def _opts(argv: tuple[str, ...]) -> dict[str, str]:
    """--flag value and --flag=value pairs; a flag followed by another flag maps to ''."""
    out: dict[str, str] = {}
    for k, a in enumerate(argv):
        if a.startswith("--"):
            flag, eq, value = a.partition("=")
            if not eq:
                nxt = argv[k + 1] if k + 1 < len(argv) else ""
                value = "" if nxt.startswith("--") else nxt
            out.setdefault(flag, value)
    return out


def check_plan(topo: Topology, plan: Plan) -> list[Diagnostic]:
    out: list[tuple[Path, str]] = []
    engines: dict[str, str] = {}
    if not any(inst.framework == VLLM for inst in topo.instances):
        return []
    first: dict[tuple[str, str], Program] = {}  # (host, owner) -> its first program: per_host, the only one
    for hp in plan.hosts:
        for p in hp.programs:
            if p.kind != "container":  # the container an instance's ranks run in has no rank's env
                first.setdefault((hp.host.name, p.owner), p)
    for i, inst in enumerate(topo.instances):
        if inst.framework != VLLM:
            continue
        programs = [first[(h, inst.name)] for h in inst.hosts if (h, inst.name) in first]
        out.extend(_vllm_env(topo, i, inst, programs))
        out.extend(_vllm_dp(topo, i, inst, programs))
        out.extend(_vllm_kv(topo, i, inst, programs, engines))
    src = topo.locs
    return [Diagnostic(src.value_loc(p) if src is not None else None, format_path(p), m) for p, m in out]


def _vllm_env(topo: Topology, i: int, inst: Instance, programs: list[Program]) -> Iterator[tuple[Path, str]]:
    seen: dict[str, str] = {}
    for p in programs:
        ip = dict(p.env).get("HCCL_IF_IP", "")
        where = _env_path(topo, i, "HCCL_IF_IP")
        if not is_ip(ip) or ipaddress.ip_address(ip).is_loopback:
            yield (where, f"instance {inst.name} on {p.host}: HCCL_IF_IP {ip!r} is not a non-loopback IP; HCCL "
                   "reaches the root node from it (vllm-ascend #2399): write {{ host.address }}")
        elif ip in seen:
            yield (where, f"instance {inst.name}: HCCL_IF_IP is {ip} on both {seen[ip]} and {p.host}; each node "
                   "gives its own address: write {{ host.address }}")
        seen.setdefault(ip, p.host)


def _argv_path(topo: Topology, i: int, leader: bool) -> Path:
    key = "leader_args" if leader else "worker_args"
    return ("instances", i, key) if _has(topo, ("instances", i, key)) else ("instances", i, "command")


def _flag_path(i: int, inst: Instance, flag: str, default: Path) -> Path:
    """Where the topology writes ``flag``'s value (command, leader_args or worker_args)."""
    for key in ("command", "leader_args", "worker_args"):
        argv = getattr(inst, key)
        for k, a in enumerate(argv):
            if a == flag:
                return ("instances", i, key, min(k + 1, len(argv) - 1))
            if a.startswith(flag + "="):
                return ("instances", i, key, k)
    return default


def _vllm_dp(topo: Topology, i: int, inst: Instance, programs: list[Program]) -> Iterator[tuple[Path, str]]:
    opts = [_opts(p.argv) for p in programs]
    master = topo.host(inst.hosts[0])
    if _opts(programs[0].argv).get("--distributed-executor-backend") == "ray" and len(inst.hosts) > 1:
        yield (("instances", i, "hosts"), f"instance {inst.name}: with Ray, `vllm serve` runs on the head only; "
               "the other nodes run `ray start --address=<head>:6379` (a service that depends on the head)")
    if len(programs) == 1 or not any("--data-parallel-size" in o for o in opts):
        return  # one node: vLLM's --data-parallel-size-local defaults to the whole size there
    local = [o.get("--data-parallel-size-local", "") for o in opts]
    if len(set(local)) != 1 or not local[0].isdigit():
        yield (("instances", i, "command"), f"instance {inst.name}: every node needs the same "
               f"--data-parallel-size-local (got {local})")
        return
    n_local = int(local[0])
    size = {o.get("--data-parallel-size", "") for o in opts}
    if size != {str(n_local * len(programs))}:
        yield (("instances", i, "command"), f"instance {inst.name}: --data-parallel-size {'/'.join(sorted(size))} "
               f"is not {len(programs)} nodes x --data-parallel-size-local {n_local}")
    for index, (p, o) in enumerate(zip(programs, opts)):
        leader = index == 0
        if ("--headless" in o) == leader:
            yield (_argv_path(topo, i, leader), f"instance {inst.name} on {p.host}: --headless belongs on every "
                   "node but the first (worker_args), which serves the API")
        start = o.get("--data-parallel-start-rank", "0")
        if start != str(index * n_local):
            yield (_flag_path(i, inst, "--data-parallel-start-rank", _argv_path(topo, i, leader)), f"instance {inst.name} on {p.host}: --data-parallel-start-rank "
                   f"{start} should be {index * n_local} (the local DP sizes of the nodes before it): "
                   f"write {{{{ host.index * {n_local} }}}}")
        if master is not None and o.get("--data-parallel-address") != master.address:
            yield (("instances", i, "command"), f"instance {inst.name} on {p.host}: --data-parallel-address "
                   f"{o.get('--data-parallel-address')!r} is not the first node's address {master.address}: "
                   "write {{ master_addr }}")
    ports = {o.get("--data-parallel-rpc-port") for o in opts}
    if len(ports) != 1:
        yield (("instances", i, "command"), f"instance {inst.name}: --data-parallel-rpc-port differs between "
               f"nodes ({sorted(str(x) for x in ports)})")


def _vllm_kv(topo: Topology, i: int, inst: Instance, programs: list[Program],
             engines: dict[str, str]) -> Iterator[tuple[Path, str]]:
    where = _flag_path(i, inst, "--kv-transfer-config", ("instances", i, "command"))
    said_engine = False
    for p in programs:
        text = _opts(p.argv).get("--kv-transfer-config")
        if text is None:
            continue
        try:
            cfg = json.loads(text)
        except ValueError as exc:
            yield (where, f"instance {inst.name}: --kv-transfer-config is not JSON ({exc}): {shlex.quote(text)}")
            return
        if not isinstance(cfg, dict) or not str(cfg.get("kv_connector", "")).startswith("Mooncake"):
            continue
        host = topo.host(p.host)
        npus = len(host.devices) if host is not None else 0
        need = KV_PORT_BASE + KV_PORT_PER_NPU * npus
        port = str(cfg.get("kv_port", ""))
        if not port.isdigit() or int(port) < need:
            yield (where, f"instance {inst.name} on {p.host}: kv_port {port or '(none)'} must be at least {need} "
                   f"(20000 + 1000 x {npus} NPUs): Mooncake's transport takes random ports below that (vllm-ascend #8938)")
        engine = str(cfg.get("engine_id", ""))
        if not engine:
            yield (where, f"instance {inst.name}: Mooncake needs an engine_id in --kv-transfer-config")
        elif engines.setdefault(engine, inst.name) != inst.name and not said_engine:
            said_engine = True
            yield (where, f"instance {inst.name}: engine_id {engine!r} is also instance {engines[engine]}'s; "
                   "each engine needs its own")
