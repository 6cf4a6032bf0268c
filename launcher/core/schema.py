"""The published JSON Schema (topology v1) and structural validation against it."""
from __future__ import annotations

import difflib
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

import fastjsonschema
from fastjsonschema.ref_resolver import RefResolver

from .errors import Diagnostic, Loc
from .yamlsrc import Source, format_path

SCHEMA_RESOURCE = "topology.schema.json"


def schema_text() -> str:
    """The schema as published (launcher/schemas). Package data, read like the package's code is
    imported: the same for every run of this version, so the core stays a function of its input."""
    return resources.files("launcher").joinpath("schemas", SCHEMA_RESOURCE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(schema_text())


@lru_cache(maxsize=1)
def _validator():
    # only on the error path: it costs ~0.1-0.2 s to import; it ships no type information
    import jsonschema  # type: ignore[import-untyped]
    base = jsonschema.validators.validator_for(schema())
    base.check_schema(schema())
    strict = base.TYPE_CHECKER.redefine("integer", lambda _checker, value: _is_integer(value))
    return jsonschema.validators.extend(base, type_checker=strict)(schema())


# A compiled check of the schema: data -> None, raising fastjsonschema.JsonSchemaException
# when the data is not valid. ~50x faster than jsonschema, but it stops at the first error
# without a good message, so check_schema runs jsonschema only when this one refuses.
Check = Callable[[Any], Any]

# Part of the key of a compiled check kept in a cache (deploy.files.schema_check): bumped when
# check_source() changes for the same schema and fastjsonschema (2: it names its `validate`;
# 3: it compiles _compiled_schema()).
CHECK_REVISION = 3


@lru_cache(maxsize=1)
def compiled_check() -> Check:
    """The check compiled in memory. Compiling costs more than a whole `launcher status`: the CLI
    passes the one it keeps compiled in the user's cache instead (deploy.files.schema_check)."""
    return fastjsonschema.compile(_compiled_schema())


def check_source() -> str:
    """Python source of the compiled check (it defines ``validate``), for a cache to keep."""
    root = RefResolver.from_schema(schema(), store={}).get_scope_name()  # the function compile_to_code defines
    return f"{fastjsonschema.compile_to_code(_compiled_schema())}\nvalidate = {root}\n"


def _compiled_schema() -> dict:
    """The schema the compiled check runs: each oneOf whose branches take disjoint JSON types is an
    anyOf, which accepts the same documents. fastjsonschema tries every branch of a oneOf, and a
    branch refusing costs an exception (~5 us): one per device of every host, a third of the
    compile's schema+model stage at 16k ranks. An anyOf stops at the first that passes. The
    thorough pass (diagnostics) keeps the published schema."""
    return _any_of_where_disjoint(schema())


_TYPE_CLASS = {"string": "string", "object": "object", "array": "array", "null": "null",
               "integer": "number", "number": "number", "boolean": "number"}  # bool is an int to Python


def _branch_type(branch: Any) -> str | None:
    if not isinstance(branch, dict):
        return None
    if isinstance(branch.get("type"), str):
        return _TYPE_CLASS.get(branch["type"])
    if "const" in branch:
        value = branch["const"]
        if value is None:
            return "null"
        return "string" if isinstance(value, str) else "object" if isinstance(value, dict) \
            else "array" if isinstance(value, list) else "number"
    return None


def _any_of_where_disjoint(node: Any) -> Any:
    if isinstance(node, list):
        return [_any_of_where_disjoint(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _any_of_where_disjoint(v) for k, v in node.items()}
    kinds = [_branch_type(b) for b in node.get("oneOf", ())]
    if kinds and None not in kinds and len(set(kinds)) == len(kinds):
        out["anyOf"] = out.pop("oneOf")
    return out


def _is_integer(value: Any) -> bool:
    """An integer is written as one: not 29390.0 (JSON Schema since draft 6 counts 1.0 as an
    integer, and a port written so was rendered as `29390.0`), not true/false."""
    return isinstance(value, int) and not isinstance(value, bool)


def _has_integral_float(data: Any) -> bool:
    """Whether the document holds a float like 5.0, which the compiled check (draft 7) takes for
    an integer: only then must the strict pass run on a document the compiled check accepts."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float) and node.is_integer():
            return True
    return False


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(schema_node: dict) -> list[str]:
    return sorted(k for k in schema_node.get("properties", {}))


def _bad_key(err, path: tuple, src: Source) -> Diagnostic:
    key = err.instance
    where = path + (key,)
    if path and path[-1] == "devices":
        msg = f"device id {key!r} is not valid (an NPU id 0..15)"
    elif path and path[-1] == "env":
        msg = f"{key!r} is not a valid environment variable name"
    else:
        msg = f"key {key!r} is not valid here (must match {err.validator_value})"
    return Diagnostic(src.loc(where), format_path(where), msg)


def _diagnostics_for(err, src: Source) -> list[Diagnostic]:
    path = tuple(err.absolute_path)
    where = format_path(path)
    kind = err.validator
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        allowed = _allowed_keys(err.schema)
        out = []
        for key in sorted(set(err.instance) - set(allowed), key=str):
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(allowed)})"
            out.append(Diagnostic(src.loc(path + (key,)), format_path(path + (key,)),
                                  f"unknown key {key!r}{suggestion}"))
        return out
    if kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [Diagnostic(src.loc(path), where, f"missing required key {missing!r}")]
    loc = src.value_loc(path)
    if kind == "type":
        expected = err.validator_value
        names = {"object": "mapping", "array": "list"}
        kinds = expected if isinstance(expected, list) else [expected]
        expected = " or ".join(names[e] if e in names else str(e) for e in kinds)
        msg = f"expected {expected}, got {_type_name(err.instance)} {_show(err.instance)}"
        if "integer" in kinds and isinstance(err.instance, float):
            msg += " (rule integer: an integer is written without a decimal point or exponent)"
    elif kind == "enum":
        msg = f"expected one of {', '.join(map(str, err.validator_value))}; got {_show(err.instance)}"
    elif kind == "const":
        msg = f"must be {_show(err.validator_value)}, got {_show(err.instance)}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum"):
        msg = f"{_show(err.instance)} is out of range ({kind} {err.validator_value})"
    elif kind == "pattern" and "propertyNames" in err.schema_path:
        return [_bad_key(err, path, src)]
    elif kind == "pattern" and "x-rule" in err.schema:  # a rule with a name and a reason
        msg = f"{_show(err.instance)} is not allowed here (rule {err.schema['x-rule']})"
    elif kind == "pattern":
        msg = f"{_show(err.instance)} is not valid here (must match {err.validator_value})"
    elif kind in ("minItems", "minLength"):
        msg = "must not be empty"
    elif kind == "oneOf":
        desc = err.schema.get("description", "")
        msg = f"invalid value {_show(err.instance)}" + (f": {desc}" if desc else "")
        if where.endswith("memlock"):
            msg = f"memlock must be 'unlimited' or a number of KiB, got {_show(err.instance)}"
    else:
        msg = err.message
    return [Diagnostic(loc, where, msg)]


def check_schema(src: Source, check: Check | None = None) -> list[Diagnostic]:
    """All structural problems in the document, each with its position; ``check`` is a compiled
    check of the schema (default: compiled_check())."""
    refused: fastjsonschema.JsonSchemaException | None = None
    try:
        (check or compiled_check())(src.data)
    except fastjsonschema.JsonSchemaException as exc:
        refused = exc
    if refused is None and not _has_integral_float(src.data):
        return []  # valid: skip the slow, thorough pass
    out: list[Diagnostic] = []
    for err in _validator().iter_errors(src.data):
        # Errors inside if/then of a service kind come once per branch; keep the useful ones.
        if err.validator in ("if", "allOf"):
            continue
        out.extend(_diagnostics_for(err, src))
    # Never fail open: when the compiled check refused, the document is invalid even if the
    # thorough pass has nothing to say (its regex `$` also matches before a final newline, the
    # compiled one's does not; a branch error was filtered out above).
    if not out and refused is not None:
        out.append(_compiled_diagnostic(refused, src))
    return out


def _compiled_diagnostic(exc: fastjsonschema.JsonSchemaException, src: Source) -> Diagnostic:
    """The compiled check's own word, at the deepest place of its path the document has."""
    path = _data_path(src.data, list(getattr(exc, "path", None) or ())[1:])  # ['data', 'hosts', '0', ...]
    rule = getattr(exc, "rule", None)
    value = getattr(exc, "value", None)
    definition = getattr(exc, "definition", None) or {}
    if rule == "pattern" and "x-rule" in definition:
        msg = f"{_show(value)} is not allowed here (rule {definition['x-rule']})"
    elif rule == "pattern":
        msg = f"{_show(value)} is not valid here (must match {definition.get('pattern')})"
    elif rule == "type":
        msg = f"expected {definition.get('type')}, got {_type_name(value)} {_show(value)}"
    else:
        msg = f"not valid here (schema rule {rule or 'unknown'}): {exc}"
    return Diagnostic(src.value_loc(path) or Loc(src.file, 1, 1), format_path(path), msg)


def _data_path(data: Any, parts: list) -> tuple:
    """The exception's path with list indices as ints, as the document has them (it gives '0')."""
    out: list = []
    for part in parts:
        if isinstance(data, list) and str(part).isdigit() and int(part) < len(data):
            part = int(part)
            data = data[part]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            data = None
        out.append(part)
    return tuple(out)
