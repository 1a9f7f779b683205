"""A registry push deploys the services of auto_apply environments that run the pushed image."""

from __future__ import annotations

import pytest

from configcenter.usecases.image_push import names_pushed_image, services_for_pushed_image
from tests.support.configrepo import MemoryRepo

DEV_ENV = """\
platform: local
allow_head: true
auto_apply: true
values:
  LOG_LEVEL: debug
  DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}
"""


@pytest.mark.parametrize(
    ("ref", "repository", "tag", "expected"),
    [
        ("registry.example.com/shop/api:1.0", "shop/api", "1.0", True),
        ("registry.example.com/shop/api:1.0", "shop/api", "1.1", False),
        ("registry.example.com/shop/api:1.0", "shop/api", None, True),  # pushed by digest
        ("registry.example.com/shop/api:1.0", "shop/web", "1.0", False),
        ("registry.example.com/shop/api-v2:1.0", "shop/api", "1.0", False),
        ("localhost/shop/api:2", "shop/api", "2", True),
        ("localhost:5000/shop/api", "shop/api", "latest", True),  # no tag is latest
        ("localhost/shop/api@sha256:" + "a" * 64, "shop/api", "latest", True),
        ("127.0.0.1:5000/shop/api:2@sha256:" + "b" * 64, "shop/api", "2", True),
        ("shop/api:1.0", "shop/api", "1.0", True),  # no host: Docker Hub style
        ("docker.io/library/postgres:16", "library/postgres", "16", True),
        ("docker.io/library/postgres:16", "postgres", "16", False),
    ],
)
def test_an_image_reference_names_the_pushed_repository_and_tag(
    ref: str, repository: str, tag: str | None, expected: bool
) -> None:
    assert names_pushed_image(ref, repository, tag) is expected


def test_only_auto_apply_environments_running_the_image_are_targeted(
    memory_repo: MemoryRepo,
) -> None:
    assert services_for_pushed_image(memory_repo.load(), "shop/api", "1.0") == {}
    memory_repo.write("environments/dev/_env.yaml", DEV_ENV)
    config = memory_repo.load()

    assert services_for_pushed_image(config, "shop/api", "1.0") == {"dev": ["api"]}
    assert services_for_pushed_image(config, "library/postgres", "16") == {"dev": ["db"]}
    assert services_for_pushed_image(config, "shop/api", "9.9") == {}
    assert services_for_pushed_image(config, "shop/web", None) == {}


def test_every_service_running_the_repository_is_targeted(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/dev/_env.yaml", DEV_ENV)
    memory_repo.write(
        "environments/dev/db.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\n",
    )
    assert services_for_pushed_image(memory_repo.load(), "shop/api", "1.0") == {
        "dev": ["api", "db"]
    }
