"""Copies of a template that differ only in their text are compiled once, and behave as if
each had been compiled on its own: same output, same code, same errors at the same lines."""

from __future__ import annotations

import dis
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
import pytest
from jinja2 import meta

from configcenter.core import limits as bounds
from configcenter.core.errors import ConfigError, Source
from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.sandbox import BoundedSandbox
from configcenter.core.shared_compile import SharedCompile
from configcenter.core.state import EnvState
from configcenter.wiring import open_bytecode_cache
from tests.support.configrepo import ConfigRepo

OPTIONS: dict[str, Any] = dict(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
)

# Each source is a format string: {0} and {1} are text only (the name of a service, a port).
SHAPES = [
    "# {0} in {{{{ env }}}}\nPORT={1}\n{{% if on %}}ON={0}{{% else %}}OFF{{% endif %}}\n",
    "{{% for k in items %}}{0}-{{{{ k }}}}{{{{ loop.index }}}}\n{{% else %}}{1}{{% endfor %}}",
    "{{% macro row(k, v='dflt') %}}{1}: {{{{ k }}}}={{{{ v }}}}\n{{% endmacro %}}"
    "{{{{ row('a') }}}}{{{{ row('b', 'c') }}}}{0}",
    "{{% set block %}}{0}\n{{{{ env }}}}{{% endset %}}{{{{ block | upper }}}}|{1}",
    "{{% filter upper %}}{0} {{{{ env }}}}{{% endfilter %}}\n"
    "{{% raw %}}{{{{ {1} }}}}{{% endraw %}}",
    "  {{%- if on -%}}\n  {0}  \n  {{%- endif %}}\n{1}{{# a comment #}}{0}",
    "{{% macro m() %}}[{{{{ caller(1) }}}}]{{% endmacro %}}"
    "{{% call(x) m() %}}{0}{{{{ x }}}}{{% endcall %}}{1}",
    "{{{{ 'lit' ~ env }}}}{0}{{{{ 1 + 2 }}}}{1}{{{{ {{'k': 'v'}} | tojson }}}}",
    "{{% set ns = namespace(n=0) %}}{{% for i in range(3) %}}{{% set ns.n = ns.n + i %}}"
    "{0}{{% endfor %}}{{{{ ns.n }}}}{1}",
]
TEXTS = [("svc-0001", "8001"), ("billing", "9"), ("a 'quoted' \\ text\n", "\u00e9\n\n")]
CONTEXT = {"env": "dev", "on": True, "items": ["x", "y"]}


def _plain() -> BoundedSandbox:
    return BoundedSandbox(bounds.DEFAULT_LIMITS, **OPTIONS)


def _shared(shared: SharedCompile, **options: Any) -> jinja2.Environment:
    class Env(BoundedSandbox):
        def compile(self, source: Any, name: Any = None, filename: Any = None, *a: Any) -> Any:
            code = shared.compile(self, source, name, filename) if name else None
            return code if code is not None else super().compile(source, name, filename, *a)

    return Env(bounds.DEFAULT_LIMITS, **OPTIONS, **options)


def _instructions(code: CodeType) -> Any:
    """What a code object does (constants by value, not by index), and its line numbers."""
    out = []
    for ins in dis.get_instructions(code):
        value = _instructions(ins.argval) if isinstance(ins.argval, CodeType) else ins.argval
        out.append((ins.opname, value if "JUMP" not in ins.opname else ins.arg))
    return (code.co_filename, code.co_name, code.co_names, tuple(code.co_lines()), out)


@pytest.mark.parametrize("shape", SHAPES)
def test_copies_differing_in_text_share_one_compile_and_match_their_own(shape: str) -> None:
    shared = SharedCompile()
    env = _shared(shared)
    plain = _plain()
    for n, text in enumerate(TEXTS):
        source = shape.format(*text)
        name = f"svc{n}/app.env.j2"
        code = env.compile(source, name, f"templates/{name}")
        alone = plain.compile(source, name, f"templates/{name}")
        assert _instructions(code) == _instructions(alone)
        shared_render = jinja2.Template.from_code(env, code, env.make_globals(None))
        assert shared_render.name == name
        assert shared_render.render(CONTEXT) == plain.from_string(source).render(CONTEXT)
        if n == 1:  # the second copy took the first one's code
            assert (shared.compiled, shared.served) == (1, 2)
    # Text with line breaks moves the lines of what follows: maybe a shape of its own.
    assert shared.served == len(TEXTS)


def test_copies_that_extend_and_include_find_their_own_templates() -> None:
    files = {"base.j2": "<{% block b %}base{% endblock %}>", "part.j2": "part of {{ env }}\n"}
    for n, text in enumerate(("one", "two words")):
        files[f"c{n}.j2"] = (
            f'{{% extends "base.j2" %}}{{% block b %}}{text}{{% include "part.j2" %}}'
            f"{text}{{% endblock %}}"
        )
    shared = SharedCompile()
    env = _shared(shared, loader=jinja2.DictLoader(files))
    plain = BoundedSandbox(bounds.DEFAULT_LIMITS, **OPTIONS, loader=jinja2.DictLoader(files))
    for name in ("c0.j2", "c1.j2"):
        assert env.get_template(name).render(CONTEXT) == plain.get_template(name).render(CONTEXT)
        assert env.get_template(name).name == name
    assert env.get_template("c1.j2").render(CONTEXT) == "<two wordspart of dev\ntwo words>"
    assert shared.served == 4  # c0, c1, base, part


