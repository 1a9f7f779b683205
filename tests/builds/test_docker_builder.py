"""The docker CLI builder. There is no Docker daemon on this machine, so these tests
check the command lines it builds and how it reads push output; the one real run
shows that a missing daemon is a clean BuildFailed, not a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from configcenter.adapters.docker_builder import DockerBuilder, digest_from_push_output
from configcenter.adapters.oci_registry import RegistryCredentials
from configcenter.ports.builder import BuildFailed, BuildRequest


def request(tmp_path: Path, target: str = "127.0.0.1:5000/shop/api:cc-0123") -> BuildRequest:
    return BuildRequest(
        service="api",
        context_dir=tmp_path,
        dockerfile="FROM scratch\n",
        build_args={"VERSION": "2", "BASE": "x y"},
        target=target,
    )


def test_build_and_push_command_lines(tmp_path: Path) -> None:
    builder = DockerBuilder()
    dockerfile = tmp_path / "Dockerfile"
    assert builder.build_command(request(tmp_path), dockerfile, None) == [
        "docker",
        "build",
        "--progress=plain",
        "--build-arg",
        "BASE=x y",
        "--build-arg",
        "VERSION=2",
        "-f",
        str(dockerfile),
        "-t",
        "127.0.0.1:5000/shop/api:cc-0123",
        str(tmp_path),
    ]
    assert builder.push_command(request(tmp_path), None) == [
        "docker",
        "push",
        "127.0.0.1:5000/shop/api:cc-0123",
    ]
    assert builder.environment() == {"SOURCE_DATE_EPOCH": "0", "DOCKER_BUILDKIT": "1"}
    classic = DockerBuilder(buildkit=False)
    assert "--progress=plain" not in classic.build_command(request(tmp_path), dockerfile, None)
    assert "DOCKER_BUILDKIT" not in classic.environment()


def test_credentials_go_to_a_config_dir_not_the_command_line(tmp_path: Path) -> None:
    builder = DockerBuilder(
        credentials={"reg.example.com": RegistryCredentials("robot", "hunter2-Pw")}
    )
    config = tmp_path / "config"
    build = builder.build_command(request(tmp_path), tmp_path / "Dockerfile", config)
    push = builder.push_command(request(tmp_path), config)
    assert build[:3] == ["docker", "--config", str(config)]
    assert push == ["docker", "--config", str(config), "push", request(tmp_path).target]
    assert "hunter2-Pw" not in " ".join(build + push) + repr(builder)


def test_push_digest_is_read_from_the_daemons_output() -> None:
    digest = "sha256:" + "ab" * 32
    lines = [
        "The push refers to repository [127.0.0.1:5000/shop/api]",
        "5f70bf18a086: Pushed",
        f"cc-0123: digest: {digest} size: 527",
    ]
    assert digest_from_push_output(lines) == digest
    assert digest_from_push_output(["denied: requested access to the resource is denied"]) is None


def test_auth_file_is_private_and_in_docker_format(tmp_path: Path) -> None:
    from configcenter.adapters.buildah import write_auth_file

    path = write_auth_file(tmp_path, {"reg.example.com": RegistryCredentials("robot", "pw")})
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {"auths": {"reg.example.com": {"auth": "cm9ib3Q6cHc="}}}


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_without_a_daemon_the_build_fails_cleanly(tmp_path: Path) -> None:
    lines: list[str] = []
    builder = DockerBuilder(timeout=120)
    with pytest.raises(BuildFailed) as failed:
        builder.build_and_push(request(tmp_path), lines.append)
    assert str(failed.value).startswith("docker build of api failed")
    assert failed.value.log_tail


def test_missing_cli_is_a_clear_error(tmp_path: Path) -> None:
    builder = DockerBuilder(executable="docker-not-installed-here")
    with pytest.raises(BuildFailed, match="'docker-not-installed-here' is not installed"):
        builder.build_and_push(request(tmp_path), lambda line: None)
