"""Where the interface holding a host's address must be known, and is not (`nic:`, `launcher discover`).

vllm-ascend's multi-node tutorials set GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME and HCCL_SOCKET_IFNAME on
every node (framework_env.socket_ifnames). A multi-node vllm-ascend instance gets them from its hosts'
interfaces unless its env sets them; a host whose interface is not known is an error naming the fix.
So is `{{ host.nic }}` on such a host, and `nic: discover` not yet in the lock file. Pure.
"""
from __future__ import annotations

from typing import Any, Iterator

from . import placeholders
from .framework_env import SOCKET_IFNAMES, VLLM
from .model import Topology
from .yamlsrc import Path


def _fix(topo: Topology, host: str) -> str:
    return f"run `launcher discover {topo.file}` (it reads the interface holding the host's address into the " \
           f"lock file) or set `nic: <interface>` on host {host}"


def check(topo: Topology) -> Iterator[tuple[Path, str]]:
    """(path, message) for each place that needs a host's interface where it is not known."""
    index = {h.name: k for k, h in enumerate(topo.hosts)}
    unknown = {h.name for h in topo.hosts if h.nic is None}
    for k, h in enumerate(topo.hosts):
        if h.nic_discover and h.nic is None:
            yield (("hosts", k, "nic"), f"host {h.name}: nic is left to discovery and not in the lock file yet; "
                   f"run `launcher discover {topo.file}`")
    said = {h.name for h in topo.hosts if h.nic_discover}  # said once, at its `nic: discover`
    for i, inst in enumerate(topo.instances):
        if inst.framework != VLLM or len(inst.hosts) < 2:
            continue
        missing = [v for v in SOCKET_IFNAMES if v not in dict(inst.env)]
        for j, name in enumerate(inst.hosts):
            if missing and name in unknown and name in index and name not in said:
                yield (("instances", i, "hosts", j), f"instance {inst.name} (vllm-ascend on {len(inst.hosts)} "
                       f"nodes) needs {', '.join(missing)} on host {name}, whose interface is not known: "
                       f"{_fix(topo, name)}; or set them in env")
    data: Any = topo.locs.data if topo.locs is not None else None
    if not isinstance(data, dict):
        return
    for path, text, _ in placeholders.fields(data):
        if "host.nic" not in placeholders.names_in(text):
            continue
        hosts = [n for n in _scope(topo, path) if n in unknown and n in index and n not in said]
        if hosts:
            yield (path, f"{{{{ host.nic }}}} on host {hosts[0]}: its interface is not known; {_fix(topo, hosts[0])}")


def _scope(topo: Topology, path: Path) -> list[str]:
    """The hosts a placeholder at ``path`` is filled for."""
    if path[0] == "instances" and isinstance(path[1], int) and path[1] < len(topo.instances):
        return list(topo.instances[path[1]].hosts)
    if path[0] == "services" and isinstance(path[1], int) and path[1] < len(topo.services):
        return list(topo.services[path[1]].hosts)
    hosts = [h for o in topo.instances for h in o.hosts] + [h for s in topo.services for h in s.hosts]
    return list(dict.fromkeys(hosts))  # defaults.env: every owner's hosts
