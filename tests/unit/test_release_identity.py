"""A release is exactly what a service consumes: consumption, rotation, secret placement."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

import pytest

from configcenter.core.errors import ConfigError
from configcenter.core.plan import ServicePlan, make_plan
from configcenter.core.render import Renderer
from configcenter.core.secretrefs import SecretsRotated, separate_rotated
from configcenter.core.state import EnvState, Release
from configcenter.usecases.platforms import env_string
from tests.support.configrepo import ConfigRepo, MemoryRepo, deploy_files, state_after

API_DEV = "environments/dev/api.yaml"


def consumption(repo: ConfigRepo, service: str) -> tuple[frozenset[str], bool]:
    config = repo.load()
    found = Renderer().consumption(config.environment("dev").services[service].template)
    return found.names, found.everything


def test_a_service_consumes_its_env_list_and_the_names_its_templates_read(
    repo: ConfigRepo,
) -> None:
    assert consumption(repo, "db") == (frozenset({"DB_NAME"}), False)
    assert consumption(repo, "api") == (frozenset({"LOG_LEVEL", "DB_HOST", "DB_PASSWORD"}), False)


def test_includes_are_followed_and_values_whole_or_a_dynamic_include_consume_all(
    repo: ConfigRepo,
) -> None:
    repo.release(
        "db",
        "1.1.0",
        {"app.env.j2": "{% include 'common.j2' %}\n", "common.j2": "X={{ FROM_INCLUDE }}\n"},
    )
    repo.write("environments/dev/db.yaml", "template: 1.1.0\nimage: {ref: postgres:16}\n")
    assert consumption(repo, "db") == (frozenset({"DB_NAME", "FROM_INCLUDE"}), False)
    repo.release("db", "1.2.0", {"app.env.j2": "{% include WHICH %}\n"})
    repo.write("environments/dev/db.yaml", "template: 1.2.0\nimage: {ref: postgres:16}\n")
    assert consumption(repo, "db")[1] is True


class Platform:
    """What a platform answers about secret values, as the SecretCheck port says."""

    def __init__(
        self,
        answer: int | SecretsRotated | str,
        alone: int | SecretsRotated | str | None = None,
    ) -> None:
        self.answer = answer
        #: The answer when asked about the release's own generation alone (which keys).
        self.alone = alone
        self.asked: list[tuple[str, list[int]]] = []

    def __call__(
        self, plan: ServicePlan, files: Mapping[str, bytes] | None, generations: list[int]
    ) -> int | SecretsRotated | str:
        self.asked.append((plan.service, list(generations)))
        if self.alone is not None and len(generations) == 1:
            return self.alone
        return self.answer


DB_ROTATED = SecretsRotated(("env:SHOP_DB_PASSWORD",))


def test_a_rotated_secret_is_a_change_named_secrets_with_no_value(memory_repo: MemoryRepo) -> None:
    config = memory_repo.load()
    first = make_plan(config, "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(first), deploy_files(first)
    platform = Platform(DB_ROTATED)
    plan = make_plan(config, "dev", state, Renderer(), files.get, secret_check=platform)
    api = {s.service: s for s in plan.services}["api"]
    assert platform.asked == [("api", [1])], "only services with secrets are asked"
    assert (api.action, api.reasons, api.rotated) == ("update", ["secrets"], ["DB_PASSWORD"])
    assert api.secrets_generation == 2 and api.files is not None
    assert api.to_json()["secrets"] == {"rotated": ["DB_PASSWORD"]}
    assert api.diffs == {}, "the deploy repo keeps the reference: no file changes"

    same = make_plan(config, "dev", state, Renderer(), files.get, secret_check=Platform(1))
    assert [s.action for s in same.services] == ["noop", "noop"]


def test_a_rolled_back_rotation_asked_for_again_is_blocked(memory_repo: MemoryRepo) -> None:
    config = memory_repo.load()
    first = make_plan(config, "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(first), deploy_files(first)
    rotated = make_plan(
        config, "dev", state, Renderer(), files.get, secret_check=Platform(DB_ROTATED)
    )
    api = {s.service: s for s in rotated.services}["api"]
    failed = Release(
        "api-r2",
        "rolled_back",
        "2026-12-01T10:00:00Z",
        inputs_digest=api.inputs_digest,
        secrets_generation=2,
    )
    state.services["api"] = replace(state.services["api"], last_failed=failed)
    platform = Platform(2, alone=DB_ROTATED)
    again = make_plan(config, "dev", state, Renderer(), files.get, secret_check=platform)
    # Generation 2 holds the values; which keys differ from generation 1 is asked of it alone.
    assert platform.asked == [("api", [1, 2]), ("api", [1])]
    blocked = {s.service: s for s in again.services}["api"]
    assert (blocked.action, blocked.rotated) == ("blocked", ["DB_PASSWORD"])


def test_keys_the_platform_cannot_tell_apart_are_named_as_such(memory_repo: MemoryRepo) -> None:
    config = memory_repo.load()
    first = make_plan(config, "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(first), deploy_files(first)
    why = "Secret entry api-secret-files-1/settings.yaml holds more than one secret"
    answer = SecretsRotated((), ("env:SHOP_DB_PASSWORD",), why)
    plan = make_plan(config, "dev", state, Renderer(), files.get, secret_check=Platform(answer))
    api = {s.service: s for s in plan.services}["api"]
    assert (api.action, api.reasons, api.rotated) == ("update", ["secrets"], [])
    assert api.secrets_generation == 2
    assert api.to_json()["secrets"] == {
        "rotated": [],
        "cannot_separate": {"keys": ["DB_PASSWORD"], "why": why},
    }


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # One entry per secret: exactly the one that differs.
        ({"A": (["env:A"], True), "B": (["env:B"], False)}, SecretsRotated(("env:B",))),
        # A file holding two secrets differs: which one cannot be told.
        (
            {"f.yaml": (["env:A", "env:B"], False)},
            SecretsRotated(
                (),
                ("env:A", "env:B"),
                "entry f.yaml holds more than one secret, compared as a whole",
            ),
        ),
        # One known to rotate does not clear the other of the file.
        (
            {"f.yaml": (["env:A", "env:B"], False), "A": (["env:A"], False)},
            SecretsRotated(
                ("env:A",),
                ("env:B",),
                "entry f.yaml holds more than one secret, compared as a whole",
            ),
        ),
        # ...unless another entry proves one of them unchanged.
        (
            {"f.yaml": (["env:A", "env:B"], False), "A": (["env:A"], True)},
            SecretsRotated(("env:B",)),
        ),
    ],
)
def test_rotated_references_are_separated_entry_by_entry(
    entries: dict[str, tuple[list[str], bool]], expected: SecretsRotated
) -> None:
    assert separate_rotated(entries) == expected


def test_a_platform_that_cannot_tell_is_said_so(memory_repo: MemoryRepo) -> None:
    config = memory_repo.load()
    first = make_plan(config, "dev", EnvState("dev"), Renderer(), {}.get)
    unknown = Platform("no kubeconfig")
    plan = make_plan(
        config,
        "dev",
        state_after(first),
        Renderer(),
        deploy_files(first).get,
        secret_check=unknown,
    )
    api = {s.service: s for s in plan.services}["api"]
    assert (api.action, api.secrets_unknown) == ("noop", "no kubeconfig")
    assert api.to_json()["secrets"] == {"unknown": "no kubeconfig"}


@pytest.mark.parametrize(
    ("output", "text", "what"),
    [
        (
            "deployment.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData:\n"
            "  p: {{ DB_PASSWORD }}\n",
            "a Kubernetes manifest",
        ),
        ("Dockerfile", "FROM scratch\nENV P={{ DB_PASSWORD }}\n", "a build input"),
        (
            "marathon.json",
            '{"id": "/api", "instances": 1,\n "env": {"P": "{{ DB_PASSWORD }}"}}\n',
            "a Marathon app definition",
        ),
    ],
)
def test_a_secret_where_it_cannot_be_delivered_is_an_error_at_the_template_line(
    repo: ConfigRepo, output: str, text: str, what: str
) -> None:
    repo.release(
        "api",
        "1.1.0",
        {
            "template.yaml": f"outputs: [app.env, {output}]\nenv: [LOG_LEVEL, DB_PASSWORD]\n",
            f"{output}.j2": text,
        },
    )
    repo.write(API_DEV, "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.0}\n")
    with pytest.raises(ConfigError) as excinfo:
        make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), {}.get)
    [problem] = excinfo.value.problems
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "DB_PASSWORD" in t)
    assert str(problem.source) == f"templates/api@1.1.0/{output}.j2:{line}"
    assert what in problem.message
    assert "ENV list" in (problem.hint or "")


def test_a_secret_under_another_key_or_in_a_config_file_renders_as_its_reference(
    repo: ConfigRepo,
) -> None:
    repo.release(
        "api",
        "1.1.0",
        {
            "template.yaml": "outputs: [app.env, conf/app.yaml]\nenv: [LOG_LEVEL]\n",
            "app.env.j2": "POSTGRES_PASSWORD={{ DB_PASSWORD }}\n",
            "conf/app.yaml.j2": 'db:\n  password: "{{ DB_PASSWORD }}"\n',
        },
    )
    repo.write(API_DEV, "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.0}\n")
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), {}.get)
    api = {s.service: s for s in plan.services}["api"]
    assert api.files is not None
    assert api.files["app.env"] == b"POSTGRES_PASSWORD=${secret:env:SHOP_DB_PASSWORD}\n"
    assert b"${secret:env:SHOP_DB_PASSWORD}" in api.files["conf/app.yaml"]
    assert "DB_PASSWORD" in api.consumed_values, "consumed although not in the ENV list"


def test_maps_and_lists_reach_the_environment_as_json() -> None:
    assert env_string({"instant_payouts": True, "limit": 3}) == '{"instant_payouts":true,"limit":3}'
    assert env_string(["a", 1]) == '["a",1]'
    assert env_string(True) == "true"
    assert json.loads(env_string({"b": [1, {"c": None}]})) == {"b": [1, {"c": None}]}


def test_failed_inputs_whose_secrets_the_platform_lost_stay_blocked(
    memory_repo: MemoryRepo,
) -> None:
    """api's release with a rotated password and another log level was rolled back; then its
    namespace went, and the catch-up made the good generation again with today's values.
    Generation 1 now holds them, generation 2 (the failed one's) is gone: the platform cannot
    show the values differ from the failed release's, so its inputs stay blocked. A rotation
    it can see (generation 2 there, other values) is a change."""
    config = memory_repo.load()
    first = make_plan(config, "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(first), deploy_files(first)
    memory_repo.write(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 1\n"
        "values:\n  LOG_LEVEL: warning\n",
    )
    config = memory_repo.load()
    tried = make_plan(
        config, "dev", state, Renderer(), files.get, secret_check=Platform(DB_ROTATED)
    )
    api = {s.service: s for s in tried.services}["api"]
    assert (api.action, api.secrets_generation) == ("update", 2)
    failed = Release(
        "api-r2", "rolled_back", "2026-12-01T10:00:00Z", inputs_digest=api.inputs_digest,
        secrets_generation=2,
    )  # fmt: skip
    state.services["api"] = replace(state.services["api"], last_failed=failed)

    gone = Platform(1, alone="its Secrets are not on the platform yet")
    plan = make_plan(config, "dev", state, Renderer(), files.get, secret_check=gone)
    blocked = {s.service: s for s in plan.services}["api"]
    assert ("api", [2]) in gone.asked
    assert (blocked.action, blocked.secrets_generation) == ("blocked", 2)
    assert blocked.inputs_digest == failed.inputs_digest
    assert blocked.blocked is not None and "cannot be compared" in blocked.blocked

    rotated = Platform(1, alone=DB_ROTATED)
    plan = make_plan(config, "dev", state, Renderer(), files.get, secret_check=rotated)
    assert {s.service: s for s in plan.services}["api"].action == "update"
