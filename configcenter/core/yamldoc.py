"""YAML loading that keeps line numbers, at C speed.

PyYAML's C loader composes a node tree with marks; we construct the data from
it and record, per key path, the line it stands on. (Round-trip loading is ten
times slower and is only needed where we write a user's YAML back.)
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from configcenter.core.errors import Problem, ProblemList, Source

if TYPE_CHECKING:  # PyYAML is imported by the first parse (`_parse`), not with this module
    import yaml

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


#: Defaults of limits.yaml_nodes and limits.yaml_depth (see configcenter.core.limits).
MAX_NODES = 50_000
MAX_DEPTH = 64


def parse_yaml(
    text: str,
    file: str,
    problems: ProblemList,
    cache: ParseCache | None = None,
    *,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> YamlDoc | None:
    """Parse `text`; on a syntax error, or past the limits, record it and return None.

    `max_nodes` counts every node of the document as its data would have it, an alias
    once per use (nine lines of nested aliases stand for billions of nodes); `max_depth`
    bounds nesting (and so refuses `x: &a [*a]`, a list containing itself).

    `cache` maps a digest of (file, text, limits) to an earlier parse of exactly that
    input, so it can never be stale; the caller decides where it lives.
    """
    if cache is None:
        return _parse(text, file, problems, max_nodes, max_depth)
    key = hashlib.sha256(
        f"{file}\0{max_nodes}\0{max_depth}\0".encode() + text.encode("utf-8", "surrogatepass")
    ).hexdigest()
    hit = cache.get(key)
    if hit is None:
        found = ProblemList()
        doc = _parse(text, file, found, max_nodes, max_depth)
        hit = (_FAILED if doc is None else doc.data, {} if doc is None else doc.lines, found.items)
        cache[key] = hit
    data, lines, found_problems = hit
    problems.items.extend(found_problems)
    if data is _FAILED or data == _FAILED:
        return None
    # A copy, so nothing a caller does to the data can reach the cache.
    return YamlDoc(file, _copied(data), dict(lines))


def _copied(value: Any) -> Any:
    """A copy of parsed YAML data: new maps and lists all the way down, immutable leaves
    shared (str, numbers, dates...); several times faster than `copy.deepcopy` on the
    500 files of a load. The parse refused cycles (its depth limit), so none are met."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, set):
        return set(value)
    return value


_FAILED = "\0configcenter: unparsable\0"


class _TooBig(Exception):
    def __init__(self, line: int, message: str, hint: str) -> None:
        self.line = line
        self.message = message
        self.hint = hint


def _measure(root: yaml.Node, max_nodes: int, max_depth: int) -> None:
    """Count nodes as the data would have them (aliases expanded) and check nesting depth,
    without building anything: raises _TooBig at the first limit passed."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise _TooBig(
                node.start_mark.line + 1,
                f"this YAML document has more than {max_nodes} values once its aliases "
                "(*name) are expanded (limits.yaml_nodes)",
                "write the values out, use fewer aliases, or split the file",
            )
        if depth > max_depth:
            raise _TooBig(
                node.start_mark.line + 1,
                f"YAML nested deeper than {max_depth} levels (limits.yaml_depth); "
                "an alias inside its own anchor (x: &a [*a]) nests forever",
                "flatten the structure; an alias must not refer to a value containing it",
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.append((key_node, depth + 1))
                stack.append((value_node, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


def _parse(
    text: str, file: str, problems: ProblemList, max_nodes: int, max_depth: int
) -> YamlDoc | None:
    # Bound as this module's `yaml` for _measure and _walk too: commands that parse no YAML
    # (a plan of an unchanged config, from its kept load) never import PyYAML.
    global yaml
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _measure(node, max_nodes, max_depth)
        data = loader.construct_document(node) if node is not None else None
    except _TooBig as exc:
        problems.error(Source(file, exc.line), exc.message, exc.hint)
        return None
    except RecursionError:
        problems.error(
            Source(file, 1),
            "YAML nested too deeply to read",
            "flatten the structure; an alias must not refer to a value containing it",
        )
        return None
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
        problems.error(Source(file, 1), f"YAML error: {str(exc).splitlines()[0][:120]}")
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
