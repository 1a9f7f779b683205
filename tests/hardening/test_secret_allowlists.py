"""Bullet 8: file: and k8s: references reach only what configcenter.yaml's secrets: allows."""

from __future__ import annotations

import pytest

from tests.support.configrepo import ConfigRepo

ENV = "environments/dev/_env.yaml"


def _errors(repo: ConfigRepo, ref: str, allow: str = "") -> list[str]:
    if allow:
        repo.write("configcenter.yaml", repo.read("configcenter.yaml") + allow)
    repo.write(
        ENV,
        "platform: local\nallow_head: true\nvalues:\n  LOG_LEVEL: debug\n"
        f'  DB_PASSWORD: {{secret: "{ref}"}}\n',
    )
    return [
        f"{p.source}: {p.message} ({p.hint})"
        for p in repo.problems()
        if p.severity == "error" and p.source.file == ENV
    ]


@pytest.mark.parametrize("ref", ["file:/etc/passwd", "k8s:kube-system/admin-token/token"])
def test_nothing_is_allowed_by_default(repo: ConfigRepo, ref: str) -> None:
    (error,) = _errors(repo, ref)
    assert error.startswith(f"{ENV}:5: secret reference '{ref}' is refused")
    assert "secrets: {" + ref.split(":")[0] + ": {allow: [...]}}" in error


ALLOW = 'secrets:\n  file: {allow: ["/run/secrets/shop/*"]}\n  k8s: {allow: ["shop-*/db"]}\n'


@pytest.mark.parametrize("ref", ["file:/run/secrets/shop/db", "k8s:shop-dev/db/password"])
def test_allowed_references_load(repo: ConfigRepo, ref: str) -> None:
    assert _errors(repo, ref, ALLOW) == []


@pytest.mark.parametrize(
    "ref",
    [
        "file:/run/secrets/shop/../../../etc/shadow",
        "file:/run/secrets/other/db",
        "k8s:kube-system/db/password",
        "k8s:shop-dev/admin/token",
    ],
)
def test_references_outside_the_allowlists_are_refused(repo: ConfigRepo, ref: str) -> None:
    (error,) = _errors(repo, ref, ALLOW)
    assert "is refused" in error


def test_project_settings_are_checked_too(repo: ConfigRepo) -> None:
    repo.write(
        "configcenter.yaml",
        repo.read("configcenter.yaml")
        + 'registry: {url: r.test, password: {secret: "file:/root/.docker/config.json"}}\n',
    )
    errors = [p for p in repo.problems() if p.source.file == "configcenter.yaml"]
    assert len(errors) == 1 and "is refused" in errors[0].message
