"""One Jinja compile for templates that differ only in their literal text.

Config repos hold many copies of one template with another service's name, port or
comment written into the text around the `{{ }}` and `{% %}` tags. Jinja compiles
each copy from scratch (lex, parse, generate Python, `compile()`: ~2 ms each, the
whole of a cold render), although the code it makes differs only in the string
constants that hold that text.

`SharedCompile` lexes a source, and when an earlier source had the same tokens
(statements, expressions, names, line numbers) with only other text between them,
it takes that shape's compiled code and puts this source's text, template name and
file name into its constants. A shape is compiled once with placeholders for its
text (private-use code points, so they cannot meet a template's own text). Whatever
does not fit (a lexing or compile error, statements whose code depends on their text,
a source holding the placeholder characters, an environment with extensions,
autoescape or finalize) is left to Jinja's own compile, so its errors are Jinja's.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from types import CodeType
from typing import Any, NamedTuple

import jinja2
from jinja2 import meta
from jinja2.lexer import TOKEN_DATA, Token, TokenStream
from jinja2.parser import Parser

_OPEN, _CLOSE = "\ue000", "\ue001"
_SLOT = re.compile(f"{_OPEN}(n|[0-9]+){_CLOSE}")
_NAME_SLOT = f"{_OPEN}n{_CLOSE}"
#: Statements whose generated code depends on the text inside them: `autoescape`
#: escapes the text at compile time, a `required` block checks it is blank.
_TEXT_DEPENDENT = frozenset({"autoescape", "required"})
_UNSHAREABLE = object()
#: Tags as a plain scan finds them, and tag starts: trusted only where they find exactly
#: what Jinja's lexer found in a source with the same tags (`_keep_frame`).
_TAG = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.DOTALL)
_BEGIN = re.compile(r"\{[{%#]")


_BEGINS = frozenset({"variable_begin", "block_begin", "comment_begin", "raw_begin"})


#: A text slot: whether the lexer made a text token there, the line breaks in the source's
#: text there, and the whitespace a `-%}` before it takes into its tag token.
_Slot = tuple[bool, int, str]


def _scan(source: str) -> tuple[list[str], list[str]]:
    """Tags as the plain scan finds them, and the n + 1 texts around them."""
    parts = _TAG.split(source)  # text, tag, text, ..., text
    return parts[1::2], parts[0::2]


_FrameKey = tuple[tuple[str, ...], tuple[_Slot, ...]]


def _frame(source: str) -> tuple[_FrameKey, tuple[str, ...]] | None:
    """The tags of `source`, what each text between them is to the lexer, and the text
    tokens' values; None when the text holds a tag start or a carriage return (the plain
    scan would not cut it as the lexer does)."""
    if "\r" in source:
        return None
    tags, texts = _scan(source)
    if any(map(_BEGIN.search, texts)):
        return None
    if not (
        "{{-" in source
        or "{%-" in source
        or "{#-" in source
        or "-}}" in source
        or "-%}" in source
        or "-#}" in source
    ):
        # No whitespace control (`{%-`, `-%}`, ...): each text is a token as it is.
        plain = tuple([(bool(text), text.count("\n"), "") for text in texts])
        return (tuple(tags), plain), tuple([text for text in texts if text])
    slots: list[_Slot] = []
    values: list[str] = []
    for i, text in enumerate(texts):
        lead = _lead(tags, i, text)
        data = _data(tags, i, text, lead)
        slots.append((bool(data), text.count("\n"), lead))
        if data:
            values.append(data)
    return (tuple(tags), tuple(slots)), tuple(values)


def _lead(tags: Sequence[str], i: int, text: str) -> str:
    """The whitespace a `-%}`, `-}}` or `-#}` before text `i` takes (Jinja: `\\s*`)."""
    if i > 0 and tags[i - 1][-3] == "-":
        return text[: len(text) - len(text.lstrip())]
    return ""


def _data(tags: Sequence[str], i: int, text: str, lead: str) -> str:
    """What the lexer makes of text `i`: without `lead`, and right-stripped before a
    `{%-`, `{{-` or `{#-` (Jinja: `str.rstrip`)."""
    data = text[len(lead) :]
    if i < len(tags) and tags[i][2] == "-":
        data = data.rstrip()
    return data


def _plain_syntax(env: jinja2.Environment) -> bool:
    """Jinja's default delimiters, no line statements, no trimming: the lexer cuts text
    only at `{{`, `{%` and `{#`, and keeps it whole."""
    return (
        (env.block_start_string, env.block_end_string) == ("{%", "%}")
        and (env.variable_start_string, env.variable_end_string) == ("{{", "}}")
        and (env.comment_start_string, env.comment_end_string) == ("{#", "#}")
        and env.line_statement_prefix is None
        and env.line_comment_prefix is None
        and not env.trim_blocks
        and not env.lstrip_blocks
        and env.keep_trailing_newline
        and env.newline_sequence == "\n"
    )


class _Shape:
    """The tokens of a source with each text token's value left out, as a dict key whose
    hash is computed once (a template has a few hundred tokens; sources lexed by their
    frame share their shape's object, so a lookup is a hash and an identity check)."""

    __slots__ = ("_hash", "tokens")

    def __init__(self, tokens: tuple[Any, ...]) -> None:
        self.tokens = tokens
        self._hash = hash(tokens)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Shape) and self.tokens == other.tokens)


