"""The Kaniko Job builder: its manifests, and Jobs on the real API server of the test bed.

The test bed has no kubelet: KWOK marks Job pods Succeeded without running Kaniko,
so the real-server tests push the image the Job would have pushed with buildah and
check that the adapter creates, watches and reads back the Job as it would on a
cluster; Kaniko itself does not run here.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.kaniko import (
    DEFAULT_IMAGE,
    FETCH_SCRIPT,
    MAX_CONTEXT_BYTES,
    KanikoBuilder,
    context_tarball,
    failed_step,
    fetchable_url,
    files_tarball,
    job_name_for,
    split_credentials,
)
from configcenter.ports.builder import BuildFailed, BuildRequest, SourceOrigin
from tests.support.k8s_fixtures import NEVER_READY_IMAGE_MARK, NEVER_READY_LABEL, K8sNamespace
from tests.support.registry_fixtures import RegistryServer


def make_request(context: Path, target: str = "127.0.0.1:5000/shop/api:cc-00ff") -> BuildRequest:
    return BuildRequest(
        service="Shop_API",
        context_dir=context,
        dockerfile="FROM scratch\nCOPY a.txt /a.txt\n",
        build_args={"VERSION": "3"},
        target=target,
    )


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "sub" / "b.txt").write_text("b\n")
    return ctx


def test_job_manifest(context: Path) -> None:
    builder = KanikoBuilder(
        namespace="builds",
        push_secret="registry-push",
        insecure_registries=frozenset({"127.0.0.1:5000"}),
        service_account="builder",
    )
    request = make_request(context)
    name = job_name_for(request)
    job = builder.job_manifest(request, name)

    assert name.startswith("cc-build-shop-api-") and len(name) <= 63
    assert job["kind"] == "Job" and job["metadata"]["name"] == name
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "configcenter"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "builder"
    (container,) = pod["containers"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["args"] == [
        "--context=tar:///workspace/context.tar.gz",
        "--dockerfile=/workspace/Dockerfile",
        "--destination=127.0.0.1:5000/shop/api:cc-00ff",
        "--digest-file=/dev/termination-log",
        "--reproducible",
        "--build-arg=VERSION=3",
        "--insecure-registry=127.0.0.1:5000",
        "--skip-tls-verify-registry=127.0.0.1:5000",
        "--cache=true",  # no cache repository in the request: Kaniko's <destination>/cache
    ]
    assert {v["name"]: v for v in pod["volumes"]} == {
        "build-input": {"name": "build-input", "configMap": {"name": name}},
        "registry-auth": {
            "name": "registry-auth",
            "secret": {
                "secretName": "registry-push",
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            },
        },
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/workspace", "/kaniko/.docker"}


def test_config_map_carries_dockerfile_and_a_reproducible_context(
    context: Path, tmp_path: Path
) -> None:
    builder = KanikoBuilder(namespace="builds")
    request = make_request(context)
    config_map = builder.config_map_manifest(request, "cm")
    assert config_map["data"] == {"Dockerfile": request.dockerfile}
    tarball = base64.b64decode(config_map["binaryData"]["context.tar.gz"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball))) as archive:
        names = sorted(m.name for m in archive.getmembers())
        assert names == ["a.txt", "sub", "sub/b.txt"]
        member = archive.extractfile("sub/b.txt")
        assert member is not None and member.read() == b"b\n"
        assert {m.mtime for m in archive.getmembers()} == {0}

    # Same content, other directory and times: the same bytes.
    copy = tmp_path / "copy"
    (copy / "sub").mkdir(parents=True)
    (copy / "sub" / "b.txt").write_text("b\n")
    (copy / "a.txt").write_text("a\n")
    assert context_tarball(copy) == tarball


def test_an_oversized_context_is_refused_with_the_fix(context: Path) -> None:
    import os

    (context / "big.bin").write_bytes(os.urandom(1024 * 1024))
    with pytest.raises(BuildFailed, match=r"over the .* a ConfigMap can carry .* use the buildah"):
        KanikoBuilder(namespace="builds").config_map_manifest(make_request(context), "cm")


def test_failed_step_is_found_in_kaniko_output() -> None:
    lines = [
        "INFO[0000] Retrieving image manifest 127.0.0.1:5000/base/busybox:1",
        "INFO[0001] RUN echo hi",
        "hi",
        "INFO[0002] RUN exit 3",
        "error building image: error building stage: failed to execute command: exit status 3",
    ]
    assert failed_step(lines) == "RUN exit 3"


@pytest.mark.k8s
def test_job_runs_to_completion_on_the_api_server(
    k8s_namespace: K8sNamespace,
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    context: Path,
) -> None:
    from kubernetes import client

    target = f"{registry.host}/shop/kaniko:cc-0001"
    request = make_request(context, target)
    # What the Kaniko pod would push; KWOK only marks the pod Succeeded.
    pushed = buildah_builder.build_and_push(request, lambda line: None)

    lines: list[str] = []
    builder = KanikoBuilder(
        namespace=k8s_namespace.name,
        api_client_factory=k8s_namespace.api_client,
        registry=registry.client(),
        timeout=120,
    )
    result = builder.build_and_push(request, lines.append)

    assert result == pushed
    assert any("Kaniko Job" in line and "created" in line for line in lines)
    name = job_name_for(request)
    with k8s_namespace.api_client() as api:
        job: Any = client.BatchV1Api(api).read_namespaced_job(name, k8s_namespace.name)
        assert job.status.succeeded == 1
        config_map: Any = client.CoreV1Api(api).read_namespaced_config_map(name, k8s_namespace.name)
        (owner,) = config_map.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Job", name, job.metadata.uid)

    # Running the same target again replaces the finished Job instead of failing on a conflict.
    again = builder.build_and_push(request, lambda line: None)
    assert again == pushed


@dataclasses.dataclass
class _NeverStartingBuilder(KanikoBuilder):
    """The builder whose Job pods carry the test bed's never-ready label: their containers
    wait in ContainerCreating for ever (a pod that is slow to start, not a broken one)."""

    def labels(self, request: BuildRequest) -> dict[str, str]:
        return {**super().labels(request), NEVER_READY_LABEL: "true"}


@pytest.mark.k8s
def test_a_job_that_never_finishes_times_out_cleanly(
    k8s_namespace: K8sNamespace, context: Path
) -> None:
    builder = _NeverStartingBuilder(
        namespace=k8s_namespace.name, api_client_factory=k8s_namespace.api_client, timeout=3
    )
    with pytest.raises(BuildFailed, match=r"Kaniko build of Shop_API failed .*timed out after 3s"):
        builder.build_and_push(make_request(context), lambda line: None)


@pytest.mark.k8s
def test_an_executor_image_that_cannot_be_pulled_fails_the_build_at_once(
    k8s_namespace: K8sNamespace, context: Path
) -> None:
    """ImagePullBackOff does not end by itself: the build fails with the pod's reason long
    before its timeout."""
    builder = KanikoBuilder(
        namespace=k8s_namespace.name,
        api_client_factory=k8s_namespace.api_client,
        image=f"example.invalid/{NEVER_READY_IMAGE_MARK}/kaniko:1",
        timeout=120,
    )
    with pytest.raises(BuildFailed, match=r"Kaniko build of Shop_API failed .*ImagePullBackOff"):
        builder.build_and_push(make_request(context), lambda line: None)


@pytest.mark.k8s
def test_a_missing_namespace_is_a_clear_error(k8s_namespace: K8sNamespace, context: Path) -> None:
    builder = KanikoBuilder(
        namespace=k8s_namespace.name + "-missing", api_client_factory=k8s_namespace.api_client
    )
    with pytest.raises(BuildFailed, match="check that the namespace exists"):
        builder.build_and_push(make_request(context), lambda line: None)


# -- the Job fetches the source itself ---------------------------------------------------------

SOURCE_URL = "https://robot:t0ken-Kaniko-Pw@git.example.com/shop/api.git"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fetching_request(context: Path, **kw: Any) -> BuildRequest:
    return dataclasses.replace(
        make_request(context),
        source=SourceOrigin(
            url=SOURCE_URL,
            commit=COMMIT,
            subdir="services/api",
            overlay={"conf/app.ini": b"[app]\nlevel=info\n"},
        ),
        **kw,
    )


def test_split_credentials_and_fetchable_urls() -> None:
    assert split_credentials(SOURCE_URL) == (
        "https://git.example.com/shop/api.git",
        "robot",
        "t0ken-Kaniko-Pw",
    )
    assert split_credentials("https://tok%40en@h:8443/r.git") == (
        "https://h:8443/r.git",
        "tok@en",
        "",
    )
    assert split_credentials("https://h/r.git") == ("https://h/r.git", None, None)
    assert fetchable_url("https://h/r.git") and fetchable_url("git@h:group/r.git")
    assert not fetchable_url("/srv/git/api.git") and not fetchable_url("file:///srv/api.git")


def test_a_small_context_still_travels_in_a_config_map(context: Path) -> None:
    builder = KanikoBuilder(namespace="builds")
    job, owned = builder.manifests(fetching_request(context))
    assert [o["kind"] for o in owned] == ["ConfigMap"]
    assert "initContainers" not in job["spec"]["template"]["spec"]


def test_a_big_context_from_a_local_path_is_refused_with_the_fix(context: Path) -> None:
    (context / "big.bin").write_bytes(os.urandom(MAX_CONTEXT_BYTES + 1))
    request = dataclasses.replace(
        fetching_request(context),
        source=SourceOrigin(url="/srv/git/api.git", commit=COMMIT, subdir=""),
    )
    with pytest.raises(
        BuildFailed, match=r"too big for a ConfigMap .* a URL the cluster can clone"
    ):
        KanikoBuilder(namespace="builds").manifests(request)


def test_a_big_context_is_fetched_by_the_job(context: Path) -> None:
    (context / "big.bin").write_bytes(os.urandom(MAX_CONTEXT_BYTES + 1))
    builder = KanikoBuilder(namespace="builds", push_secret="registry-push")
    job, owned = builder.manifests(fetching_request(context))
    assert [o["kind"] for o in owned] == ["ConfigMap", "Secret"]
    pod = job["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-source"
    assert "--context=dir:///workspace/source/services/api" in pod["containers"][0]["args"]
    assert job["metadata"]["annotations"]["configcenter.io/source-commit"] == COMMIT


def test_fetch_script_checks_out_the_pinned_commit_and_lays_the_overlay(tmp_path: Path) -> None:
    """The init container's script, run for real with git and tar on this machine."""
    from tests.support.registry_fixtures import SourceRepo

    source = SourceRepo(tmp_path / "src")
    pinned = source.commit({"services/api/app.txt": "pinned\n", "README": "r\n"})
    source.commit({"services/api/app.txt": "later\n"})  # the branch moved on
    workspace, inputs = tmp_path / "workspace", tmp_path / "build-input"
    workspace.mkdir()
    inputs.mkdir()
    (inputs / "overlay.tar.gz").write_bytes(files_tarball({"conf/app.ini": b"level=info\n"}))
    script = FETCH_SCRIPT.replace("/workspace", str(workspace)).replace("/build-input", str(inputs))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SOURCE_URL": source.url,
        "SOURCE_COMMIT": pinned,
        "SOURCE_SUBDIR": "services/api",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    api = workspace / "source" / "services" / "api"
    assert (api / "app.txt").read_text() == "pinned\n"
    assert (api / "conf" / "app.ini").read_text() == "level=info\n"
    assert not (workspace / "source" / ".git").exists()  # the context is the tree, no history

    wrong = subprocess.run(
        ["sh", "-c", script.replace(str(workspace), str(tmp_path / "w2"))],
        env={**env, "SOURCE_COMMIT": "f" * 40},
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0  # an unknown commit fails the fetch, and so the Job


@pytest.mark.k8s
def test_the_fetching_job_carries_context_commit_and_credentials(
    k8s_namespace: K8sNamespace, context: Path
) -> None:
    """On the API server: the Job, its init container, the Secret and who owns what."""
    from kubernetes import client

    builder = KanikoBuilder(
        namespace=k8s_namespace.name,
        api_client_factory=k8s_namespace.api_client,
        fetch_source="always",
        timeout=120,
    )
    request = fetching_request(context)
    lines: list[str] = []
    outcome = builder.run_job(request, lines.append)
    assert outcome.succeeded, outcome.reason
    assert any("fetching its source" in line for line in lines)
    name = job_name_for(request)
    with k8s_namespace.api_client() as api:
        batch = client.BatchV1Api(api)
        core = client.CoreV1Api(api)
        job: Any = batch.read_namespaced_job(name, k8s_namespace.name)
        raw = api.sanitize_for_serialization(job)
        assert "t0ken-Kaniko-Pw" not in json.dumps(raw), "no credential in the Job"
        (fetch,) = job.spec.template.spec.init_containers
        env = {e.name: e for e in fetch.env}
        assert env["SOURCE_URL"].value == "https://git.example.com/shop/api.git"
        assert env["SOURCE_COMMIT"].value == COMMIT
        assert env["SOURCE_SUBDIR"].value == "services/api"
        secret_name = env["GIT_PASSWORD"].value_from.secret_key_ref.name
        assert env["GIT_PASSWORD"].value_from.secret_key_ref.key == "password"
        assert env["GIT_USERNAME"].value_from.secret_key_ref.name == secret_name
        (kaniko,) = job.spec.template.spec.containers
        assert "--context=dir:///workspace/source/services/api" in kaniko.args
        assert "--dockerfile=/build-input/Dockerfile" in kaniko.args
        assert {m.mount_path for m in fetch.volume_mounts} == {"/workspace", "/build-input"}

        secret: Any = core.read_namespaced_secret(secret_name, k8s_namespace.name)
        assert base64.b64decode(secret.data["password"]) == b"t0ken-Kaniko-Pw"
        assert base64.b64decode(secret.data["username"]) == b"robot"
        config_map: Any = core.read_namespaced_config_map(name, k8s_namespace.name)
        assert config_map.data["Dockerfile"] == request.dockerfile
        overlay = gzip.decompress(base64.b64decode(config_map.binary_data["overlay.tar.gz"]))
        with tarfile.open(fileobj=io.BytesIO(overlay)) as archive:
            handle = archive.extractfile("conf/app.ini")
            assert handle is not None and handle.read() == b"[app]\nlevel=info\n"
        for owned in (secret, config_map):
            (owner,) = owned.metadata.owner_references
            assert (owner.kind, owner.name, owner.uid) == ("Job", name, job.metadata.uid)
