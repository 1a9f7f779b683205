"""reconcile keeps each release's desired objects on disk (adapters/k8s_desired_cache.py),
keyed by everything they are built from: when the deploy repo's rendered files change
behind the cache's back, drift is judged against the new bytes, on the live objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.reconcile import reconcile
from tests.support.configrepo import git
from tests.support.serve_fixtures import ShopWorld, make_shop_world

pytestmark = pytest.mark.k8s


@pytest.fixture
def deployed(tmp_path: Path, k8s_namespace: Any, private_xdg: Path) -> ShopWorld:
    world = make_shop_world(
        tmp_path / "w", namespace=k8s_namespace.name, kubeconfig=k8s_namespace.kubeconfig
    )
    result = apply_env(world.workspace(), "dev", ApplyOptions(build=False))
    assert [(r.service, r.outcome) for r in result.results] == [("api", "healthy")]
    return world


def _live_deployment(ns: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(ns.api_client()).read_namespaced_deployment("api", ns.name)


def _edit_deploy_repo(world: ShopWorld, path: str, edit: Callable[[str], str]) -> None:
    """A commit to the deploy repo by someone else: the file changes, its record does not."""
    clone = world.root / "deploy-by-hand"
    if clone.exists():
        git(clone, "pull", "-q", "origin", "main")
    else:
        git(world.root, "clone", "-q", str(world.deploy), str(clone))
    target = clone / path
    before = target.read_text()
    target.write_text(edit(before))
    assert target.read_text() != before, f"{path} was not changed by the edit"
    git(clone, "commit", "-qam", f"{path} edited by hand")
    git(clone, "push", "-q", "origin", "HEAD:main")


def _drifts(world: ShopWorld) -> list[tuple[str, str | None, str | None]]:
    return [(d.field, d.desired, d.live) for d in reconcile(world.workspace(), "dev").drifts]


def test_rendered_files_changed_behind_the_cache_are_compared_afresh(
    deployed: ShopWorld, k8s_namespace: Any
) -> None:
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "configcenter" / "k8s-desired"
    assert len(list(cache.glob("*.pickle"))) == 1  # kept by the apply
    assert _drifts(deployed) == []  # and read back
    [slot] = cache.glob("*.pickle")
    slot.unlink()
    assert _drifts(deployed) == []  # built again and kept by reconcile itself
    assert len(list(cache.glob("*.pickle"))) == 1

    # Someone scales the live Deployment: the live side is never kept, the drift shows.
    from kubernetes import client

    apps = client.AppsV1Api(k8s_namespace.api_client())
    apps.patch_namespaced_deployment_scale("api", k8s_namespace.name, {"spec": {"replicas": 3}})
    assert _drifts(deployed) == [("replicas", "2", "3")]  # (the object drift it repeats: once)
    apps.patch_namespaced_deployment_scale("api", k8s_namespace.name, {"spec": {"replicas": 2}})
    assert _drifts(deployed) == []

    # The release's rendered Deployment changes in the deploy repo (same release, same
    # record); the platform is untouched, so what runs no longer matches the new bytes.
    _edit_deploy_repo(
        deployed,
        "dev/api/deployment.yaml",
        lambda text: text.replace("progressDeadlineSeconds: 60", "progressDeadlineSeconds: 90"),
    )
    assert _live_deployment(k8s_namespace).spec.progress_deadline_seconds == 60
    assert _drifts(deployed) == [("Deployment/api spec.progressDeadlineSeconds", "90", "60")]

    # Healing applies the new bytes: judged on the platform, then in sync.
    healed = reconcile(deployed.workspace(), "dev", heal=True)
    assert [(r.service, r.outcome) for r in healed.healed] == [("api", "healthy")]
    assert _live_deployment(k8s_namespace).spec.progress_deadline_seconds == 90
    assert _drifts(deployed) == []

    # Back to the first bytes: the slot holds the other key, the old objects are rebuilt.
    _edit_deploy_repo(
        deployed,
        "dev/api/deployment.yaml",
        lambda text: text.replace("progressDeadlineSeconds: 90", "progressDeadlineSeconds: 60"),
    )
    assert _drifts(deployed) == [("Deployment/api spec.progressDeadlineSeconds", "60", "90")]
    assert len(list(cache.glob("*.pickle"))) == 1
