"""Every problem validation reports names the file, the line, what is wrong and the fix."""

from __future__ import annotations

import pytest

from configcenter.core.errors import ConfigError, Source
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo, MemoryRepo, only_problem

API_DEV = "environments/dev/api.yaml"


def test_basic_repo_is_clean(memory_repo: MemoryRepo) -> None:
    # Shared layers may carry keys only some services use (DB_NAME is db's): no warning.
    assert memory_repo.problems() == []


# -- YAML itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "template: 1.0.0\nvalues:\n  LOG_LEVEL: debug\n   DB_HOST: x\n",
            4,
            "mapping values are not allowed in this context",
        ),
        (
            "template: 1.0.0\nvalues:\n  A: 1\n\tB: 2\n",
            4,
            "found a tab character that violates indentation",
        ),
    ],
)
def test_yaml_syntax_error(memory_repo: MemoryRepo, text: str, line: int, message: str) -> None:
    memory_repo.write(API_DEV, text)
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, line)
    assert problem.message == f"YAML syntax error: {message}"
    assert "indentation" in problem.hint


def test_yaml_syntax_error_in_project_file(memory_repo: MemoryRepo) -> None:
    memory_repo.write("configcenter.yaml", "project: shop\nenvironments: [dev, prod\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source.file == "configcenter.yaml"
    assert problem.source.line == 2  # where the '[' was opened, not past the end of the file
    assert problem.message.startswith("YAML syntax error")


@pytest.mark.parametrize(
    ("text", "line", "what", "found"),
    [
        ("template: 1.0.0\nimage: {ref: x\nreplicas: 1\n", 2, "'{'", "line 3"),
        ("template: 1.0.0\nimage: {ref: x,\n\n\n  tag: y\nreplicas: 1\n", 2, "'{'", "line 6"),
        ("template: [1.0.0\n", 1, "'['", "line 2"),
        ("template: 1.0.0\nvalues:\n  A: 'x\n  B: 2\n", 3, "quote", "line 5"),
    ],
)
def test_an_unclosed_bracket_or_quote_names_the_line_that_opened_it(
    memory_repo: MemoryRepo, text: str, line: int, what: str, found: str
) -> None:
    memory_repo.write(API_DEV, text)
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, line)
    assert problem.message.startswith(f"YAML syntax error: the {what} opened on this line")
    assert found in problem.message
    assert problem.hint.startswith("close it with ")


def test_duplicate_key(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nreplicas: 1\nreplicas: 2\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, 4)
    assert problem.message == "duplicate key 'replicas' (first at line 3)"
    assert "keeps only the last" in problem.hint


def test_duplicate_value_key(memory_repo: MemoryRepo) -> None:
    memory_repo.write(
        "environments/_defaults.yaml",
        "values:\n  LOG_LEVEL: info\n  DB_HOST: db\n  DB_NAME: shop\n  LOG_LEVEL: warn\n",
    )
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("environments/_defaults.yaml", 5)
    assert problem.message == "duplicate key 'LOG_LEVEL' (first at line 2)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-13-01", "YAML cannot read '2026-13-01' as a date: month must be in 1..12"),
        ("!!int twelve", "YAML cannot read 'twelve' as an integer: invalid literal for int()"),
        ("!!bool maybe", "YAML cannot read 'maybe' as a boolean"),
    ],
)
def test_yaml_value_its_type_cannot_make(memory_repo: MemoryRepo, value: str, message: str) -> None:
    # A plain `2026-13-01` is a date to YAML; one that is none is a problem, not a traceback.
    memory_repo.write(
        API_DEV, f"template: 1.0.0\nimage: {{ref: x}}\nvalues:\n  LOG_LEVEL: debug\n  X: {value}\n"
    )
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, 5)
    assert problem.message.startswith(message)
    assert problem.hint.startswith("quote it to keep it as text")


def test_no_project_file(memory_repo: MemoryRepo) -> None:
    memory_repo.remove("configcenter.yaml")
    problem = only_problem(memory_repo.problems())
    assert problem.source.file == "configcenter.yaml"
    assert "this is not a configcenter config repo" in problem.message
    assert "-C PATH" in problem.hint


