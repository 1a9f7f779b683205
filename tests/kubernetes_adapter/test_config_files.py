"""Config files (outputs that are neither manifests nor `.env`) as a ConfigMap mounted in pods."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from typing import Any

import pytest

from configcenter.adapters.k8s_manifests import (
    CONFIG_MAP_MAX_BYTES,
    FILES_MOUNT_ANNOTATION,
    FILES_VOLUME,
    ManifestError,
    build_objects,
    config_file_keys,
    config_files,
)
from tests.kubernetes_adapter.conftest import make_deployable

VALID_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def objects(release: Any) -> dict[str, dict[str, Any]]:
    """The release's objects by ref; the files ConfigMap (versioned) also as ConfigMap/api-files."""
    found = {o.ref: o.body for o in build_objects(release, "ns", {})}
    for ref, body in list(found.items()):
        if ref.startswith(f"ConfigMap/{release.service}-files-"):
            found[f"ConfigMap/{release.service}-files"] = body
    return found


def pod_spec(release: Any, name: str = "Deployment/api") -> dict[str, Any]:
    spec: dict[str, Any] = objects(release)[name]["spec"]["template"]["spec"]
    return spec


def assert_valid_key(key: str) -> None:
    assert VALID_KEY.fullmatch(key), key
    assert len(key) <= 253 and key not in (".", "..") and not key.startswith(".."), key


def test_keys_are_the_paths_made_safe() -> None:
    keys = config_file_keys(["conf/nginx.conf", "application.properties", "a b/ü.txt"])
    assert keys == {
        "conf/nginx.conf": "conf_nginx.conf",
        "application.properties": "application.properties",
        "a b/ü.txt": "a_b__.txt",
    }


def test_paths_that_would_share_a_key_get_distinct_valid_keys() -> None:
    paths = ["conf/app.conf", "conf_app.conf", "conf app.conf", "other.conf"]
    keys = config_file_keys(paths)
    assert len(set(keys.values())) == len(paths)
    for key in keys.values():
        assert_valid_key(key)
    assert keys["other.conf"] == "other.conf", "only the colliding keys change"
    assert keys == config_file_keys(reversed(paths)), "the mapping depends on the paths only"


@pytest.mark.parametrize("path", ["d/" * 200 + "x.conf", "..hidden", "."])
def test_long_or_reserved_keys_are_made_valid(path: str) -> None:
    assert_valid_key(config_file_keys([path])[path])


def test_only_outputs_that_are_not_manifests_env_or_build_inputs_are_files() -> None:
    release = make_deployable(
        extra_files={
            "conf/app.conf": b"listen 8080;\n",
            "application.yml": b"server:\n  port: 8080\n",
            "hpa.yaml": b"# rendered empty in dev\n",
            "Dockerfile": b"FROM scratch\n",
            "worker.Containerfile": b"FROM scratch\n",
            "conf/extra.env": b"A=1\n",
        }
    )
    assert sorted(config_files(release)) == ["application.yml", "conf/app.conf"]