class _Lexed(NamedTuple):
    shape: _Shape
    texts: tuple[str, ...]  # the text tokens' values, in order
    tokens: tuple[Token, ...]


class SharedCompile:
    """Compiled shapes of template sources, for environments configured alike.

    One instance serves environments that compile the same way (same class, syntax,
    filters, tests and options, as one `Renderer` makes them); the loader and the
    limits may differ, they do not change the code. Keeps the last `max_shapes`.
    """

    def __init__(self, max_shapes: int = 1024) -> None:
        self._shapes: OrderedDict[_Shape, Any] = OrderedDict()
        self._names: OrderedDict[_Shape, Any] = OrderedDict()
        # The last sources lexed: the consumption check and the compile lex the same ones.
        self._lexed: OrderedDict[str, _Lexed | None] = OrderedDict()
        # Where the tags of a lexed source are, by the tags' text (see `_keep_frame`).
        self._frames: OrderedDict[_FrameKey, _Lexed] = OrderedDict()
        self._max = max_shapes
        self.compiled = 0  # shapes compiled
        self.served = 0  # sources whose code came from a compiled shape
        self.last_served = False  # the environment's last compile came from a shape

    def _lex(self, env: jinja2.Environment, source: str) -> _Lexed | None:
        if source in self._lexed:
            self._lexed.move_to_end(source)
            return self._lexed[source]
        found = self._lex_new(env, source)
        self._lexed[source] = found
        if len(self._lexed) > 64:
            self._lexed.popitem(last=False)
        return found

    def _lex_new(self, env: jinja2.Environment, source: str) -> _Lexed | None:
        if (
            env.extensions
            or env.autoescape is not False
            or env.finalize is not None
            or _OPEN in source
            or _CLOSE in source
        ):
            return None
        fast = _plain_syntax(env)
        if fast:
            found = self._by_frame(source)
            if found is not None:
                return found
        try:
            raw = list(env.lexer.tokeniter(source, None))
            tokens = tuple(env.lexer.wrap(iter(raw)))
        except jinja2.TemplateSyntaxError:
            return None
        texts: list[str] = []
        key: list[Any] = []
        for token in tokens:
            if token.type == TOKEN_DATA and token.value:
                texts.append(token.value)
                key.append((token.lineno, TOKEN_DATA))
            elif token.type == "name" and token.value in _TEXT_DEPENDENT:
                return None
            else:
                key.append(token)
        lexed = _Lexed(_Shape(tuple(key)), tuple(texts), tokens)
        if fast:
            self._keep_frame(source, raw, lexed)
        return lexed

    def _keep_frame(self, source: str, raw: list[tuple[int, str, str]], lexed: _Lexed) -> None:
        """Remember where `source`'s tags are, when a plain scan for tags predicts exactly
        the lexer's text tokens (value and line) and as many tags: a later source with the
        same tags and text slots is then lexed by `_by_frame` without the lexer."""
        framed = _frame(source)
        if framed is None:
            return
        key, _ = framed
        tags, slots = key
        predicted: list[tuple[int, str]] = []
        line = 1
        _, texts = _scan(source)
        for i, (text, (_, lines, lead)) in enumerate(zip(texts, slots, strict=True)):
            data = _data(tags, i, text, lead)
            if data:
                predicted.append((line + lead.count("\n"), data))
            line += lines + (tags[i].count("\n") if i < len(tags) else 0)
        found = [(lineno, value) for lineno, kind, value in raw if kind == TOKEN_DATA and value]
        begins = sum(kind in _BEGINS for _, kind, _ in raw)
        if found != predicted or begins != len(tags):
            return  # the lexer reads a tag otherwise (a string holding "}}", raw text)
        self._frames[key] = lexed
        if len(self._frames) > self._max:
            self._frames.popitem(last=False)

    def _by_frame(self, source: str) -> _Lexed | None:
        """The tokens of `source` from a kept source with the same tags and text slots
        (text or none, line breaks, the whitespace a `-%}` takes into its tag): the lexer
        would cut it the same way, with only other text in the text tokens."""
        framed = _frame(source)
        if framed is None:
            return None
        key, values = framed
        lexed = self._frames.get(key)
        if lexed is None:
            return None
        self._frames.move_to_end(key)
        return _Lexed(lexed.shape, values, lexed.tokens)

    def _kept(self, table: OrderedDict[_Shape, Any], lexed: _Lexed, make: Any) -> Any:
        found = table.get(lexed.shape)
        if found is None:
            found = make(lexed.tokens)
            table[lexed.shape] = found
            if len(table) > self._max:
                table.popitem(last=False)
        else:
            table.move_to_end(lexed.shape)
        return found

    def compile(
        self, env: jinja2.Environment, source: str, name: str, filename: str | None
    ) -> CodeType | None:
        """`source`'s code from its shape; None when Jinja's own compile must do it."""
        lexed = self._lex(env, source)
        if lexed is None:
            return None
        shape = self._kept(self._shapes, lexed, lambda tokens: self._compile_shape(env, tokens))
        if shape is _UNSHAREABLE:
            return None
        assert isinstance(shape, _Fill)
        self.served += 1
        return shape.filled(lexed.texts, name, filename or "<template>")

    def names(
        self, env: jinja2.Environment, source: str
    ) -> tuple[frozenset[str], tuple[str | None, ...]] | None:
        """What `source` reads: `jinja2.meta`'s undeclared variables and referenced
        templates, found once per shape (text holds neither); None: parse it yourself."""
        lexed = self._lex(env, source)
        if lexed is None:
            return None
        found = self._kept(self._names, lexed, lambda tokens: self._names_of_shape(env, tokens))
        return None if found is _UNSHAREABLE else found

    @staticmethod
    def _parse_shape(env: jinja2.Environment, tokens: tuple[Token, ...]) -> jinja2.nodes.Template:
        # The shape's text tokens become numbered slots, in order: texts[i] fills slot i.
        slots = iter(range(len(tokens)))
        numbered = [
            Token(t.lineno, TOKEN_DATA, f"{_OPEN}{next(slots)}{_CLOSE}")
            if t.type == TOKEN_DATA and t.value
            else t
            for t in tokens
        ]
        parser = Parser(env, "", _NAME_SLOT, _NAME_SLOT)
        parser.stream = TokenStream(iter(numbered), _NAME_SLOT, _NAME_SLOT)
        return parser.parse()

    def _names_of_shape(self, env: jinja2.Environment, tokens: tuple[Token, ...]) -> Any:
        try:
            tree = self._parse_shape(env, tokens)
            return (
                frozenset(meta.find_undeclared_variables(tree)),
                tuple(meta.find_referenced_templates(tree)),
            )
        except Exception:  # Jinja's own parse of the real source reports it
            return _UNSHAREABLE

    def _compile_shape(self, env: jinja2.Environment, tokens: tuple[Token, ...]) -> Any:
        try:
            tree = self._parse_shape(env, tokens)
            python = env._generate(tree, _NAME_SLOT, _NAME_SLOT)
            code = env._compile(python, _NAME_SLOT)
        except Exception:  # Jinja's own compile of the real source reports it
            return _UNSHAREABLE
        self.compiled += 1
        return _Fill.of(code)


