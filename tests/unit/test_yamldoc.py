"""The YAML loader's one-pass construction (`core/yamldoc.py` `_parse_fast`) makes exactly
what SafeLoader's constructor and the line walk make (`_parse_nodes`): the same values of the
same types, the same line for every key path, the same problems; and it leaves to the node
path every document it does not build itself."""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path
from typing import Any

import pytest

from configcenter.core import yamldoc
from configcenter.core.errors import ProblemList

REPO = Path(__file__).resolve().parents[2]

# Plain scalars of every kind SafeLoader resolves, and texts that only look like one.
SCALARS = [
    # nulls
    "~", "null", "Null", "NULL", "", "nul", "NuLL",
    # bools (YAML 1.1: yes/no/on/off too)
    "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES", "no", "No", "NO",
    "on", "On", "ON", "off", "Off", "OFF", "y", "n", "tRUE", "yEs", "oN",
    # ints: decimal, signs, underscores, binary, octal, hex, sexagesimal
    "0", "-0", "+0", "7", "-12", "+34", "1_000", "1__0", "0b1010", "-0b1_0", "0x1F", "0xff_ff",
    "-0x1A", "017", "0_17", "08", "0o17", "0O17", "190:20:30", "1:0", "-1:30", "0x", "0b",
    "00", "1_", "_1",
    # floats
    "1.5", "-1.5", "+.5", ".5", "1.", "1e3", "1.0e+3", "1.0E-3", "6.8523015e+5", "1_000.5",
    "190:20:30.15", ".inf", "-.inf", "+.INF", ".Inf", ".nan", ".NaN", ".NAN", "1.2.3", "1.e5",
    # timestamps
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5",
    "2001-12-15T02:59:43.1Z", "2001-12-15 2:59:43.10", "2002-1-1", "2001-13-14",
    "2001-12-14T21:59:43.1234567Z",
    # strings that start like one of the above, and others
    "nginx", "tiny", "fast", "yellow", "oops", "Ollama", "-dash", "+plus", ".hidden", "0.0.0.0",
    "1.2.3.4:80", "127.0.0.1:5000", "v1.2", "~user", "=", "==", "<", "<<<", "a=b", "x <<",
    "1 2", "0x1G", "0b102", "9-5", "12:30:45am", "Ñandú", "日本", "a b c", "svc-0001",
]  # fmt: skip
QUOTED = ["'1'", '"true"', "'~'", '""', "''", '"0x1F"', "'2001-12-14'", '"a\\tb\\u00e9"']
TAGGED = [
    "!!str 123", "!!str true", "!!int '5'", '!!int "0x1F"', "!!float '1'", "!!bool 'yes'",
    "!!null ''", "!!binary aGVsbG8=", "!!timestamp '2001-12-14'", "! 5", "! true", "!'x'",
    '!!str "x"',
]  # fmt: skip

# Whole documents: structure, anchors, block scalars, comments, flow styles, keys.
DOCUMENTS = [
    "",
    "# only a comment\n",
    "---\n",
    "--- 5\n",
    "--- |\n  text\n",
    "just a string\n",
    "- a\n- 1\n- [b, {c: 2}]\n- - nested\n  - seq\n",
    "a: 1\nb:\n  c: [1, 2, {d: e}]\n  f: {g: h, i: [j]}\n",
    "a: {}\nb: []\nc: {x: {}}\nd: [[], {}]\n",
    "literal: |\n  line 1\n  line 2\nfolded: >-\n  one\n  two\n\nkeep: |+\n  x\n\n",
    "a: 'single ''quoted'''\nb: \"double \\\"quoted\\\"\"\nc: plain # comment\n",
    "k: multi\n  line plain\n  scalar\n",
    "? complex\n: value\n? other\n",
    "1: int key\n0x2: hex key\ntrue: bool key\n~: null key\n2001-12-14: date key\n1.5: f\n",
    "1: a\n0x1: b\n",
    "a: &anchor value\nb: *anchor\n",
    "base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: [*b, *b]\n",
    "list: &l [1, {a: 2}]\nagain: *l\nnested: {deep: *l}\n",
    "a: &x\n  k: 1\n  m:\n    - &y [z]\n    - *y\nb: *x\nc:\n  - *x\n  - *y\n",
    "- &s scalar\n- *s\n- {*s : v}\n",
    "&k key: 1\nother: *k\n",
    "root: &r {a: &inner {b: 1}, c: *inner}\nuse: *r\n",
    "&top {a: 1}\n",
    "'<<': quoted merge key is a string\n",
    'a: "<<"\n',
    "empty_value:\nnext: 1\n",
    "- \n- ~\n-\n",
    "{a: 1, b: [2, 3], 'c d': {e: f}}\n",
    "[1, two, 3.0, null, true, 2001-01-01]\n",
    "k: v\n...\n",
    "%YAML 1.1\n---\nk: v\n",
    "%TAG !e! tag:example.com,2000:\n---\nk: v\n",
    'unicode: "\\u263A"\nemoji: 😀\n',
    'key with spaces: value\n"quoted key": 1\n? |\n  block key\n: 2\n',
    "a:\n  - b: 1\n    c: 2\n  - d: 3\n",
    "&a\n",
    "!!str\n",
    "deep: " + "[" * 30 + "x" + "]" * 30 + "\n",
]

