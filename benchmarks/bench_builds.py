"""Build benchmarks: what a no-change check costs, and what a warm rebuild costs.

    python benchmarks/bench_builds.py [--services 50] [--jobs 4] [--only cache]

Starts its own Distribution registry on 127.0.0.1 and uses private buildah
storage in a tmp dir. Prints:
* no-change check, registry round trips only: one manifest HEAD per service;
* no-change check, whole use case: build_many over every service when all
  images exist (source fetch from a local bare repo + ref resolve + digest + HEAD);
* warm rebuild: a RUN image rebuilt after a build arg of its last step changed,
  against the cold first build;
* layer cache: a Dockerfile whose dependency step (a real RUN doing seconds of
  work) comes before the source COPY, rebuilt after a one-line source change:
  without the cache (`build: {cache: false}`), with the cache on a builder with
  empty storage (layers pulled from the registry's cache repository, as on a
  fresh CI machine), and with the cache on the same builder (local layers).
Needs buildah, docker-registry and busybox-static.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.oci_registry import OciRegistry
from configcenter.adapters.source_checkout import resolve_source
from configcenter.ports.builder import BuildRequest
from configcenter.usecases.build import (
    ImageBuildSpec,
    build_image,
    build_many,
    inputs_digest,
    tag_for,
)
from tests.support.registry_fixtures import SourceRepo, start_registry, stop_registry


def timed(label: str, seconds: float, count: int = 1) -> None:
    per = f" ({seconds / count * 1000:.1f} ms each)" if count > 1 else ""
    print(f"  {label}: {seconds:.3f} s{per}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--only", choices=["cache"], help="run one section only")
    parser.add_argument("--spin", type=int, default=4_000_000, help="loop count of the slow step")
    args = parser.parse_args()
    for tool in ("buildah", "docker-registry"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed; apt-get install buildah docker-registry")
            return 1

    with tempfile.TemporaryDirectory(prefix="cc-bench-builds-") as tmp:
        work = Path(tmp)
        server = start_registry(work / "registry")
        builder = BuildahBuilder(
            root=work / "buildah" / "root",
            runroot=work / "buildah" / "run",
            insecure_registries=frozenset({server.host}),
        )
        try:
            if args.only is None:
                run(args.services, args.jobs, work, server.host, builder, server.client())
            layer_cache(work, server.host, builder, server.client(), args.spin)
        finally:
            subprocess.run([*builder.global_args(), "rmi", "--all", "--force"], capture_output=True)
            stop_registry(server)
    return 0


def run(
    services: int, jobs: int, work: Path, host: str, builder: BuildahBuilder, client: OciRegistry
) -> None:
    source = SourceRepo(work / "source")
    source.commit({"app.txt": "bench\n"})
    cache = work / "sources"
    specs = [
        ImageBuildSpec(
            service=f"svc-{i:03d}",
            source_repo=source.url,
            source_ref="main",
            dockerfile="FROM scratch\nCOPY app.txt /app.txt\n",
            build_args={"SERVICE": f"svc-{i:03d}"},
            registry_host=host,
            repository=f"bench/svc-{i:03d}",
            insecure=True,
        )
        for i in range(services)
    ]

    print(f"setup: one real build, then its image pushed under {services} services' tags")
    first = build_image(specs[0], builder, client, cache, lambda line: None)
    resolved = resolve_source(source.url, "main", cache)
    local = f"{host}/bench/svc-000:{first.tag}"
    for spec in specs[1:]:
        tag = tag_for(inputs_digest(resolved.commit, resolved.tree, spec))
        subprocess.run(
            [*builder.global_args(), "push", "--tls-verify=false", local,
             f"docker://{host}/{spec.repository}:{tag}"],
            check=True, capture_output=True,
        )  # fmt: skip

    print(f"no-change check, {services} services, registry round trips only:")
    tags = [
        (spec.repository, tag_for(inputs_digest(resolved.commit, resolved.tree, spec)))
        for spec in specs
    ]
    client.manifest_digest(*tags[0])  # open the connection once, as a warm process would
    start = time.perf_counter()
    for repository, tag in tags:
        assert client.manifest_digest(repository, tag) is not None
    timed("sequential HEADs", time.perf_counter() - start, services)
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        found = list(pool.map(lambda rt: client.manifest_digest(*rt), tags))
    assert all(found)
    timed(f"HEADs on {jobs} threads", time.perf_counter() - start, services)

    print(f"no-change check, {services} services, whole use case (fetch + resolve + HEAD):")
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        outcomes = build_many(specs, builder, client, cache, lambda s, line: None, jobs=jobs)
        samples.append(time.perf_counter() - start)
        assert not any(o.built for o in outcomes)
    timed(f"build_many jobs={jobs}, median of 3", statistics.median(samples), services)

    print("warm rebuild (RUN steps on a busybox base, --layers):")
    base_ctx = work / "base"
    base_ctx.mkdir()
    shutil.copy2("/bin/busybox", base_ctx / "busybox")
    base = builder.build_and_push(
        BuildRequest(
            service="base",
            context_dir=base_ctx,
            dockerfile=(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            ),
            build_args={},
            target=f"{host}/bench/base:1",
        ),
        lambda line: None,
    )
    dockerfile = (
        f"FROM {base.reference}\n"
        "COPY app.txt /srv/app.txt\n"
        "RUN for i in 1 2 3 4 5 6 7 8; do cat /srv/app.txt >> /srv/big.txt; done\n"
        "ARG VERSION\n"
        'RUN echo "$VERSION" > /srv/version\n'
    )
    spec = ImageBuildSpec(
        service="warm",
        source_repo=source.url,
        source_ref="main",
        dockerfile=dockerfile,
        build_args={"VERSION": "1"},
        registry_host=host,
        repository="bench/warm",
        insecure=True,
    )
    start = time.perf_counter()
    build_image(spec, builder, client, cache, lambda line: None)
    timed("cold build + push", time.perf_counter() - start)
    for version in ("2", "3"):
        start = time.perf_counter()
        outcome = build_image(
            ImageBuildSpec(**{**spec.__dict__, "build_args": {"VERSION": version}}),
            builder,
            client,
            cache,
            lambda line: None,
        )
        assert outcome.built
        timed(f"warm rebuild + push (VERSION={version})", time.perf_counter() - start)
    start = time.perf_counter()
    outcome = build_image(spec, builder, client, cache, lambda line: None)
    assert not outcome.built
    timed("unchanged again: check only", time.perf_counter() - start)


def layer_cache(
    work: Path, host: str, builder: BuildahBuilder, client: OciRegistry, spin: int
) -> None:
    """Cold vs cached rebuild after a one-line source change, slow step before the COPY."""
    print(f"layer cache (a RUN spinning {spin} shell iterations before COPY of the source):")
    base_ctx = work / "cache-base"
    base_ctx.mkdir()
    shutil.copy2("/bin/busybox", base_ctx / "busybox")
    base = builder.build_and_push(
        BuildRequest(
            service="base",
            context_dir=base_ctx,
            dockerfile=(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            ),
            build_args={},
            target=f"{host}/bench/cache-base:1",
        ),
        lambda line: None,
    )
    dockerfile = (
        f"FROM {base.reference}\n"
        f"RUN i=0; while [ $i -lt {spin} ]; do i=$((i+1)); done; echo $i > /deps.txt\n"
        "COPY app.txt /srv/app.txt\n"
        "RUN cat /deps.txt /srv/app.txt > /srv/run.txt\n"
    )
    source = SourceRepo(work / "cache-source")
    cache = work / "cache-sources"
    line = 0

    def change_source() -> None:
        nonlocal line
        line += 1
        source.commit({"app.txt": f"line {line}\n"})

    def timed_build(label: str, machine: BuildahBuilder, spec: ImageBuildSpec) -> float:
        change_source()
        lines: list[str] = []
        start = time.perf_counter()
        outcome = build_image(spec, machine, client, cache, lines.append)
        seconds = time.perf_counter() - start
        assert outcome.built
        reused = sum(1 for text in lines if text.startswith("--> Using cache "))
        timed(f"{label} (steps from cache: {reused})", seconds)
        return seconds

    def machine(name: str) -> BuildahBuilder:
        return BuildahBuilder(
            root=work / name / "root",
            runroot=work / name / "run",
            insecure_registries=builder.insecure_registries,
        )

    spec = ImageBuildSpec(
        service="cached",
        source_repo=source.url,
        source_ref="main",
        dockerfile=dockerfile,
        build_args={},
        registry_host=host,
        repository="bench/cached",
        insecure=True,
        cache_repository="bench/build-cache/layers",
    )
    uncached = dataclasses.replace(spec, cache=False)
    machines = [machine(f"machine-{i}") for i in range(4)]
    try:
        cold = [timed_build("no cache: rebuild + push", machines[0], uncached) for _ in range(3)]
        timed_build("cache on, first build (fills the cache repository)", machines[1], spec)
        remote = [
            timed_build("cache on, rebuild on empty storage (remote cache)", m, spec)
            for m in machines[2:]
        ]
        local = [
            timed_build("cache on, rebuild on the same builder (local layers)", machines[1], spec)
            for _ in range(2)
        ]
    finally:
        for m in machines:
            subprocess.run([*m.global_args(), "rmi", "--all", "--force"], capture_output=True)
    cold_s = statistics.median(cold)
    print(
        f"  speed-up, median: remote cache {cold_s / statistics.median(remote):.1f}x, "
        f"local layers {cold_s / statistics.median(local):.1f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
