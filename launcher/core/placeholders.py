"""Per-host values in argv and env: `{{ host.address }}` and friends, filled in at render time.

One command for every host of an instance cannot say what differs per host: its own IP
(vLLM-Ascend's `HCCL_IF_IP`, Ray's `--node-ip-address`), its index (`--data-parallel-start-rank`),
the first host's address. A placeholder is `{{ NAME }}` or `{{ NAME * N }}` (an integer times a
whole number: the start rank of DP ranks laid out per host); `{{ '...' }}` writes its quoted text
as it is, so a literal `{{` is `{{ '{{' }}`. Single braces are plain text (JSON arguments stay
as they are). Values are per host, not per rank: ranks of one host share their argv; what
differs per rank is in their environment (RANK, LOCAL_RANK, DEVICE_ID).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from .strings import flat_strings

# name -> what it is (docs/TOPOLOGY.md lists the same)
HOST_NAMES = {
    "host.name": "the host's name in the topology",
    "host.address": "the host's address",
    "host.server_id": "the host's server_id (its address unless set)",
    "host.index": "the host's position in the instance's (or service's) hosts, from 0",
    "host.nic": "the interface holding the host's address (its `nic:`, else the lock file's from `launcher discover`)",
}
INSTANCE_NAMES = {
    "host.devices": "the instance's NPU ids on this host, comma-separated",
    "instance.name": "the instance's name",
    "instance.hosts": "the addresses of the instance's hosts, comma-separated, in order",
    "instance.host_count": "how many hosts the instance spans",
    "master_addr": "the address of the instance's first host",
    "rendezvous_port": "the instance's rendezvous port (MASTER_PORT)",
    "world_size": "ranks in the instance",
    "local_world_size": "ranks of the instance on this host",
    "rank_id_start": "the first rank on this host",
    "ranktable": "the absolute path of the instance's HCCL ranktable on this host",
}
INTEGERS = {"host.index", "instance.host_count", "rendezvous_port", "world_size", "local_world_size",
            "rank_id_start"}

_OPEN = "{{"
_EXPR = re.compile(r"""\s*(?:(?P<name>[a-z_][a-z_.]*)(?:\s*\*\s*(?P<times>\d+))?|'(?P<sq>[^']*)'|"(?P<dq>[^"]*)")\s*$""")


@dataclass(frozen=True)
class Bad:
    """A placeholder that cannot be filled: where in the text, and why."""

    offset: int
    message: str


def _scan(text: str) -> list[tuple[int, int, str]]:
    """(start, end, expression) of each `{{ ... }}` in ``text``; end -1: not closed."""
    out, i = [], 0
    while (start := text.find(_OPEN, i)) >= 0:
        body = start + 2
        while body < len(text) and text[body] == " ":
            body += 1
        if body < len(text) and text[body] in "'\"":  # a quoted literal may hold '}}' itself
            close = text.find(text[body], body + 1)
            body = close + 1 if close >= 0 else len(text)
        end = text.find("}}", body)
        if end < 0:
            out.append((start, -1, text[start + 2:]))
            break
        out.append((start, end + 2, text[start + 2:end]))
        i = end + 2
    return out


def problems(text: str, names: Mapping[str, str]) -> list[Bad]:
    """What is wrong with the placeholders of ``text`` where ``names`` are the ones known."""
    out = []
    for start, end, expr in _scan(text):
        if end < 0:
            out.append(Bad(start, "'{{' is not closed by '}}' (a literal '{{' is written {{ '{{' }})"))
            continue
        m = _EXPR.match(expr)
        if m is None:
            out.append(Bad(start, f"cannot read the placeholder {{{{{expr}}}}}: write {{{{ NAME }}}}, "
                                  f"{{{{ NAME * N }}}} or {{{{ 'text' }}}}"))
        elif m["name"] is not None and m["name"] not in names:
            known = ", ".join(sorted(names))
            extra = ("; per-rank values are in the environment (RANK, LOCAL_RANK, DEVICE_ID)"
                     if m["name"].startswith("rank") or m["name"] in ("local_rank", "device_id") else "")
            out.append(Bad(start, f"unknown placeholder {{{{ {m['name']} }}}} (known here: {known}){extra}"))
        elif m["times"] is not None and m["name"] not in INTEGERS:
            out.append(Bad(start, f"{{{{ {m['name']} }}}} is not a number, so it cannot be multiplied"))
    return out


def names_in(text: str) -> set[str]:
    """The placeholder names ``text`` uses."""
    return {m["name"] for _, end, expr in _scan(text) if end >= 0
            for m in [_EXPR.match(expr)] if m is not None and m["name"] is not None}


def has_placeholders(text: str) -> bool:
    return _OPEN in text


def fill(text: str, values: Mapping[str, str | int]) -> str:
    """``text`` with its placeholders replaced; ``problems`` found nothing wrong with it."""
    if _OPEN not in text:
        return text
    out, i = [], 0
    for start, end, expr in _scan(text):
        m = _EXPR.match(expr)
        assert m is not None and end >= 0, f"unchecked placeholder in {text!r}"
        out.append(text[i:start])
        if m["name"] is None:
            out.append(m["sq"] if m["sq"] is not None else m["dq"])
        elif m["times"] is not None:
            out.append(str(int(values[m["name"]]) * int(m["times"])))
        else:
            out.append(str(values[m["name"]]))
        i = end
    out.append(text[i:])
    return "".join(out)


Path = tuple[str | int, ...]


def fields(data: Mapping) -> list[tuple[Path, str, Mapping[str, str]]]:
    """Every string of a topology document where placeholders are filled: (path, text, names
    known there). Instances: command, leader_args, worker_args, env; generic services: command,
    env (host values only); defaults.env applies to both, so host values only."""
    out: list[tuple[Path, str, Mapping[str, str]]] = []
    every = {**HOST_NAMES, **INSTANCE_NAMES}

    def strings(path: Path, node: object, names: Mapping[str, str]) -> None:
        if isinstance(node, str):
            out.append((path, node, names))
        elif isinstance(node, list):
            for k, item in enumerate(node):
                strings((*path, k), item, names)
        elif isinstance(node, dict):
            for key, value in node.items():
                strings((*path, key), value, names)

    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        strings(("defaults", "env"), defaults.get("env"), HOST_NAMES)
    for i, inst in enumerate(data.get("instances") or []):
        if isinstance(inst, dict):
            for key in ("command", "leader_args", "worker_args", "env"):
                strings(("instances", i, key), inst.get(key), every)
    for i, svc in enumerate(data.get("services") or []):
        if isinstance(svc, dict):
            strings(("services", i, "env"), svc.get("env"), HOST_NAMES)
            if svc.get("kind") == "generic":
                strings(("services", i, "command"), svc.get("command"), HOST_NAMES)
    return out


def _any_open(data: object) -> bool:
    """Whether any string of the document (or a key: only a false alarm, which the walk with paths
    clears) holds `{{`, joined with NUL so that no two strings make one."""
    return _OPEN in "\0".join(flat_strings(data)[0])


def misplaced(data: object, filled: set[Path], path: Path = ()) -> list[Path]:
    """Strings holding `{{` where nothing fills placeholders (e.g. cwd, a probe): a mistake to say."""
    if not path and not _any_open(data):
        return []  # the usual case, said without a path made for each of the document's nodes
    if isinstance(data, str):
        return [path] if _OPEN in data and path not in filled else []
    items = enumerate(data) if isinstance(data, list) else data.items() if isinstance(data, dict) else ()
    return [p for key, value in items for p in misplaced(value, filled, (*path, key))]
