"""Building the objects a release consists of (no cluster needed)."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from configcenter.adapters.k8s_manifests import (
    DIGEST_ANNOTATION,
    ENV_LABEL,
    MANAGED_BY_LABEL,
    RELEASE_ANNOTATION,
    SERVICE_LABEL,
    VERSIONED_LABEL,
    ManifestError,
    build_objects,
    check_namespace,
    content_name,
    parse_env_file,
    parse_manifests,
    release_refs,
    versions_to_collect,
)
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import PlatformError
from tests.kubernetes_adapter.conftest import make_deployable, target_for


def objects_by_ref(objs: list[Any]) -> dict[str, dict[str, Any]]:
    return {o.ref: o.body for o in objs}


def names_of(objs: list[Any], kind: str, role: str) -> list[str]:
    return [
        o.name
        for o in objs
        if o.kind == kind and o.body["metadata"]["labels"].get(VERSIONED_LABEL) == role
    ]


def test_objects_come_in_apply_order_with_labels_and_annotations() -> None:
    release = make_deployable(release_id="r9", secrets={"DB_PASSWORD": "env:X"})
    objs = build_objects(release, "shop-dev", {"env:X": "s3cret"})
    config = content_name("api-config", {"LOG_LEVEL": "info", "REGION": "eu"})
    assert [o.ref for o in objs] == [
        "ConfigMap/api-config",
        f"ConfigMap/{config}",
        "Secret/api-secrets-1",
        "Service/api",
        "Deployment/api",
    ]
    for obj in objs:
        meta = obj.body["metadata"]
        assert meta["namespace"] == "shop-dev"
        assert meta["labels"][MANAGED_BY_LABEL] == "configcenter"
        assert meta["labels"][ENV_LABEL] == "dev"
        assert meta["labels"][SERVICE_LABEL] == "api"
        if VERSIONED_LABEL in meta["labels"]:
            assert obj.body["immutable"] is True
            assert "annotations" not in meta, "shared by releases: no release id on them"
        else:
            assert meta["annotations"][RELEASE_ANNOTATION] == "r9"
            assert meta["annotations"][DIGEST_ANNOTATION] == release.config_digest
    assert objs[-1].body["metadata"]["labels"]["app"] == "api", "the template's labels stay"
    assert "data" not in objs[0].body, "the record ConfigMap holds no values"


def test_pod_template_refers_to_the_versioned_config_and_secrets_by_name() -> None:
    release = make_deployable(secrets={"DB_PASSWORD": "env:X"})
    objs = build_objects(release, "ns", {"env:X": "pw"})
    template = objects_by_ref(objs)["Deployment/api"]["spec"]["template"]
    container = template["spec"]["containers"][0]

    assert container["image"] == release.image
    assert container["envFrom"] == [
        {"configMapRef": {"name": names_of(objs, "ConfigMap", "config")[0]}},
        {"secretRef": {"name": "api-secrets-1"}},
    ]
    assert "annotations" not in template["metadata"], (
        "names roll the pods; an annotation of the release would stop rollbacks from "
        "reusing the old ReplicaSet"
    )
    assert template["metadata"]["labels"][SERVICE_LABEL] == "api"
    assert template["metadata"]["labels"]["app"] == "api"


def pod_template(release: Any) -> Any:
    return objects_by_ref(build_objects(release, "ns", {"env:X": "pw"}))["Deployment/api"]["spec"][
        "template"
    ]


def test_pod_template_changes_only_with_what_the_pods_consume() -> None:
    one = make_deployable(release_id="r1")
    assert pod_template(one) == pod_template(make_deployable(release_id="r5"))
    assert pod_template(one) != pod_template(make_deployable(env_file="LOG_LEVEL=debug\n"))
    assert pod_template(one) != pod_template(make_deployable(image="registry.test/shop/api:2"))
    files = {"conf/app.ini": b"[a]\n"}
    assert pod_template(make_deployable(extra_files=files)) != pod_template(
        make_deployable(extra_files={"conf/app.ini": b"[b]\n"})
    )
    assert pod_template(one) == pod_template(make_deployable(replicas=7)), (
        "a scale is not a restart"
    )
    secret = make_deployable(secrets={"DB_PASSWORD": "env:X"})
    assert pod_template(secret) != pod_template(replace(secret, secrets_generation=2)), (
        "a rotation rolls the pods by the Secret's name"
    )


def test_image_in_the_manifest_is_kept() -> None:
    release = make_deployable(manifest_image="registry.test/shop/api:pinned")
    deployment = objects_by_ref(build_objects(release, "ns", {}))["Deployment/api"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.test/shop/api:pinned"
    )


def test_env_entries_holding_a_secret_anywhere_go_to_the_secret_resolved() -> None:
    release = make_deployable(
        values={"REGION": "eu", "LOG_LEVEL": "warn", "FEATURES": '{"a":true}'},
        env_file="# comment\nexport LOG_LEVEL=debug\nQUOTED='a b'\nURL=http://x/#frag\n"
        "POSTGRES_PASSWORD=${secret:env:DB}\nDSN=pg://u:${secret:env:DB}@db/shop\n",
        secrets={"DB_PASSWORD": "env:DB"},
    )
    objs = build_objects(release, "ns", {"env:DB": "pw-123"})
    by_ref = objects_by_ref(objs)
    config = by_ref["ConfigMap/" + names_of(objs, "ConfigMap", "config")[0]]
    assert config["data"] == {
        "REGION": "eu",
        "FEATURES": '{"a":true}',
        "LOG_LEVEL": "debug",
        "QUOTED": "a b",
        "URL": "http://x/#frag",
    }
    secret = by_ref["Secret/api-secrets-1"]
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "DB_PASSWORD": "pw-123",
        "POSTGRES_PASSWORD": "pw-123",
        "DSN": "pg://u:pw-123@db/shop",
    }
    assert release_refs(release) == ["env:DB"]


def test_config_files_holding_a_secret_are_mounted_from_a_secret() -> None:
    release = make_deployable(
        extra_files={
            "conf/app.yaml": b"smtp:\n  password: ${secret:env:SMTP}\n",
            "conf/plain.ini": b"[main]\n",
        }
    )
    objs = build_objects(release, "ns", {"env:SMTP": "mail-pw"})
    by_ref = objects_by_ref(objs)
    secret = by_ref["Secret/api-secret-files-1"]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "conf_app.yaml": "smtp:\n  password: mail-pw\n"
    }
    files = by_ref["ConfigMap/" + names_of(objs, "ConfigMap", "files")[0]]
    assert files["data"] == {"conf_plain.ini": "[main]\n"}
    for obj in objs:
        if obj.kind == "ConfigMap":
            assert "${secret:" not in str(obj.body), obj.ref
    volume = by_ref["Deployment/api"]["spec"]["template"]["spec"]["volumes"][0]
    assert volume["projected"]["sources"] == [
        {
            "configMap": {
                "name": names_of(objs, "ConfigMap", "files")[0],
                "items": [{"key": "conf_plain.ini", "path": "conf/plain.ini"}],
            }
        },
        {
            "secret": {
                "name": "api-secret-files-1",
                "items": [{"key": "conf_app.yaml", "path": "conf/app.yaml"}],
            }
        },
    ]


def test_a_secret_in_a_manifest_is_refused() -> None:
    leaky = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  annotations:\n"
    leaky += b"    token: ${secret:env:T}\n"
    with pytest.raises(ManifestError, match=r"extra\.yaml: Service/s holds a secret placeholder"):
        build_objects(make_deployable(extra_files={"extra.yaml": leaky}), "ns", {})


def test_secrets_are_masked_when_values_are_not_given() -> None:
    release = make_deployable(secrets={"DB_PASSWORD": "env:DB"})
    secret = objects_by_ref(build_objects(release, "ns", None))["Secret/api-secrets-1"]
    assert secret["data"] == {"DB_PASSWORD": "***"}


def test_no_secret_no_secret_object() -> None:
    objs = build_objects(make_deployable(), "ns", {})
    assert [o.kind for o in objs].count("Secret") == 0


def test_replicas_come_from_the_release_when_the_manifest_has_none() -> None:
    manifest = (
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n"
        b"  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n"
        b"    spec: {containers: [{name: app}]}\n"
    )
    release = replace(make_deployable(replicas=4), files={"deployment.yaml": manifest})
    deployment = objects_by_ref(build_objects(release, "ns", {}))["Deployment/api"]
    assert deployment["spec"]["replicas"] == 4
    auto = replace(release, replicas=None)
    deployment = objects_by_ref(build_objects(auto, "ns", {}))["Deployment/api"]
    assert "replicas" not in deployment["spec"], "replicas: auto leaves it to an autoscaler"


def test_old_versions_are_collected_beyond_the_newest_few_per_role() -> None:
    def item(kind: str, name: str, role: str, at: int) -> dict[str, Any]:
        meta = {"name": name, "labels": {VERSIONED_LABEL: role}}
        meta["creationTimestamp"] = f"2026-12-01T10:{at:02d}:00Z"
        return {"kind": kind, "metadata": meta}

    items = [item("ConfigMap", f"api-config-{i}", "config", i) for i in range(8)]
    items += [item("Secret", f"api-secrets-{i}", "secrets", i) for i in range(3)]
    items.append({"kind": "ConfigMap", "metadata": {"name": "api-config", "labels": {}}})
    old = versions_to_collect(items, {("ConfigMap", "api-config-0")})
    assert sorted(i["metadata"]["name"] for i in old) == ["api-config-1", "api-config-2"]


def test_yaml_outputs_that_are_not_kubernetes_objects_are_skipped() -> None:
    files = {
        "conf/app.yaml": b"server:\n  port: 8080\n",
        "deployment.yaml": b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n",
        "notes.txt": b"apiVersion: v1",
    }
    assert [o.ref for o in parse_manifests(files)] == ["Service/a"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"d.yaml": b"a: [unclosed\n"}, r"d\.yaml: not valid YAML"),
        (
            {"d.yaml": b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nfoo: 1\n"},
            r"d\.yaml: document 2 is not a Kubernetes object",
        ),
        (
            {"d.yml": b"apiVersion: v1\nkind: List\nmetadata: {name: a}\nitems: []\n"},
            r"d\.yml: kind List is not supported",
        ),
    ],
)
def test_bad_manifest_files_name_the_file(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifests(files)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: api-config}\n",
            r"extra\.yaml: ConfigMap/api-config: names api-config and .* are configcenter's",
        ),
        (
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: api-secrets-3}\n",
            r"extra\.yaml: Secret/api-secrets-3: names api-config and",
        ),
        (
            b"apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: other}\n",
            r"extra\.yaml: Service/s declares namespace 'other' but the target namespace is 'ns'",
        ),
        (
            b"apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n",
            r"extra\.yaml: Namespace/ns: configcenter creates the target's namespace",
        ),
        (
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\n"
            b"spec: {template: {spec: {containers: []}}}\n",
            r"extra\.yaml: Deployment/w has a pod template without containers",
        ),
    ],
)
def test_manifests_configcenter_cannot_own_are_refused(extra: bytes, message: str) -> None:
    release = make_deployable(extra_files={"extra.yaml": extra})
    with pytest.raises(ManifestError, match=message):
        build_objects(release, "ns", {})


def test_container_without_image_needs_one_from_the_release() -> None:
    release = make_deployable(image="")
    with pytest.raises(ManifestError, match="container app has no image"):
        build_objects(release, "ns", {})


def test_env_file_rules() -> None:
    assert parse_env_file("a.env", b'A=1\n\n# c\nexport B = two words \nC="q"\nD=x=y\n') == {
        "A": "1",
        "B": "two words",
        "C": "q",
        "D": "x=y",
    }
    with pytest.raises(ManifestError, match=r"a\.env:2: expected KEY=VALUE"):
        parse_env_file("a.env", b"A=1\njust text\n")
    with pytest.raises(ManifestError, match=r"a\.env:1: '1A' is not a valid variable name"):
        parse_env_file("a.env", b"1A=1\n")


def test_label_unsafe_names_are_refused() -> None:
    with pytest.raises(
        ManifestError, match="service name 'Api Server' cannot be a Kubernetes label"
    ):
        build_objects(make_deployable(service="Api Server"), "ns", {})


@pytest.mark.parametrize("namespace", ["", "Shop_Dev", "x" * 64, "-a"])
def test_target_namespace_must_be_a_valid_name(namespace: str) -> None:
    with pytest.raises(ManifestError, match="platform 'local'"):
        check_namespace(namespace, "local")


def test_adapter_refuses_wrong_kind_and_env_before_touching_a_cluster() -> None:
    from configcenter.ports.platform import PlatformTarget

    with pytest.raises(PlatformError, match="of kind 'marathon', not 'kubernetes'"):
        KubernetesPlatform(PlatformTarget("m", "marathon", "dev", {"url": "http://m"}))
    platform = KubernetesPlatform(target_for("shop-prod", env="prod"), kubeconfig="/nonexistent")
    with pytest.raises(PlatformError, match="release is for env 'dev' but platform 'local'"):
        platform.apply(make_deployable())


def test_missing_kubeconfig_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    platform = KubernetesPlatform(target_for("shop-dev"), kubeconfig="/nonexistent/kubeconfig")
    with pytest.raises(PlatformError, match="cannot load kubeconfig /nonexistent/kubeconfig"):
        platform.apply(make_deployable())


STATEFUL_AND_DAEMON = b"""\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      initContainers: [{name: init}]
      containers: [{name: app}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: registry.test/agent:3}]
