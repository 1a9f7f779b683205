"""The layer cache: real buildah builds sharing layers through a cache repository on a
real registry, and the cache flags each builder puts on its command line."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import requests

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.docker_builder import DockerBuilder
from configcenter.adapters.kaniko import KanikoBuilder
from configcenter.ports.builder import BuildRequest
from configcenter.usecases.build import ImageBuildSpec, build_image
from tests.builds.test_buildah_builds import Log
from tests.support.registry_fixtures import RegistryServer, SourceRepo, image_files

# A dependency step before the source COPY: the shape a layer cache is for.
DEPS_DOCKERFILE = """\
FROM {base}
RUN echo "deps installed" > /deps.txt
COPY app.txt /srv/app.txt
RUN cat /deps.txt /srv/app.txt > /srv/combined.txt
"""


def fresh_builder(registry: RegistryServer, root: Path) -> BuildahBuilder:
    """A builder with empty storage, like a new CI machine: only the registry is shared."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (apt-get install buildah)")
    return BuildahBuilder(
        root=root / "root",
        runroot=root / "run",
        insecure_registries=frozenset({registry.host}),
    )


def steps_of(log: Log) -> dict[str, list[str]]:
    """Build output grouped by step: 'RUN echo ...' -> the lines buildah printed for it."""
    grouped: dict[str, list[str]] = {}
    current = ""
    for line in log:
        if line.startswith("STEP "):
            current = line.split(": ", 1)[1]
            grouped[current] = []
        elif current:
            grouped[current].append(line)
    return grouped


def cache_tags(registry: RegistryServer, repository: str) -> list[str]:
    answer = requests.get(f"{registry.url}/v2/{repository}/tags/list", timeout=10)
    if answer.status_code == 404:
        return []
    answer.raise_for_status()
    return list(answer.json().get("tags") or [])


def spec(
    registry: RegistryServer, source: SourceRepo, base: str, cache_repo: str, **kw: object
) -> ImageBuildSpec:
    return dataclasses.replace(
        ImageBuildSpec(
            service="cached",
            source_repo=source.url,
            source_ref="main",
            dockerfile=DEPS_DOCKERFILE.format(base=base),
            build_args={},
            registry_host=registry.host,
            repository="shop/cached",
            insecure=True,
            cache_repository=cache_repo,
        ),
        **kw,
    )


def cleanup(builder: BuildahBuilder) -> None:
    import subprocess

    subprocess.run([*builder.global_args(), "rmi", "--all", "--force"], capture_output=True)


def test_a_fresh_builder_reuses_the_dependency_layer_from_the_cache_repository(
    registry: RegistryServer, busybox_base: str, source_repo: SourceRepo, tmp_path: Path
) -> None:
    source_repo.commit({"app.txt": "version one\n"})
    first_machine = fresh_builder(registry, tmp_path / "ci-1")
    second_machine = fresh_builder(registry, tmp_path / "ci-2")
    cache_repo = "shop/build-cache/layers"
    build = spec(registry, source_repo, busybox_base, cache_repo)
    try:
        cold_log = Log()
        cold = build_image(build, first_machine, registry.client(), tmp_path / "src", cold_log)
        cold_steps = steps_of(cold_log)
        deps_step = 'RUN echo "deps installed" > /deps.txt'
        assert any(line.startswith("--> Pushing cache ") for line in cold_steps[deps_step])
        assert not any("Using cache" in line for line in cold_log)
        pushed = cache_tags(registry, cache_repo)
        assert pushed, "the cold build pushed its layers to the cache repository"

        # One line of source changes; the rebuild runs on a machine with empty storage.
        source_repo.commit({"app.txt": "version two\n"})
        warm_log = Log()
        warm = build_image(build, second_machine, registry.client(), tmp_path / "src", warm_log)
    finally:
        cleanup(first_machine)
        cleanup(second_machine)

    warm_steps = steps_of(warm_log)
    assert warm.built and warm.tag != cold.tag
    # The dependency step came from the registry's cache, not from running it again...
    assert any(
        line.startswith(f"--> Cache pulled from remote {registry.host}/{cache_repo}:")
        for line in warm_steps[deps_step]
    ), warm_steps[deps_step]
    assert any(line.startswith("--> Using cache ") for line in warm_steps[deps_step])
    # ...and the steps after the changed COPY ran (their new layers were pushed).
    for later in (
        "COPY app.txt /srv/app.txt",
        "RUN cat /deps.txt /srv/app.txt > /srv/combined.txt",
    ):
        assert not any("Using cache" in line for line in warm_steps[later]), later
    files = image_files(registry, warm.reference)
    assert files["srv/combined.txt"] == b"deps installed\nversion two\n"
    assert set(cache_tags(registry, cache_repo)) > set(pushed)


# A build arg read by a step other than RUN: buildah compares such a cached step by its
# text, not the argument's value (containers/buildah#5501), so its cache would hand the
# second flavour the first one's label.
ARG_DOCKERFILE = """\
FROM {base}
ARG FLAVOR
ARG TITLE="shop ${{FLAVOR}}"
COPY app.txt /srv/app.txt
LABEL flavor=${{FLAVOR}} title="${{TITLE}}"
"""


