"""Bullet 3: resource bombs in YAML and templates are clear errors at a file and line."""

from __future__ import annotations

import pytest

from configcenter.core.errors import Problem
from configcenter.core.render import Renderer, RenderError
from tests.support.configrepo import ConfigRepo, only_problem

ALIAS_BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def problem_in(repo: ConfigRepo, file: str) -> Problem:
    """The one error in `file` (errors elsewhere follow from it: values went missing)."""
    return only_problem([p for p in repo.problems() if p.source.file == file])


def _values(repo: ConfigRepo, body: str) -> Problem:
    repo.write("environments/dev/_env.yaml", "platform: local\nallow_head: true\nvalues:\n" + body)
    return problem_in(repo, "environments/dev/_env.yaml")


def test_alias_bomb_is_refused_quickly(repo: ConfigRepo) -> None:
    repo.write(
        "environments/_defaults.yaml",
        "values:\n" + "\n".join("  " + line for line in ALIAS_BOMB.splitlines()) + "\n",
    )
    problem = problem_in(repo, "environments/_defaults.yaml")
    assert "limits.yaml_nodes" in problem.message


def test_self_containing_alias_is_a_clear_error(repo: ConfigRepo) -> None:
    problem = _values(repo, "  x: &a [*a]\n")
    assert "limits.yaml_depth" in problem.message
    assert problem.source.file == "environments/dev/_env.yaml"


def test_deep_nesting_is_refused(repo: ConfigRepo) -> None:
    problem = _values(repo, "  x: " + "[" * 500 + "]" * 500 + "\n")
    assert "limits.yaml_depth" in problem.message


def test_big_values_file_is_refused_before_parsing(repo: ConfigRepo) -> None:
    body = "".join(f"  KEY_{i}: {'v' * 90}\n" for i in range(60_000))  # ~5.6 MB
    problem = _values(repo, body)
    assert "limits.yaml_file_size" in problem.message
    assert "over the limit of 512 KiB" in problem.message


def test_limits_are_configurable_within_bounds(repo: ConfigRepo) -> None:
    project = repo.read("configcenter.yaml")
    repo.write("configcenter.yaml", project + "limits: {yaml_file_size: 8MiB}\n")
    body = "".join(f"  KEY_{i}: {'v' * 90}\n" for i in range(8_000))  # ~800 KB, 8k nodes
    repo.write(
        "environments/dev/_env.yaml",
        repo.read("environments/dev/_env.yaml") + body,
    )
    assert [p for p in repo.problems() if p.severity == "error"] == []
    repo.write(
        "configcenter.yaml", project + "limits: {yaml_file_size: 1TiB, render_timeout: 0s}\n"
    )
    messages = sorted(p.message for p in repo.problems() if p.source.file == "configcenter.yaml")
    assert any("yaml_file_size" in m and "not a size" in m for m in messages), messages
    assert any("render_timeout" in m for m in messages), messages


# -- templates ---------------------------------------------------------------------------------

CRASHES = {
    "range": ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "Range too big"),
    "repeat": ("{{ 'a' * 10**10 }}", "limits.output_size"),
    "list-repeat": ("{{ ([0] * 10**9)|length }}", "limits.output_size"),
    "power": ("{{ 10 ** 1000000000 }}", "limits.output_size"),
    "ljust": ("{{ 'x'.ljust(10**10) }}", "limits.output_size"),
    "center": ("{{ 'x'|center(10**10) }}", "limits.output_size"),
    "macro": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion too deep"),
    "include": ("{% include 'app.env.j2' %}", "recursion too deep"),
    "truncate": ("{{ 'abcdef'|truncate(-1) }}", "template"),
    "output": ("{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}", "limits.output_size"),
}


def _render_problem(repo: ConfigRepo, source: str, limits: str = "") -> Problem:
    if limits:
        repo.write("configcenter.yaml", repo.read("configcenter.yaml") + limits)
    repo.write("templates/db/app.env.j2", source)
    repo.write(
        "environments/dev/_env.yaml",
        "platform: local\nallow_head: true\nvalues:\n  LOG_LEVEL: debug\n"
        '  DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}\n',
    )
    repo.write("environments/dev/db.yaml", "template: HEAD\n")
    config = repo.load()
    with pytest.raises(RenderError) as caught:
        Renderer().render(config, config.environment("dev").services["db"], "postgres:16")
    return caught.value.problem


@pytest.mark.parametrize("case", sorted(CRASHES))
def test_template_crashes_are_clear_errors(repo: ConfigRepo, case: str) -> None:
    source, expected = CRASHES[case]
    problem = _render_problem(repo, source + "\n")
    assert problem.source.file == "templates/db/app.env.j2", problem
    assert problem.source.line == 1
    assert expected in problem.message, problem.message
    assert "Traceback" not in str(problem)


def test_pure_python_loop_stops_at_the_render_deadline(repo: ConfigRepo) -> None:
    """10^10 iterations of an empty loop body: no call Jinja could intercept."""
    problem = _render_problem(
        repo,
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
        limits="limits: {render_timeout: 500ms}\n",
    )
    assert "longer than 0.5s" in problem.message and "limits.render_timeout" in problem.message
    assert problem.source.file == "templates/db/app.env.j2"


def test_values_tojson_renders_secret_placeholders(repo: ConfigRepo) -> None:
    repo.write("templates/db/app.env.j2", "{{ values|tojson }}\n")
    repo.write(
        "environments/dev/_env.yaml",
        "platform: local\nallow_head: true\nvalues:\n"
        '  DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}\n',
    )
    repo.write("environments/dev/db.yaml", "template: HEAD\n")
    config = repo.load()
    text = (
        Renderer().render(config, config.environment("dev").services["db"], "pg").files["app.env"]
    )
    assert b"${secret:env:SHOP_DB_PASSWORD}" in text


def test_non_utf8_template_names_the_file_and_line(repo: ConfigRepo) -> None:
    (repo.root / "templates/db/app.env.j2").write_bytes(b"A=1\nB=\xff\n")
    repo.write("environments/dev/db.yaml", "template: HEAD\n")
    config = repo.load()
    with pytest.raises(RenderError) as caught:
        Renderer().render(config, config.environment("dev").services["db"], "pg")
    assert caught.value.problem.source.file == "templates/db/app.env.j2"
    assert caught.value.problem.source.line == 2
    assert "not UTF-8" in caught.value.problem.message


def test_big_template_is_refused(repo: ConfigRepo) -> None:
    problem = _render_problem(repo, "x" * (1024 * 1024 + 1))
    assert "limits.template_size" in problem.message


def test_service_total_output_is_limited(repo: ConfigRepo) -> None:
    problem = _render_problem(
        repo,
        "{% for i in range(900) %}{{ 'a' * 1000 }}{% endfor %}",
        limits="limits: {service_output_size: 512KiB}\n",
    )
    assert "limits.service_output_size" in problem.message