_NAME = -1  # the slot of the template's name in a constant's pieces


class _Fill(NamedTuple):
    """A shape's code object and where its constants hold slots, found once per shape."""

    code: CodeType
    strings: tuple[tuple[int, tuple[str | int, ...]], ...]  # const index, text and slots
    nested: tuple[tuple[int, _Fill], ...]  # const index of a code object inside
    others: tuple[int, ...]  # tuples or frozensets holding a slot (filled one by one)

    @classmethod
    def of(cls, code: CodeType) -> _Fill:
        strings: list[tuple[int, tuple[str | int, ...]]] = []
        nested: list[tuple[int, _Fill]] = []
        others: list[int] = []
        for i, value in enumerate(code.co_consts):
            if isinstance(value, str) and _OPEN in value:
                parts = _SLOT.split(value)  # text, slot, text, ..., text
                pieces = [
                    part if k % 2 == 0 else (_NAME if part == "n" else int(part))
                    for k, part in enumerate(parts)
                ]
                strings.append((i, tuple(p for p in pieces if p != "")))
            elif isinstance(value, CodeType):
                nested.append((i, cls.of(value)))
            elif isinstance(value, tuple | frozenset) and _OPEN in repr(value):
                others.append(i)
        return cls(code, tuple(strings), tuple(nested), tuple(others))

    def filled(self, texts: Sequence[str], name: str, filename: str) -> CodeType:
        consts = list(self.code.co_consts)
        for i, pieces in self.strings:
            consts[i] = "".join(
                [p if isinstance(p, str) else (name if p == _NAME else texts[p]) for p in pieces]
            )
        for i, inner in self.nested:
            consts[i] = inner.filled(texts, name, filename)
        if self.others:

            def fill(match: re.Match[str]) -> str:
                slot = match.group(1)
                return name if slot == "n" else texts[int(slot)]

            for i in self.others:
                consts[i] = _constant(consts[i], fill)
        return self.code.replace(co_filename=filename, co_consts=tuple(consts))


def _constant(value: Any, fill: Any) -> Any:
    if isinstance(value, str):
        return _SLOT.sub(fill, value) if _OPEN in value else value
    if isinstance(value, tuple):
        return tuple(_constant(v, fill) for v in value)
    if isinstance(value, frozenset):
        return frozenset(_constant(v, fill) for v in value)
    return value
