#!/usr/bin/env python3
"""Time what users run: every step is a whole `configcenter` process, with its peak memory.

On a generated config repo (benchmarks/generate.py: N services x 3 environments) and a
bare deploy repo on disk, in this order:

  validate cold / warm      fresh cache, then again with the caches kept
  render cold / warm        `render ENV --out DIR` for all 3 envs (summed): cache wiped and a
                            new DIR / caches kept and the same DIR again (as users render
                            again); "warm, new dir" renders with the caches into new DIRs
  apply first               `apply ENV --no-build --no-rollout` for each env (summed; dev too)
  plan no-op                `plan dev --json` with nothing changed (median of --repeat)
  plan one value            `plan dev --json` after one value in one service file changed
                            (the first run apart: it loads the edited file and keeps the load)
  apply one value           `apply dev --no-build --no-rollout` of that change
  history                   `history dev --service S --limit R --json` after R releases of S:
                            the first run (which fetches them), then the median of --repeat

The R releases of one service are written straight into the deploy repo as apply
writes them (its state record and trailers, through configcenter's own serializer),
in one `git fast-import` stream, so a run does not take R applies.

Each step reports wall time, CPU time (user + system of the child and of the git
processes it waited for, from `os.wait4`: on a shared machine wall time includes
waiting for a core, CPU time does not) and peak memory (`ru_maxrss` of the child).
Nothing here is a test: numbers are printed, and with --json written to a file.

    python benchmarks/bench_cli.py [--services 500] [--releases 1000] [--repeat 3]
        [--steps validate,render,apply,plan,history] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from generate import ENVIRONMENTS, GIT_ENV, generate, service_names  # noqa: E402
from history_fixture import add_releases  # noqa: E402

STEPS = ("validate", "render", "apply", "plan", "history")
# Targets from issue 18 (seconds), by (step, services); None: no target at that size.
TARGETS: dict[tuple[str, int], float] = {
    ("plan no-op (dev)", 500): 0.3,
    ("plan no-op (dev)", 5000): 1.0,
    ("apply first (3 envs)", 500): 5.0,
    ("plan one value (dev)", 5000): 0.5,
    ("apply one value (dev)", 5000): 1.5,
    ("validate cold", 5000): 10.0,
    ("validate warm", 5000): 2.0,
    ("history --service", 500): 1.0,
    ("history --service", 5000): 1.0,
}


@dataclass
class Sample:
    seconds: float
    cpu: float  # user + system seconds of the child and the processes it waited for
    max_rss_kib: int
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass
class Row:
    step: str
    seconds: float
    cpu: float
    max_rss_mib: float
    note: str = ""


class Bench:
    def __init__(self, tmp: Path, services: int) -> None:
        self.tmp = tmp
        self.services = services
        self.config = tmp / "config"
        self.deploy = tmp / "deploy.git"
        self.cache = tmp / "cache"
        self.env = {
            **os.environ,
            **GIT_ENV,
            "XDG_CACHE_HOME": str(self.cache),
            "BENCH_DEV_DB_PASSWORD": "bench-dev-secret",
            "BENCH_DEMO_DB_PASSWORD": "bench-demo-secret",
            "BENCH_PROD_DB_PASSWORD": "bench-prod-secret",
        }
        self.rows: list[Row] = []

    def run(self, *args: str, check: bool = True) -> Sample:
        cmd = [
            sys.executable, "-m", "configcenter", "-C", str(self.config),
            "--deploy-repo", str(self.deploy),
            "--run-store", f"sqlite:///{self.tmp / 'runs.sqlite3'}",
            *args,
        ]  # fmt: skip
        out = self.tmp / "stdout"
        err = self.tmp / "stderr"
        with out.open("wb") as fo, err.open("wb") as fe:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=self.env)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sample = Sample(
            seconds,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss,
            proc.returncode,
            out.read_bytes(),
            err.read_bytes(),
        )
        if check and sample.returncode not in (0, 2):
            raise SystemExit(
                f"{' '.join(args)} exited {sample.returncode}:\n"
                + sample.stderr.decode(errors="replace")[-3000:]
            )
        return sample

    def record(self, step: str, samples: list[Sample], note: str = "") -> None:
        seconds = statistics.median(s.seconds for s in samples)
        cpu = statistics.median(s.cpu for s in samples)
        self.add(Row(step, seconds, cpu, max(s.max_rss_kib for s in samples) / 1024, note))

    def record_sum(self, step: str, samples: list[Sample], note: str = "") -> None:
        seconds = sum(s.seconds for s in samples)
        cpu = sum(s.cpu for s in samples)
        self.add(Row(step, seconds, cpu, max(s.max_rss_kib for s in samples) / 1024, note))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(
            f"  {row.step:28} {row.seconds:8.3f} s {row.cpu:8.3f} s cpu {row.max_rss_mib:6.0f} MiB"
            f"  load {os.getloadavg()[0]:.1f}  {row.note}",
            flush=True,
        )

    def wipe_render_caches(self) -> None:
        """Every cache except the deploy repo's local clone (a cold *render*, not a cold clone)."""
        base = self.cache / "configcenter"
        if base.exists():
            for child in base.iterdir():
                if child.name != "deploy":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--releases", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", type=Path, help="work in this new directory and keep it")
    args = parser.parse_args()
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if args.keep:
        args.keep.mkdir(parents=True)
        bench(args, args.keep, steps)
    else:
        with tempfile.TemporaryDirectory(prefix="cc-bench-cli-") as tmp:
            bench(args, Path(tmp), steps)


