"""`--mindie`: read the launch the way mindieservice_daemon does (MindIE-LLM multi-node, reference §7.1).

One daemon per server. It checks the rank table named by RANK_TABLE_FILE (owner = this uid, mode no
more than 0640 unless MINDIE_CHECK_INPUTFILES_PERMISSION=0, never a symlink; server_count 2..60 and
equal to the list; a container_ip on every server; 1..32 devices on each, the same everywhere;
device_id 0..63; rank_id 0..511; device_ip an IP), the same for the config.json named by
MIES_CONFIG_JSON_PATH (multi-node on: BackendConfig.multiNodesInferEnabled), finds its own server by
container_ip == MIES_CONTAINER_IP, else server_id == HOST_IP, and meets the other servers at the
master's (the server holding rank 0) multiNodesInferPort. The world is the servers, ranked by their
first rank id, so the master is rank 0 of the barrier. The master serves requests (here: /health) where
MindIE would: MIES_CONTAINER_IP, else ServerConfig.ipAddress (127.0.0.1 as shipped), at ServerConfig.port.
"""
from __future__ import annotations

import ipaddress
import json
import os
import stat
from typing import Any, Mapping

from .errors import EnvError, TableError
from .identity import Identity, load_table, uint
from .net import Log

DEFAULT_PORT = 1120  # BackendConfig.multiNodesInferPort's default
DEFAULT_ENDPOINT = ("127.0.0.1", 1025)  # ServerConfig.ipAddress and .port as MindIE ships them


def endpoint(config: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, int]:
    """Where the master serves requests (server_config.cpp GetIPAddress): MIES_CONTAINER_IP when
    set, else ServerConfig.ipAddress; ServerConfig.port."""
    server = config.get("ServerConfig")
    server = server if isinstance(server, dict) else {}
    ip = env.get("MIES_CONTAINER_IP") or str(server.get("ipAddress") or DEFAULT_ENDPOINT[0])
    port = server.get("port", DEFAULT_ENDPOINT[1])
    return ip, port if isinstance(port, int) else DEFAULT_ENDPOINT[1]


def check_file(path: str, var: str, env: Mapping[str, str]) -> None:
    """MindIE's input file check (file_utils.cpp) and ATB's safe_open on the last component."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise EnvError(f"{var}={path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise TableError(f"{var}={path} is a symlink; MindIE/ATB refuse one")
    if st.st_uid != os.geteuid():
        raise TableError(f"{var}={path} is owned by uid {st.st_uid}, not this process's {os.geteuid()}")
    mode = stat.S_IMODE(st.st_mode)
    if env.get("MINDIE_CHECK_INPUTFILES_PERMISSION") != "0" and mode & ~0o640:
        raise TableError(f"{var}={path} has mode {mode:04o}; MindIE takes at most 0640")


def _ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


def _int(text: Any, what: str, low: int, high: int) -> int:
    value = uint(text) if isinstance(text, str) else None
    if value is None or not low <= value <= high:
        raise TableError(f"rank table: {what} {text!r} is not a string of {low}..{high}")
    return value


def check_servers(doc: Any) -> list[dict[str, Any]]:
    """ranktable_config.cpp's rules; the servers ordered by their first rank id."""
    servers = doc.get("server_list") if isinstance(doc, dict) else None
    if not isinstance(servers, list) or not all(isinstance(s, dict) for s in servers):
        raise TableError("rank table: no server_list of objects")
    count = _int(doc.get("server_count"), "server_count", 2, 60)
    if count != len(servers):
        raise TableError(f"rank table: server_count {count} but {len(servers)} servers listed")
    sizes = set()
    for s in servers:
        if not s.get("container_ip"):
            raise TableError(f"rank table: server {s.get('server_id')!r} has no container_ip")
        devices = s.get("device")
        if not isinstance(devices, list) or not 1 <= len(devices) <= 32:
            raise TableError(f"rank table: server {s.get('server_id')!r} has not 1..32 devices")
        sizes.add(len(devices))
        for d in devices:
            _int(d.get("device_id"), "device_id", 0, 63)
            _int(d.get("rank_id"), "rank_id", 0, 511)
            if not _ip(d.get("device_ip")):
                raise TableError(f"rank table: device_ip {d.get('device_ip')!r} is not an IP")
    if len(sizes) != 1:
        raise TableError(f"rank table: servers have different device counts {sorted(sizes)}")
    return sorted(servers, key=lambda s: min(int(d["rank_id"]) for d in s["device"]))


def own_server(servers: list[dict[str, Any]], env: Mapping[str, str]) -> tuple[int, str]:
    """(index, how it was found): container_ip == MIES_CONTAINER_IP, else server_id == HOST_IP."""
    for var, key in (("MIES_CONTAINER_IP", "container_ip"), ("HOST_IP", "server_id")):
        value = env.get(var)
        found = [k for k, s in enumerate(servers) if value and s.get(key) == value]
        if found:
            return found[0], var
    raise EnvError(f"no server of the rank table has container_ip = MIES_CONTAINER_IP "
                   f"({env.get('MIES_CONTAINER_IP')!r}) or server_id = HOST_IP ({env.get('HOST_IP')!r})")


def identity(env: Mapping[str, str], table_timeout: float, log: Log) -> tuple[Identity, dict[str, Any]]:
    """This daemon's place in the world, after MindIE's checks; raise EnvError or TableError."""
    table = env.get("RANK_TABLE_FILE", "")
    config = env.get("MIES_CONFIG_JSON_PATH", "")
    if not table or not config:
        raise EnvError("RANK_TABLE_FILE and MIES_CONFIG_JSON_PATH must both be set")
    check_file(table, "RANK_TABLE_FILE", env)
    check_file(config, "MIES_CONFIG_JSON_PATH", env)
    try:
        with open(config, encoding="utf-8") as fh:
            whole = json.load(fh)
        backend = whole.get("BackendConfig", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise TableError(f"MIES_CONFIG_JSON_PATH={config}: not a MindIE config ({exc})") from None
    if backend.get("multiNodesInferEnabled") is not True:
        raise TableError(f"{config}: BackendConfig.multiNodesInferEnabled is not true")
    port = backend.get("multiNodesInferPort", DEFAULT_PORT)
    servers = check_servers(load_table(table, "RANK_TABLE_FILE", table_timeout, log))
    index, how = own_server(servers, env)
    me, master = servers[index], servers[0]
    # the master's address as this deployment names servers: its container IP, or its server_id on bare metal
    master_addr = master["container_ip"] if how == "MIES_CONTAINER_IP" else master["server_id"]
    first = me["device"][0]
    ident = Identity(index, 0, len(servers), table, "RANK_TABLE_FILE", int(first["device_id"]), me["server_id"],
                     first["device_ip"], master_addr, int(port), env.get("LAUNCHER_INSTANCE", "mindie"),
                     env.get("LAUNCHER_HOST", me["server_id"]))
    log(f"mindie: own server {me['server_id']} (by {how}), {len(me['device'])} devices, master "
        f"{master['server_id']} at {master_addr}:{port}")
    doc = {"server_id": me["server_id"], "found_by": how, "master": index == 0,
           "devices": [d["device_id"] for d in me["device"]]}
    if index == 0:  # only the master takes requests
        ip, port = endpoint(whole, env)
        doc["endpoint"] = f"{ip}:{port}"
    return ident, doc
