"""Source checkouts (real git repositories with bare remotes) and build input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.adapters.source_checkout import (
    SourceCheckoutError,
    cache_dir_for,
    export_tree,
    redact_url,
    resolve_source,
)
from configcenter.ports.registry import RegistryError
from configcenter.usecases.build import ImageBuildSpec, inputs_digest, validate_spec
from tests.support.helpers import free_port
from tests.support.registry_fixtures import SourceRepo


def test_branch_tag_and_commit_resolve_and_later_calls_fetch(
    source_repo: SourceRepo, tmp_path: Path
) -> None:
    first = source_repo.commit({"a.txt": "1\n", "svc/b.txt": "b\n"})
    source_repo.tag("v1")
    cache = tmp_path / "cache"
    assert resolve_source(source_repo.url, "main", cache).commit == first
    assert resolve_source(source_repo.url, "v1", cache).commit == first
    assert resolve_source(source_repo.url, first[:10], cache).commit == first
    mirror = cache_dir_for(source_repo.url, cache) / "repo.git"
    assert mirror.is_dir()

    second = source_repo.commit({"a.txt": "2\n"})
    moved = resolve_source(source_repo.url, "main", cache)
    assert moved.commit == second and moved.mirror == mirror  # fetched, not re-cloned
    assert resolve_source(source_repo.url, "v1", cache).commit == first


def test_context_subdirectory_and_export(source_repo: SourceRepo, tmp_path: Path) -> None:
    source_repo.commit({"top.txt": "t\n", "svc/api/app.txt": "api\n"})
    resolved = resolve_source(source_repo.url, "main", tmp_path, "svc/api")
    tree = export_tree(resolved)
    assert sorted(p.name for p in tree.iterdir()) == ["app.txt"]
    assert (tree / "app.txt").read_text() == "api\n"
    assert export_tree(resolved) == tree  # exported once, reused

    with pytest.raises(SourceCheckoutError, match="has no directory 'svc/web'"):
        resolve_source(source_repo.url, "main", tmp_path, "svc/web")
    with pytest.raises(SourceCheckoutError, match="invalid build context directory"):
        resolve_source(source_repo.url, "main", tmp_path, "../etc")


def test_unreachable_repo_error_masks_the_token(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"http://deploy:tok-SECRET-123@127.0.0.1:{port}/shop/api.git"
    with pytest.raises(SourceCheckoutError) as error:
        resolve_source(url, "main", tmp_path)
    assert "tok-SECRET-123" not in str(error.value)
    assert f"http://deploy:***@127.0.0.1:{port}/shop/api.git" in str(error.value)


def test_redact_url() -> None:
    assert redact_url("https://u:p@h/x.git") == "https://u:***@h/x.git"
    assert redact_url("https://TOKEN@h:8443/x.git") == "https://***@h:8443/x.git"
    assert redact_url("ssh://git@h/x.git") == "ssh://git@h/x.git"
    assert redact_url("/srv/git/x.git") == "/srv/git/x.git"


def spec(**changes: object) -> ImageBuildSpec:
    base: dict[str, object] = {
        "service": "api",
        "source_repo": "/srv/x.git",
        "source_ref": "main",
        "dockerfile": "FROM scratch\n",
        "build_args": {"A": "1", "B": "2"},
        "registry_host": "127.0.0.1:5000",
        "repository": "shop/api",
    }
    base.update(changes)
    return ImageBuildSpec(**base)  # type: ignore[arg-type]


def test_bad_build_input_is_named() -> None:
    with pytest.raises(RegistryError, match="invalid image repository 'Shop/Api'"):
        validate_spec(spec(repository="Shop/Api"))
    with pytest.raises(ValueError, match="build arg name '1X' is invalid"):
        validate_spec(spec(build_args={"1X": "v"}))
    with pytest.raises(ValueError, match="registry host 'h/x' is invalid"):
        validate_spec(spec(registry_host="h/x"))
    with pytest.raises(ValueError, match=r"context file '\.\./x' must be a relative path"):
        validate_spec(spec(context_files={"../x": b""}))
    with pytest.raises(ValueError, match="the rendered Dockerfile is empty"):
        validate_spec(spec(dockerfile="  \n"))


def test_inputs_digest_covers_every_input_and_ignores_arg_order() -> None:
    base = inputs_digest("c1", "t1", spec())
    assert inputs_digest("c1", "t1", spec(build_args={"B": "2", "A": "1"})) == base
    changed = {
        inputs_digest("c2", "t1", spec()),
        inputs_digest("c1", "t2", spec()),
        inputs_digest("c1", "t1", spec(build_args={"A": "1", "B": "3"})),
        inputs_digest("c1", "t1", spec(dockerfile="FROM scratch\nENV X=1\n")),
        inputs_digest("c1", "t1", spec(context_files={"conf/x": b"1"})),
    }
    assert base not in changed and len(changed) == 5
    # Where the image goes is not an input: the same build under another name is the same image.
    assert inputs_digest("c1", "t1", spec(repository="shop/other")) == base
