"""The desired-objects cache (adapters/k8s_desired_cache.py): each release's objects kept
on disk by everything they are built from. Change an input behind its back and the next
answer is the fresh build's, never the kept one; the cluster half (reconcile judging live
objects after the deploy repo changed under it) is tests/reconcile/test_desired_cache_cluster.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from configcenter.adapters.k8s_desired_cache import (
    LOADED_CODE,
    DesiredObjectsCache,
    code_fingerprint,
)
from configcenter.adapters.k8s_observe import build_desired, desired_objects
from configcenter.ports.platform import Deployable

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: app
        ports:
        - containerPort: 8080
"""
RELEASE = Deployable(
    env="dev",
    service="api",
    release_id="dev-api-1",
    image="registry.example.com/api:1",
    config_digest="d1",
    files={"deployment.yaml": DEPLOYMENT.encode(), "app.env": b"LOG_LEVEL=info\n"},
    values={"GREETING": "hello"},
    secrets={"DB_PASSWORD": "env:DB_PASSWORD"},
    replicas=2,
    secrets_generation=1,
)


def _container(objects: dict[str, object]) -> dict[str, object]:
    deployment = objects["Deployment/api"]
    assert isinstance(deployment, dict)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_a_kept_answer_is_the_fresh_build(tmp_path: Path) -> None:
    cache = DesiredObjectsCache(tmp_path)
    first = desired_objects(RELEASE, "ns", cache)
    assert first == build_desired(RELEASE, "ns")
    assert len(list(tmp_path.glob("*.pickle"))) == 1
    # A new cache over the same directory (the next command) reads it back as it was built.
    again = desired_objects(RELEASE, "ns", DesiredObjectsCache(tmp_path))
    assert again == first
    assert sorted(again) == [
        "ConfigMap/api-config",
        f"ConfigMap/{_env_config_map(again)}",
        "Deployment/api",
        "Secret/api-secrets-1",
    ]


def _env_config_map(objects: dict[str, object]) -> str:
    [name] = [r.split("/", 1)[1] for r in objects if r.startswith("ConfigMap/api-config-")]
    return name


@pytest.mark.parametrize(
    "changed",
    [
        # the rendered Deployment, same file name, other bytes
        replace(
            RELEASE,
            files={**RELEASE.files, "deployment.yaml": DEPLOYMENT.replace("8080", "9090").encode()},
        ),
        replace(RELEASE, files={**RELEASE.files, "app.env": b"LOG_LEVEL=debug\n"}),
        replace(RELEASE, values={"GREETING": "bye"}),
        replace(RELEASE, secrets={"DB_PASS": "env:DB_PASSWORD"}),
        replace(RELEASE, image="registry.example.com/api:2"),
        replace(RELEASE, replicas=5),
        replace(RELEASE, secrets_generation=2),
        replace(RELEASE, release_id="dev-api-2"),
        replace(RELEASE, config_digest="d2"),
        replace(RELEASE, labels={"team": "a"}),
        replace(RELEASE, stage_files=frozenset({"deployment.yaml"})),
    ],
    ids=[
        "manifest",
        "env-file",
        "value",
        "secret-key",
        "image",
        "replicas",
        "secrets-generation",
        "release",
        "digest",
        "labels",
        "stage-files",
    ],
)
def test_any_changed_input_is_built_afresh(tmp_path: Path, changed: Deployable) -> None:
    cache = DesiredObjectsCache(tmp_path)
    before = desired_objects(RELEASE, "ns", cache)
    after = desired_objects(changed, "ns", DesiredObjectsCache(tmp_path))
    assert after == build_desired(changed, "ns")
    assert after != before
    # And back: the first release is built again (its slot now holds the other key).
    assert desired_objects(RELEASE, "ns", DesiredObjectsCache(tmp_path)) == before


def test_the_namespace_and_the_building_code_are_part_of_the_key(tmp_path: Path) -> None:
    kept = desired_objects(RELEASE, "ns", DesiredObjectsCache(tmp_path, code="build-1"))
    other_ns = desired_objects(RELEASE, "other", DesiredObjectsCache(tmp_path, code="build-1"))
    assert other_ns == build_desired(RELEASE, "other")
    assert {o["metadata"]["namespace"] for o in other_ns.values()} == {"other"}
    # Objects kept by other code are not read by this one: a changed builder rebuilds.
    slot = next(iter(tmp_path.glob("*.pickle")))
    stale = DesiredObjectsCache(tmp_path, code="build-1")
    _container(kept)["image"] = "kept-by-older-code"
    stale._write(slot, stale.key(RELEASE, "ns") or "", kept)  # what older code had kept
    assert _container(desired_objects(RELEASE, "ns", stale))["image"] == "kept-by-older-code"
    fresh = desired_objects(RELEASE, "ns", DesiredObjectsCache(tmp_path, code="build-2"))
    assert fresh == build_desired(RELEASE, "ns")
    # By default the key names the code this process loaded (its files' bytes at import).
    assert LOADED_CODE is not None and code_fingerprint() == LOADED_CODE
    assert DesiredObjectsCache(tmp_path).key(RELEASE, "ns") == DesiredObjectsCache(
        tmp_path, code=LOADED_CODE
    ).key(RELEASE, "ns")


def test_callers_own_what_they_get(tmp_path: Path) -> None:
    cache = DesiredObjectsCache(tmp_path)
    first = desired_objects(RELEASE, "ns", cache)
    _container(first)["image"] = "changed by a caller"
    assert _container(desired_objects(RELEASE, "ns", cache))["image"] == RELEASE.image


def test_a_garbled_cache_file_is_rebuilt(tmp_path: Path) -> None:
    desired_objects(RELEASE, "ns", DesiredObjectsCache(tmp_path))
    [slot] = tmp_path.glob("*.pickle")
    for garbage in (b"", b"not a pickle", slot.read_bytes()[:20]):
        slot.write_bytes(garbage)
        assert desired_objects(RELEASE, "ns", DesiredObjectsCache(tmp_path)) == build_desired(
            RELEASE, "ns"
        )


def test_an_unwritable_cache_costs_a_build_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory should be")
    cache = DesiredObjectsCache(blocked / "desired")
    with caplog.at_level(logging.WARNING, logger="configcenter.adapters.kubernetes"):
        for release in (RELEASE, replace(RELEASE, service="web")):
            assert desired_objects(release, "ns", cache) == build_desired(release, "ns")
    assert [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()] != []
    assert len([r for r in caplog.records if "cannot be written" in r.getMessage()]) == 1