def test_files_become_a_config_map_mounted_read_only_in_every_container() -> None:
    manifest = (
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n"
        b"  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n"
        b"    spec:\n      initContainers: [{name: init}]\n"
        b"      containers: [{name: app, volumeMounts: [{name: data, mountPath: /data}]},"
        b" {name: sidecar}]\n      volumes: [{name: data, emptyDir: {}}]\n"
    )
    release = make_deployable(extra_files={"conf/app.conf": b"a=1\n"})
    release = replace(release, files={**release.files, "deployment.yaml": manifest})
    objs = objects(release)

    assert objs["ConfigMap/api-files"]["data"] == {"conf_app.conf": "a=1\n"}
    assert "binaryData" not in objs["ConfigMap/api-files"]
    spec = pod_spec(release)
    name = objs["ConfigMap/api-files"]["metadata"]["name"]
    assert name.startswith("api-files-") and objs["ConfigMap/api-files"]["immutable"] is True
    assert spec["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {
            "name": FILES_VOLUME,
            "projected": {
                "sources": [
                    {
                        "configMap": {
                            "name": name,
                            "items": [{"key": "conf_app.conf", "path": "conf/app.conf"}],
                        }
                    }
                ]
            },
        },
    ]
    mount = {"name": FILES_VOLUME, "mountPath": "/etc/configcenter/api", "readOnly": True}
    assert spec["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}, mount]
    assert spec["containers"][1]["volumeMounts"] == [mount]
    assert spec["initContainers"][0]["volumeMounts"] == [mount]


def test_no_files_means_no_config_map_and_no_volume() -> None:
    release = make_deployable()
    assert "ConfigMap/api-files" not in objects(release)
    assert "volumes" not in pod_spec(release)
    assert "volumeMounts" not in pod_spec(release)["containers"][0]


def test_binary_files_go_to_binary_data() -> None:
    blob = bytes(range(256))
    body = objects(make_deployable(extra_files={"keys/trust.der": blob}))["ConfigMap/api-files"]
    assert body["data"] == {}
    assert base64.b64decode(body["binaryData"]["keys_trust.der"]) == blob


def test_mount_path_annotation_moves_the_files() -> None:
    release = make_deployable(extra_files={"nginx.conf": b"events {}\n"})
    deployment = release.files["deployment.yaml"].replace(
        b"  labels: {app: api}\n",
        b"  labels: {app: api}\n  annotations: {"
        + FILES_MOUNT_ANNOTATION.encode()
        + b": /etc/nginx/}\n",
        1,
    )
    release = replace(release, files={**release.files, "deployment.yaml": deployment})
    mounts = pod_spec(release)["containers"][0]["volumeMounts"]
    assert mounts == [{"name": FILES_VOLUME, "mountPath": "/etc/nginx", "readOnly": True}]


@pytest.mark.parametrize("value", ["etc/nginx", "/", "/etc/../root", "''"])
def test_bad_mount_path_annotation_is_a_clear_error(value: str) -> None:
    release = make_deployable(extra_files={"nginx.conf": b"events {}\n"})
    deployment = release.files["deployment.yaml"].replace(
        b"  labels: {app: api}\n",
        f"  labels: {{app: api}}\n  annotations: {{{FILES_MOUNT_ANNOTATION}: {value}}}\n".encode(),
        1,
    )
    release = replace(release, files={**release.files, "deployment.yaml": deployment})
    with pytest.raises(
        ManifestError,
        match=rf"deployment\.yaml: Deployment/api: annotation {FILES_MOUNT_ANNOTATION}: .* "
        "give an absolute path",
    ):
        build_objects(release, "ns", {})


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (
            b"{containers: [{name: app,"
            b" volumeMounts: [{name: x, mountPath: /etc/configcenter/api/}]}],"
            b" volumes: [{name: x, emptyDir: {}}]}",
            r"container app already mounts 'x' at /etc/configcenter/api",
        ),
        (
            b"{containers: [{name: app}], volumes: [{name: configcenter-files, emptyDir: {}}]}",
            r"the pod volume name 'configcenter-files' is configcenter's",
        ),
    ],
)
def test_template_clashing_with_the_files_mount_is_refused(pod: bytes, message: str) -> None:
    manifest = (
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n"
        b"  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n"
        b"    spec: " + pod + b"\n"
    )
    release = make_deployable(extra_files={"a.conf": b"x\n"})
    release = replace(release, files={**release.files, "deployment.yaml": manifest})
    with pytest.raises(ManifestError, match=message):
        build_objects(release, "ns", {})


def test_template_cannot_take_the_files_config_map_name() -> None:
    release = make_deployable(
        extra_files={
            "cm.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: api-files-0a1b}\n"
        }
    )
    with pytest.raises(ManifestError, match=r"cm\.yaml: ConfigMap/api-files-0a1b: names"):
        build_objects(release, "ns", {})


@pytest.mark.parametrize("path", ["../escape.conf", "conf//a.conf", "/etc/abs.conf", "..data/x"])
def test_output_paths_that_cannot_be_placed_are_refused(path: str) -> None:
    release = make_deployable(extra_files={path: b"x\n"})
    with pytest.raises(ManifestError, match=f"api: output '{re.escape(path)}' cannot be placed"):
        build_objects(release, "ns", {})


def test_files_up_to_one_mib_fit() -> None:
    half = CONFIG_MAP_MAX_BYTES // 2
    release = make_deployable(extra_files={"a.conf": b"a" * half, "b.conf": b"b" * half})
    data = objects(release)["ConfigMap/api-files"]["data"]
    assert sum(len(v) for v in data.values()) == CONFIG_MAP_MAX_BYTES


def test_files_over_one_mib_name_the_service_and_the_files() -> None:
    release = make_deployable(
        service="web",
        extra_files={
            "static/bundle.js": b"x" * (CONFIG_MAP_MAX_BYTES - 10),
            "conf/site.conf": b"y" * 11,
            "big.txt": b"",
        },
    )
    expected = (
        r"^web: config files total 1048577 bytes, over the 1048576 bytes \(1 MiB\) a "
        r"ConfigMap or Secret can hold: static/bundle\.js \(1048566 bytes\), "
        r"conf/site\.conf \(11 bytes\), big\.txt \(0 bytes\); make them smaller"
    )
    with pytest.raises(ManifestError, match=expected):
        build_objects(release, "ns", {})
