"""YAML loading that keeps line numbers, at C speed.

The data and the line of every key path are built in one pass over the events of
PyYAML's C parser, with SafeLoader's own resolvers and scalar constructors (see
"the fast path" below); what that pass does not build itself goes the node path:
the C composer's node tree, SafeLoader's constructor and a walk for the lines.
(Round-trip loading is ten times slower and is only needed where we write a
user's YAML back.)
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from configcenter.core.errors import Problem, ProblemList, Source

if TYPE_CHECKING:  # PyYAML is imported by the first parse (`_bind_yaml`), not with this module
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
    built = _parse_fast(text, max_nodes, max_depth)
    if built is _DECLINED:
        # Whatever the fast path declines, and every error.
        return _parse_nodes(text, file, problems, max_nodes, max_depth)
    data, lines = built
    return YamlDoc(file, data, lines)


def _parse_nodes(
    text: str, file: str, problems: ProblemList, max_nodes: int, max_depth: int
) -> YamlDoc | None:
    """The node path: compose, measure, SafeLoader's constructor, then the line walk.
    Every document the fast path declines, every error; the reference for the fast path."""
    if _Loader is None:
        _bind_yaml()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _measure(node, max_nodes, max_depth)
            own = _own_pairs(node)  # before the constructor merges `<<` keys into the maps
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
        problems.error(*_syntax_error(exc, file))
        return None
    except yaml.YAMLError as exc:
        problems.error(Source(file, 1), f"YAML error: {str(exc).splitlines()[0][:120]}")
        return None
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError):
        # A scalar its type's constructor cannot make: `2001-13-14`, `!!int abc`, ...
        problems.error(*_unmakeable(node, file))
        return None
    finally:
        loader.dispose()
    doc = YamlDoc(file, data)
    if node is not None:
        _walk(node, (), doc, problems, own)
    return doc


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _own_pairs(root: yaml.Node) -> dict[int, int]:
    """How many key/value pairs of each mapping with a merge key (`<<`) are its own: the
    constructor puts the merged pairs first and these last."""
    own: dict[int, int] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            mine = [pair for pair in node.value if pair[0].tag != _MERGE_TAG]
            if len(mine) != len(node.value):
                own[id(node)] = len(mine)
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return own


#: Contexts in which PyYAML notices only later (often at the end of the file) that a
#: bracket or quote was never closed: the line to fix is the one that opened it.
_UNCLOSED = {
    "while parsing a flow mapping": (
        "'{'",
        "close it with '}' on this line, or quote the value if the '{' is text",
    ),
    "while parsing a flow sequence": (
        "'['",
        "close it with ']' on this line, or quote the value if the '[' is text",
    ),
    "while scanning a quoted scalar": (
        "quote",
        "close it with the same quote on this line ('' inside '...', \\\" inside \"...\")",
    ),
}


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> tuple[Source, str, str]:
    problem, opened = exc.problem_mark, exc.context_mark
    unclosed = _UNCLOSED.get(exc.context or "")
    if unclosed and problem is not None and opened is not None and problem.line > opened.line:
        what, hint = unclosed
        return (
            Source(file, opened.line + 1),
            f"YAML syntax error: the {what} opened on this line is not closed "
            f"({exc.problem} at line {problem.line + 1})",
            hint,
        )
    mark = problem or opened
    return (
        Source(file, mark.line + 1 if mark else 1),
        f"YAML syntax error: {exc.problem or exc.context}",
        "check indentation, quotes and colons on this line or the one before",
    )


_KINDS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:timestamp": "a date",
}


def _unmakeable(root: yaml.Node, file: str) -> tuple[Source, str, str]:
    """Where and what the first scalar (in document order) is that its tag's constructor
    cannot make, as a problem's source, message and hint."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode) and node.tag in _SCALAR_TAGS:
            try:
                _CONSTRUCTORS[node.tag](_CONSTRUCTOR, node)
            except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
                kind = _KINDS.get(node.tag, node.tag)
                why = f": {exc}" if isinstance(exc, ValueError) else ""
                return (
                    Source(file, node.start_mark.line + 1),
                    f"YAML cannot read '{node.value}' as {kind}{why}",
                    f"quote it to keep it as text, or write a valid {kind}",
                )
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in reversed(node.value) for part in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return Source(file, 1), "YAML has a value that cannot be read", "check the values' types"


def _walk(
    node: yaml.Node, path: Path, doc: YamlDoc, problems: ProblemList, own: dict[int, int]
) -> None:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        # Pairs a merge key brought in come first; a key of the map's own overrides them
        # (that is what `<<` is for), only its own keys can be duplicates.
        merged = len(node.value) - own.get(id(node), len(node.value))
        for index, (key_node, value_node) in enumerate(node.value):
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if index >= merged:
                if key in seen:
                    problems.error(
                        Source(doc.file, line),
                        f"duplicate key '{key}' (first at line {seen[key]})",
                        "remove one of them; YAML keeps only the last",
                    )
                seen[key] = line
            _walk(value_node, (*path, key), doc, problems, own)
            doc.lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), doc, problems, own)


