"""A workload edited by hand is not "nothing to do" (on the real control plane).

`kubectl set image`, `kubectl scale`, `kubectl set env`, `kubectl edit` leave the
release annotation alone, so the platform still says it runs the current release.
The plan must still see that the workload does not run the release as released, say
what differs (never a value set inside it), and the next `apply` must make the
platform run what the deploy repo says again: the release's own ReplicaSet scaled
back up, no new release, no commit, nothing else restarted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.k8s_live import spec_writers
from tests.reconcile.test_replaced_by_hand_cluster import kubectl, replace_by_hand
from tests.support.helpers import poll
from tests.support.k8s_cluster import RELEASE, Cluster, expect, k8s_world, plan_of, services
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import SENTINEL, set_service

pytestmark = pytest.mark.k8s


def only_rs(cluster: Cluster, service: str) -> str | None:
    """The one ReplicaSet of the service that has replicas, None while several have."""
    active = [name for name, n in cluster.replica_sets(service).items() if n > 0]
    return active[0] if len(active) == 1 else None


def image_of(cluster: Cluster, service: str) -> str:
    return str(cluster.deployment(service).spec.template.spec.containers[0].image)


def test_an_image_or_replicas_changed_by_hand_is_a_plan_step_and_apply_restores_them(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    world.ok("apply", "dev")
    released = {name: record["release"]["id"] for name, record in services(world).items()}
    worker_rs, db_rs = cluster.active_rs("worker"), cluster.active_rs("db")
    worker_image = image_of(cluster, "worker")
    # kubectl set image deploy/worker app=...:hacked; kubectl scale deploy/db --replicas=3
    hacked = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:hacked"}]}}}
    }
    cluster.apps.patch_namespaced_deployment("worker", cluster.ns, hacked)
    cluster.apps.patch_namespaced_deployment_scale("db", cluster.ns, {"spec": {"replicas": 3}})
    poll(lambda: only_rs(cluster, "worker") not in (None, worker_rs), 30, "the hacked rollout")

    plan = plan_of(world)
    for name in ("db", "worker"):
        assert (plan[name]["action"], plan[name]["reasons"]) == ("update", ["platform"]), name
        assert plan[name]["platform"]["step"] == "rollout"
    assert "x:hacked" in plan["worker"]["platform"]["why"]
    assert "replicas 3" in plan["db"]["platform"]["why"]
    text = world.ok("plan", "dev").stdout
    assert "Nothing to do" not in text and "x:hacked" in text
    head = world.head()

    expect(world.cc("apply", "dev"), 0)

    assert image_of(cluster, "worker") == worker_image
    assert cluster.deployment("db").spec.replicas == 1
    # The release's own pod template again: its ReplicaSet is scaled back up.
    poll(lambda: only_rs(cluster, "worker") == worker_rs, 30, "worker's own ReplicaSet")
    assert cluster.active_rs("db") == db_rs
    assert {n: r["release"]["id"] for n, r in services(world).items()} == released
    assert world.head() == head  # nothing to commit: the deploy repo was right
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert [d for s in report["services"] for d in s["drifts"]] == []


def test_a_blocked_service_whose_workload_is_gone_gets_its_good_release_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """Blocked means "do not retry the failed release", not "leave the platform without the
    release the deploy repo holds": a Deployment deleted (or a namespace lost) is restored."""
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=5)
    world.ok("apply", "dev")
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", LOG_LEVEL="debug", NEVER_READY="true")
    expect(world.cc("apply", "dev"), 3)  # rolled back to the good release
    assert plan_of(world)["worker"]["action"] == "blocked"
    cluster.apps.delete_namespaced_deployment("worker", cluster.ns)
    poll(lambda: "worker" not in cluster.deployments(), 30, "the Deployment gone")

    plan = plan_of(world)["worker"]
    assert (plan["action"], plan["reasons"]) == ("update", ["platform"])
    assert plan["platform"]["release"] == good and "roll it out again" in plan["platform"]["why"]

    expect(world.cc("apply", "dev"), 0)

    assert cluster.deployment("worker").metadata.annotations[RELEASE] == good
    poll(lambda: only_rs(cluster, "worker") == good_rs, 30, "the good release's ReplicaSet")
    assert services(world)["worker"]["release"]["id"] == good
    assert plan_of(world)["worker"]["action"] == "blocked"  # the failed release still is


