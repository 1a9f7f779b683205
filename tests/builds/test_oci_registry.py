"""The OCI registry adapter against the real Distribution registry (anonymous, Basic, token)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.oci_registry import OciRegistry, RegistryCredentials
from configcenter.ports.builder import BuildRequest
from configcenter.ports.registry import RegistryAuthError, RegistryError
from tests.support.helpers import free_port
from tests.support.registry_fixtures import RegistryServer


def push_scratch(
    builder: BuildahBuilder, server: RegistryServer, tmp_path: Path, target: str, text: str
) -> str:
    context = tmp_path / f"ctx-{abs(hash(target))}"
    context.mkdir()
    (context / "f.txt").write_text(text)
    result = builder.build_and_push(
        BuildRequest(
            service="probe",
            context_dir=context,
            dockerfile="FROM scratch\nCOPY f.txt /f.txt\n",
            build_args={},
            target=f"{server.host}/{target}",
        ),
        log=lambda line: None,
    )
    return result.digest


def test_tag_lookup_on_an_open_registry(
    registry: RegistryServer, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    digest = push_scratch(buildah_builder, registry, tmp_path, "probe/open:v1", "open")
    client = registry.client()
    assert client.manifest_digest("probe/open", "v1") == digest
    assert client.manifest_digest("probe/open", digest) == digest
    assert client.manifest_digest("probe/open", "v2") is None
    assert client.manifest_digest("probe/never-pushed", "v1") is None


def test_docker_v2_manifests_are_found_too(
    registry: RegistryServer, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    digest = push_scratch(buildah_builder, registry, tmp_path, "probe/oci:v1", "docker format")
    # Copy it as a Docker schema 2 manifest (a different digest), as Docker-built images are.
    subprocess.run(
        [
            *buildah_builder.global_args(),
            "push",
            "--format",
            "v2s2",
            "--tls-verify=false",
            f"{registry.host}/probe/oci:v1",
            f"docker://{registry.host}/probe/docker:v1",
        ],
        check=True,
        capture_output=True,
    )
    found = registry.client().manifest_digest("probe/docker", "v1")
    assert found is not None and found.startswith("sha256:") and found != digest


def test_bad_names_are_refused_before_any_request(registry: RegistryServer) -> None:
    client = registry.client()
    with pytest.raises(RegistryError, match="invalid image repository 'Shop/API'"):
        client.manifest_digest("Shop/API", "v1")
    with pytest.raises(RegistryError, match="invalid image tag"):
        client.manifest_digest("shop/api", "-bad")
    with pytest.raises(RegistryError, match="give host\\[:port\\] only"):
        OciRegistry("registry.example.com/shop")


def test_unreachable_and_wrong_scheme_are_errors_not_absent(registry: RegistryServer) -> None:
    closed_port = free_port()  # nothing listens there
    with pytest.raises(RegistryError, match=r"cannot reach registry 127\.0\.0\.1:"):
        OciRegistry(f"127.0.0.1:{closed_port}", insecure=True, timeout=5).manifest_digest(
            "shop/api", "v1"
        )
    with pytest.raises(RegistryError, match="insecure: true"):
        OciRegistry(registry.host, timeout=5).manifest_digest("shop/api", "v1")


def test_basic_auth(
    auth_registry: RegistryServer, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    assert auth_registry.credentials is not None
    builder = dataclasses.replace(
        buildah_builder,
        insecure_registries=frozenset({auth_registry.host}),
        credentials={auth_registry.host: auth_registry.credentials},
    )
    digest = push_scratch(builder, auth_registry, tmp_path, "probe/basic:v1", "basic")
    assert auth_registry.client().manifest_digest("probe/basic", "v1") == digest
    assert auth_registry.client().manifest_digest("probe/basic", "nope") is None

    wrong = OciRegistry(
        auth_registry.host, insecure=True, credentials=RegistryCredentials("ci-user", "nope-123")
    )
    with pytest.raises(RegistryAuthError) as error:
        wrong.manifest_digest("probe/basic", "v1")
    assert "nope-123" not in f"{error.value} {error.value!r} {wrong!r}"
    assert "ci-user" in str(error.value)
    with pytest.raises(RegistryAuthError, match="requires credentials"):
        auth_registry.client(with_credentials=False).manifest_digest("probe/basic", "v1")


def test_bearer_token_flow(
    token_registry: RegistryServer, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    assert token_registry.credentials is not None
    builder = dataclasses.replace(
        buildah_builder,
        insecure_registries=frozenset({token_registry.host}),
        credentials={token_registry.host: token_registry.credentials},
    )
    # buildah speaks the token flow too: the same issuer serves both clients.
    digest = push_scratch(builder, token_registry, tmp_path, "probe/token:v1", "token")
    client = token_registry.client()
    assert client.manifest_digest("probe/token", "v1") == digest
    assert client.manifest_digest("probe/token", "v2") is None
    client.ping()

    wrong = OciRegistry(
        token_registry.host,
        insecure=True,
        credentials=RegistryCredentials("token-user", "not-the-Token-9"),
    )
    with pytest.raises(RegistryAuthError) as error:
        wrong.manifest_digest("probe/token", "v1")
    assert "rejected the credentials of user 'token-user'" in str(error.value)
    assert "not-the-Token-9" not in f"{error.value} {error.value!r}"
    with pytest.raises(RegistryAuthError, match="requires credentials"):
        token_registry.client(with_credentials=False).manifest_digest("probe/token", "v1")
