"""YAML loading that keeps line numbers, at C speed.

PyYAML's C loader composes a node tree with marks; we construct the data from
it and record, per key path, the line it stands on. (Round-trip loading is ten
times slower and is only needed where we write a user's YAML back.)
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from configcenter.core.errors import Problem, ProblemList, Source

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

Path = tuple[str | int, ...]


@dataclass
class YamlDoc:
    """A parsed YAML file: its data, and the line of every key path in it."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def source(self, *path: str | int) -> Source:
        """The line of `path`, falling back to its nearest parent that has one."""
        p: Path = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return Source(self.file, self.lines.get(p, 1))


ParseCache = MutableMapping[str, tuple[Any, dict[Path, int], list[Problem]]]


def parse_yaml(
    text: str, file: str, problems: ProblemList, cache: ParseCache | None = None
) -> YamlDoc | None:
    """Parse `text`; on a syntax error, record it and return None.

    `cache` maps a digest of (file, text) to an earlier parse of exactly that
    input, so it can never be stale; the caller decides where it lives.
    """
    if cache is None:
        return _parse(text, file, problems)
    key = hashlib.sha256(file.encode() + b"\0" + text.encode()).hexdigest()
    hit = cache.get(key)
    if hit is None:
        found = ProblemList()
        doc = _parse(text, file, found)
        hit = (_FAILED if doc is None else doc.data, {} if doc is None else doc.lines, found.items)
        cache[key] = hit
    data, lines, found_problems = hit
    problems.items.extend(found_problems)
    if data is _FAILED or data == _FAILED:
        return None
    # A copy, so nothing a caller does to the data can reach the cache.
    return YamlDoc(file, copy.deepcopy(data), dict(lines))


_FAILED = "\0configcenter: unparsable\0"


def _parse(text: str, file: str, problems: ProblemList) -> YamlDoc | None:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problems.error(
            Source(file, line),
            f"YAML syntax error: {exc.problem or exc.context}",
            "check indentation, quotes and colons on this line or the one before",
        )
        return None
    except yaml.YAMLError as exc:
        problems.error(Source(file, 1), f"YAML error: {exc}")
        return None
    finally:
        loader.dispose()
    doc = YamlDoc(file, data)
    if node is not None:
        _walk(node, (), doc, problems)
    return doc


def _walk(node: yaml.Node, path: Path, doc: YamlDoc, problems: ProblemList) -> None:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.error(
                    Source(doc.file, line),
                    f"duplicate key '{key}' (first at line {seen[key]})",
                    "remove one of them; YAML keeps only the last",
                )
            seen[key] = line
            _walk(value_node, (*path, key), doc, problems)
            doc.lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), doc, problems)