def image_config(registry: RegistryServer, reference: str) -> dict[str, object]:
    name, digest = reference.removeprefix(registry.host + "/").split("@")
    manifest = requests.get(
        f"{registry.url}/v2/{name}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    ).json()
    config = requests.get(f"{registry.url}/v2/{name}/blobs/{manifest['config']['digest']}")
    return dict(config.json()["config"])


def test_a_build_arg_read_outside_run_steps_gives_each_value_its_own_image(
    registry: RegistryServer, busybox_base: str, source_repo: SourceRepo, tmp_path: Path
) -> None:
    """The cache changes how fast an image builds, never what it is: the same Dockerfile
    built with FLAVOR=dev and then FLAVOR=demo on one machine carries each its own label."""
    source_repo.commit({"app.txt": "same source\n"})
    machine = fresh_builder(registry, tmp_path / "ci")
    built = {}
    try:
        for flavor in ("dev", "demo"):
            build = spec(
                registry,
                source_repo,
                busybox_base,
                "shop/build-cache/layers",
                dockerfile=ARG_DOCKERFILE.format(base=busybox_base),
                build_args={"FLAVOR": flavor},
            )
            log = Log()
            built[flavor] = build_image(build, machine, registry.client(), tmp_path / "s", log)
    finally:
        cleanup(machine)

    assert built["dev"].reference != built["demo"].reference
    for flavor, outcome in built.items():
        labels = image_config(registry, outcome.reference)["Labels"]
        assert isinstance(labels, dict)
        assert (labels["flavor"], labels["title"]) == (flavor, f"shop {flavor}"), labels


def test_cache_false_reuses_nothing_and_pushes_no_cache(
    registry: RegistryServer, busybox_base: str, source_repo: SourceRepo, tmp_path: Path
) -> None:
    source_repo.commit({"app.txt": "uncached one\n"})
    machine = fresh_builder(registry, tmp_path / "ci")
    cache_repo = "shop/build-cache/uncached"
    build = spec(registry, source_repo, busybox_base, cache_repo, cache=False)
    try:
        build_image(build, machine, registry.client(), tmp_path / "src", Log())
        source_repo.commit({"app.txt": "uncached two\n"})
        again = Log()
        rebuilt = build_image(build, machine, registry.client(), tmp_path / "src", again)
    finally:
        cleanup(machine)
    assert rebuilt.built
    assert not any("Using cache" in line or "Pushing cache" in line for line in again)
    assert cache_tags(registry, cache_repo) == []


def request(tmp_path: Path, **kw: object) -> BuildRequest:
    return dataclasses.replace(
        BuildRequest(
            service="api",
            context_dir=tmp_path,
            dockerfile="FROM scratch\n",
            build_args={},
            target="reg.example.com/shop/api:cc-1",
            cache_repo="reg.example.com/shop/build-cache/layers",
        ),
        **kw,
    )


def test_buildah_cache_flags(tmp_path: Path) -> None:
    builder = BuildahBuilder()
    on = builder.build_command(request(tmp_path), tmp_path / "Dockerfile", None)
    at = on.index("--layers")
    assert on[at : at + 5] == [
        "--layers",
        "--cache-from",
        "reg.example.com/shop/build-cache/layers",
        "--cache-to",
        "reg.example.com/shop/build-cache/layers",
    ]
    local = builder.build_command(request(tmp_path, cache_repo=None), tmp_path / "D", None)
    assert "--layers" in local and "--cache-to" not in local
    off = builder.build_command(request(tmp_path, cache=False), tmp_path / "D", None)
    assert "--layers=false" in off and "--no-cache" in off and "--cache-to" not in off


@pytest.mark.parametrize(
    ("dockerfile", "cached"),
    [
        ("FROM ${BASE}\nARG V\nRUN echo $V > /v\nCOPY . /src\n", True),
        ("FROM scratch\nARG V\nLABEL v=${V}\n", False),
        ("FROM scratch\nARG V\nENV \\\n  X=$V\n", False),
        ('FROM scratch\nARG V\nARG W=x-${V}\nCMD ["$W"]\n', False),
        ("FROM scratch\nARG V\n# LABEL v=${V}\nLABEL v=1\n", True),
    ],
)
def test_buildah_turns_its_cache_off_for_a_build_arg_read_outside_run_steps(
    tmp_path: Path, dockerfile: str, cached: bool
) -> None:
    builder = BuildahBuilder()
    args = {"V": "1", "BASE": "busybox"}
    command = builder.build_command(
        request(tmp_path, dockerfile=dockerfile, build_args=args), tmp_path / "D", None
    )
    assert ("--layers" in command) is cached, command
    assert ("--no-cache" in command) is not cached, command


def test_kaniko_and_docker_cache_flags(tmp_path: Path) -> None:
    kaniko = KanikoBuilder(namespace="builds")
    on = kaniko.executor_args(request(tmp_path))
    assert "--cache=true" in on
    assert "--cache-repo=reg.example.com/shop/build-cache/layers" in on
    assert "--cache=false" in kaniko.executor_args(request(tmp_path, cache=False))
    assert not any(
        a.startswith("--cache-repo") for a in kaniko.executor_args(request(tmp_path, cache=False))
    )
    docker = DockerBuilder()
    assert "--no-cache" not in docker.build_command(request(tmp_path), tmp_path / "D", None)
    assert "--no-cache" in docker.build_command(
        request(tmp_path, cache=False), tmp_path / "D", None
    )
