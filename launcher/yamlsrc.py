"""YAML text -> plain Python data plus the source position of every value.

PyYAML's composer keeps marks on nodes; its constructor drops them. We compose
(with libyaml when present, it is ~10x faster) and build the data ourselves so
each value and each mapping key can be traced back to file:line:col.
Merge keys (``<<: *anchor``) are honoured; duplicate keys are an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Diagnostic, Loc, SpecErrors

Path = tuple  # tuple[str | int, ...]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class Source:
    """Parsed document: ``data`` and where each path came from."""

    file: str
    data: Any
    locs: dict = field(default_factory=dict)      # path -> Loc of the value
    key_locs: dict = field(default_factory=dict)  # path -> Loc of the mapping key

    def loc(self, path: Path) -> Loc | None:
        """Best position for a path: the key if it exists, else the value, else a parent."""
        path = tuple(path)
        while True:
            if path in self.key_locs:
                return self.key_locs[path]
            if path in self.locs:
                return self.locs[path]
            if not path:
                return None
            path = path[:-1]

    def value_loc(self, path: Path) -> Loc | None:
        path = tuple(path)
        while path not in self.locs and path:
            path = path[:-1]
        return self.locs.get(path)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _mark_loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str, loader: Any):
        self.file = file
        self.loader = loader
        self.locs: dict = {}
        self.key_locs: dict = {}
        self.errors: list[Diagnostic] = []

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.locs[path] = _mark_loc(self.file, node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        constructor = self.loader.yaml_constructors.get(node.tag)
        if constructor is None:  # an explicit unknown tag: keep the text
            return node.value
        return constructor(self.loader, node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        out: dict = {}
        explicit: set = set()
        merged: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                merged.extend(s for s in sources if isinstance(s, yaml.MappingNode))
                continue
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            key_loc = _mark_loc(self.file, key_node.start_mark)
            if key in explicit:
                first = self.key_locs.get(path + (key,))
                self.errors.append(Diagnostic(
                    key_loc, format_path(path + (key,)),
                    f"duplicate key {key!r} (first defined at line {first.line if first else '?'})"))
                continue
            explicit.add(key)
            self.key_locs[path + (key,)] = key_loc
            out[key] = self.build(value_node, path + (key,))
        # Merge keys fill in what the mapping does not set itself; the first merge source wins.
        for source in merged:
            for key_node, value_node in source.value:
                key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                if key in out:
                    continue
                self.key_locs[path + (key,)] = _mark_loc(self.file, key_node.start_mark)
                out[key] = self.build(value_node, path + (key,))
        return out


def load_yaml(text: str, file: str) -> Source:
    """Parse one YAML document. Raises SpecErrors with file:line:col on bad YAML."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = _mark_loc(file, mark) if mark else None
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise SpecErrors([Diagnostic(loc, "", f"YAML syntax: {problem}{context}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", "the file is empty")])
    builder = _Builder(file, loader)
    data = builder.build(node, ())
    if builder.errors:
        raise SpecErrors(builder.errors)
    return Source(file, data, builder.locs, builder.key_locs)
