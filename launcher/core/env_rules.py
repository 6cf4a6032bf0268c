"""Which env variables are the launcher's to set, so a topology's value for them is an error.

A user value for what the launcher sets per rank would be silently replaced and break the HCCL
world; ``LAUNCHER_*`` says where a process belongs. Pure.
"""
from __future__ import annotations

from typing import Iterable

from .model import Instance

# Set per rank by the launcher; a user value would silently break the HCCL world.
RESERVED_ENV = frozenset({
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK_ID", "RANK_SIZE", "RANK_ID_START",
    "RANKTABLEFILE", "RANK_TABLE_FILE", "DEVICE_ID", "MASTER_ADDR", "MASTER_PORT",
})
PD_RESERVED_ENV = RESERVED_ENV | {"GLOBAL_RANK_TABLE_FILE_PATH"}  # set for the members of a PD group
# vllm-ascend gets no ranktable variable unless its topology sets one ("{{ ranktable }}"): torch_npu
# takes RANK_TABLE_FILE as the switch to ranktable init (docs/STACKS.md)
TABLE_ENV = frozenset({"RANKTABLEFILE", "RANK_TABLE_FILE"})
IDENTITY_PREFIX = "LAUNCHER_"  # where a process belongs (LAUNCHER_INSTANCE, ...): the launcher's to set


def reserved_for(inst: Instance, pd_member: bool) -> frozenset[str]:
    """What an instance's topology may not set."""
    reserved = PD_RESERVED_ENV if pd_member else RESERVED_ENV
    return reserved - TABLE_ENV if inst.framework == "vllm-ascend" else reserved


def refused(env: Iterable[tuple[str, str]], reserved: frozenset[str]) -> list[tuple[str, str]]:
    """(key, message) for each key of ``env`` the launcher sets itself."""
    out = []
    for key, _ in env:
        if key in reserved or key.startswith(IDENTITY_PREFIX):
            what = "per rank" if key in reserved else "for every process (where it belongs)"
            out.append((key, f"{key} is set {what} by the launcher; remove it"))
    return out