# -- the fast path ---------------------------------------------------------------------------
#
# The data and the line of every key path are built in one pass over the C parser's events,
# without nodes and without PyYAML's Python constructor. A scalar is resolved by PyYAML's own
# implicit resolvers (its table, in its order) and made by SafeConstructor's own scalar
# constructors, so every value is the one SafeLoader makes. What this pass does not do itself
# (merge keys `<<`, `=` keys, tags on collections or other than the scalar types, collections
# as keys, duplicate keys, aliases inside their own anchor, duplicate anchors, more than one
# document, the limits passed, any error of the parser) it leaves to the node path, which
# reports it exactly as it always has: `_parse_fast` returns _DECLINED and `_parse` takes
# that path.

_DECLINED: Any = object()
_STR_TAG = "tag:yaml.org,2002:str"
# Bound by _bind_yaml (the first parse): commands that parse no YAML (a plan of an unchanged
# config, from its kept load) never import PyYAML.
_Loader: Any = None
_IMPLICIT: dict[Any, list[tuple[str, Any]]] = {}
_WILDCARD: list[tuple[str, Any]] = []
_CONSTRUCTORS: dict[str | None, Any] = {}
_CONSTRUCTOR: Any = None


class _EveryText:
    """Contains every text: with a wildcard resolver, every plain scalar is resolved."""

    def __contains__(self, text: object) -> bool:
        return True


_EVERY_TEXT = _EveryText()
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{kind}"
    for kind in ("null", "bool", "int", "float", "binary", "timestamp", "str")
)
#: text -> value of untagged plain scalars whose first character has resolvers (the same
#: texts come back from file to file; every value a scalar constructor makes is immutable).
_PLAIN: dict[str, Any] = {}
#: The deepest nesting this pass builds; deeper documents take the node path (its
#: recursive constructor decides what becomes of them).
_FAST_DEPTH = 100


def _bind_yaml() -> None:
    """Import PyYAML, as this module's `yaml`, and bind the loader and its tables."""
    global yaml, _Loader, _IMPLICIT, _WILDCARD, _CONSTRUCTORS, _CONSTRUCTOR
    import yaml

    _Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    _IMPLICIT = _Loader.yaml_implicit_resolvers
    _WILDCARD = _IMPLICIT.get(None, [])
    _CONSTRUCTORS = yaml.constructor.SafeConstructor.yaml_constructors
    _CONSTRUCTOR = yaml.constructor.SafeConstructor()


class _Decline(Exception):
    """The fast path leaves this document to the node path."""


def _scalar_value(tag: str | None, implicit: tuple[bool, bool], text: str) -> Any:
    """What SafeLoader makes of a scalar event: `Resolver.resolve`, then its constructor."""
    if tag is None or tag == "!":
        tag = _STR_TAG
        if implicit[0]:
            resolvers = _IMPLICIT.get(text[0] if text else "", [])
            if _WILDCARD:
                resolvers = resolvers + _WILDCARD
            for candidate, regexp in resolvers:
                if regexp.match(text):
                    tag = candidate
                    break
    if tag == _STR_TAG:
        return text
    if tag not in _SCALAR_TAGS:
        raise _Decline
    return _CONSTRUCTORS[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text))


def _plain_value(text: str) -> Any:
    """`_scalar_value` of an untagged plain scalar, kept in _PLAIN."""
    value = _scalar_value(None, (True, False), text)
    if len(_PLAIN) >= 65_536:
        _PLAIN.clear()
    _PLAIN[text] = value
    return value


class _Anchor:
    """An anchored node: its value and line, the lines of its subtree (paths relative to
    it), its node count with aliases expanded (keys too), the keys among them, its height;
    `text` for a scalar."""

    __slots__ = ("done", "height", "keys", "line", "lines", "size", "text", "value")

    def __init__(self, value: Any, line: int, text: str | None) -> None:
        self.value = value
        self.line = line
        self.text = text
        self.lines: list[tuple[Path, int]] = []
        self.size = 1
        self.keys = 0
        self.height = 1
        self.done = text is not None


def _parse_fast(text: str, max_nodes: int, max_depth: int) -> Any:
    """(data, lines) exactly as the node path makes them, or _DECLINED."""
    if _Loader is None:
        _bind_yaml()
    loader = _Loader(text)
    try:
        return _build(loader, max_nodes, min(max_depth, _FAST_DEPTH))
    except Exception:  # whatever went wrong there, the node path says it as it always has
        return _DECLINED
    finally:
        loader.dispose()


