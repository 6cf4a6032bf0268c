"""YAML text -> plain Python data, with file:line:col for any path on demand.

PyYAML's composer (libyaml when present) keeps marks on nodes; its constructor drops
them. We build the data ourselves from the node tree and keep the tree, so a position
is looked up only when a diagnostic needs one (large topologies pay nothing for it).
Mapping keys become strings (the data model is JSON's); merge keys (``<<: *anchor``)
are honoured; duplicate keys are an error. Aliases are bounded (see ``MAX_NODES``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from .gcpause import paused
from .errors import Diagnostic, Loc, SpecErrors
from .yamlloader import CachedTagLoader

Path = tuple  # tuple[str | int, ...]

_Loader = CachedTagLoader  # the tags of plain scalars cached by text
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_SCALAR = yaml.ScalarNode

# The data model is a tree (JSON's), so an alias repeats its anchor's subtree wherever it
# appears: nine aliases of nine aliases, a few hundred bytes, would be 9^9 nodes and hang every
# command. The composer shares anchored nodes, so the expanded size is counted first, each node
# once, and a document past these bounds is refused before anything is built.
MAX_NODES = 1_000_000   # a 256-host A3 topology with every key spelled out is ~100k
MAX_DEPTH = 200


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, str) and not part.isprintable():  # a key "B\n" is shown B\n, on one line
            part = repr(part)[1:-1]
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _mark_loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _text_loc(file: str, text: str, offset: int) -> Loc:
    """line:col (1-based) of a character offset into ``text``."""
    line_start = text.rfind("\n", 0, offset) + 1
    return Loc(file, text.count("\n", 0, offset) + 1, offset - line_start + 1)


def decode_text(data: bytes, file: str) -> str:
    """UTF-8 bytes to text; a byte that is not UTF-8 is reported at its own line:col and byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        col = len(data[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise SpecErrors([Diagnostic(Loc(file, data.count(b"\n", 0, exc.start) + 1, col), "",
                                     f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
                                     f"({exc.reason})")]) from None


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

    def at(self, path: Path) -> Any:
        """The data at path; KeyError when the document has nothing there."""
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                raise KeyError(format_path(path)) from None
        return node

    def has(self, path: Path) -> bool:
        try:
            self.at(path)
            return True
        except KeyError:
            return False

    def value_loc(self, path: Path) -> Loc | None:
        """Position of the value at path, or of the deepest existing parent."""
        _, node, _ = self._walk(tuple(path))
        return _mark_loc(self.file, node.start_mark) if node is not None else None


class _AliasMarks(yaml.SafeLoader):
    """The pure-Python composer, noting where each alias is used (libyaml's does not say).
    Only run on the error path, to point at the alias that expands too far."""

    def __init__(self, text: str):
        super().__init__(text)
        self.aliases: list[tuple[str, Any, yaml.Node]] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if node is not None:
                self.aliases.append((event.anchor, event.start_mark, node))
            return node
        return super().compose_node(parent, index)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expansion(root: yaml.Node) -> tuple[dict[int, int], yaml.Node | None, yaml.Node | None]:
    """(expanded size of each node by id, capped past MAX_NODES; a node that contains itself
    or None; a node with more than MAX_DEPTH levels below it or None). Iterative: a bomb or a
    deep document must not exhaust the stack."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    deep: yaml.Node | None = None
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = min(1 + sum(size[id(k)] for k in kids), MAX_NODES + 1)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if depth[key] > MAX_DEPTH and deep is None:
                deep = node
            continue
        if key in size:
            continue
        if key in on_path:
            return size, node, deep
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in reversed(_children(node)) if id(k) not in size)
    return size, None, deep


def _too_deep(root: yaml.Node) -> yaml.Node:
    """The first node (document order) deeper than MAX_DEPTH; the tree is known to be bounded."""
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_DEPTH:
            return node
        stack.extend((k, level + 1) for k in reversed(_children(node)))
    return root


def _check_bounds(text: str, file: str, root: yaml.Node) -> None:
    sizes, cycle, deep = _expansion(root)
    if cycle is None and sizes[id(root)] <= MAX_NODES:
        if deep is not None:
            raise SpecErrors([Diagnostic(_mark_loc(file, _too_deep(root).start_mark), "",
                                         f"YAML: nested more than {MAX_DEPTH} levels deep")])
        return
    # Which alias is to blame? Compose again, noting where aliases are used (a small text: cheap).
    loader = _AliasMarks(text)
    try:
        py_root = loader.get_single_node()
    finally:
        loader.dispose()
    assert py_root is not None  # the same text composed to a node a moment ago
    sizes, cycle, _ = _expansion(py_root)
    if cycle is not None:
        anchor, mark = next((a, m) for a, m, n in loader.aliases if n is cycle)
        raise SpecErrors([Diagnostic(_mark_loc(file, mark), "",
                                     f"YAML: alias *{anchor} is used inside the node it names "
                                     f"(a recursive alias has no tree to stand for)")])
    if not loader.aliases:
        raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", f"YAML: the document has more than {MAX_NODES:,} nodes")])
    anchor, mark, node = max(loader.aliases, key=lambda a: sizes.get(id(a[2]), 0))
    each = sizes.get(id(node), 0)
    more = "more than " if each > MAX_NODES else ""
    raise SpecErrors([Diagnostic(_mark_loc(file, mark), "",
                                 f"YAML: aliases expand the document past {MAX_NODES:,} nodes "
                                 f"(alias *{anchor} repeats {more}{min(each, MAX_NODES):,} nodes each time it is used)")])


class _Unbounded(Exception):
    """The counting builder went past MAX_NODES or MAX_DEPTH, or met a merge key (which it does
    not count): _check_bounds decides, and words the error."""


class _Builder:
    """Node tree -> data. ``counted``: the tree has no aliases (a plain tree), so the builder itself
    counts nodes and levels as it goes, instead of a walk of its own before (half of parsing a
    large topology)."""

    def __init__(self, file: str, loader: Any, counted: bool = False):
        self.file = file
        self.loader = loader
        self.errors: list[Diagnostic] = []
        self.counted = counted
        self.nodes = 0

    def build(self, node: yaml.Node, path: Path) -> Any:
        if self.counted:
            self.nodes += 1
            # a node's level is len(path) + 1, its children's (a mapping's keys and values) one more
            if self.nodes > MAX_NODES or len(path) + 2 > MAX_DEPTH and not isinstance(node, yaml.ScalarNode) \
                    and node.value:
                raise _Unbounded
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
        first: dict = {}  # key -> its key node (its line, for a duplicate)
        has_merge = False
        self.nodes += len(node.value)  # the key nodes (a key that is a collection: counted as one)
        scalars = 0
        for key_node, value_node in node.value:
            # a string key and a string or digits value, the usual pair, without a call per node
            key = key_node.value if key_node.tag == _STR_TAG and type(key_node) is _SCALAR else None
            if key is None:
                if key_node.tag == _MERGE_TAG:
                    if self.counted:
                        raise _Unbounded
                    has_merge = True
                    continue
                key = self.key(key_node)
            if key in out:
                self.errors.append(Diagnostic(
                    _mark_loc(self.file, key_node.start_mark), format_path(path + (key,)),
                    f"duplicate key {key!r} (first defined at line {first[key].start_mark.line + 1})"))
                continue
            first[key] = key_node
            if type(value_node) is _SCALAR:
                scalars += 1
                tag = value_node.tag
                if tag == _STR_TAG:
                    out[key] = value_node.value
                elif tag == _INT_TAG and value_node.value.isdigit():
                    out[key] = int(value_node.value)
                else:  # a constructor may raise: not past the bounds, as when build counted each node
                    if self.counted and self.nodes + scalars > MAX_NODES:
                        raise _Unbounded
                    out[key] = self.scalar(value_node)
            else:
                out[key] = self.build(value_node, path + (key,))
        if self.counted:  # what build would have counted for the scalar values
            self.nodes += scalars
            if self.nodes > MAX_NODES:
                raise _Unbounded
        if has_merge:  # merged keys fill in what the mapping does not set itself; the first source wins
            for source in _merge_sources(node):
                for key, value in self.mapping(source, path).items():
                    out.setdefault(key, value)
        return out


@paused
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
    except yaml.reader.ReaderError as exc:  # a control character (NUL, ...): at its own position
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)  # libyaml: int
        raise SpecErrors([Diagnostic(_text_loc(file, text, exc.position), "",
                                     f"YAML: character #x{char:04x} is not allowed "
                                     f"({exc.reason})")]) from None
    except yaml.YAMLError as exc:
        raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", "the file is empty")])
    # No "&": no anchor, so no alias (one without its anchor does not compose): a plain tree,
    # bounded by the builder's own count. Its counts never exceed _check_bounds' (a duplicate
    # key's value is not built), so what it refuses _check_bounds refuses too, and words it.
    counted = "&" not in text
    if not counted:
        _check_bounds(text, file, node)
    builder = _Builder(file, loader, counted)
    try:
        data = builder.build(node, ())
    except _Unbounded:
        if builder.nodes > MAX_NODES:  # no alias to blame (_check_bounds would compose it all again to look)
            raise SpecErrors([Diagnostic(Loc(file, 1, 1), "", f"YAML: the document has more than {MAX_NODES:,} nodes")]) \
                from None
        _check_bounds(text, file, node)  # raises, unless it was a merge key
        builder = _Builder(file, loader)
        data = builder.build(node, ())
    if counted and builder.errors:  # the bounds error comes first, as when every document was walked
        _check_bounds(text, file, node)
    if builder.errors:
        raise SpecErrors(builder.errors)
    return Source(file, data, node)
