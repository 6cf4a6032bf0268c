"""The serving stacks' acceptance rules, written from their documentation (reference §1.3, §7; issue 14),
applied to what a host really has after a deployment: files as the host side wrote them (mode, owner,
symlinks) and each program's environment as its launch script sources it.

Independent of launcher/core/frameworks.py on purpose: these read the deployed result the way the
consumer would, so a mistake in the launcher's own checks does not hide here.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launcher.core.model import Topology
from launcher.core.pipeline import Result, rendered
from launcher.host import upload

ATB_SAFE = re.compile(r"[0-9a-zA-Z_./-]+")


@dataclass
class Deployed:
    """One program on one host: its env as its script sees it, and the host's generation."""

    host: str
    address: str
    owner: str
    argv: tuple[str, ...]
    env: dict[str, str]
    root: Path


def deploy(result: Result, into: Path) -> list[Deployed]:
    """Install every host's generation with the host side's own writer, point current at it, and
    source each program's env file as its launch script does."""
    gen, files = rendered(result.plan)
    out = []
    for hp in result.plan.hosts:
        root = Path(hp.root)
        assert str(root).startswith(str(into)), "compile with deploy_dir under the test's directory"
        upload.install_dir([(f"gen/{p}", f.mode, f.content) for p, f in files[hp.host.name].items()],
                           "gen", str(root / "gens" / gen))
        os.symlink(f"gens/{gen}", root / "current")
        for p in hp.programs:
            slot = "" if p.local_rank is None else str(p.local_rank)
            env_file = root / "current" / "env" / f"{p.owner}.env"
            dump = subprocess.run(["sh", "-c", 'LAUNCHER_SLOT="$1"; . "$2" && env -0', "_", slot, str(env_file)],
                                  capture_output=True, check=True, env={}).stdout
            env = dict(kv.split("=", 1) for kv in dump.decode().split("\0") if "=" in kv)
            out.append(Deployed(hp.host.name, hp.host.address, p.owner, p.argv, env, root))
    return out


def is_ip(text: object) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


def file_problems(path: str, what: str, max_mode: int) -> list[str]:
    """MindIE's and ATB's checks of an input file: not a symlink, only ATB-safe characters in its real
    path, owned by this uid, no permission beyond ``max_mode``."""
    out = []
    if os.path.islink(path):
        out.append(f"{what} {path} is a symlink")
    real = os.path.realpath(path)
    if not ATB_SAFE.fullmatch(real):
        out.append(f"{what} real path {real} holds a character outside [0-9a-zA-Z_./-]")
    st = os.stat(real)
    if st.st_uid != os.geteuid():
        out.append(f"{what} {real} is owned by uid {st.st_uid}, not {os.geteuid()}")
    if stat.S_IMODE(st.st_mode) & ~max_mode:
        out.append(f"{what} {real} has mode {stat.S_IMODE(st.st_mode):04o}, more than {max_mode:04o}")
    if st.st_size > 10 * 1024 * 1024:
        out.append(f"{what} {real} is over 10 MB")
    return out


def hccl_table_problems(table: dict) -> list[str]:
    """HCCL's parser (v1.0): status, version, server_count, server_id, rank ids contiguous per server."""
    out = []
    servers = table.get("server_list", [])
    if table.get("status") != "completed" or table.get("version") != "1.0":
        out.append("status/version not completed/1.0")
    if table.get("server_count") != str(len(servers)) or not servers:
        out.append(f"server_count {table.get('server_count')!r} is not the number of servers {len(servers)}")
    ids = [s.get("server_id", "") for s in servers]
    if any(not i or len(i) > 64 for i in ids) or len(set(ids)) != len(ids):
        out.append(f"server_id empty, longer than 64 or repeated: {ids}")
    ranks = [int(d["rank_id"]) for s in servers for d in s["device"]]
    if ranks != list(range(len(ranks))):
        out.append(f"rank ids are not contiguous from 0 in server order: {ranks}")
    ips = [d["device_ip"] for s in servers for d in s["device"]]
    if len(set(ips)) != len(ips):
        out.append("a device_ip is repeated")
    return out


