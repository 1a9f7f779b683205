"""serve keeps the loaded config per config repo commit: pages after the first do not
load it again, and follow the checkout as soon as it moves (a fetch fast-forwarded, a
tag moved, a file changed by hand), broken config included."""

from __future__ import annotations

import json

from tests.serve.conftest import DIGEST, Console
from tests.support.configrepo import git
from tests.support.serve_fixtures import http

AUTH = {"Authorization": "Bearer apisec-test"}
API = "environments/dev/api.yaml"


def api_yaml(replicas: int) -> str:
    image = f"registry.test/shop/api@{DIGEST}"
    return f"template: 1.0.0\nimage: {{ref: {image}}}\nreplicas: {replicas}\n"


def push_from_elsewhere(console: Console, name: str, text: str, message: str) -> None:
    """A commit pushed to the config repo's origin by someone else (not serve's checkout)."""
    world = console.world
    other = world.root / "elsewhere"
    if not other.exists():
        git(world.config.root, "push", "-q", "origin", "HEAD:main")  # the fixture's commit
        git(world.root, "clone", "-q", str(world.origin), str(other))
    git(other, "pull", "-q", "--ff-only")
    (other / name).write_text(text)
    git(other, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message)
    git(other, "push", "-q", "origin", "HEAD:main")


def test_pages_reuse_the_loaded_config_until_the_checkout_moves(console: Console) -> None:
    engine = console.engine
    first = engine.page_workspace().config
    assert engine.page_workspace().config is first  # no reload for the same commit
    assert console.get("/environments/dev")  # a page, through the kept config
    assert engine.page_workspace().config is first

    # A new commit fetched behind serve's back: the page follows it at once.
    push_from_elsewhere(console, API, api_yaml(5), "dev: api 5 replicas")
    assert engine.page_workspace().config is first  # not fetched yet: still that commit
    engine.update_config_repo()
    moved = engine.page_workspace().config
    assert moved is not first
    assert moved.environments["dev"].services["api"].replicas == 5
    plan = json.loads(console.get("/api/environments/dev/plan"))
    assert "api" in json.dumps(plan)

    # A file edited in the checkout (not committed): loaded afresh, every time.
    (console.world.config.root / API).write_text(api_yaml(7))
    edited = engine.page_workspace().config
    assert edited is not moved
    assert edited.environments["dev"].services["api"].replicas == 7
    assert engine.page_workspace().config is not edited
    git(console.world.config.root, "checkout", "-q", "--", API)
    assert engine.page_workspace().config is moved  # back at the commit that was kept

    # A broken config fetched: the pages are the 503 page, and stay so.
    push_from_elsewhere(console, API, "template: [unclosed\n", "dev: broken api")
    engine.update_config_repo()
    for _ in range(2):
        for path in ("/", "/environments/dev", "/api/environments/dev/plan"):
            result = http("GET", console.url + path, headers=AUTH)
            assert result.status == 503, (path, result.status, result.body[:300])
            assert API in result.body.decode(), path

    # Fixed again: the pages follow.
    push_from_elsewhere(console, API, api_yaml(3), "dev: api fixed")
    engine.update_config_repo()
    fixed = engine.page_workspace().config
    assert fixed.environments["dev"].services["api"].replicas == 3
    assert console.get("/environments/dev")


def test_a_moved_tag_is_a_new_key(console: Console) -> None:
    """Template versions come from tags: a tag that moves (fetched with --force) is seen."""
    engine = console.engine
    first = engine.page_workspace().config
    root = console.world.config.root
    git(root, "tag", "-f", "-a", "-m", "moved", "api/1.0.0", "HEAD")
    assert engine.page_workspace().config is not first