# Documents the fast path leaves to the node path (the result must still be the same).
DECLINED = [
    # merge keys, and the `=` value key
    "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  z: 3\n",
    "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: [*a, *b]\n  w: 0\n",
    "a: &a {x: 1}\nb:\n  <<: *a\n  x: 2\n",
    "a: &a {x: 1, <<: {y: 2}}\nb: {<<: *a}\n",
    "a: {<<: [1]}\n",
    "a: {<<: 1}\n",
    "a: <<\n",
    "=: value key\n",
    "a: =\n",
    # tags the fast path does not make
    "s: !!set {a, b}\n",
    "o: !!omap [a: 1, b: 2]\n",
    "p: !!pairs [a: 1, a: 2]\n",
    "m: !!map {a: 1}\n",
    "q: !!seq [1]\n",
    "u: !custom x\n",
    "u: !custom {a: 1}\n",
    "x: !!python/object:os.system ls\n",
    "b: !!binary not base64!\n",
    "m: !!map scalar\n",
    # keys that are collections, duplicates, anchors
    "? [a, b]\n: v\n",
    "? {a: 1}\n: v\n",
    "a: &s [1]\n*s : v\n",
    "a: 1\na: 2\n",
    "a:\n  b: 1\n  c: 2\n  b: 3\n",
    "x: &d {k: 1, k: 2}\ny: *d\n",
    "1: a\n'1': b\n",
    "a: &x 1\nb: &x 2\n",
    "a: *undefined\n",
    "x: &a [*a]\n",
    # more than one document, syntax errors
    "a: 1\n---\nb: 2\n",
    "--- a\n--- b\n",
    "template: 1.0.0\nvalues:\n  LOG_LEVEL: debug\n   DB_HOST: x\n",
    "image: {ref: x\nreplicas: 1\n",
    "values:\n  A: 1\n\tB: 2\n",
    "a: [1, 2\n",
    "a: 'unterminated\n",
    "key: value\n bad indent: x\n",
    "a: b: c\n",
    "- a\nb: c\n",
    "a: \x07bell\n",
    "multi\n  line: no\n",
    # nesting past the limits, and aliases expanded past them
    "deep: " + "[" * 70 + "]" * 70 + "\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
]


