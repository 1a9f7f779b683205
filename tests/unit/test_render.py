"""Rendering: Jinja errors point at the template file and line; the sandbox holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.core.errors import ConfigError, Problem, Source
from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from configcenter.usecases.inspect import render, validate
from configcenter.usecases.workspace import Workspace
from configcenter.wiring import open_bytecode_cache
from tests.support.configrepo import ConfigRepo

API_ENV = "templates/api/app.env.j2"


def head_api(repo: ConfigRepo, app_env: str) -> None:
    """Pin dev's api to the work tree and give it this app.env template."""
    repo.write("environments/dev/api.yaml", "template: HEAD\nimage: {ref: x}\n")
    repo.write(API_ENV, app_env)


def render_problems(repo: ConfigRepo) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        validate(Workspace(repo.root))
    return caught.value.problems


def test_renders_values_and_context(repo: ConfigRepo) -> None:
    (db, api) = render(Workspace(repo.root), "dev")
    assert (db.service, api.service) == ("db", "api")
    assert api.files["app.env"] == (
        b"# api in dev (1.0.0)\nLOG_LEVEL=debug\nDB_HOST=db\n"
        b"DB_PASSWORD=${secret:env:SHOP_DB_PASSWORD}\n"
    )
    assert api.files["deployment.yaml"] == (
        b"kind: Deployment\nmetadata: {name: api, namespace: shop-dev}\nspec:\n"
        b"  replicas: 1\n  image: registry.example.com/shop/api:1.0\n"
    )


def test_syntax_error_names_template_file_and_line(repo: ConfigRepo) -> None:
    head_api(repo, "A=1\nB=2\nLOG_LEVEL={{ LOG_LEVEL }\n")
    (problem,) = render_problems(repo)
    assert problem.source == Source(API_ENV, 3)
    assert problem.message.startswith("template syntax error: unexpected '}'")
    assert problem.hint == "fix the Jinja2 syntax on this line"


def test_syntax_error_in_tagged_template(repo: ConfigRepo) -> None:
    repo.release("api", "1.1.0", {"app.env.j2": "{% if LOG_LEVEL %}\nX=1\n"})
    repo.write("environments/dev/api.yaml", "template: 1.1.0\nimage: {ref: x}\n")
    (problem,) = render_problems(repo)
    assert problem.source.file == "templates/api@1.1.0/app.env.j2"
    assert "Unexpected end of template" in problem.message
    assert "needs to be closed is 'if'" in problem.message


def test_undefined_variable_names_template_file_and_line(repo: ConfigRepo) -> None:
    head_api(repo, "LOG_LEVEL={{ LOG_LEVEL }}\n\nCACHE={{ CACHE_URL }}\n")
    (problem,) = render_problems(repo)
    assert problem.source == Source(API_ENV, 3)
    assert problem.message == (
        "undefined variable while rendering api for dev: 'CACHE_URL' is undefined"
    )
    assert "add it under values:" in problem.hint


@pytest.mark.parametrize("name", ["../../../etc/hostname", "/etc/hostname", "partials/nope.j2"])
def test_an_include_outside_the_template_or_missing_says_so(repo: ConfigRepo, name: str) -> None:
    head_api(repo, f'A=1\nB={{% include "{name}" %}}\n')
    (problem,) = render_problems(repo)
    assert problem.source == Source(API_ENV, 2)
    assert problem.message == (
        f"template '{name}' not found while rendering api for dev: include, import and "
        "extends read only the files of templates/api"
    )
    assert "relative to templates/api" in problem.hint


def test_undefined_attribute(repo: ConfigRepo) -> None:
    head_api(repo, "X={{ values.LOG_LEVEL }}\nY={{ values.NOPE }}\n")
    (problem,) = render_problems(repo)
    assert problem.source == Source(API_ENV, 2)
    assert "has no attribute 'NOPE'" in problem.message


def test_undefined_variable_when_services_share_identical_templates(repo: ConfigRepo) -> None:
    # Two services whose template dirs are byte-identical have the same git tree id.
    template = {"template.yaml": "outputs: [app.env]\n", "app.env.j2": "A=1\nB={{ MISSING }}\n"}
    repo.release("alpha", "1.0.0", template)
    repo.release("beta", "1.0.0", template)
    repo.write("environments/dev/alpha.yaml", "template: 1.0.0\n")
    repo.write("environments/dev/beta.yaml", "template: 1.0.0\n")
    config = repo.load()
    renderer = Renderer()
    for name in ("alpha", "beta"):
        with pytest.raises(ConfigError) as caught:
            make_plan(config, "dev", EnvState("dev"), renderer, lambda p: None, only=[name])
        (problem,) = caught.value.problems
        assert problem.source == Source(f"templates/{name}@1.0.0/app.env.j2", 2)


