"""`history --diff` of a release that rotated secret values says so (never the values):
it said "no difference in template, image, replicas, values or files" although the pods
rolled onto a new Secret, and a rollback across it restores the older values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.e2e_fixtures import SECRET_ENV
from tests.support.k8s_cluster import k8s_world
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import SENTINEL

pytestmark = pytest.mark.k8s


def test_history_diff_names_a_secrets_rotation(tmp_path: Path, k8s_namespace: K8sNamespace) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"))
    world.ok("apply", "dev")
    world.env[SECRET_ENV] = SENTINEL + "-rotated"
    plan = {
        s["service"]: s for s in json.loads(world.ok("plan", "dev", "--json").stdout)["services"]
    }
    assert plan["api"]["reasons"] == ["secrets"]
    world.ok("apply", "dev")
    releases = json.loads(world.ok("history", "dev", "--service", "api", "--json").stdout)
    after, before = (r["release"] for r in releases["releases"][:2])

    data = json.loads(world.ok("history", "dev", "--diff", before, after, "--json").stdout)
    text = world.ok("history", "dev", "--diff", before, after).stdout

    assert data["fields"] == {"secrets_generation": {"from": 1, "to": 2}}
    assert "no difference" not in text
    assert "  secrets  generation 1 -> 2 (secret values rotated)" in text.splitlines()
    assert SENTINEL not in json.dumps(data) + text