def typed(value: Any) -> Any:
    """`value` with the type of every part in it (1, 1.0 and True are equal in Python)."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    if isinstance(value, datetime.datetime):
        return ("datetime", value.isoformat(), repr(value.tzinfo))
    return (type(value).__name__, repr(value))


def by_nodes(
    text: str, max_nodes: int = yamldoc.MAX_NODES, max_depth: int = yamldoc.MAX_DEPTH
) -> tuple[Any, ...]:
    problems = ProblemList()
    doc = yamldoc._parse_nodes(text, "f.yaml", problems, max_nodes, max_depth)
    data = None if doc is None else (typed(doc.data), doc.lines)
    return data, [str(p) for p in problems.items]


def by_parse_yaml(
    text: str, max_nodes: int = yamldoc.MAX_NODES, max_depth: int = yamldoc.MAX_DEPTH
) -> tuple[Any, ...]:
    problems = ProblemList()
    doc = yamldoc.parse_yaml(text, "f.yaml", problems, max_nodes=max_nodes, max_depth=max_depth)
    data = None if doc is None else (typed(doc.data), doc.lines)
    return data, [str(p) for p in problems.items]


def scalar_documents() -> list[str]:
    """Every scalar as a value, a key, a sequence item and a flow item, block and flow."""
    texts = []
    every = SCALARS + QUOTED + TAGGED
    for text in every:
        texts.append(f"k: {text}\n")
        texts.append(f"- {text}\n- tail\n")
        texts.append(f"{{k: {text}, other: 1}}\n")
        texts.append(f"[{text}, x]\n")
        texts.append(f"{text}\n")
        if text and not text.startswith(("!", "~", "-", "?", ":")):
            texts.append(f"{text}: v\nnext: 1\n")
            texts.append(f"{{{text}: v}}\n")
    return texts


def test_fast_path_builds_what_the_node_path_builds() -> None:
    for text in scalar_documents() + DOCUMENTS:
        fast = yamldoc._parse_fast(text, yamldoc.MAX_NODES, yamldoc.MAX_DEPTH)
        nodes = by_nodes(text)
        if fast is yamldoc._DECLINED:
            # Only errors and `=` or `<<` keys are left to the node path here.
            assert nodes[0] is None or nodes[1] or text.lstrip("{").startswith(("=", "<<")), text
            continue
        assert (typed(fast[0]), fast[1]) == nodes[0], text
        assert nodes[1] == [], text
        assert by_parse_yaml(text) == nodes, text


@pytest.mark.parametrize("text", DOCUMENTS)
def test_documents_are_built_by_the_fast_path(text: str) -> None:
    assert yamldoc._parse_fast(text, yamldoc.MAX_NODES, yamldoc.MAX_DEPTH) is not yamldoc._DECLINED
    assert by_parse_yaml(text) == by_nodes(text)


@pytest.mark.parametrize("text", DECLINED)
def test_declined_documents_read_as_before(text: str) -> None:
    assert yamldoc._parse_fast(text, yamldoc.MAX_NODES, yamldoc.MAX_DEPTH) is yamldoc._DECLINED
    assert by_parse_yaml(text) == by_nodes(text)


def test_aliases_share_one_value_as_safeloader_does() -> None:
    text = "base: &b {x: [1]}\none: *b\ntwo: [*b]\n"
    doc = yamldoc.parse_yaml(text, "f.yaml", ProblemList())
    assert doc is not None
    assert doc.data["one"] is doc.data["base"] is doc.data["two"][0]
    assert doc.lines[("two", 0)] == 1  # an alias stands on its anchor's line, as a node does
    assert doc.lines[("two", 0, "x", 0)] == 1


@pytest.mark.parametrize(
    ("max_nodes", "max_depth"),
    [(5, 64), (6, 64), (7, 64), (12, 64), (13, 64), (50_000, 2), (50_000, 3), (50_000, 4)],
)
def test_limits_are_where_they_were(max_nodes: int, max_depth: int) -> None:
    # Exactly at a limit the document is built; one past it, it is refused as before.
    for text in [
        "a: [1, 2]\nb: {c: d}\n",
        "a: &x [1, 2]\nb: *x\nc: [*x]\n",
        "a: &x 1\nb: *x\n*x : 3\n",
        "- [[x]]\n- y\n",
        "{a: {b: {c: {}}}}\n",
    ]:
        assert by_parse_yaml(text, max_nodes, max_depth) == by_nodes(text, max_nodes, max_depth)


def test_combinations_of_structures() -> None:
    """Small documents made of every pairing of a few shapes, nested two deep."""
    shapes = [
        "{a: 1, b: [x, y]}",
        "[1, {c: d}]",
        "&anc {e: f}",
        "*anc",
        "'q'",
        "2001-12-14",
        "0x10",
        "!!str 5",
        "{}",
        "[]",
        "",
    ]
    for outer, inner in itertools.product(shapes, repeat=2):
        anchor = "" if "&anc" in outer + inner else "pre: &anc {e: f}\n"
        for text in (
            f"{anchor}k: {outer}\nl:\n  m: {inner}\n  n: [{inner}]\n",
            f"{anchor}s:\n  - {outer}\n  - {inner}\n",
        ):
            assert by_parse_yaml(text) == by_nodes(text), text


def test_the_repository_s_own_yaml_files() -> None:
    files = sorted(REPO.glob("**/*.y*ml"))
    files = [f for f in files if ".venv" not in f.parts and f.suffix in (".yaml", ".yml")]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert by_parse_yaml(text) == by_nodes(text), path


def test_a_key_overriding_a_merged_one_is_not_a_duplicate() -> None:
    # `<<: *base` then the map's own `x:` is what merge keys are for; it was reported as a
    # duplicate of the anchor's `x` (the walk saw the merged pairs as the map's own).
    problems = ProblemList()
    text = "base: &b {x: 1, y: 3}\nderived:\n  <<: *b\n  x: 2\n"
    doc = yamldoc.parse_yaml(text, "f.yaml", problems)
    assert doc is not None and problems.items == []
    assert doc.data["derived"] == {"x": 2, "y": 3}
    assert doc.lines[("derived", "x")] == 4 and doc.lines[("derived", "y")] == 1
    # Two sources merged with the same key: YAML's merge decides, no duplicate either.
    assert by_parse_yaml("a: &a {x: 1}\nb: &b {x: 2}\nc: {<<: [*a, *b]}\n")[1] == []


def test_a_map_s_own_keys_are_still_duplicates_next_to_a_merge() -> None:
    problems = ProblemList()
    text = "base: &b {x: 1}\nd:\n  <<: *b\n  x: 2\n  x: 3\n"
    assert yamldoc.parse_yaml(text, "f.yaml", problems) is not None
    assert [str(p) for p in problems.items] == [
        "f.yaml:5: error: duplicate key 'x' (first at line 4) "
        "(hint: remove one of them; YAML keeps only the last)"
    ]
