"""YAML text -> plain Python data, with file:line:col for any path on demand.

PyYAML's composer (libyaml when present) keeps marks on nodes; its constructor drops
them. We build the data ourselves from the node tree and keep the tree, so a position
is looked up only when a diagnostic needs one (large topologies pay nothing for it).
Mapping keys become strings (the data model is JSON's); merge keys (``<<: *anchor``)
are honoured; duplicate keys are an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from .errors import Diagnostic, Loc, SpecErrors

Path = tuple  # tuple[str | int, ...]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _mark_loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _merge_sources(node: yaml.MappingNode) -> list[yaml.MappingNode]:
    out: list[yaml.MappingNode] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            out.extend(s for s in sources if isinstance(s, yaml.MappingNode))
    return out


def _find_pair(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) that provides ``key``, explicit keys before merged ones."""
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG and isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    for source in _merge_sources(node):
        found = _find_pair(source, key)
        if found:
            return found
    return None


@dataclass(slots=True)
class Source:
    """Parsed document: ``data``, and the node tree to find where each path came from."""

    file: str
    data: Any
    root: yaml.Node | None = None

    def _walk(self, path: Path) -> tuple[yaml.Node | None, yaml.Node | None, int]:
        """(key node of the last step or None, deepest node reached, steps walked)."""
        node, key_node = self.root, None
        for depth, part in enumerate(path):
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                pair = _find_pair(node, part)
                if pair is None:
                    return None, node, depth
                key_node, node = pair
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                key_node, node = None, node.value[part]
            else:
                return None, node, depth
        return key_node, node, len(path)

    def loc(self, path: Path) -> Loc | None:
        """Position of a mapping key (for "unknown key" and the like), else of its value."""
        key_node, node, depth = self._walk(tuple(path))
        target = key_node if key_node is not None and depth == len(path) else node
        return _mark_loc(self.file, target.start_mark) if target is not None else None

    def value_loc(self, path: Path) -> Loc | None:
        """Position of the value at path, or of the deepest existing parent."""
        _, node, _ = self._walk(tuple(path))
        return _mark_loc(self.file, node.start_mark) if node is not None else None


class _Builder:
    def __init__(self, file: str, loader: Any):
        self.file = file
        self.loader = loader
        self.errors: list[Diagnostic] = []

    def build(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR_TAG:
            return node.value
        if tag == _INT_TAG and node.value.isdigit():
            return int(node.value)
        constructor = self.loader.yaml_constructors.get(tag)
        if constructor is None:  # an explicit unknown tag: keep the text
            return node.value
        return constructor(self.loader, node)

    def key(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node)
            return value if isinstance(value, str) else str(node.value)
        return str(node.value)

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        out: dict = {}
        first_line: dict = {}
        has_merge = False
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                has_merge = True
                continue
            key = self.key(key_node)
            if key in out:
                self.errors.append(Diagnostic(
                    _mark_loc(self.file, key_node.start_mark), format_path(path + (key,)),
                    f"duplicate key {key!r} (first defined at line {first_line[key]})"))
                continue
            first_line[key] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, path + (key,))
        if has_merge:  # merged keys fill in what the mapping does not set itself; the first source wins
            for source in _merge_sources(node):
                for key, value in self.mapping(source, path).items():
                    out.setdefault(key, value)
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
    except yaml.YAMLError as exc:  # e.g. a reader error on control characters
        raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", "the file is empty")])
    builder = _Builder(file, loader)
    data = builder.build(node, ())
    if builder.errors:
        raise SpecErrors(builder.errors)
    return Source(file, data, node)