def test_reconcile_of_a_deleted_deployment_names_only_what_is_gone(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """The ConfigMap and Secret versions the release reads are still there (kubectl get
    shows them): only the Deployment is missing, and only it is reported as such."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db",))
    world.ok("apply", "dev")
    kept = {f"ConfigMap/{cm}" for cm in _versions(cluster, "ConfigMap", "db-config-")}
    kept |= {f"Secret/{s}" for s in _versions(cluster, "Secret", "db-secrets-")}
    assert kept  # the release has both
    cluster.apps.delete_namespaced_deployment("db", cluster.ns)
    poll(lambda: "db" not in cluster.deployments(), 30, "the Deployment gone")

    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)

    (db,) = report["services"]
    missing = {d["field"] for d in db["drifts"] if d["desired"] == "present"}
    assert missing == {"Deployment/db"}, db["drifts"]
    assert not kept & {d["field"] for d in db["drifts"]}
    for ref in kept:  # as kubectl sees them
        kind, name = ref.split("/")
        read = cluster.core.read_namespaced_config_map if kind == "ConfigMap" else None
        assert (read or cluster.core.read_namespaced_secret)(name, cluster.ns).metadata.uid


def _versions(cluster: Cluster, kind: str, prefix: str) -> list[str]:
    listed = (
        cluster.core.list_namespaced_config_map(cluster.ns)
        if kind == "ConfigMap"
        else cluster.core.list_namespaced_secret(cluster.ns)
    )
    return [o.metadata.name for o in listed.items if o.metadata.name.startswith(prefix)]


def test_a_template_whose_first_container_is_a_sidecar_is_no_hand_edit(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """The workload's first image is not the release's image here, by the template's own
    choice: the platform's diff of the release says so, and nothing is rolled out again."""
    from tests.support.rollout_fixtures import DEPLOYMENT_J2

    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    sidecar = DEPLOYMENT_J2.replace(
        "      containers:\n",
        "      containers:\n      - name: proxy\n        image: registry.test/shop/proxy:2.0\n",
    )
    assert sidecar != DEPLOYMENT_J2
    world.config.release("worker", "1.1.0", {"deployment.yaml.j2": sidecar})
    rel = "environments/dev/worker.yaml"
    world.config.write(rel, world.config.read(rel).replace("template: 1.0.0", "template: 1.1.0"))
    world.config.commit("dev: worker 1.1.0, a sidecar first")
    world.ok("apply", "dev")
    assert image_of(cluster, "worker") == "registry.test/shop/proxy:2.0"
    head, before = world.head(), cluster.snapshot()

    assert plan_of(world)["worker"]["action"] == "noop"
    again = world.ok("apply", "dev")

    assert "nothing to do" in again.output.lower()
    assert world.head() == head and cluster.snapshot() == before


#: A value set by hand inside a pod template: never printed by plan or apply.
HAND_VALUE = "hand-s3cret-4f9d2"
TEMPLATE = "Deployment/{} spec.template.spec"
NEVER_READY = "testbed.configcenter.io/never-ready"  # a label of the release's templates


def _patch(ns: K8sNamespace, service: str, patch: dict[str, Any]) -> None:
    kubectl(ns, "patch", "deployment", service, "--type", "strategic", "-p", json.dumps(patch))


def _pod(**spec: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": spec}}}


def test_edits_inside_a_pod_template_are_plan_steps_and_apply_puts_the_release_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """`kubectl set env`, `kubectl set resources`, a changed command and args, a container and
    a volume added, a template label of the release changed: each is named by the plan and
    undone by the next apply, which brings back the release's own ReplicaSet (its
    pod-template-hash) without a new one; admin, not edited, is not touched."""
    edited = ("db", "api", "web", "worker")
    world = k8s_world(tmp_path, k8s_namespace, services=(*edited, "admin"))
    world.ok("apply", "dev")
    released = {name: record["release"]["id"] for name, record in services(world).items()}
    own_rs = {name: cluster.active_rs(name) for name in (*edited, "admin")}
    uids = {name: cluster.deployment(name).metadata.uid for name in (*edited, "admin")}
    ns = k8s_namespace
    kubectl(ns, "set", "env", "deployment/db", f"HAND_TOKEN={HAND_VALUE}")
    kubectl(ns, "set", "resources", "deployment/api", "-c", "app", "--limits=cpu=200m")
    # One patch per workload, so each makes one ReplicaSet of its own.
    sidecar = {"name": "proxy", "image": "registry.test/proxy:1", "args": [HAND_VALUE]}
    web_patch = _pod(containers=[sidecar], volumes=[{"name": "scratch", "emptyDir": {}}])
    _patch(ns, "web", web_patch)
    worker_patch = _pod(containers=[{"name": "app", "command": ["/bin/hack"], "args": ["--x"]}])
    worker_patch["spec"]["template"]["metadata"] = {"labels": {NEVER_READY: "hand"}}
    _patch(ns, "worker", worker_patch)
    for name in edited:
        poll(lambda n=name: only_rs(cluster, n) not in (None, own_rs[n]), 60, f"{name}'s edit")
    hacked_rs = {name: set(cluster.replica_sets(name)) for name in edited}
    admin_before = (cluster.deployment("admin").metadata.generation, cluster.replica_sets("admin"))

    plan = plan_of(world)
    assert plan["admin"]["action"] == "noop"
    for name in edited:
        assert (plan[name]["action"], plan[name]["reasons"]) == ("update", ["platform"]), name
        assert plan[name]["platform"]["step"] == "rollout"
    fields = {
        name: {(f["field"], f["change"]) for f in plan[name]["platform"]["edited"]}
        for name in edited
    }
    db_env = TEMPLATE.format("db") + ".containers[app].env[HAND_TOKEN]"
    assert {(f"{db_env}.name", "added"), (f"{db_env}.value", "added")} <= fields["db"]
    limits = TEMPLATE.format("api") + ".containers[app].resources.limits.cpu"
    assert fields["api"] == {(limits, "added")}
    web = TEMPLATE.format("web")
    assert {
        (f"{web}.containers[proxy].image", "added"),
        (f"{web}.volumes[scratch].name", "added"),
    } <= fields["web"]
    worker = TEMPLATE.format("worker")
    assert {
        (f"{worker}.containers[app].command", "added"),
        (f"{worker}.containers[app].args", "added"),
        (f"Deployment/worker spec.template.metadata.labels.{NEVER_READY}", "changed"),
    } <= fields["worker"]
    assert "kubectl-set" in plan["db"]["platform"]["why"]
    text = world.ok("plan", "dev")
    assert "Nothing to do" not in text.stdout and "HAND_TOKEN" in text.stdout
    for output in (text.output, json.dumps(plan)):
        assert HAND_VALUE not in output and SENTINEL not in output
    head = world.head()

    applied = expect(world.cc("apply", "dev"), 0)

    assert HAND_VALUE not in applied.output and SENTINEL not in applied.output
    for name in edited:
        # One line per object put back (the adapter said "healed" for it too).
        said = [
            line
            for line in applied.output.splitlines()
            if f"Deployment/{name} " in line and ("healed" in line or "put back" in line)
        ]
        assert said == [f"· {name}: put back Deployment/{name} as {released[name]} renders it"]
    assert "healed" not in applied.output
    for name in edited:
        poll(lambda n=name: only_rs(cluster, n) == own_rs[n], 60, f"{name}'s own ReplicaSet")
        assert set(cluster.replica_sets(name)) == hacked_rs[name], f"{name}: a new ReplicaSet"
        assert cluster.deployment(name).metadata.uid == uids[name]
        # Nobody else's fields are left in it: the next plan need not compare it again.
        live = json.loads(kubectl(ns, "get", "deployment", name, "-o", "json"))
        assert spec_writers(live) == (), name
    assert not cluster.deployment("db").spec.template.spec.containers[0].env
    api = cluster.deployment("api").spec.template.spec.containers[0]
    assert not (api.resources.limits or {})
    web_spec = cluster.deployment("web").spec.template.spec
    assert [c.name for c in web_spec.containers] == ["app"] and not web_spec.volumes
    worker_template = cluster.deployment("worker").spec.template
    app = worker_template.spec.containers[0]
    assert app.command is None and app.args is None
    assert worker_template.metadata.labels[NEVER_READY] == "false"
    # admin (which depends on api, rolled out again) was not restarted.
    admin_after = (cluster.deployment("admin").metadata.generation, cluster.replica_sets("admin"))
    assert admin_after == admin_before
    assert {n: r["release"]["id"] for n, r in services(world).items()} == released
    assert world.head() == head  # nothing to commit: the deploy repo was right
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert [d for s in report["services"] for d in s["drifts"]] == []


def test_a_deployment_replaced_by_hand_unchanged_is_no_plan_step(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """`kubectl replace --force` records kubectl as having set every field the server
    defaulted: the plan compares it with its release as reconcile does (a dry-run replace
    says what the server fills in), finds nothing, and apply has nothing to do."""
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    world.ok("apply", "dev")
    replace_by_hand(k8s_namespace)
    poll(lambda: only_rs(cluster, "worker") and cluster.healthy("worker"), 60, "worker back")
    managers = {m.manager for m in cluster.deployment("worker").metadata.managed_fields}
    assert "kubectl-replace" in managers, managers
    head, before = world.head(), cluster.snapshot()

    assert plan_of(world)["worker"]["action"] == "noop"
    again = world.ok("apply", "dev")

    assert "nothing to do" in again.output.lower()
    assert world.head() == head and cluster.snapshot() == before


def test_an_autoscaled_workload_keeps_its_count_when_a_hand_edit_is_put_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """`replicas: auto`: the count is the autoscaler's (here `kubectl scale`, as an HPA
    scales through the same subresource). It is no drift, and putting back an env var
    set by hand keeps it (a replace without a count would make it 1)."""
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    rel = "environments/dev/worker.yaml"
    world.config.write(rel, world.config.read(rel).replace("replicas: 1", "replicas: auto"))
    world.config.commit("dev: worker's replicas are the autoscaler's")
    world.ok("apply", "dev")
    kubectl(k8s_namespace, "scale", "deployment/worker", "--replicas=3")
    poll(
        lambda: (
            cluster.healthy("worker") and cluster.deployment("worker").status.ready_replicas == 3
        ),
        60,
        "3 ready",
    )
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert [d for s in report["services"] for d in s["drifts"]] == []
    assert plan_of(world)["worker"]["action"] == "noop"
    kubectl(k8s_namespace, "set", "env", "deployment/worker", "HAND=1")

    plan = plan_of(world)["worker"]
    assert [f["field"] for f in plan["platform"]["edited"]] == [
        f"{TEMPLATE.format('worker')}.containers[app].env[HAND].name",
        f"{TEMPLATE.format('worker')}.containers[app].env[HAND].value",
    ]
    expect(world.cc("apply", "dev"), 0)

    live = cluster.deployment("worker")
    assert not live.spec.template.spec.containers[0].env
    assert live.spec.replicas == 3


def test_a_new_release_of_a_workload_edited_by_hand_drops_the_edit_in_its_one_rollout(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """A value change while the workload carries a `kubectl set env`: server-side apply
    alone would keep the hand's env var (kubectl owns it) in the new release, so the
    release would not run as released and the next apply would roll it out once more.
    The plan says the new release replaces the edited Deployment; apply makes one new
    ReplicaSet without the hand's field, and nothing else restarts."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    world.ok("apply", "dev")
    db_before = (cluster.deployment("db").metadata.generation, cluster.replica_sets("db"))
    own_rs = cluster.active_rs("worker")
    kubectl(k8s_namespace, "set", "env", "deployment/worker", f"HAND_TOKEN={HAND_VALUE}")
    poll(lambda: only_rs(cluster, "worker") not in (None, own_rs), 60, "the hand's rollout")
    hand_rs = set(cluster.replica_sets("worker"))
    set_service(world, "worker", LOG_LEVEL="debug")

    plan = plan_of(world)
    worker = plan["worker"]
    assert (worker["action"], worker["reasons"]) == ("update", ["values"])
    assert worker["platform"]["step"] == "replace"
    env = TEMPLATE.format("worker") + ".containers[app].env[HAND_TOKEN]"
    edited = {(f["field"], f["change"]) for f in worker["platform"]["edited"]}
    assert (f"{env}.name", "added") in edited
    assert "Deployment/worker" in worker["platform"]["why"]
    text = world.ok("plan", "dev")
    assert "replaces" in text.stdout and HAND_VALUE not in text.output

    applied = expect(world.cc("apply", "dev"), 0)

    assert HAND_VALUE not in applied.output
    live = json.loads(kubectl(k8s_namespace, "get", "deployment", "worker", "-o", "json"))
    assert spec_writers(live) == ()
    assert not cluster.deployment("worker").spec.template.spec.containers[0].env
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    new = set(cluster.replica_sets("worker")) - hand_rs
    assert len(new) == 1, new  # one rollout: the new release, without the hand's env var
    poll(lambda: only_rs(cluster, "worker") in new, 60, "the new release's ReplicaSet")
    db_after = (cluster.deployment("db").metadata.generation, cluster.replica_sets("db"))
    assert db_after == db_before
    head = world.head()
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}
    again = world.ok("apply", "dev")
    assert "nothing to do" in again.output.lower() and world.head() == head
    assert set(cluster.replica_sets("worker")) - hand_rs == new
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert [d for s in report["services"] for d in s["drifts"]] == []


def test_a_secret_or_deployment_deleted_by_hand_is_named_by_the_plan_and_put_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """`kubectl delete secret api-secrets-1`: the plan says which object is missing (not "an
    unknown or incomplete release"), apply creates it again and the pods keep running (the
    same ReplicaSet, no restart); a Deployment deleted is named the same way."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api", "worker"))
    world.ok("apply", "dev")
    (secret,) = _versions(cluster, "Secret", "api-secrets-")
    own_rs, before = cluster.active_rs("api"), cluster.snapshot()
    cluster.core.delete_namespaced_secret(secret, cluster.ns)
    poll(lambda: secret not in _versions(cluster, "Secret", "api-secrets-"), 30, "Secret gone")

    api = plan_of(world)["api"]
    assert (api["action"], api["reasons"]) == ("update", ["platform"])
    assert f"Secret/{secret} missing on " in api["platform"]["why"], api["platform"]["why"]
    text = world.ok("plan", "dev").stdout
    assert "unknown or incomplete" not in text
    assert f"Secret {secret} is not on the platform (not rolled out yet, or deleted)" in text

    expect(world.cc("apply", "dev"), 0)

    assert _versions(cluster, "Secret", "api-secrets-") == [secret]
    assert cluster.active_rs("api") == own_rs
    rs_uids = {rs.metadata.name: rs.metadata.uid for rs in _rs(cluster, "api")}
    after = cluster.snapshot()
    for name in ("db", "worker"):  # not touched
        assert {k: v for k, v in after.items() if f"/{name}" in k} == {
            k: v for k, v in before.items() if f"/{name}" in k
        }
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}

    cluster.apps.delete_namespaced_deployment("api", cluster.ns)
    poll(lambda: "api" not in cluster.deployments(), 30, "the Deployment gone")
    api = plan_of(world)["api"]
    assert "Deployment/api missing on " in api["platform"]["why"], api["platform"]["why"]
    assert "roll it out again" in api["platform"]["why"]
    expect(world.cc("apply", "dev"), 0)
    assert cluster.healthy("api") and rs_uids


def _rs(cluster: Cluster, service: str) -> list[Any]:
    listed = cluster.apps.list_namespaced_replica_set(cluster.ns, label_selector=f"app={service}")
    return list(listed.items)
