"""Which release of its stack an instance runs (`framework_version:`), and the rules that differ by it.

A rule that changed between releases is chosen by the version the topology names; a version
outside what was read is an error, not a guess (docs/STACKS.md lists each rule with its source):
- vllm-ascend's openYuanrong client (AscendStoreConnector backend "yuanrong"): the released tags
  v0.19.1rc1 .. v0.25.1rc1 read ``DS_WORKER_ADDR`` / ``DS_ENABLE_*``; main (read at 06bfab3,
  #12749) reads only the JSON file named by ``YR_CONFIG_PATH`` (``worker_addr``,
  ``enable_remote_h2d``, ...) and raises when it is unset.
An instance that uses a datasystem with framework vllm-ascend must name its version. Pure.
"""
from __future__ import annotations

import re
from typing import Iterator

from .model import Instance, Topology
from .yamlsrc import Path

VLLM = "vllm-ascend"
MAIN = "main"
_RELEASE = re.compile(r"v(\d+)\.(\d+)\.(\d+)(?:rc(\d+))?")
FINAL = 10 ** 6  # a final release sorts after its release candidates
DS_ENV_RELEASES = ((0, 19, 1, 1), (0, 25, 1, 1))  # v0.19.1rc1 .. v0.25.1rc1: DS_* env
VERSIONED = {VLLM: f"`{MAIN}` or a release tag v0.19.1rc1 .. v0.25.1rc1"}


def release(text: str) -> tuple[int, int, int, int] | None:
    """vMAJOR.MINOR.PATCH[rcN] as a sortable tuple; None for anything else."""
    m = _RELEASE.fullmatch(text)
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3]), int(m[4]) if m[4] else FINAL


def yuanrong_client(inst: Instance) -> str:
    """How the instance's ranks reach their datasystem worker: "yr_config" (YR_CONFIG_PATH, vllm-ascend
    main) or "ds_env" (DS_WORKER_ADDR and friends: seed 003, released vllm-ascend, generic)."""
    return "yr_config" if inst.framework == VLLM and inst.framework_version == MAIN else "ds_env"


def check(topo: Topology) -> Iterator[tuple[Path, str]]:
    """(path, message) for each version a topology names that no rule was read for."""
    for i, inst in enumerate(topo.instances):
        base, version = ("instances", i), inst.framework_version
        if version is None:
            if inst.framework == VLLM and inst.datasystem is not None:
                yield ((*base, "datasystem"), f"instance {inst.name}: vllm-ascend reads its datasystem worker's "
                       "address from DS_WORKER_ADDR in releases v0.19.1rc1 .. v0.25.1rc1 and from the file at "
                       f"YR_CONFIG_PATH on main; name which with framework_version ({VERSIONED[VLLM]})")
            continue
        if inst.framework not in VERSIONED:
            what = f"framework {inst.framework}" if inst.framework else "a generic instance (no framework)"
            yield ((*base, "framework_version"), f"instance {inst.name}: {what} has no rule that depends on its "
                   "version; remove framework_version")
            continue
        r = release(version)
        lo, hi = DS_ENV_RELEASES
        if version != MAIN and (r is None or not lo <= r <= hi):
            why = "is not `main` or a release tag like v0.25.1rc1" if r is None else \
                "is outside the releases whose source these rules were read from"
            yield ((*base, "framework_version"), f"instance {inst.name}: vllm-ascend {version!r} {why}; "
                   f"supported: {VERSIONED[VLLM]} (docs/STACKS.md)")