def mindie_problems(programs: list[Deployed], instance: str) -> list[str]:
    """MindIE-LLM multi-node (ranktable_config.cpp, file_utils.cpp, the multi-node guide; ATB's
    check_ranktable underneath): what each daemon checks on its own server."""
    out: list[str] = []
    mine = [p for p in programs if p.owner == instance]
    if len({p.host for p in mine}) != len(mine):
        out.append("more than one daemon on a server")
    masters = set()
    for p in mine:
        where = f"{p.host}: "
        table_path = p.env.get("RANK_TABLE_FILE")
        if not table_path or not os.path.exists(table_path):
            out.append(where + "RANK_TABLE_FILE is not set to a file")
            continue
        out += [where + m for m in file_problems(table_path, "rank table", 0o640)]
        table = json.loads(Path(table_path).read_text())
        out += [where + m for m in hccl_table_problems(table)]
        servers = table["server_list"]
        if not (2 <= len(servers) <= 60 and table["server_count"] == str(len(servers))):
            out.append(where + f"server_count {table['server_count']} is not 2..60")
        counts = {len(s["device"]) for s in servers}
        if len(counts) != 1 or not 1 <= min(counts) <= 32:
            out.append(where + f"devices per server {sorted(counts)}: not one count in 1..32")
        world = sum(len(s["device"]) for s in servers)
        for s in servers:
            if not s.get("container_ip"):
                out.append(where + f"server {s['server_id']} has no container_ip")
            if not is_ip(s["server_id"]):
                out.append(where + f"server_id {s['server_id']!r} is not an IP (ATB check_ranktable)")
            for d in s["device"]:
                if not (0 <= int(d["device_id"]) <= 63 and 0 <= int(d["rank_id"]) <= 511
                        and int(d["rank_id"]) < world and is_ip(d["device_ip"])):
                    out.append(where + f"device {d} out of MindIE's ranges")
        own = [s for s in servers if s.get("container_ip") and s["container_ip"] == p.env.get("MIES_CONTAINER_IP")]
        if not own:
            own = [s for s in servers if s["server_id"] == p.env.get("HOST_IP")]
        if len(own) != 1:
            out.append(where + "finds no single own server by MIES_CONTAINER_IP or HOST_IP "
                       f"({p.env.get('MIES_CONTAINER_IP')!r}, {p.env.get('HOST_IP')!r})")
        elif own[0]["server_id"] not in (p.address, p.env.get("LAUNCHER_SERVER_ID")):
            out.append(where + f"takes server {own[0]['server_id']} for its own")
        elif any(d["rank_id"] == "0" for d in own[0]["device"]):
            masters.add(p.host)
        config = p.env.get("MIES_CONFIG_JSON_PATH")
        if not config or not os.path.exists(config):
            out.append(where + "MIES_CONFIG_JSON_PATH is not set to a file")
        else:
            out += [where + m for m in file_problems(config, "config.json", 0o640)]
            backend = json.loads(Path(config).read_text()).get("BackendConfig", {})
            if backend.get("multiNodesInferEnabled") is not True:
                out.append(where + "config.json: BackendConfig.multiNodesInferEnabled is not true")
            port = backend.get("multiNodesInferPort", 1120)
            if not (isinstance(port, int) and 1024 <= port <= 65535):
                out.append(where + f"config.json: multiNodesInferPort {port!r} not in 1024..65535")
            if not isinstance(backend.get("interNodeTLSEnabled", True), bool):
                out.append(where + "config.json: interNodeTLSEnabled is not a boolean")
            # server_config.cpp GetIPAddress: MIES_CONTAINER_IP, else ServerConfig.ipAddress (127.0.0.1 shipped)
            server = json.loads(Path(config).read_text()).get("ServerConfig", {})
            serves = p.env.get("MIES_CONTAINER_IP") or server.get("ipAddress", "127.0.0.1")
            if serves not in (p.address, p.env.get("MIES_CONTAINER_IP")) or ipaddress.ip_address(serves).is_loopback:
                out.append(where + f"serves requests on {serves}, not on this server's address {p.address}")
        if p.env.get("HCCL_DETERMINISTIC") != "true":
            out.append(where + "HCCL_DETERMINISTIC is not true (the guide advises it)")
    if mine and len(masters) != 1:
        out.append(f"{len(masters)} servers see themselves as the master (rank 0's holder)")
    return out