@pytest.mark.parametrize(
    "source",
    [
        "{% autoescape true %}<{{ env }}>{% endautoescape %}",
        "{% block b required %} {% endblock %}",
        "text with \ue000 in it {{ env }}",
        "{{ broken",
    ],
)
def test_text_dependent_or_broken_sources_are_left_to_jinja(source: str) -> None:
    shared = SharedCompile()
    assert shared.compile(_plain(), source, "t.j2", "t.j2") is None
    assert shared.served == 0


def test_a_later_copy_reports_its_own_file_and_line(repo: ConfigRepo) -> None:
    """Undefined values in the second and third copies: each error names its own template."""
    for service, text in (("alpha", "A"), ("beta", "Bee"), ("gamma", "G\n\n")):
        repo.write(f"templates/{service}/template.yaml", "outputs: [app.env]\n")
        (repo.root / f"templates/{service}/app.env.j2").write_text(
            f"# {service}: {text}\nX={{{{ X_{service.upper()} }}}}\n"
        )
        repo.write(f"environments/dev/{service}.yaml", "template: HEAD\n")
    config = repo.load()
    renderer = Renderer()
    lines = {"alpha": 2, "beta": 2, "gamma": 4}
    for service, line in lines.items():
        with pytest.raises(ConfigError) as caught:
            make_plan(config, "dev", EnvState("dev"), renderer, lambda p: None, only=[service])
        (problem,) = caught.value.problems
        assert problem.source == Source(f"templates/{service}/app.env.j2", line)
        assert f"'X_{service.upper()}' is undefined" in problem.message
    assert renderer.shared_compile.served >= 3


def test_a_syntax_error_in_a_copy_is_jinja_own(repo: ConfigRepo) -> None:
    """A broken copy of a shape seen before fails exactly as compiled alone."""
    for service, body in (("alpha", "A={{ X }}\n"), ("beta", "B={{ X }}\n{{ oops(\n")):
        repo.write(f"templates/{service}/template.yaml", "outputs: [app.env]\n")
        repo.write(f"templates/{service}/app.env.j2", body)
        repo.write(f"environments/dev/{service}.yaml", "template: HEAD\nvalues: {X: 1}\n")
    config = repo.load()
    renderer = Renderer()
    make_plan(config, "dev", EnvState("dev"), renderer, lambda p: None, only=["alpha"])
    with pytest.raises(ConfigError) as caught:
        make_plan(config, "dev", EnvState("dev"), renderer, lambda p: None, only=["beta"])
    (problem,) = caught.value.problems
    assert problem.source == Source("templates/beta/app.env.j2", 2)
    assert problem.message.startswith("template syntax error:")


@pytest.mark.parametrize("shape", [*SHAPES, '{{% include "part.j2" %}}{0}{{% include x %}}{1}'])
def test_names_read_per_shape_are_jinja_meta_own(shape: str) -> None:
    """The consumption check asks which names a source reads: once per shape, as Jinja says."""
    shared = SharedCompile()
    plain = _plain()
    for text in TEXTS:
        source = shape.format(*text)
        tree = plain.parse(source)
        expected = (
            frozenset(meta.find_undeclared_variables(tree)),
            tuple(meta.find_referenced_templates(tree)),
        )
        assert shared.names(plain, source) == expected


# Sources whose text changes next to whitespace control, raw blocks, strings holding tag
# ends and tag starts in the text: a source lexed from a kept one's tags must come out as
# Jinja's own lexer makes it, or be lexed by it.
FRAMES = [
    "a{0}\n{{%- if on %}}\n  {1}{{{{ env -}}}}  {0}\n{{%- endif -%}}\n\n{1}",
    "{{# {{{{ #}}{0}{{% raw %}}{1}{{{{ x }}}}{{% endraw %}}{0}{{{{ '}}}}' }}}}{1}",
    "{{{{ {{'a': 1}}}}}}{0}{{%+ if on +%}}{1}{{% endif %}}",
    "{0}{{{{ x }}}}{1}",
    "{0}{{%+ if on +%}}{1}{{%- endif +%}}{0}",
]
VARIANTS = [
    ("svc", "9"),
    ("", ""),
    ("  ", "\n"),
    (" x \n", "  \n y"),
    ("{{", "a"),
    ("a{%", "b"),
    ("r\r\n", "s"),
    ("}}", "%}"),
    ("\t\n\t", "z"),
]


@pytest.mark.parametrize("frame", FRAMES)
def test_a_source_lexed_from_kept_tags_is_lexed_as_jinja_lexes_it(frame: str) -> None:
    env = _plain()
    for first in VARIANTS:
        for second in VARIANTS:
            shared = SharedCompile()
            shared._lex(env, frame.format(*first))
            source = frame.format(*second)
            alone = SharedCompile()._lex(env, source)
            again = shared._lex(env, source)
            if alone is None:
                assert again is None
                continue
            assert again is not None
            assert (again.shape, again.texts) == (alone.shape, alone.texts), (first, second)


def test_code_the_shared_compile_made_is_not_written_to_the_bytecode_cache(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """Made again for ~0.1 ms, it would cost more to write and read back than it saves."""
    for service in ("alpha", "beta"):
        repo.write(f"templates/{service}/template.yaml", "outputs: [app.env]\n")
        repo.write(f"templates/{service}/app.env.j2", f"# {service}\nX={{{{ X }}}}\n")
        repo.write(f"environments/dev/{service}.yaml", "template: HEAD\nvalues: {X: 1}\n")
    config = repo.load()
    renderer = Renderer(open_bytecode_cache(tmp_path / "bc"))
    for service in ("alpha", "beta"):
        rendered = renderer.render(config, config.environment("dev").services[service], "i")
        assert rendered.files["app.env"] == f"# {service}\nX=1\n".encode()
    # Nothing written (the cache is not even opened: its directory is made on first use).
    assert list((tmp_path / "bc").glob("*")) == []
