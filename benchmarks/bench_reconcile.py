#!/usr/bin/env python3
"""Time `reconcile ENV` (and a no-op `plan ENV`) against N live Deployments on the test bed.

The config repo is benchmarks/generate.py's (N services x 3 environments), its platform
pointed at a Kubernetes test bed this script starts (tests/support/k8s_testbed.py: the
real kube-apiserver, controller-manager and scheduler, pods simulated by KWOK) and stops.
Then, every step a whole `configcenter` process (wall, CPU, peak memory, as bench_cli.py):

  apply            `apply dev --no-build`: N services applied and rolled out on the bed
  reconcile, first `reconcile dev --json` right after the apply: the desired objects
                   the apply kept (adapters/k8s_desired_cache.py, in this run's own
                   XDG_CACHE_HOME) are read back
  reconcile        `reconcile dev --json` with nothing drifted (median of --repeat)
  plan no-op       `plan dev --json` with the platform reachable (the secret check lists
                   the env's Secrets, observation lists the live objects)
  reconcile drift  after one Deployment's image was changed behind configcenter's back
  plan edited      `plan dev --json` then: that one workload is compared with its release

    python benchmarks/bench_reconcile.py [--services 500] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_cli import Bench  # noqa: E402
from generate import GIT_ENV, generate, service_names  # noqa: E402

from tests.support import k8s_testbed  # noqa: E402

TARGET = 2.0  # issue 18: reconcile of 500 Deployments on the test bed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--profile", type=Path, help="also run reconcile and plan under cProfile into DIR"
    )
    args = parser.parse_args()
    if not k8s_testbed.is_built():
        raise SystemExit("test bed binaries are not built: run `scripts/k8s-testbed build`")
    with tempfile.TemporaryDirectory(prefix="cc-bench-reconcile-") as tmp:
        bed = k8s_testbed.up(Path(tmp) / "bed", tie_to_parent=True)
        try:
            bench(args, Path(tmp), bed)
        finally:
            k8s_testbed.down(Path(tmp) / "bed")


def bench(args: argparse.Namespace, tmp: Path, bed: k8s_testbed.Testbed) -> None:
    b = Bench(tmp, args.services)
    b.env["KUBECONFIG"] = str(bed.kubeconfig)
    generate(b.config, args.services)
    project = b.config / "configcenter.yaml"
    project.write_text(project.read_text().replace("context: kind-local", "context: testbed"))
    subprocess.run(
        ["git", "commit", "-qam", "platform: the test bed"],
        cwd=b.config,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(b.deploy)], check=True)
    print(
        f"{args.services} services on a test bed at {bed.api_url} "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    repeat = max(1, args.repeat)
    b.record("apply (rollout on the bed)", [b.run("apply", "dev", "--no-build")])
    first = b.run("reconcile", "dev", "--json")
    b.record("reconcile, first after apply", [first])
    runs = [b.run("reconcile", "dev", "--json") for _ in range(repeat)]
    report = json.loads(runs[-1].stdout)
    statuses: dict[str, int] = {}
    for service in report.get("services", []):
        statuses[service["status"]] = statuses.get(service["status"], 0) + 1
    b.record("reconcile, in sync", runs, f"statuses {statuses}")
    plans = [b.run("plan", "dev", "--json") for _ in range(repeat)]
    actions: dict[str, int] = {}
    for service in json.loads(plans[-1].stdout)["services"]:
        actions[service["action"]] = actions.get(service["action"], 0) + 1
    b.record("plan no-op, platform reachable", plans, f"actions {actions}")

    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        for step in ("reconcile", "plan"):
            out = args.profile / f"{step}-{args.services}.prof"
            subprocess.run(
                [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "configcenter",
                 "-C", str(b.config), "--deploy-repo", str(b.deploy),
                 "--run-store", f"sqlite:///{tmp / 'runs.sqlite3'}", step, "dev", "--json"],
                env=b.env, stdout=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            print(f"  (profile of {step} in {out})", flush=True)

    victim = service_names(args.services)[args.services // 2]
    start = time.perf_counter()
    path = f"/apis/apps/v1/namespaces/bench-dev/deployments/{victim}"
    live = bed.request("GET", path)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/by-hand:1"
    bed.request("PUT", path, live)
    print(f"  ({victim}'s image changed by hand in {time.perf_counter() - start:.2f} s)")
    drifted = [b.run("reconcile", "dev", "--json", check=False) for _ in range(repeat)]
    found = [s["service"] for s in json.loads(drifted[-1].stdout)["services"] if s["drifts"]]
    b.record("reconcile, one drifted", drifted, f"drifted: {found}")
    # The same hand edit as plan sees it: one workload compared with its release.
    edited = [b.run("plan", "dev", "--json") for _ in range(repeat)]
    steps = [s["service"] for s in json.loads(edited[-1].stdout)["services"] if s.get("platform")]
    b.record("plan, one edited by hand", edited, f"platform steps: {steps}")

    print(f"\n{'step':32} {'wall':>10} {'cpu':>10} {'peak RSS':>10}")
    for row in b.rows:
        mark = ""
        if row.step.startswith("reconcile"):
            mark = f"target {TARGET:.1f} s: " + ("ok" if row.cpu <= TARGET else "MISSED (cpu)")
        print(
            f"{row.step:32} {row.seconds:8.3f} s {row.cpu:8.3f} s {row.max_rss_mib:6.0f} MiB",
            mark,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"services": args.services, "rows": [r.__dict__ for r in b.rows]}, indent=1)
        )


if __name__ == "__main__":
    main()