def test_plan_reports_render_errors_of_every_service(repo: ConfigRepo) -> None:
    head_api(repo, "X={{ NOPE }}\n")
    repo.write("templates/db/app.env.j2", "{{ broken\n")
    repo.write("environments/dev/db.yaml", "template: HEAD\n")
    with pytest.raises(ConfigError) as caught:
        make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda p: None)
    assert [p.source.file for p in caught.value.problems] == [API_ENV, "templates/db/app.env.j2"]


@pytest.mark.parametrize(
    ("expression", "attribute"),
    [
        ("''.__class__.__mro__", "__class__"),
        ("''.__class__.__mro__[1].__subclasses__()", "__class__"),
        ("values.__class__", "__class__"),
        ("cycler.__init__.__globals__", "__init__"),
        ("lipsum.__globals__['os']", "__globals__"),
        ("self.__init__", "__init__"),
    ],
)
def test_sandbox_refuses_escapes(repo: ConfigRepo, expression: str, attribute: str) -> None:
    head_api(repo, "SAFE=1\nPWN={{ " + expression + " }}\n")
    (problem,) = render_problems(repo)
    assert problem.source == Source(API_ENV, 2)
    assert f"access to attribute '{attribute}'" in problem.message
    assert "is unsafe" in problem.message


@pytest.mark.parametrize(
    "expression", ["values.clear()", "values.update({'LOG_LEVEL': 'x'})", "values.pop('DB_HOST')"]
)
def test_templates_cannot_change_values(repo: ConfigRepo, expression: str) -> None:
    head_api(repo, "X={{ " + expression + " }}\n")
    (problem,) = render_problems(repo)
    assert problem.source == Source(API_ENV, 1)
    assert "of 'dict' object is unsafe" in problem.message


def test_bytecode_cache_renders_the_same(repo: ConfigRepo, tmp_path: Path) -> None:
    # A template the shared compile leaves to Jinja (`autoescape` escapes its text when it
    # compiles): its bytecode is kept on disk; the shared compile's code is never written.
    head_api(repo, "{% autoescape false %}LOG_LEVEL={{ LOG_LEVEL }}{% endautoescape %}\n")
    config = repo.load()
    service = config.environment("dev").services["api"]
    cold = Renderer(open_bytecode_cache(tmp_path / "bc")).render(config, service, "img:1")
    assert len(list((tmp_path / "bc").iterdir())) == 1  # app.env; deployment.yaml is shared
    warm = Renderer(open_bytecode_cache(tmp_path / "bc")).render(config, service, "img:1")
    assert warm == cold
    assert cold.files["app.env"] == b"LOG_LEVEL=debug\n"


def test_render_reports_the_errors_plan_reports(repo: ConfigRepo) -> None:
    """render renders without planning, and stops on the same problems: every service's
    render error, and a service that is not deployed in the environment."""
    head_api(repo, "X={{ NOPE }}\n")
    repo.write("templates/db/app.env.j2", "{{ broken\n")
    repo.write("environments/dev/db.yaml", "template: HEAD\n")
    with pytest.raises(ConfigError) as caught:
        render(Workspace(repo.root), "dev")
    assert [p.source.file for p in caught.value.problems] == [API_ENV, "templates/db/app.env.j2"]
    with pytest.raises(ConfigError) as caught:
        render(Workspace(repo.root), "dev", ["db", "nope"])
    (problem,) = caught.value.problems
    assert problem.message == "service 'nope' is not deployed in dev"
    assert problem.hint == "known: api, db"


def test_render_of_some_services_keeps_the_environment_order(repo: ConfigRepo) -> None:
    rendered = render(Workspace(repo.root), "dev", ["api", "db"])
    assert [r.service for r in rendered] == ["db", "api"]  # api depends on db
    assert [r.service for r in render(Workspace(repo.root), "dev", ["api"])] == ["api"]


def test_secret_keys_are_the_ones_flatten_finds() -> None:
    """The secret-placement check asks which top-level values hold a secret as `flatten`
    finds leaves (maps are walked, lists are leaves); `_holds_secret` answers without it."""
    from configcenter.core.render import _holds_secret
    from configcenter.core.values import SecretRef, flatten

    secret = SecretRef("env:DB_PASSWORD")
    trees = [
        {},
        {"A": "x", "B": 1, "C": secret},
        {"db": {"password": secret, "user": "u"}, "plain": {"x": {"y": 1}}},
        {"deep": {"a": {"b": {"c": secret}}}, "empty": {}, "none": None},
        {"in_list": [secret], "in_list_map": [{"k": secret}]},
        {"dotted.key": secret, 5: {"x": secret}, "t": {"u": [1, secret]}},
    ]
    for tree in trees:
        by_flatten = {k.split(".")[0] for k, v in flatten(tree).items() if isinstance(v, SecretRef)}
        assert {f"{k}".split(".")[0] for k, v in tree.items() if _holds_secret(v)} == by_flatten
