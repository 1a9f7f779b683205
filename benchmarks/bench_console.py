#!/usr/bin/env python3
"""Time the console's pages of `configcenter serve` on N services x 3 environments.

The config repo is benchmarks/generate.py's with commit-only environments (no platform),
so the numbers are configcenter's own work. dev is applied from the CLI, one service is
changed and applied again (two releases of it), then changed once more without applying
(a pending plan). serve runs as its own process; each page is fetched `--rounds` times
and the median wall time of the HTTP answer is reported, with serve's peak RSS.

    python benchmarks/bench_console.py [--services 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_cli import Bench  # noqa: E402
from bench_serve import git, http  # noqa: E402
from generate import ENVIRONMENTS, generate, service_names  # noqa: E402

from tests.support.helpers import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cc-bench-console-") as tmp:
        bench(args, Path(tmp))


def bench(args: argparse.Namespace, tmp: Path) -> None:
    b = Bench(tmp, args.services)
    token = f"api-{secrets.token_urlsafe(12)}"
    b.env["BENCH_API_TOKEN"] = token
    config = generate(b.config, args.services, platform=False)
    project = config / "configcenter.yaml"
    project.write_text(
        project.read_text()
        + f"deploy_repo: {{url: {b.deploy}, branch: main}}\n"
        + 'serve:\n  api_token: {secret: "env:BENCH_API_TOKEN"}\n'
    )
    git(config, "commit", "-qam", "serve: api token")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(b.deploy)], check=True)
    b.run("apply", "dev", "--no-build", "--no-rollout")
    target = service_names(args.services)[args.services // 3]
    rel = config / f"environments/dev/{target}.yaml"
    for round_ in (1, 2):
        rel.write_text(rel.read_text().replace("-opt_02", f"-opt_02-r{round_}", 1))
        git(config, "commit", "-qam", f"{target}: one value, round {round_}")
        if round_ == 1:
            b.run("apply", "dev", "--no-build", "--no-rollout")
    print(
        f"{args.services} services x {len(ENVIRONMENTS)} envs (python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "serve.log").open("wb")
    command = [sys.executable, "-m", "configcenter", "-C", str(config),
               "--run-store", f"sqlite:///{tmp / 'runs.sqlite3'}",
               "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=b.env)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"serve exited {proc.returncode}:\n" + (tmp / "serve.log").read_text()
                )
            try:
                if http("GET", f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("serve did not answer /healthz in 120 s")
            time.sleep(0.2)
        _, raw = http("GET", f"{url}/api/environments/dev/services/{target}", headers=auth)
        releases = [r["release"] for r in json.loads(raw)["releases"]]
        if len(releases) != 2:
            raise SystemExit(f"expected two releases of {target}, got {releases}")
        newest, older = releases
        service = f"/environments/dev/services/{target}"
        pages = [
            "/",
            "/runs",
            "/environments/dev",
            service,
            f"{service}/diff?from={older}&to={newest}",
            "/api/environments/dev/plan",
            f"/api{service}",
            f"/api{service}/diff?from={older}&to={newest}",
            "/metrics",
        ]
        for path in pages:
            times = []
            for _ in range(max(1, args.rounds)):
                start = time.perf_counter()
                status, body = http("GET", url + path, headers=auth)
                times.append(time.perf_counter() - start)
                if status != 200:
                    raise SystemExit(f"{path} answered {status}: {body[:500]!r}")
            print(
                f"  {path:<60} median {statistics.median(times) * 1000:7.0f} ms "
                f"({len(body) // 1024} KiB)",
                flush=True,
            )
        rss = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) // 1024
        print(f"serve peak RSS {rss} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


if __name__ == "__main__":
    main()
