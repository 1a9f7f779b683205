"""Real buildah builds pushed to a real Distribution registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import requests

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.oci_registry import OciRegistry, RegistryCredentials
from configcenter.adapters.source_checkout import SourceCheckoutError
from configcenter.ports.builder import BuildFailed
from configcenter.ports.registry import RegistryAuthError
from configcenter.usecases.build import (
    BuildOutcome,
    BuildsFailed,
    ImageBuildSpec,
    build_image,
    build_many,
)
from tests.support.registry_fixtures import RegistryServer, SourceRepo, image_files

SCRATCH_DOCKERFILE = "FROM scratch\nCOPY hello.txt /hello.txt\n"


def spec_for(
    registry: RegistryServer,
    source: SourceRepo,
    dockerfile: str,
    *,
    service: str = "api",
    ref: str = "main",
    args: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
) -> ImageBuildSpec:
    return ImageBuildSpec(
        service=service,
        source_repo=source.url,
        source_ref=ref,
        dockerfile=dockerfile,
        build_args=args or {},
        registry_host=registry.host,
        repository=f"shop/{service}",
        insecure=True,
        context_files=files or {},
    )


class Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)

    def steps(self) -> list[str]:
        return [line for line in self if line.startswith("STEP ")]


def test_from_scratch_build_pushes_and_records_digest(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    commit = source_repo.commit({"hello.txt": "hello\n"})
    client = registry.client()
    log = Log()

    outcome = build_image(
        spec_for(registry, source_repo, SCRATCH_DOCKERFILE), buildah_builder, client, tmp_path, log
    )

    assert outcome.built is True
    assert outcome.source_commit == commit
    assert outcome.tag.startswith("cc-") and len(outcome.tag) == 3 + 16
    assert outcome.tag[3:] == outcome.inputs_digest.removeprefix("sha256:")[:16]
    assert outcome.digest.startswith("sha256:")
    assert outcome.reference == f"{registry.host}/shop/api@{outcome.digest}"
    assert client.manifest_digest("shop/api", outcome.tag) == outcome.digest
    assert image_files(registry, outcome.reference) == {"hello.txt": b"hello\n"}
    assert log.steps(), "the build log is streamed to the sink"


def test_unchanged_inputs_skip_the_build(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    commit = source_repo.commit({"hello.txt": "same\n"})
    source_repo.tag("v1.0.0")
    client = registry.client()
    spec = spec_for(registry, source_repo, SCRATCH_DOCKERFILE, service="web")
    first = build_image(spec, buildah_builder, client, tmp_path, Log())

    log = Log()
    # The tag names the same commit as the branch: same inputs, so no build.
    again = build_image(
        dataclasses.replace(spec, source_ref="v1.0.0"), buildah_builder, client, tmp_path, log
    )

    assert first.built is True
    assert again.built is False
    assert again.source_commit == commit
    assert (again.digest, again.tag, again.reference) == (first.digest, first.tag, first.reference)
    assert log.steps() == []
    assert any("skipping build" in line for line in log)


def test_identical_inputs_give_identical_digests(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    source_repo.commit({"hello.txt": "reproducible\n"})
    client = registry.client()
    one = build_image(
        spec_for(registry, source_repo, SCRATCH_DOCKERFILE, service="repro-a"),
        buildah_builder,
        client,
        tmp_path,
        Log(),
    )
    two = build_image(
        spec_for(registry, source_repo, SCRATCH_DOCKERFILE, service="repro-b"),
        buildah_builder,
        client,
        tmp_path,
        Log(),
    )
    assert one.built and two.built, "different repositories: both are really built"
    assert one.digest == two.digest


RUN_DOCKERFILE = """\
FROM {base}
ARG VERSION=unset
COPY app.txt /srv/app.txt
RUN echo "version=$VERSION" > /srv/version.txt && cat /srv/app.txt >> /srv/version.txt
"""


def test_run_steps_on_busybox_base_and_every_input_change_rebuilds(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    busybox_base: str,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    first_commit = source_repo.commit({"app.txt": "app one\n"})
    client = registry.client()
    dockerfile = RUN_DOCKERFILE.format(base=busybox_base)
    spec = spec_for(registry, source_repo, dockerfile, service="worker", args={"VERSION": "1"})

    base = build_image(spec, buildah_builder, client, tmp_path, Log())
    assert base.built
    assert image_files(registry, base.reference)["srv/version.txt"] == b"version=1\napp one\n"

    # A changed build arg rebuilds.
    arg = build_image(
        dataclasses.replace(spec, build_args={"VERSION": "2"}),
        buildah_builder,
        client,
        tmp_path,
        Log(),
    )
    assert arg.built and arg.tag != base.tag and arg.digest != base.digest
    assert image_files(registry, arg.reference)["srv/version.txt"] == b"version=2\napp one\n"

    # A new source commit rebuilds (the branch moved; the fetch sees it).
    second_commit = source_repo.commit({"app.txt": "app two\n"})
    commit = build_image(spec, buildah_builder, client, tmp_path, Log())
    assert commit.built and commit.source_commit == second_commit != first_commit
    assert image_files(registry, commit.reference)["srv/version.txt"] == b"version=1\napp two\n"

    # An extra context file (rendered config laid over the source) rebuilds when it changes.
    with_conf = dataclasses.replace(
        spec,
        dockerfile=dockerfile + "COPY conf/app.ini /srv/app.ini\n",
        context_files={"conf/app.ini": b"[app]\nlevel=info\n"},
    )
    conf1 = build_image(with_conf, buildah_builder, client, tmp_path, Log())
    conf2 = build_image(
        dataclasses.replace(with_conf, context_files={"conf/app.ini": b"[app]\nlevel=debug\n"}),
        buildah_builder,
        client,
        tmp_path,
        Log(),
    )
    assert conf1.built and conf2.built and conf1.tag != conf2.tag
    assert image_files(registry, conf2.reference)["srv/app.ini"] == b"[app]\nlevel=debug\n"

    # And a changed Dockerfile rebuilds; going back to earlier inputs does not.
    tags = {base.tag, arg.tag, commit.tag, conf1.tag, conf2.tag}
    assert len(tags) == 5
    back = build_image(spec, buildah_builder, client, tmp_path, Log())
    assert not back.built and back.digest == commit.digest


def test_failing_run_step_fails_cleanly_with_the_log_tail(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    busybox_base: str,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    source_repo.commit({"app.txt": "x\n"})
    dockerfile = f"FROM {busybox_base}\nRUN echo boom-marker-42 && exit 3\n"
    client = registry.client()
    spec = spec_for(registry, source_repo, dockerfile, service="broken")

    with pytest.raises(BuildFailed) as failed:
        build_image(spec, buildah_builder, client, tmp_path, Log())

    message = str(failed.value)
    assert "broken" in message
    assert "STEP 2/2: RUN echo boom-marker-42 && exit 3" in message
    assert "boom-marker-42" in failed.value.log_tail
    # Nothing was pushed, so the next attempt really builds again (no false "skip").
    tags = requests.get(f"{registry.url}/v2/shop/broken/tags/list", timeout=10)
    assert tags.status_code == 404


def test_missing_ref_is_a_clear_error(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    source_repo.commit({"hello.txt": "x\n"})
    spec = spec_for(registry, source_repo, SCRATCH_DOCKERFILE, ref="v9.9.9")
    with pytest.raises(SourceCheckoutError) as error:
        build_image(spec, buildah_builder, registry.client(), tmp_path, Log())
    assert source_repo.url in str(error.value)
    assert "'v9.9.9'" in str(error.value)


def test_wrong_registry_credentials_give_a_clear_error_without_the_secret(
    auth_registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    source_repo.commit({"hello.txt": "private\n"})
    assert auth_registry.credentials is not None
    wrong = RegistryCredentials(auth_registry.credentials.username, "wrong-Pass-77")
    spec = spec_for(auth_registry, source_repo, SCRATCH_DOCKERFILE, service="private")

    # The registry check refuses first, naming the user but never the password.
    bad_registry = OciRegistry(auth_registry.host, insecure=True, credentials=wrong)
    with pytest.raises(RegistryAuthError) as refused:
        build_image(spec, buildah_builder, bad_registry, tmp_path, Log())
    assert "rejected the credentials" in str(refused.value)
    assert "ci-user" in str(refused.value)
    assert "wrong-Pass-77" not in str(refused.value) + repr(refused.value) + repr(bad_registry)

    # No credentials at all: told what to configure.
    with pytest.raises(RegistryAuthError) as anonymous:
        build_image(
            spec, buildah_builder, OciRegistry(auth_registry.host, insecure=True), tmp_path, Log()
        )
    assert "requires credentials" in str(anonymous.value)

    # Right registry credentials but a builder pushing with wrong ones: BuildFailed, no secret.
    wrong_push = dataclasses.replace(
        buildah_builder,
        insecure_registries=frozenset({auth_registry.host}),
        credentials={auth_registry.host: wrong},
    )
    log = Log()
    with pytest.raises(BuildFailed) as push_failed:
        build_image(spec, wrong_push, auth_registry.client(), tmp_path, log)
    assert "push" in str(push_failed.value)
    everything = str(push_failed.value) + push_failed.value.log_tail + "\n".join(log)
    assert "wrong-Pass-77" not in everything
    assert repr(wrong_push).count("wrong-Pass-77") == 0

    # Right credentials everywhere: built, then skipped.
    good = dataclasses.replace(
        wrong_push, credentials={auth_registry.host: auth_registry.credentials}
    )
    first = build_image(spec, good, auth_registry.client(), tmp_path, Log())
    second = build_image(spec, good, auth_registry.client(), tmp_path, Log())
    assert first.built and not second.built and first.digest == second.digest


def test_build_many_runs_concurrently_streams_logs_and_reports_failures(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    busybox_base: str,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    source_repo.commit({"app.txt": "batch\n"})
    ok = RUN_DOCKERFILE.format(base=busybox_base)
    specs = [
        spec_for(registry, source_repo, ok, service=f"batch-{i}", args={"VERSION": str(i)})
        for i in range(3)
    ]
    lines: list[tuple[str, str]] = []
    outcomes = build_many(
        specs,
        buildah_builder,
        registry.client(),
        tmp_path,
        lambda s, line: lines.append((s, line)),
        jobs=2,
    )
    assert [o.service for o in outcomes] == ["batch-0", "batch-1", "batch-2"]
    assert all(isinstance(o, BuildOutcome) and o.built for o in outcomes)
    for i in range(3):
        assert any(s == f"batch-{i}" and line.startswith("STEP ") for s, line in lines)

    broken = spec_for(
        registry, source_repo, f"FROM {busybox_base}\nRUN exit 7\n", service="batch-broken"
    )
    with pytest.raises(BuildsFailed) as failed:
        build_many(
            [*specs, broken], buildah_builder, registry.client(), tmp_path, lambda s, line: None
        )
    assert set(failed.value.failures) == {"batch-broken"}
    assert isinstance(failed.value.failures["batch-broken"], BuildFailed)
    assert [o.built for o in failed.value.outcomes] == [False, False, False]


def test_dry_run_says_a_build_is_needed_and_builds_nothing(
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
    source_repo: SourceRepo,
    tmp_path: Path,
) -> None:
    source_repo.commit({"hello.txt": "dry\n"})
    client = registry.client()
    spec = spec_for(registry, source_repo, SCRATCH_DOCKERFILE, service="dry")

    log = Log()
    planned = build_image(spec, buildah_builder, client, tmp_path, log, dry_run=True)

    assert planned.would_build is True and planned.built is False
    assert client.manifest_digest("shop/dry", planned.tag) is None  # nothing was pushed
    assert log.steps() == []
    built = build_image(spec, buildah_builder, client, tmp_path, Log())
    assert built.tag == planned.tag  # the dry run named the tag the build then pushed
    again = build_image(spec, buildah_builder, client, tmp_path, Log(), dry_run=True)
    assert (again.would_build, again.built, again.digest) == (False, False, built.digest)
