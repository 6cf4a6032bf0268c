"""Which characters a topology's strings may hold, by where they end up (issue 21).

Most strings are written where a line break or another control character changes what is read:
paths and names go into supervisord.conf (an INI file: a newline starts a section), unit files,
file names and ranktables. Only env values and argv items are quoted byte for byte (render.sh_quote)
and may hold them. NUL and lone surrogates are refused everywhere: a NUL cannot pass through an
environment or an argv, and a surrogate cannot be written as UTF-8.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Iterator

from .errors import Diagnostic
from .yamlsrc import Path, Source, format_path

# Where any character but NUL (and a lone surrogate) is safe; "*" is any key or index.
FREE_TEXT: tuple[tuple[str, ...], ...] = (
    ("defaults", "env", "*"), ("instances", "*", "env", "*"), ("services", "*", "env", "*"),
    ("instances", "*", "command", "*"), ("instances", "*", "leader_args", "*"),
    ("instances", "*", "worker_args", "*"), ("services", "*", "command", "*"),
    ("services", "*", "extra_args", "*"),
    ("instances", "*", "probe", "command", "*"), ("services", "*", "probe", "command", "*"),
    ("instances", "*", "probe", "log"), ("services", "*", "probe", "log"),
    ("defaults", "container", "args", "*"), ("instances", "*", "container", "args", "*"),
    ("services", "*", "container", "args", "*"),
)
IGNORED = "x-anchors"  # free-form, never read: only what is used elsewhere is checked, there

RULE_NUL = "no-nul"
RULE_CONTROL = "no-control"
RULE_FINITE = "finite-numbers"
RULES = {
    RULE_NUL: "NUL and lone surrogates nowhere: they cannot pass through an environment or be written as UTF-8",
    RULE_CONTROL: "control characters only in env values, argv items and probe.log; this string goes into "
                  "a path, a name or a config file",
    RULE_FINITE: ".nan and .inf only in env values and argv items",
}

_NAMES = {0x00: "NUL", 0x09: "tab", 0x0A: "line feed", 0x0D: "carriage return", 0x1B: "escape",
          0x7F: "delete", 0x85: "next line", 0x2028: "line separator", 0x2029: "paragraph separator"}


def _free(path: Path, is_key: bool) -> bool:
    if len(path) > 1 and path[0] == IGNORED:
        return True
    return not is_key and any(len(p) == len(path) and all(t == "*" or t == part for t, part in zip(p, path))
               for p in FREE_TEXT)


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # no-control, and no-nul's
_NEVER = re.compile("[\x00\ud800-\udfff]")                              # no-nul: not even in free text


def _bad_char(text: str, path: Path, is_key: bool) -> tuple[int, str, str] | None:
    """(index, character, rule) of the first character this place refuses, or None. A regex
    search, and the place looked up only for a string that has such a character: a 256-host
    topology has ~10^4 strings."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    if _free(path, is_key):
        found = _NEVER.search(text)
        if found is None:
            return None
    ch = found.group()
    return found.start(), ch, RULE_NUL if _NEVER.fullmatch(ch) else RULE_CONTROL


def _describe(ch: str) -> str:
    code = ord(ch)
    name = _NAMES.get(code) or ("surrogate" if 0xD800 <= code <= 0xDFFF else unicodedata.name(ch, "control"))
    return f"U+{code:04X} ({name})"


def _walk(node: Any, path: Path) -> Iterator[tuple[Path, Any, bool]]:
    """(path, value, is_key) of every scalar and mapping key, iteratively (documents are bounded
    to 1M nodes, deep ones included)."""
    stack: list[tuple[Any, Path]] = [(node, path)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                yield (*at, key), key, True
                stack.append((child, (*at, key)))
        elif isinstance(value, list):
            stack.extend((child, (*at, i)) for i, child in enumerate(value))
        else:
            yield at, value, False


def flat_strings(data: Any) -> tuple[list[str], bool]:
    """Every string of a document, its keys (as str) included, in no particular order, and whether
    some number in it is not finite: one walk without a path made per node, for checks that look
    at all strings at once and walk with paths only when that finds something."""
    strings: list[str] = []
    infinite = False
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            strings += map(str, node)  # a key that is not a string is not checked: str() of it may
            # only make a false alarm, which the walk with paths then clears
            stack += node.values()
        elif isinstance(node, list):
            stack += node
        elif isinstance(node, float) and not math.isfinite(node):
            infinite = True
    return strings, infinite


def _suspect(data: Any) -> bool:
    """Whether some key or string of the document has a character a place may refuse, or a number
    is not finite: only then do the places matter. One regex search over all of them at once, and
    no path made per node (a 2048-host topology has ~46k nodes; the walk building their paths
    cost a third of the compile's schema+model stage)."""
    strings, infinite = flat_strings(data)
    # one character class: joining the strings adds no match
    return infinite or _UNSAFE.search("".join(strings)) is not None


def check_strings(src: Source) -> list[Diagnostic]:
    """Every string (and number) of the document that its place cannot carry safely, at its line:col."""
    out: list[Diagnostic] = []
    if not _suspect(src.data):
        return out
    for path, value, is_key in _walk(src.data, ()):
        if isinstance(value, str):
            bad = _bad_char(value, path, is_key)
            if bad is None:
                continue
            index, ch, rule = bad
            what = "key" if is_key else "value"
            loc = src.loc(path) if is_key else src.value_loc(path)
            out.append(Diagnostic(loc, format_path(path),
                                  f"{_describe(ch)} at character {index + 1} of the {what} is not allowed here "
                                  f"(rule {rule}: {RULES[rule]})"))
        elif isinstance(value, float) and not math.isfinite(value) and not _free(path, is_key):
            out.append(Diagnostic(src.value_loc(path), format_path(path),
                                  f"{value} is not allowed here (rule {RULE_FINITE}: {RULES[RULE_FINITE]})"))
    return out
