"""Given images (image.ref) on our registry deploy by digest, so a re-pushed tag is a change.

Real parts only: a Distribution registry, images pushed to it by buildah, a real
config repo and bare deploy repo, and the `configcenter` CLI in child processes.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.core.redact import Redactor
from configcenter.ports.builder import BuildRequest
from configcenter.usecases.images import ImageName, resolve_given_images
from tests.support.configrepo import ConfigRepo
from tests.support.e2e_fixtures import SECRET_ENV, World, make_world
from tests.support.helpers import free_port
from tests.support.registry_fixtures import RegistryServer

API = "environments/dev/api.yaml"
WORKER_REF = "registry.example.com/shop/worker:1.0"


def push_image(builder: BuildahBuilder, target: str, content: str, workdir: Path) -> str:
    """Build a one-file FROM scratch image with `content` and push it to `target`; its digest."""
    context = workdir / f"ctx-{uuid.uuid4().hex[:8]}"
    context.mkdir(parents=True)
    (context / "marker.txt").write_text(content)
    result = builder.build_and_push(
        BuildRequest(
            service="given",
            context_dir=context,
            dockerfile="FROM scratch\nCOPY marker.txt /marker.txt\n",
            build_args={},
            target=target,
        ),
        log=lambda line: None,
    )
    return result.digest


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def retag(
    registry: RegistryServer, seed: str, tag: str, builder: BuildahBuilder, workdir: Path
) -> str:
    """Push a distinct image to `tag` cheaply: the seed's manifest with its own annotation.

    The first call builds the seed; later ones PUT a manifest (OCI distribution API)
    whose layers the registry already has, so 40 tags take seconds, not a build each.
    """
    repository, _, seed_tag = seed.removeprefix(registry.host + "/").rpartition(":")
    url = f"{registry.url}/v2/{repository}/manifests"
    got = requests.get(f"{url}/{seed_tag}", headers={"Accept": OCI_MANIFEST}, timeout=30)
    if got.status_code == 404:
        push_image(builder, seed, "seed", workdir)
        got = requests.get(f"{url}/{seed_tag}", headers={"Accept": OCI_MANIFEST}, timeout=30)
    got.raise_for_status()
    manifest = got.json()
    manifest["annotations"] = {"org.example.tag": tag}
    put = requests.put(
        f"{url}/{tag}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": got.headers["Content-Type"]},
        timeout=30,
    )
    assert put.status_code == 201, put.text
    return str(put.headers["Docker-Content-Digest"])


def registry_world(tmp_path: Path, host: str, api_ref: str, *, registry_extra: str = "") -> World:
    """The e2e shop on registry `host`: dev's api runs `api_ref`, worker another registry's."""
    world = make_world(tmp_path / "world")
    world.env[SECRET_ENV] = "g1ven-images-s3cret"  # apply refuses secrets it cannot resolve
    config = world.config
    config.write(
        "configcenter.yaml",
        config.read("configcenter.yaml")
        + f"registry: {{url: '{host}', insecure: true{registry_extra}}}\n",
    )
    config.write(API, f"template: 1.0.0\nimage: {{ref: {api_ref}}}\nreplicas: 1\n")
    config.commit("api from our registry")
    return world


def unique_tag() -> str:
    """The registry lives for the session: every test pushes its own tag."""
    return "t-" + uuid.uuid4().hex[:10]


def plan_json(world: World) -> dict[str, dict[str, object]]:
    result = world.cc("plan", "dev", "--json", "--exit-code")
    assert result.code in (0, 2), result.output
    return {s["service"]: s for s in json.loads(result.stdout)["services"]}


def test_apply_deploys_the_digest_a_replan_is_a_noop_and_a_new_push_is_an_image_update(
    tmp_path: Path, registry: RegistryServer, buildah_builder: BuildahBuilder
) -> None:
    tag = unique_tag()
    name = f"{registry.host}/shop/api:{tag}"
    first = push_image(buildah_builder, name, "one", tmp_path)
    world = registry_world(tmp_path, registry.host, name)

    planned = plan_json(world)
    assert planned["api"]["image"] == {"from": None, "to": f"{name}@{first}"}
    world.ok("apply", "dev", "--no-rollout")
    files = world.files()
    assert f"image: {name}@{first}\n" in files["dev/api/deployment.yaml"].decode()
    assert f'"image": "{name}@{first}"' in files["dev/api/marathon.json"].decode()
    state = world.state("dev")["services"]
    assert (state["api"]["image"], state["api"]["image_digest"]) == (f"{name}@{first}", first)
    assert state["api"].get("build_key") is None
    # Another registry's image stays the tag as written: we cannot ask it.
    assert state["worker"]["image"] == WORKER_REF
    assert WORKER_REF + "@" not in files["dev/worker/app.env"].decode()

    # Right after apply, nothing changed: exit 0 and every service a no-op.
    again = world.cc("plan", "dev", "--exit-code")
    assert again.code == 0, again.output
    assert {s["action"] for s in plan_json(world).values()} == {"noop"}
    rendered = tmp_path / "rendered"
    world.ok("render", "dev", "--out", str(rendered))
    assert f"image: {name}@{first}" in (rendered / "api" / "deployment.yaml").read_text()

    # Someone pushes a different image to the same tag: an image update, then deployed.
    second = push_image(buildah_builder, name, "two", tmp_path)
    assert second != first
    update = plan_json(world)["api"]
    assert (update["action"], update["reasons"]) == ("update", ["image"])
    assert update["image"] == {"from": f"{name}@{first}", "to": f"{name}@{second}"}
    assert world.cc("plan", "dev", "--exit-code").code == 2
    world.ok("apply", "dev", "--no-rollout")
    assert "api (update: image)" in world.message()
    deployment = world.files()["dev/api/deployment.yaml"].decode()
    assert f"image: {name}@{second}\n" in deployment
    assert world.state("dev")["services"]["api"]["image_digest"] == second
    assert world.cc("plan", "dev", "--exit-code").code == 0


def test_an_unknown_tag_names_the_file_line_and_tag_and_commits_nothing(
    tmp_path: Path, registry: RegistryServer
) -> None:
    tag = unique_tag()
    world = registry_world(tmp_path, registry.host, f"{registry.host}/shop/api:{tag}")
    line = world.config.line_of(API, "image:")
    for command in (("plan", "dev"), ("apply", "dev", "--no-rollout"), ("render", "dev")):
        result = world.cc(*command)
        assert result.code == 1, result.output
        assert f"{API}:{line}" in result.output, result.output
        assert f"image tag '{tag}'" in result.output and "does not exist" in result.output
        assert "Traceback" not in result.output
    assert world.head() is None  # nothing was committed


def test_pin_digests_false_deploys_tags_as_written(
    tmp_path: Path, registry: RegistryServer, buildah_builder: BuildahBuilder
) -> None:
    name = f"{registry.host}/shop/api:{unique_tag()}"
    push_image(buildah_builder, name, "tags", tmp_path)
    world = registry_world(tmp_path, registry.host, name, registry_extra=", pin_digests: false")
    world.ok("apply", "dev", "--no-rollout")
    assert f"image: {name}\n" in world.files()["dev/api/deployment.yaml"].decode()
    assert world.state("dev")["services"]["api"]["image"] == name


def test_a_ref_already_by_digest_is_used_as_written(
    tmp_path: Path, registry: RegistryServer, buildah_builder: BuildahBuilder
) -> None:
    base = f"{registry.host}/shop/api"
    digest = push_image(buildah_builder, f"{base}:{unique_tag()}", "by-digest", tmp_path)
    world = registry_world(tmp_path, registry.host, f"{base}@{digest}")
    world.ok("apply", "dev", "--no-rollout")
    api = world.state("dev")["services"]["api"]
    assert (api["image"], api["image_digest"]) == (f"{base}@{digest}", digest)
    assert world.cc("plan", "dev", "--exit-code").code == 0


def _closed_port() -> int:
    return free_port()


def test_an_unreachable_registry_is_a_clear_error_not_a_tag(tmp_path: Path) -> None:
    host = f"127.0.0.1:{_closed_port()}"
    world = registry_world(tmp_path, host, f"{host}/shop/api:1.0")
    result = world.cc("apply", "dev", "--no-rollout")
    assert result.code == 1, result.output
    line = world.config.line_of(API, "image:")
    assert f"{API}:{line}" in result.output
    assert "pin_digests: false" in result.output and "Traceback" not in result.output
    assert world.head() is None


def test_fifty_services_resolve_concurrently_with_one_lookup_per_tag(
    tmp_path: Path, registry: RegistryServer, buildah_builder: BuildahBuilder
) -> None:
    """The use case itself, on a config of 50 given images (two tags shared by five each)."""
    base = f"{registry.host}/shop/many"
    tags = [unique_tag() for _ in range(42)]
    seed = f"{base}:{tags[0]}"
    digests = {tag: retag(registry, seed, tag, buildah_builder, tmp_path) for tag in tags}
    assert len(set(digests.values())) == len(tags)
    repo = ConfigRepo.init(tmp_path / "many")
    repo.write(
        "configcenter.yaml",
        f"project: shop\nenvironments: [dev]\nregistry: {{url: '{registry.host}', "
        "insecure: true}\n",
    )
    repo.write("environments/dev/_env.yaml", "allow_head: true\n")
    wanted: dict[str, str] = {}
    for i in range(50):
        service = f"s{i:02d}"
        wanted[service] = tags[i] if i < 40 else tags[40 + i % 2]
        repo.write(f"templates/{service}/template.yaml", "outputs: [app.env]\n")
        repo.write(f"templates/{service}/app.env.j2", "IMAGE={{ image }}\n")
        ref = f"{base}:{wanted[service]}"
        repo.write(f"environments/dev/{service}.yaml", f"template: HEAD\nimage: {{ref: {ref}}}\n")
    repo.commit("fifty services")
    config = repo.load()

    class Counting:
        """Our real registry client, counting the lookups it is asked for."""

        def __init__(self) -> None:
            self.inner = registry.client()
            self.calls: list[tuple[str, str]] = []

        def manifest_digest(self, repository: str, tag: str) -> str | None:
            self.calls.append((repository, tag))
            return self.inner.manifest_digest(repository, tag)

    counting = Counting()
    started = time.monotonic()
    resolved = resolve_given_images(config, "dev", Redactor(), registry=counting)
    elapsed = time.monotonic() - started
    assert len(resolved) == 50
    for service, tag in wanted.items():
        assert resolved[service].ref == f"{base}:{tag}@{digests[tag]}"
        assert resolved[service].digest == digests[tag] and resolved[service].build_key is None
    assert sorted(counting.calls) == sorted(("shop/many", t) for t in tags)
    assert elapsed < 10, f"50 services took {elapsed:.2f}s to resolve"


@pytest.mark.parametrize(
    ("ref", "host", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/shop/api:1.0", "127.0.0.1:5000", "shop/api", "1.0", None),
        ("127.0.0.1:5000/shop/api", "127.0.0.1:5000", "shop/api", None, None),
        ("Reg.Example.com/a/b:2@sha256:ab", "reg.example.com", "a/b", "2", "sha256:ab"),
        ("localhost/api@sha256:ab", "localhost", "api", None, "sha256:ab"),
        ("library/postgres:16", None, "library/postgres", "16", None),
        ("postgres", None, "postgres", None, None),
    ],
)
def test_image_names_split_as_distribution_does(
    ref: str, host: str | None, repository: str, tag: str | None, digest: str | None
) -> None:
    assert ImageName.parse(ref) == ImageName(ref, host, repository, tag, digest)


def test_a_refused_lookup_is_an_error_never_an_absent_tag(
    tmp_path: Path, auth_registry: RegistryServer
) -> None:
    """No credentials for a registry that wants them: an auth error, not "no such tag"."""
    world = registry_world(tmp_path, auth_registry.host, f"{auth_registry.host}/shop/api:1.0")
    result = world.cc("plan", "dev")
    assert result.code == 1, result.output
    assert f"{API}:{world.config.line_of(API, 'image:')}" in result.output
    assert "requires credentials" in result.output and "does not exist" not in result.output