# -- keys and types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "text", "key", "suggestion"),
    [
        (API_DEV, "template: 1.0.0\nimage: {ref: x}\nreplica: 2\n", "replica", "replicas"),
        (
            "environments/dev/_env.yaml",
            "platform: local\nallow_heads: true\nvalues: {LOG_LEVEL: debug, DB_PASSWORD: x}\n",
            "allow_heads",
            "allow_head",
        ),
        (
            "configcenter.yaml",
            "project: shop\nenvironments: [dev, prod]\nplatforms:\n  local: {kind: kubernetes}\n"
            "registery: {url: 127.0.0.1:5000}\n",
            "registery",
            "registry",
        ),
        (
            API_DEV,
            "template: 1.0.0\nimage:\n  sorce: {repo: x}\n",
            "sorce",
            "source",
        ),
    ],
)
def test_misspelt_key_suggests_closest(
    memory_repo: MemoryRepo, rel: str, text: str, key: str, suggestion: str
) -> None:
    memory_repo.write(rel, text)
    problems = [p for p in memory_repo.problems() if p.message == f"unknown key '{key}'"]
    assert len(problems) == 1, memory_repo.problems()
    assert problems[0].source == Source(rel, memory_repo.line_of(rel, key))
    assert problems[0].hint == f"did you mean '{suggestion}'?"


def test_unknown_key_without_close_match_lists_known_keys(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nzzz: 1\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, 3)
    assert problem.message == "unknown key 'zzz'"
    assert problem.hint == "known keys: image, platform, replicas, template, values"


