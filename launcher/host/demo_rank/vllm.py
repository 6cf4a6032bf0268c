"""`--vllm-dp`: read the launch the way a multi-node `vllm serve` with data parallel does (vllm-ascend guides).

One process per node. Its argv carries vLLM's DP flags: `--data-parallel-size S
--data-parallel-size-local L --data-parallel-address A --data-parallel-rpc-port P`, and on every node
but the first `--headless --data-parallel-start-rank R`. The node's index is R / L (so R is a multiple
of L), the nodes are S / L; a headless node is never the first, the first serves the API. HCCL_IF_IP
must be an address of this node (HCCL reaches the root from it). The nodes meet at A:P, where the
first node listens.
"""
from __future__ import annotations

import argparse
import os
import socket
from typing import Any, Mapping, Sequence

from .errors import EnvError
from .identity import Identity


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="launcher-demo-rank --vllm-dp", add_help=False)
    p.add_argument("--data-parallel-size", type=int, required=True)
    p.add_argument("--data-parallel-size-local", type=int, required=True)
    p.add_argument("--data-parallel-address", required=True)
    p.add_argument("--data-parallel-rpc-port", type=int, required=True)
    p.add_argument("--data-parallel-start-rank", type=int, default=0)
    p.add_argument("--headless", action="store_true")
    try:
        args, _ = p.parse_known_args(list(argv))  # model flags (--tensor-parallel-size ...) pass through
    except SystemExit:
        raise EnvError(f"vLLM DP arguments: cannot read {' '.join(argv)!r}") from None
    return args


SOCKET_IFNAMES = ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "HCCL_SOCKET_IFNAME")


def _interface(name: str) -> bool:
    """Whether ``name`` is a network interface of this node."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _local(ip: str) -> bool:
    """Whether ip is an address of this node (binding to it works)."""
    try:
        family = socket.getaddrinfo(ip, 0, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


def identity(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Identity, dict[str, Any]]:
    """This node's place in the DP world; raise EnvError on what vLLM (or HCCL) would refuse."""
    a = parse(argv)
    size, local, start = a.data_parallel_size, a.data_parallel_size_local, a.data_parallel_start_rank
    problems = []
    if local < 1 or size < local or size % local:
        problems.append(f"--data-parallel-size {size} is not a multiple of --data-parallel-size-local {local}")
    elif start % local or not 0 <= start < size:
        problems.append(f"--data-parallel-start-rank {start} is not a multiple of {local} below {size}")
    if a.headless and start == 0:
        problems.append("--headless on the first node (start rank 0): nothing would serve the API")
    if not a.headless and start != 0:
        problems.append(f"--data-parallel-start-rank {start} without --headless: a second API server")
    ip = env.get("HCCL_IF_IP", "")
    if not ip or not _local(ip):
        problems.append(f"HCCL_IF_IP={ip!r} is not an address of this node")
    ifnames = {k: env[k] for k in SOCKET_IFNAMES if k in env}
    for key in ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):  # gloo's createDeviceForInterface throws on these
        if key in ifnames and not _interface(ifnames[key]):
            problems.append(f"{key}={ifnames[key]!r} is not an interface of this node")
    if problems:
        raise EnvError("vLLM DP: " + "; ".join(problems))
    index = start // local
    visible = env.get("ASCEND_RT_VISIBLE_DEVICES", "0").split(",")[0]
    ident = Identity(index, 0, size // local, "", "", int(visible) if visible.isdigit() else 0,
                     env.get("LAUNCHER_SERVER_ID", ip), ip, a.data_parallel_address, a.data_parallel_rpc_port,
                     env.get("LAUNCHER_INSTANCE", "vllm"), env.get("LAUNCHER_HOST", socket.gethostname()))
    return ident, {"dp_ranks": list(range(start, start + local)), "headless": a.headless,
                   "serves_api": not a.headless, "hccl_if_ip": ip, "socket_ifnames": ifnames,
                   "pid": os.getpid()}