def bench(args: argparse.Namespace, tmp: Path, steps: list[str]) -> None:
    b = Bench(tmp, args.services)
    # pip compiles an installed configcenter's bytecode; a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module in every command instead.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "configcenter")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    start = time.perf_counter()
    generate(b.config, args.services)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(b.deploy)], check=True)
    print(
        f"{args.services} services x {len(ENVIRONMENTS)} envs generated in "
        f"{time.perf_counter() - start:.1f} s (python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    repeat = max(1, args.repeat)

    if "validate" in steps:
        b.wipe_render_caches()
        b.record("validate cold", [b.run("validate")])
        b.record("validate warm", [b.run("validate") for _ in range(repeat)])

    if "render" in steps:
        b.wipe_render_caches()
        out = tmp / "rendered"
        cold = []
        for env in ENVIRONMENTS:
            cold.append(b.run("render", env, "--out", str(out / env)))
        b.record_sum("render cold (3 envs)", cold, "3 processes, summed")
        warm = []
        for env in ENVIRONMENTS:
            warm.append(b.run("render", env, "--out", str(out / env)))
        b.record_sum("render warm (3 envs)", warm, "3 processes, summed; the same DIRs")
        elsewhere = []
        for env in ENVIRONMENTS:
            elsewhere.append(b.run("render", env, "--out", str(out / f"new-{env}")))
        b.record_sum("render warm, new dir", elsewhere, "3 processes, summed")
        shutil.rmtree(out)

    target = service_names(args.services)[args.services // 2]
    if "apply" in steps or "plan" in steps or "history" in steps:
        first = [b.run("apply", env, "--no-build", "--no-rollout") for env in ENVIRONMENTS]
        b.record("apply first (dev)", first[:1])
        b.record_sum("apply first (3 envs)", first, "3 processes, summed")

    if "plan" in steps or "apply" in steps:
        b.record("plan no-op (dev)", [b.run("plan", "dev", "--json") for _ in range(repeat)])
        rel = b.config / f"environments/dev/{target}.yaml"
        original = rel.read_text()
        rel.write_text(original.replace("-opt_01", "-opt_01-changed"))
        # apply deploys commits (it refuses a dirty config tree), so commit the change
        subprocess.run(
            ["git", "commit", "-qam", f"{target}: one value"], cwd=b.config, env=b.env, check=True
        )
        plans = [b.run("plan", "dev", "--json") for _ in range(repeat)]
        changed = [s["service"] for s in json.loads(plans[-1].stdout)["services"]
                   if s["action"] != "noop"]  # fmt: skip
        assert changed == [target], changed
        b.record("plan one value (dev), first", plans[:1], "loads the edited file, keeps the load")
        b.record("plan one value (dev)", plans)
        b.record("apply one value (dev)", [b.run("apply", "dev", "--no-build", "--no-rollout")])

    if "history" in steps:
        start = time.perf_counter()
        add_releases(b.deploy, "dev", target, args.releases, env=b.env)
        print(f"  ({args.releases} releases of {target} written in "
              f"{time.perf_counter() - start:.1f} s)", flush=True)  # fmt: skip
        # The first run fetches the R commits into the deploy repo cache (another clone
        # pushed them) and fills the history index; the next ones are what users repeat.
        runs = []
        for _ in range(1 + repeat):
            sample = b.run("history", "dev", "--service", target, "--limit", str(args.releases),
                           "--json")  # fmt: skip
            runs.append(sample)
        assert len({s.stdout for s in runs}) == 1, "history printed different releases"
        listed = json.loads(runs[-1].stdout)
        found = len(listed["releases"] if isinstance(listed, dict) else listed)
        b.record("history --service (first)", runs[:1], f"fetches {args.releases} commits")
        b.record("history --service", runs[1:], f"{found} releases listed")

    print(f"\n{'step':28} {'wall':>10} {'cpu':>10} {'peak RSS':>10}  {'target':>8}")
    for row in b.rows:
        goal = TARGETS.get((row.step, args.services))
        mark = "" if goal is None else ("ok" if row.seconds <= goal else "MISSED (wall)")
        if goal is not None and row.seconds > goal and row.cpu <= goal:
            mark = "MISSED (wall), ok (cpu)"
        shown = f"{goal:.1f} s" if goal is not None else ""
        print(
            f"{row.step:28} {row.seconds:8.3f} s {row.cpu:8.3f} s {row.max_rss_mib:6.0f} MiB"
            f"  {shown:>8} {mark}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "services": args.services,
                    "releases": args.releases,
                    "rows": [row.__dict__ for row in b.rows],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