def test_misspelt_key_in_head_template(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\n")
    memory_repo.write(
        "templates/api/template.yaml",
        "outputs: [app.env, deployment.yaml]\nenv: [LOG_LEVEL]\ndepend_on: [db]\n",
    )
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("templates/api/template.yaml", 3)
    assert problem.message == "unknown key 'depend_on'"
    assert problem.hint == "did you mean 'depends_on'?"


@pytest.mark.parametrize(
    ("rel", "text", "line", "message", "hint"),
    [
        (
            API_DEV,
            "template: 1.0.0\nimage: {ref: x}\nreplicas: two\n",
            3,
            "'replicas' must be a whole number >= 0 or auto, not a string ('two')",
            "write replicas as a whole number >= 0 or auto",
        ),
        (
            API_DEV,
            "template: 1.0.0\nimage: {ref: x}\nreplicas: -1\n",
            3,
            "'replicas' must be a whole number >= 0 or auto, not a number (-1)",
            "write replicas as a whole number >= 0 or auto",
        ),
        (
            "environments/dev/_env.yaml",
            "platform: local\nallow_head: sometimes\nvalues: {LOG_LEVEL: a, DB_PASSWORD: b}\n",
            2,
            "'allow_head' must be true or false, not a string ('sometimes')",
            "write allow_head as true or false",
        ),
        (
            "environments/dev/_env.yaml",
            "platform: local\nvalues: [LOG_LEVEL, DB_PASSWORD]\n",
            2,
            "'values' must be a mapping, not a list",
            "write values as a mapping",
        ),
        (
            API_DEV,
            "template: 1.0.0\nimage: {ref: x}\nvalues:\n  DB_PASSWORD: {secret: 'vault:db'}\n",
            4,
            "secret reference 'vault:db' is not env:NAME, file:/path or k8s:namespace/name/key",
            'for example {secret: "env:SHOP_DB_PASSWORD"}',
        ),
    ],
)
def test_wrong_type(
    memory_repo: MemoryRepo, rel: str, text: str, line: int, message: str, hint: str
) -> None:
    memory_repo.write(rel, text)
    # A broken shared layer may cause follow-on problems elsewhere; this file has exactly one.
    problem = only_problem([p for p in memory_repo.problems() if p.source.file == rel])
    assert problem.source == Source(rel, line)
    assert problem.message == message
    assert problem.hint == hint


def test_wrong_choice_suggests_closest(memory_repo: MemoryRepo) -> None:
    memory_repo.write(
        "configcenter.yaml",
        "project: shop\nenvironments: [dev, prod]\nplatforms:\n  local: {kind: kubernets}\n",
    )
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("configcenter.yaml", 4)
    assert problem.message == "'kind' is 'kubernets', which is not one of: kubernetes, marathon"
    assert problem.hint == "did you mean 'kubernetes'?"


def test_environments_must_be_a_list(memory_repo: MemoryRepo) -> None:
    memory_repo.write("configcenter.yaml", "project: shop\nenvironments: dev\n")
    problems = [p for p in memory_repo.problems() if p.source.file == "configcenter.yaml"]
    assert problems[0].source == Source("configcenter.yaml", 2)
    assert problems[0].message == "'environments' must be a list of strings, not a string ('dev')"


def test_undefined_platform(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nplatform: lokal\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, 3)
    assert (
        problem.message == "platform 'lokal' is not defined in configcenter.yaml (platforms: local)"
    )
    assert problem.hint == "did you mean 'local'?"


def test_value_named_like_a_template_variable(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  replicas: 3\n")
    problems = memory_repo.problems()
    clash = [p for p in problems if p.severity == "error"]
    assert len(clash) == 1
    assert clash[0].source == Source(API_DEV, 4)
    assert clash[0].message == "value 'replicas' clashes with the template variable 'replicas'"


# -- environments ------------------------------------------------------------------------------


def test_environment_dir_not_in_project(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/prd/api.yaml", "template: 1.0.0\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("environments/prd/")
    assert problem.message == "environment 'prd' is not in configcenter.yaml's environments"
    assert problem.hint == "did you mean 'prod'?"


def test_environment_dir_without_close_match(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/qa/api.yaml", "template: 1.0.0\n")
    problem = only_problem(memory_repo.problems())
    assert problem.hint == "add 'qa' to environments: in configcenter.yaml, or remove it"


def test_environment_listed_twice(memory_repo: MemoryRepo) -> None:
    memory_repo.write(
        "configcenter.yaml",
        "project: shop\nenvironments:\n  - dev\n  - prod\n  - dev\n"
        "platforms:\n  local: {kind: kubernetes}\n",
    )
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("configcenter.yaml", 5)
    assert problem.message == "environment 'dev' is listed twice"


def test_unknown_underscore_file(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/dev/_defaults.yaml", "values: {}\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source.file == "environments/dev/_defaults.yaml"
    assert problem.message == "unknown file '_defaults.yaml'"


# -- the ENV list ------------------------------------------------------------------------------


def test_required_env_key_without_value(memory_repo: MemoryRepo) -> None:
    memory_repo.write(
        "environments/_defaults.yaml", "values:\n  LOG_LEVEL: info\n  DB_NAME: shop\n"
    )
    problems = memory_repo.problems()
    assert [p.source for p in problems] == [
        Source("environments/dev/api.yaml", 1),
        Source("environments/prod/api.yaml", 1),
    ]
    assert problems[0].message == (
        "api in dev: ENV key 'DB_HOST' (required by templates/api@1.0.0/template.yaml) "
        "has no value in any layer"
    )
    assert problems[0].hint == (
        "add DB_HOST: under values: in environments/dev/api.yaml or environments/dev/_env.yaml"
    )


def test_required_key_may_come_from_any_layer(memory_repo: MemoryRepo) -> None:
    memory_repo.write(
        "environments/_defaults.yaml", "values:\n  LOG_LEVEL: info\n  DB_NAME: shop\n"
    )
    memory_repo.write(
        "environments/dev/_env.yaml",
        "platform: local\nallow_head: true\nvalues:\n  DB_HOST: dev-db\n"
        "  DB_PASSWORD: {secret: 'env:X'}\n",
    )
    memory_repo.write(
        "environments/prod/api.yaml",
        "template: 1.0.0\nimage: {ref: x}\nvalues:\n  DB_HOST: prod-db\n",
    )
    assert memory_repo.problems() == []


def test_undeclared_value_is_a_warning(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  LOG_LEVL: trace\n")
    problem = only_problem(memory_repo.problems(), "warning")
    assert [p for p in memory_repo.problems() if p.severity == "error"] == []
    assert problem.source == Source(API_DEV, 4)
    assert problem.message == (
        "'LOG_LEVL' is not in templates/api@1.0.0/template.yaml's env list "
        "and no template of it reads it"
    )
    assert problem.hint == "did you mean 'LOG_LEVEL'?"
    memory_repo.load()  # loads: a warning does not stop anything


def test_a_value_a_template_reads_is_declared_by_use(repo: ConfigRepo) -> None:
    """Not in the ENV list, but deployment.yaml reads it: no typo, so no warning."""
    repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\nvalues:\n  MAX_MEMORY: 64mb\n")
    manifest = repo.read("templates/api/deployment.yaml.j2")
    repo.write("templates/api/deployment.yaml.j2", manifest + "# memory: {{ MAX_MEMORY }}\n")
    assert [p for p in repo.problems() if "MAX_MEMORY" in p.message] == []
    repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\nvalues:\n  MAX_MEMROY: 64mb\n")
    problem = only_problem(repo.problems(), "warning")
    assert problem.message.startswith("'MAX_MEMROY' is not in templates/api/template.yaml")


def test_undeclared_value_is_an_error_when_strict(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    assert Workspace(repo.root).config is not None
    with pytest.raises(ConfigError) as caught:
        _ = Workspace(repo.root, strict=True).config
    (problem,) = caught.value.problems
    assert problem.source == Source(API_DEV, 4)
    assert (
        problem.hint == "declare it under env: in the template, use it in a template, or remove it"
    )


# -- template pins -----------------------------------------------------------------------------


def test_pin_to_missing_tag(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "image: {ref: x}\ntemplate: 9.9.9\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source(API_DEV, 2)
    assert problem.message == "template tag 'api/9.9.9' does not exist"
    assert problem.hint == "released: 1.0.0"


def test_pin_for_service_never_released(memory_repo: MemoryRepo) -> None:
    memory_repo.write("templates/cache/template.yaml", "outputs: [app.env]\n")
    memory_repo.write("templates/cache/app.env.j2", "X=1\n")
    memory_repo.write("environments/dev/cache.yaml", "template: 0.1.0\n")
    problem = only_problem(memory_repo.problems())
    assert problem.message == "template tag 'cache/0.1.0' does not exist"
    assert problem.hint == (
        "release it: configcenter template release cache 0.1.0 "
        "(a fresh repo: configcenter template release --all 0.1.0)"
    )


def test_pin_for_service_without_a_template(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/dev/cache.yaml", "template: 0.1.0\n")
    problem = only_problem(memory_repo.problems())
    assert problem.message == "template tag 'cache/0.1.0' does not exist"
    assert problem.hint.startswith("there is no template 'cache': create templates/cache/")


def test_numeric_pin_is_a_type_error(memory_repo: MemoryRepo) -> None:
    # YAML reads 1.10 as the number 1.1: the user must quote versions that look like numbers.
    memory_repo.write(API_DEV, "template: 1.10\nimage: {ref: x}\n")
    problems = [p for p in memory_repo.problems() if p.source == Source(API_DEV, 1)]
    assert problems[0].message == "'template' must be a string, and YAML read 1.1 as a number"
    assert problems[0].hint == 'quote it: template: "1.1" (YAML reads 1.10 as the number 1.1)'


def test_head_pin_refused_outside_allowing_env(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/prod/api.yaml", "template: HEAD\nimage: {ref: x}\n")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("environments/prod/api.yaml", 1)
    assert problem.message == "'prod' does not allow HEAD templates"
    assert "configcenter template release api VERSION" in problem.hint
    assert "allow_head: true in environments/prod/_env.yaml" in problem.hint


def test_head_pin_allowed_in_dev(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\n")
    config = memory_repo.load()
    template = config.environment("dev").services["api"].template
    assert template.tag == "HEAD"
    assert template.commit is None
    assert template.label == "templates/api"


def test_output_without_source(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\n")
    memory_repo.remove("templates/api/deployment.yaml.j2")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("templates/api/template.yaml", 1)
    assert problem.message == (
        "output 'deployment.yaml' has no source templates/api/deployment.yaml.j2"
    )


@pytest.mark.parametrize("output", ["../escape.env", "/etc/passwd", "conf//x.conf", "./app.env"])
def test_output_must_be_a_relative_path_inside_the_service(
    memory_repo: MemoryRepo, output: str
) -> None:
    memory_repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\n")
    text = memory_repo.read("templates/api/template.yaml").replace(
        "outputs: [", f"outputs: [{output}, "
    )
    memory_repo.write("templates/api/template.yaml", text)
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("templates/api/template.yaml", 1)
    assert problem.message == (
        f"output '{output}' is not a relative path inside the service's folder"
    )


# -- dependencies ------------------------------------------------------------------------------


def test_depends_on_unknown_service(repo: ConfigRepo) -> None:
    repo.release(
        "api",
        "1.1.0",
        {"template.yaml": "outputs: [app.env]\nenv: [LOG_LEVEL]\ndepends_on:\n  - dbb\n"},
    )
    repo.write(API_DEV, "template: 1.1.0\nimage: {ref: x}\n")
    problem = only_problem(repo.problems())
    assert problem.source == Source("templates/api@1.1.0/template.yaml", 4)
    assert problem.message == "depends_on names unknown service 'dbb'"
    assert problem.hint == "did you mean 'db'?"


def test_dependency_not_deployed_in_env(memory_repo: MemoryRepo) -> None:
    memory_repo.remove("environments/prod/db.yaml")
    problem = only_problem(memory_repo.problems())
    assert problem.source == Source("environments/prod/api.yaml", 1)
    assert problem.message == "api depends on db, which is not deployed in prod"
    assert problem.hint == "add environments/prod/db.yaml"


def test_dependency_cycle_is_printed(memory_repo: MemoryRepo) -> None:
    memory_repo.write(
        "templates/db/template.yaml", "outputs: [app.env]\nenv: [DB_NAME]\ndepends_on: [api]\n"
    )
    memory_repo.write("environments/dev/db.yaml", "template: HEAD\n")
    problem = only_problem(memory_repo.problems())
    assert problem.message == "dependency cycle in dev: api -> db -> api"
    assert problem.source == Source("templates/api@1.0.0/template.yaml", 3)
    assert problem.hint == "remove one depends_on entry to break the cycle"


def test_every_problem_reported_in_one_run(memory_repo: MemoryRepo) -> None:
    memory_repo.write(API_DEV, "template: 9.9.9\n")
    memory_repo.write("environments/prod/db.yaml", "template: 1.0.0\nreplicas: many\n")
    memory_repo.write("environments/qa/x.yaml", "template: 1.0.0\n")
    files = sorted({p.source.file for p in memory_repo.problems()})
    assert files == ["environments/dev/api.yaml", "environments/prod/db.yaml", "environments/qa/"]
