#!/usr/bin/env python3
"""Time `configcenter serve`'s answer to a GitLab push webhook on N services x 3 environments.

The config repo is benchmarks/generate.py's, served from a clone of a bare origin (as an
operator runs serve); dev has `auto_apply: true` and commits only (no platform), so the
numbers are configcenter's own work. After a first `apply dev --no-rollout` from the
CLI, each round changes one value of one service in an operator's clone, pushes it, and
POSTs the Push Hook GitLab would send (the GitLab webhook events reference: object_kind,
ref, before, after, project, commits) to serve's /hooks/gitlab. Reported per round:

  response   the HTTP answer (202 once the job is stored; the apply runs behind it)
  done       from the POST until /api/jobs shows nothing queued or running
  cpu        user + system seconds serve and its children (git) spent meanwhile

    python benchmarks/bench_serve.py [--services 500] [--rounds 3] [--json FILE]
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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_cli import Bench  # noqa: E402
from generate import ENVIRONMENTS, GIT_ENV, generate, service_names  # noqa: E402

from tests.support.helpers import free_port  # noqa: E402

PROJECT = "bench/bench-config"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def cpu_of(pid: int) -> float:
    """utime + stime of `pid` and of the children it waited for, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def push_hook(repo: Path, before: str, after: str) -> dict[str, Any]:
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": "refs/heads/main",
        "checkout_sha": after,
        "user_name": "bench",
        "user_username": "bench",
        "project_id": 1,
        "project": {"id": 1, "path_with_namespace": PROJECT, "default_branch": "main"},
        "commits": [{"id": after, "message": git(repo, "log", "-1", "--format=%s", after)}],
        "total_commits_count": 1,
        "repository": {"name": "bench-config"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cc-bench-serve-") as tmp:
        bench(args, Path(tmp))


def bench(args: argparse.Namespace, tmp: Path) -> None:
    b = Bench(tmp, args.services)
    tokens = {name: f"{name}-{secrets.token_urlsafe(12)}" for name in ("webhook", "api")}
    b.env.update({"BENCH_WEBHOOK_TOKEN": tokens["webhook"], "BENCH_API_TOKEN": tokens["api"]})
    config = generate(b.config, args.services, platform=False)  # commit-only environments
    project = config / "configcenter.yaml"
    project.write_text(
        project.read_text()
        + f"deploy_repo: {{url: {b.deploy}, branch: main}}\n"
        + "serve:\n"
        + '  webhook_token: {secret: "env:BENCH_WEBHOOK_TOKEN"}\n'
        + '  api_token: {secret: "env:BENCH_API_TOKEN"}\n'
    )
    dev = config / "environments/dev/_env.yaml"
    dev.write_text("auto_apply: true\n" + dev.read_text())
    git(config, "commit", "-qam", "serve: webhooks; dev auto-applies, commits only")
    origin = tmp / "config-origin.git"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(origin))
    git(config, "remote", "add", "origin", str(origin))
    git(config, "push", "-q", "--tags", "-u", "origin", "main")
    ops = tmp / "ops"
    git(tmp, "clone", "-q", str(origin), str(ops))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(b.deploy)], check=True)
    first = b.run("apply", "dev", "--no-build", "--no-rollout")
    print(
        f"{args.services} services x {len(ENVIRONMENTS)} envs; first apply of dev "
        f"{first.cpu:.2f} s cpu (python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f})",
        flush=True,
    )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "serve.log").open("wb")
    command = [sys.executable, "-m", "configcenter", "-C", str(config),
               "--run-store", f"sqlite:///{tmp / 'runs.sqlite3'}",
               "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=b.env)
    auth = {"Authorization": f"Bearer {tokens['api']}"}
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
        print(f"serve up on {url}", flush=True)
        results = []
        target = service_names(args.services)[args.services // 3]
        for round_ in range(1, max(1, args.rounds) + 1):
            rel = ops / f"environments/dev/{target}.yaml"
            rel.write_text(rel.read_text().replace("-opt_02", f"-opt_02-r{round_}", 1))
            before = git(ops, "rev-parse", "HEAD")
            git(ops, "commit", "-qam", f"{target}: one value, round {round_}")
            git(ops, "push", "-q", "origin", "main")
            after = git(ops, "rev-parse", "HEAD")
            body = json.dumps(push_hook(ops, before, after)).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Gitlab-Event": "Push Hook",
                "X-Gitlab-Token": tokens["webhook"],
                "X-Gitlab-Event-UUID": secrets.token_hex(16),
            }
            cpu_before = cpu_of(proc.pid)
            start = time.perf_counter()
            status, answer = http("POST", f"{url}/hooks/gitlab", body, headers)
            response = time.perf_counter() - start
            if status != 202:
                raise SystemExit(f"webhook answered {status}: {answer[:500]!r}")
            while True:
                # limit=1: the counts cover every job; a long listing per poll would add
                # its own cost to the CPU measured here
                _, raw = http("GET", f"{url}/api/jobs?limit=1", headers=auth)
                counts = json.loads(raw)["counts"]
                if not counts.get("queued", 0) + counts.get("running", 0):
                    break
                if time.perf_counter() - start > 600:
                    raise SystemExit(f"the push job did not finish in 600 s: {counts}")
                time.sleep(0.1)
            done = time.perf_counter() - start
            cpu = cpu_of(proc.pid) - cpu_before
            _, raw = http("GET", f"{url}/api/runs?limit=1&kind=apply", headers=auth)
            runs = json.loads(raw)
            outcome = runs[0]["outcome"] if runs else "?"
            results.append({"response": response, "done": done, "cpu": cpu, "outcome": outcome})
            print(
                f"  round {round_}: response {response * 1000:6.1f} ms, done {done:6.2f} s, "
                f"serve cpu {cpu:5.2f} s, run {outcome}, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        rss = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) // 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    summary = {
        key: statistics.median(r[key] for r in results) for key in ("response", "done", "cpu")
    }
    print(
        f"\nmedian of {len(results)}: response {summary['response'] * 1000:.1f} ms, "
        f"done {summary['done']:.2f} s, serve cpu {summary['cpu']:.2f} s, peak RSS {rss} MiB"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"services": args.services, "rounds": results, "median": summary, "rss_mib": rss},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