"""


def test_statefulset_and_daemonset_pods_get_env_sources_files_and_image() -> None:
    release = make_deployable(
        replicas=3,
        extra_files={"workloads.yaml": STATEFUL_AND_DAEMON, "conf/app.ini": b"[main]\n"},
    )
    built = build_objects(release, "ns", {})
    objs = objects_by_ref(built)
    sources = [{"configMapRef": {"name": names_of(built, "ConfigMap", "config")[0]}}]
    for ref in ("StatefulSet/db", "DaemonSet/agent"):
        template = objs[ref]["spec"]["template"]
        assert template["metadata"]["labels"][SERVICE_LABEL] == "api"
        pod = template["spec"]
        assert [v["name"] for v in pod["volumes"]] == ["configcenter-files"]
        for container in [*pod["containers"], *(pod.get("initContainers") or [])]:
            assert container["envFrom"] == sources, (ref, container["name"])
            assert container["volumeMounts"] == [
                {
                    "name": "configcenter-files",
                    "mountPath": "/etc/configcenter/api",
                    "readOnly": True,
                }
            ]
    assert objs["StatefulSet/db"]["spec"]["replicas"] == 3, "the release's replicas"
    assert "replicas" not in objs["DaemonSet/agent"]["spec"], "a DaemonSet has no replicas"
    assert objs["StatefulSet/db"]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        release.image
    )
    assert objs["DaemonSet/agent"]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.test/agent:3"
    )


def test_wait_without_deployments_is_healthy_at_once() -> None:
    platform = KubernetesPlatform(target_for("shop-dev"), kubeconfig="/nonexistent")
    release = make_deployable()
    only_service = {"svc.yaml": b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"}
    release = type(release)(**{**release.__dict__, "files": only_service})
    seen: list[Any] = []
    status = platform.wait(release, timeout=1, progress=seen.append)
    assert (status.state, status.reason) == ("healthy", "NoDeployment")
    assert seen == [status]