def atb_problems(programs: list[Deployed], instance: str) -> list[str]:
    """ATB-Models (seed 004's run_pa.py; atb_llm env.py check_ranktable, file_utils safe_open)."""
    out: list[str] = []
    for p in (q for q in programs if q.owner == instance):
        where = f"{p.host} rank {p.env.get('RANK')}: "
        path = p.env.get("RANKTABLEFILE", "")
        if not os.path.exists(path):
            out.append(where + "RANKTABLEFILE is not set to a file")
            continue
        out += [where + m for m in file_problems(path, "rank table", 0o755 & ~0o022)]
        table = json.loads(Path(path).read_text())
        out += [where + m for m in hccl_table_problems(table)]
        world = int(p.env.get("WORLD_SIZE", "0"))
        for s in table["server_list"]:
            if not is_ip(s["server_id"]):
                out.append(where + f"server_id {s['server_id']!r} is not an IP")
            for d in s["device"]:
                if not is_ip(d["device_ip"]) or int(d["rank_id"]) >= world:
                    out.append(where + f"device {d}: device_ip not an IP or rank_id >= WORLD_SIZE {world}")
    return out


def _opts(argv: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for k, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[k + 1] if k + 1 < len(argv) and not argv[k + 1].startswith("--") else ""
            out[a] = nxt
    return out


def vllm_problems(programs: list[Deployed], topo: Topology) -> list[str]:
    """vllm-ascend's multi-node tutorials: per node HCCL_IF_IP = its own IP; DP's per-node arguments;
    Ray's head/worker/serve; Mooncake's kv_port and engine_id."""
    out: list[str] = []
    addresses = {h.name: h.address for h in topo.hosts}
    engines: dict[str, str] = {}
    head = None
    for p in programs:
        if p.argv[:3] == ("ray", "start", "--head"):
            head = p
    asked = {i.name: {k for k, _ in i.env} for i in topo.instances}
    multi_node = {i.name for i in topo.instances if i.framework == "vllm-ascend" and len(i.hosts) > 1}
    for p in programs:
        where = f"{p.owner} on {p.host}: "
        # torch_npu: a valid RANK_TABLE_FILE switches HCCL init to the table's rank order, not vLLM's
        # (its doc RANK_TABLE_FILE.md; no vllm-ascend tutorial sets it); only when the topology asks
        for var in ("RANK_TABLE_FILE", "RANKTABLEFILE"):
            if var in p.env and var not in asked.get(p.owner, set()):
                out.append(where + f"{var} is set: torch_npu would build HCCL from the ranktable, not vLLM's ranks")
        ip = p.env.get("HCCL_IF_IP")
        if ip != addresses[p.host] or ipaddress.ip_address(ip).is_loopback:
            out.append(where + f"HCCL_IF_IP {ip!r} is not this node's own address {addresses[p.host]}")
        o = _opts(p.argv)
        # per node, the interface holding its address (tutorials; torch gloo reads GLOO_SOCKET_IFNAME,
        # TensorPipe TP_SOCKET_IFNAME, HCCL HCCL_SOCKET_IFNAME: `=name` exact or a name prefix, envref 07_0075):
        # on every node of a multi-node instance, and in `ray start`'s env (Ray's workers inherit it)
        if p.owner in multi_node or p.argv[:2] == ("ray", "start"):
            nic = topo.host(p.host).nic
            for var in ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
                if p.env.get(var) != nic:
                    out.append(where + f"{var} {p.env.get(var)!r} is not the interface holding its address ({nic})")
            hccl = p.env.get("HCCL_SOCKET_IFNAME", "")
            if not (hccl == f"={nic}" or hccl == nic):
                out.append(where + f"HCCL_SOCKET_IFNAME {hccl!r} does not select the interface {nic}")
        if p.argv[:2] == ("ray", "start"):
            if p.env.get("RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES") != "1" \
                    or not p.env.get("ASCEND_RT_VISIBLE_DEVICES"):
                out.append(where + "ray start without RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1 and "
                           "ASCEND_RT_VISIBLE_DEVICES")
            if o.get("--node-ip-address") != addresses[p.host]:
                out.append(where + "ray start --node-ip-address is not this node's address")
            if p is not head and (head is None or o.get("--address") != f"{head.address}:6379"):
                out.append(where + "ray start --address is not the head's <ip>:6379")
        if o.get("--distributed-executor-backend") == "ray" and (head is None or p.host != head.host):
            out.append(where + "vllm serve with Ray runs elsewhere than the head")
        if "--kv-transfer-config" in o:
            cfg = json.loads(o["--kv-transfer-config"])
            npus = len(topo.host(p.host).devices)
            if int(cfg["kv_port"]) < 20000 + 1000 * npus:
                out.append(where + f"kv_port {cfg['kv_port']} below 20000 + 1000 x {npus}")
            if engines.setdefault(cfg["engine_id"], p.owner) != p.owner:
                out.append(where + f"engine_id {cfg['engine_id']} is also {engines[cfg['engine_id']]}'s")
    for inst in topo.instances:
        nodes = [p for p in programs if p.owner == inst.name]
        if not any("--data-parallel-size" in p.argv for p in nodes):
            continue
        n_local = int(_opts(nodes[0].argv)["--data-parallel-size-local"])
        for index, p in enumerate(nodes):
            o = _opts(p.argv)
            if int(o["--data-parallel-size"]) != n_local * len(nodes) or \
                    o["--data-parallel-address"] != nodes[0].address or ("--headless" in o) != (index > 0) or \
                    int(o.get("--data-parallel-start-rank", "0")) != index * n_local:
                out.append(f"{inst.name} on {p.host}: DP arguments not as the guide's node {index}: {p.argv}")
    return out


def yuanrong_problems(programs: list[Deployed], topo: Topology) -> list[str]:
    """openYuanrong under vllm-ascend: the RH2D worker must run with `--enable_huge_tlb true
    --enable_fallocate false` (kv_pool.md, v0.25.1rc1); a vllm-ascend rank finds its node's worker
    through DS_WORKER_ADDR (released tags) or the JSON at YR_CONFIG_PATH (main, yuanrong_backend.py,
    which raises when it is unset); either names this node's own worker."""
    out: list[str] = []
    workers = {}
    for p in programs:
        if p.argv[:2] == ("dscli", "start") or (len(p.argv) > 1 and p.argv[1] == "start" and "-w" in p.argv):
            w = p.argv[p.argv.index("-w") + 1:]
            o = dict(zip(w[::2], w[1::2]))
            workers[p.host] = o.get("--worker_address")
            if o.get("--remote_h2d_device_ids") and (o.get("--enable_huge_tlb") != "true"
                                                     or o.get("--enable_fallocate") != "false"):
                out.append(f"{p.owner} on {p.host}: RH2D worker without --enable_huge_tlb true --enable_fallocate false")
    for inst in topo.instances:
        if inst.datasystem is None:
            continue
        for p in (q for q in programs if q.owner == inst.name):
            where = f"{p.owner} on {p.host}: "
            if inst.framework == "vllm-ascend" and inst.framework_version == "main":
                path = p.env.get("YR_CONFIG_PATH", "")
                if not os.path.exists(path):
                    out.append(where + "YR_CONFIG_PATH is not set to a file (vllm-ascend main raises)")
                    continue
                addr = json.loads(Path(path).read_text()).get("worker_addr")
            else:
                addr = p.env.get("DS_WORKER_ADDR")
            if addr != workers.get(p.host):
                out.append(where + f"reaches worker {addr!r}, not this node's {workers.get(p.host)!r}")
    return out


def ready_health(programs, procs, port: int) -> list[dict]:
    """Each started demo rank's /health, once its stderr said `ready` (fails if one exits first)."""
    import json
    import urllib.request
    docs = []
    for p, proc in zip(programs, procs):
        line = ""
        while "ready" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, f"{p.host} exited {proc.poll()}"
        with urllib.request.urlopen(f"http://{p.env['LAUNCHER_HOST_ADDRESS']}:{port}/health", timeout=5) as r:
            docs.append(json.load(r))
    return docs


def stop_all(procs) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
