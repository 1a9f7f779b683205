"""How fast the Git deploy repo commits, pushes and reads at a realistic scale.

500 services x 3 environments x 5 rendered files of about 1 KB each (7,500 files):
the bulk commit is what a first apply (or a template change hitting every service)
costs; the 1-file commit is the everyday value change. Run:

    python benchmarks/bench_deploy_repo.py [--services 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from configcenter.adapters.git_deploy_repo import GitDeployRepo
from configcenter.ports.deploy_repo import compose_message, delete_prefix

T = TypeVar("T")
ENVS = ("dev", "demo", "prod")


def rendered_files(services: int, version: int) -> dict[str, bytes]:
    """Five files per service and environment, shaped like real rendered output."""
    files: dict[str, bytes] = {}
    for env in ENVS:
        for i in range(services):
            svc = f"svc{i:03d}"
            env_lines = [f"SERVICE={svc}", f"ENV={env}", f"VERSION=1.{version}.{i % 7}"]
            env_lines += [f"FEATURE_{k:02d}=enabled-for-{env}-{svc}" for k in range(24)]
            files[f"{env}/{svc}/app.env"] = ("\n".join(env_lines) + "\n").encode()
            files[f"{env}/{svc}/Dockerfile"] = (
                "FROM registry.example.com/base/python:3.11-slim\n"
                f"ARG VERSION=1.{version}.{i % 7}\n"
                "WORKDIR /srv/app\nCOPY . /srv/app\n"
                + "".join(f"RUN echo step {k} for {svc} >> /srv/app/build.log\n" for k in range(14))
                + f'CMD ["python", "-m", "{svc}"]\n'
            ).encode()
            files[f"{env}/{svc}/deployment.yaml"] = (
                "apiVersion: apps/v1\nkind: Deployment\n"
                f"metadata:\n  name: {svc}\n  namespace: shop-{env}\n"
                f"  labels: {{app: {svc}, env: {env}, version: '1.{version}'}}\n"
                f"spec:\n  replicas: {1 + i % 3}\n  selector:\n    matchLabels: {{app: {svc}}}\n"
                "  template:\n    metadata:\n"
                f"      labels: {{app: {svc}}}\n    spec:\n      containers:\n"
                f"        - name: {svc}\n"
                f"          image: registry.example.com/shop/{svc}:1.{version}.{i % 7}\n"
                "          envFrom: [{configMapRef: {name: app-env}}]\n"
                "          resources: {requests: {cpu: 100m, memory: 128Mi}, "
                "limits: {cpu: 500m, memory: 512Mi}}\n"
                "          readinessProbe: {httpGet: {path: /healthz, port: 8080}}\n"
                "          livenessProbe: {httpGet: {path: /healthz, port: 8080}}\n"
                + "".join(f"          # note {k}: rendered by configcenter\n" for k in range(8))
            ).encode()
            files[f"{env}/{svc}/conf/app.yaml"] = (
                f"service: {svc}\nenv: {env}\n"
                + "".join(
                    f"section_{k}:\n  key: value-{k}-{svc}\n  limit: {k * 10}\n" for k in range(18)
                )
            ).encode()
            files[f"{env}/{svc}/conf/logging.yaml"] = (
                "version: 1\nhandlers:\n  console: {class: logging.StreamHandler}\n"
                + "".join(f"loggers:\n  {svc}.module{k}: {{level: INFO}}\n" for k in range(22))
            ).encode()
    return files


def timed(label: str, repeat: int, fn: Callable[[], T], rows: list[tuple[str, list[float]]]) -> T:
    """Run ``fn`` ``repeat`` times, record the wall times, return the last result."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    rows.append((label, samples))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, list[float]]] = []

    with tempfile.TemporaryDirectory() as tmp:
        remote = Path(tmp) / "deploy.git"
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
        repo = GitDeployRepo(str(remote), "main", Path(tmp) / "cache")
        v1 = rendered_files(args.services, 1)
        v2 = rendered_files(args.services, 2)
        size = sum(len(b) for b in v1.values())
        print(
            f"{len(v1)} files, {size / 1024 / 1024:.1f} MiB, "
            f"mean {size / len(v1):.0f} bytes per file"
        )
        msg = compose_message("apply: all services", "", [("Configcenter-Env", "dev")])

        n = args.repeat
        timed("sync (empty remote)", 1, repo.sync, rows)
        bulk = timed(f"commit {len(v1)} files (first)", n, lambda: repo.commit(v1, msg, None), rows)
        assert bulk is not None
        timed(f"push {len(v1)} files (new branch)", 1, lambda: repo.push(bulk), rows)
        head = bulk
        rewrite = timed(
            f"commit {len(v2)} files (all changed)", n, lambda: repo.commit(v2, msg, head), rows
        )
        assert rewrite is not None
        noop = timed(
            f"commit no-op (same {len(v1)} files)", n, lambda: repo.commit(v1, msg, head), rows
        )
        assert noop is None

        one = {"dev/svc042/app.env": v1["dev/svc042/app.env"] + b"LOG_LEVEL=debug\n"}
        small = timed("commit 1 file change", n * 4, lambda: repo.commit(one, msg, head), rows)
        assert small is not None
        timed("push 1 file change", 1, lambda: repo.push(small), rows)
        head = small
        timed("sync (up to date)", n, repo.sync, rows)
        prod = delete_prefix("prod")
        dropped = timed(
            f"commit delete_prefix('prod') ({len(v1) // 3} files)",
            n,
            lambda: repo.commit(prod, msg, head),
            rows,
        )
        assert dropped is not None
        paths = list(v1)
        got = timed(f"read_many {len(paths)} files", n, lambda: repo.read_many(paths), rows)
        assert len(got) == len(paths)
        some = paths[:20]
        timed("read_many 20 files", n * 4, lambda: repo.read_many(some), rows)
        timed("read 1 file", n * 4, lambda: repo.read("dev/svc042/app.env"), rows)
        listed = timed("list_files('dev')", n, lambda: repo.list_files("dev"), rows)
        assert len(listed) == len(paths) // 3
        timed("log(prefix='dev', limit=50)", n, lambda: repo.log("dev"), rows)
        timed("head()", n * 4, repo.head, rows)

        def lock_cycle() -> bool:
            with repo.lock():
                return True

        timed("lock() acquire + release", n * 4, lock_cycle, rows)

    width = max(len(label) for label, _ in rows)
    print(f"{'operation':<{width}}  {'min ms':>9}  {'median ms':>9}  runs")
    for label, samples in rows:
        print(
            f"{label:<{width}}  {min(samples) * 1000:9.1f}  "
            f"{statistics.median(samples) * 1000:9.1f}  {len(samples)}"
        )


if __name__ == "__main__":
    main()
