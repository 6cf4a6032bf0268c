"""PyYAML's safe loader (libyaml's when present) with a cheaper tag resolver, for yamlsrc.

A 16k-rank topology has ~50k scalars; libyaml's parser asks the Python resolver for each one's
tag (a few regular expressions each time), and to track paths around each node.
"""
from __future__ import annotations

from typing import Any

import yaml

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CachedTagLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """With no path resolvers (none is registered) a plain scalar's tag depends only on its text:
    it is cached by text, and the path tracking does nothing. Same tags, same marks."""

    def __init__(self, stream: str):
        super().__init__(stream)
        if self.yaml_path_resolvers:
            return
        tags: dict[str, str] = {}
        resolve = super().resolve
        scalar, default = yaml.ScalarNode, self.DEFAULT_SCALAR_TAG

        def cached(kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
            if kind is not scalar:
                return resolve(kind, value, implicit)
            if not implicit[0]:  # quoted or with a tag: no implicit resolver applies
                return default
            tag = tags.get(value)
            if tag is None:
                tag = tags[value] = resolve(kind, value, implicit)
            return tag

        # instance attributes: what the parser calls, without a method's binding
        self.resolve = cached
        self.descend_resolver = _no_descend
        self.ascend_resolver = _no_ascend


def _no_descend(node: Any, index: Any) -> None:
    return None


def _no_ascend() -> None:
    return None