def _build(loader: Any, max_nodes: int, max_depth: int) -> tuple[Any, dict[Path, int]]:
    get = loader.get_event
    get()  # StreamStartEvent
    if get().__class__ is yaml.StreamEndEvent:
        return None, {}
    scalar_event = yaml.ScalarEvent
    mapping_start = yaml.MappingStartEvent
    sequence_start = yaml.SequenceStartEvent
    mapping_end = yaml.MappingEndEvent
    sequence_end = yaml.SequenceEndEvent
    alias_event = yaml.AliasEvent
    implicit = _IMPLICIT if not _WILDCARD else _EVERY_TEXT
    plain = _PLAIN
    # Every node but a key has its own path in `lines` (a value in a mapping: its key's
    # line), so the nodes _measure counts are len(lines) + keys, and a node's depth is
    # len(its path) + 1.
    lines: dict[Path, int] = {}
    keys = 0
    anchors: dict[str, _Anchor] = {}
    # The open collection as locals (`container` None above the root), its parents on the
    # stack. In a mapping, `key` is the pending key (_DECLINED: a key comes next) and
    # `child` its path.
    container: Any = None
    is_map = False
    path: Path = ()
    depth = 0
    key: Any = _DECLINED
    child: Path = ()
    stack: list[tuple[Any, ...]] = []
    entry: _Anchor | None
    root: Any = None
    while True:
        event = get()
        cls = event.__class__
        if cls is scalar_event:
            # A string unless it has a tag or a resolver is listed for its first character.
            value = event.value
            if event.tag is not None:
                value = _scalar_value(event.tag, event.implicit, value)
            elif value[:1] in implicit and event.implicit[0]:
                made = plain.get(value, _DECLINED)
                value = _plain_value(value) if made is _DECLINED else made
            if is_map:
                if key is _DECLINED:
                    # A key, as its text in the path.
                    key = value
                    child = (*path, event.value)
                    if child in lines:
                        raise _Decline
                    line = lines[child] = event.start_mark.line + 1
                    keys += 1
                    if event.anchor is not None:
                        if event.anchor in anchors:
                            raise _Decline
                        anchors[event.anchor] = _Anchor(value, line, event.value)
                    continue
                container[key] = value
                key = _DECLINED
                if event.anchor is None:
                    continue
                line = event.start_mark.line + 1
            elif container is None:
                line = lines[()] = event.start_mark.line + 1
                root = value
            else:
                line = lines[(*path, len(container))] = event.start_mark.line + 1
                container.append(value)
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise _Decline
                anchors[event.anchor] = _Anchor(value, line, event.value)
            if container is None:
                break
            continue
        if cls is mapping_end or cls is sequence_end:
            (container, is_map, path, depth, key, child,
             name, at, start_lines, start_keys) = stack.pop()  # fmt: skip
            if name is not None:
                # Everything added to `lines` since the anchor's start is its subtree.
                entry = anchors[name]
                added = len(lines) - start_lines
                cut = len(at)
                entry.lines = [(p[cut:], n) for p, n in islice(reversed(lines.items()), added)]
                entry.lines.reverse()
                entry.keys = keys - start_keys
                entry.size = added + entry.keys + 1
                entry.height = 1 + max((len(p) for p, _ in entry.lines), default=0)
                entry.done = True
            if container is None:
                break
            continue
        if cls is alias_event:
            entry = anchors.get(event.anchor)
            if entry is None or not entry.done:
                raise _Decline
            if is_map and key is _DECLINED:
                # A key: an alias of a scalar.
                if entry.text is None:
                    raise _Decline
                key = entry.value
                child = (*path, entry.text)
                if child in lines:
                    raise _Decline
                lines[child] = entry.line
                keys += 1
                continue
            at = child if is_map else (*path, len(container))
            if len(lines) + keys + entry.size > max_nodes or len(at) + entry.height > max_depth:
                raise _Decline
            if is_map:
                container[key] = entry.value
                key = _DECLINED
            else:
                lines[at] = entry.line
                container.append(entry.value)
            keys += entry.keys
            for rel, n in entry.lines:
                lines[(*at, *rel)] = n
            continue
        if cls is mapping_start:
            new: Any = {}
        elif cls is sequence_start:
            new = []
        else:
            raise _Decline
        if event.tag is not None and event.tag != "!":
            raise _Decline
        if depth >= max_depth or (is_map and key is _DECLINED):
            raise _Decline  # too deep, or a collection as a key
        line = event.start_mark.line + 1
        if container is None:
            at = ()
            lines[at] = line
            root = new
        elif is_map:
            at = child
            container[key] = new
        else:
            at = (*path, len(container))
            lines[at] = line
            container.append(new)
        name = event.anchor
        if name is not None:
            if name in anchors:
                raise _Decline
            anchors[name] = _Anchor(new, line, None)
        stack.append((container, is_map, path, depth, _DECLINED, child, name, at, len(lines), keys))
        container, is_map, path, depth, key = new, cls is mapping_start, at, depth + 1, _DECLINED
    if len(lines) + keys > max_nodes or max(map(len, lines)) >= max_depth:
        raise _Decline
    if get().__class__ is not yaml.DocumentEndEvent or get().__class__ is not yaml.StreamEndEvent:
        raise _Decline
    return root, lines
