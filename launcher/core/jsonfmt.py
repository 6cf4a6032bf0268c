"""Readable, deterministic JSON: small containers on one line, large ones broken up.

The stdlib's indenting encoder is pure Python (~20x slower than its C encoder); this
formats with the C encoder per subtree, so a 16k-rank plan renders in well under a second
and a ranktable still reads one device per line.
"""
from __future__ import annotations

import json
import json.encoder
from typing import Any, Callable

WIDTH = 100
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))
_string: Callable[[str], str] = json.encoder.encode_basestring
string = _string  # a str as JSON (what compact writes for one), called directly


def _c_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder made once: JSONEncoder.encode makes a new one per call, which costs more
    than encoding a small dict (16k ranks' tables and docs are ~100k small containers)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:  # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
        enc = make(None, _encoder.default, _string, None, ": ", ", ", False, False, True)
        if "".join(enc({"a": [1, 2.5, None, True, "é"]}, 0)) != _encoder.encode({"a": [1, 2.5, None, True, "é"]}):
            return None
    except TypeError:  # another Python's signature
        return None
    return enc


# value, 0 -> the chunks of its one-line JSON ("".join them); called as is, not through a wrapper
_chunks = _c_encoder() or (lambda value, _level: (_encoder.encode(value),))


def _dumps(value: Any) -> str:
    if type(value) is str:
        return _string(value)
    if type(value) is int:  # what the C encoder writes for an int, without making its chunk list
        return int.__repr__(value)
    return "null" if value is None else "".join(_chunks(value, 0))


def _key(key: Any) -> str:
    """A key that is not a string (an int, ...) quoted as json writes it: ``"1"``, never ``1``."""
    return _string(next(iter(json.loads(_encoder.encode({key: 0})))))


class Formatted(str):
    """A subtree already formatted by ``formatted`` at the indent it is placed at: shared by
    documents that hold the same subtree (the same gang in every member host's gang.json)."""


_CONTAINERS = (dict, list, Formatted)


def _fmt(value: Any, indent: int) -> str:
    """Bottom-up: each subtree is encoded once, leaves by one C-encoder call."""
    if type(value) is str:
        return _string(value)
    if type(value) is Formatted:
        return value
    if not isinstance(value, _CONTAINERS) or not value:
        return _dumps(value)
    items: Any = value.values() if isinstance(value, dict) else value
    for v in items:  # a loop, not any(genexpr): this runs for every small container
        if isinstance(v, _CONTAINERS):
            break
    else:
        flat = "".join(_chunks(value, 0))
        if indent + len(flat) <= WIDTH:
            return flat
    return _laid_out(value, indent)


def _laid_out(value: Any, indent: int) -> str:
    """_fmt of a container that is not one flat line: its items each on a line, unless they fit on one.
    A string item, and a list's flat dicts (a ranktable's devices), are done here, not by a call of _fmt each."""
    inner = indent + 2
    if isinstance(value, dict):
        parts = [f"{_string(k) if type(k) is str else _key(k)}: {_string(v) if type(v) is str else _fmt(v, inner)}"
                 for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        parts = []
        for v in value:
            if type(v) is dict and v:
                for w in v.values():
                    if isinstance(w, _CONTAINERS):
                        parts.append(_laid_out(v, inner))
                        break
                else:
                    flat = "".join(_chunks(v, 0))
                    parts.append(flat if inner + len(flat) <= WIDTH else _laid_out(v, inner))
            else:
                parts.append(_fmt(v, inner))
        opening, closing = "[", "]"
    # the one-line form only when it can fit: not joined just to be measured (a gang.json's entries)
    if indent + 2 * len(parts) + sum(map(len, parts)) <= WIDTH:
        flat = opening + ", ".join(parts) + closing
        if "\n" not in flat:
            return flat
    pad = " " * inner
    return opening + "\n" + ",\n".join(pad + part for part in parts) + "\n" + " " * indent + closing


def formatted(value: Any, indent: int) -> Formatted:
    """``value`` as ``dumps`` lays it out at ``indent``, to be placed there in a larger document."""
    return Formatted(_fmt(value, indent))


def compact(value: Any) -> str:
    """One line, with spaces after separators."""
    return _dumps(value)


def dumps(value: Any) -> str:
    """JSON text with a trailing newline."""
    return _fmt(value, 0) + "\n"


def dumps_bytes(value: Any) -> bytes:
    return dumps(value).encode("utf-8")
