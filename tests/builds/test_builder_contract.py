"""The builder contract: every builder builds a context, pushes it and reports the digest.

Runs on buildah, and on docker where a Docker daemon answers (`docker info`); Kaniko
builds on the test bed are tests/builds/test_kaniko.py. Judged on the registry: the
tag names the digest the builder reported, and the image holds the context's file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from configcenter.adapters.docker_builder import DockerBuilder
from configcenter.ports.builder import Builder, BuildFailed, BuildRequest
from tests.support.registry_fixtures import RegistryServer, image_files


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.fixture(params=["buildah", "docker"])
def builder(request: pytest.FixtureRequest) -> Builder:
    if request.param == "docker":
        if not _docker_daemon():
            pytest.skip("no Docker daemon answers `docker info` here")
        return DockerBuilder()
    built: Builder = request.getfixturevalue("buildah_builder")
    return built


def context(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "context"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_a_build_is_pushed_and_its_digest_is_the_registrys(
    builder: Builder, registry: RegistryServer, tmp_path: Path
) -> None:
    target = f"{registry.host}/contract/api:one"
    lines: list[str] = []
    request = BuildRequest(
        service="api",
        context_dir=context(tmp_path, {"hello.txt": "hello\n"}),
        dockerfile="FROM scratch\nCOPY hello.txt /hello.txt\n",
        build_args={},
        target=target,
    )

    result = builder.build_and_push(request, lines.append)

    assert result.digest.startswith("sha256:")
    assert result.reference == f"{registry.host}/contract/api@{result.digest}"
    assert registry.client().manifest_digest("contract/api", "one") == result.digest
    assert image_files(registry, result.reference) == {"hello.txt": b"hello\n"}
    assert lines, "the build log is streamed to the sink"


def test_a_failing_step_raises_build_failed_with_the_log_and_pushes_nothing(
    builder: Builder, registry: RegistryServer, busybox_base: str, tmp_path: Path
) -> None:
    request = BuildRequest(
        service="broken",
        context_dir=context(tmp_path, {"app.txt": "x\n"}),
        dockerfile=f"FROM {busybox_base}\nRUN echo contract-boom-7 && exit 3\n",
        build_args={},
        target=f"{registry.host}/contract/broken:one",
    )

    with pytest.raises(BuildFailed) as failed:
        builder.build_and_push(request, lambda line: None)

    assert "contract-boom-7" in failed.value.log_tail
    tags = requests.get(f"{registry.url}/v2/contract/broken/tags/list", timeout=10)
    assert tags.status_code == 404
