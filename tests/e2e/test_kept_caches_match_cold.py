"""Every cache a command keeps (kept loads and their value trees, plan digests, state
records, listings, rendered files, HEAD and tags read from .git's files) gives the plan
a command with no cache at all gives: random edits a user makes (values in each layer,
replicas, images, a new template release and its tag, packed or loose tags, a work-tree
edit not committed, applies) and, after each, `plan ENV --json` of every environment
with the caches kept must print exactly what it prints with a fresh cache directory.

Real processes, real Git; a fixed seed, so a failure replays.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.configrepo import need_git
from tests.unit.test_bench_generate import load_generator

ENVS = ("dev", "demo", "prod")
COUNT = 12
STEPS = 14


class World:
    def __init__(self, root: Path) -> None:
        self.generator = load_generator()
        self.root = root
        self.config = self.generator.generate(root / "config", COUNT)
        self.deploy = root / "deploy.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.deploy)], check=True)
        self.env = {
            **os.environ,
            **self.generator.GIT_ENV,
            "BENCH_DEV_DB_PASSWORD": "dev-secret",
            "BENCH_DEMO_DB_PASSWORD": "demo-secret",
            "BENCH_PROD_DB_PASSWORD": "prod-secret",
        }
        self.versions: dict[str, int] = {}

    def cc(self, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
        store = f"sqlite:///{self.root / 'runs.sqlite3'}"
        cmd = [sys.executable, "-m", "configcenter", "-C", str(self.config),
               "--deploy-repo", str(self.deploy), "--run-store", store, *args]  # fmt: skip
        return subprocess.run(
            cmd, env={**self.env, "XDG_CACHE_HOME": str(cache)}, capture_output=True, text=True
        )

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.config), *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def service_file(self, rng: random.Random) -> Path:
        env = rng.choice(ENVS)
        return self.config / f"environments/{env}/svc-{rng.randrange(COUNT):04d}.yaml"

    def edit(self, rng: random.Random, warm: Path) -> str:
        """One change a user makes; committed most of the time, as users do."""
        kind = rng.choice(
            ["value", "env", "defaults", "replicas", "image", "release", "pack", "dirty", "apply"]
        )
        if kind in ("value", "dirty"):
            path = self.service_file(rng)
            path.write_text(path.read_text().replace("opt_03", f"opt_03-{rng.randrange(999)}", 1))
        elif kind == "env":
            path = self.config / f"environments/{rng.choice(ENVS)}/_env.yaml"
            text = path.read_text()
            swap = ("eu-west-1", "eu-west-2") if "eu-west-1" in text else ("eu-west-2", "eu-west-1")
            path.write_text(text.replace(*swap))
        elif kind == "defaults":
            path = self.config / "environments/_defaults.yaml"
            path.write_text(re.sub(r"HTTP_RETRIES: \d+", f"HTTP_RETRIES: {rng.randrange(9)}",
                                   path.read_text()))  # fmt: skip
        elif kind == "replicas":
            path = self.service_file(rng)
            path.write_text(re.sub(r"replicas: \d+", f"replicas: {rng.randrange(1, 5)}",
                                   path.read_text()))  # fmt: skip
        elif kind == "image":
            path = self.service_file(rng)
            path.write_text(re.sub(r":1\.(\d+)\.0", lambda m: f":1.{int(m[1]) + 1}.0",
                                   path.read_text(), count=1))  # fmt: skip
        elif kind == "release":  # a new template version, tagged (a loose tag) and pinned
            index = rng.randrange(COUNT)
            service = f"svc-{index:04d}"
            version = self.versions.get(service, 1) + 1
            self.versions[service] = version
            files = self.generator.template_files(service, index, f"1.{version}.0")
            for name, text in files.items():
                extra = f"# release {version}\n" if name.endswith(".j2") else ""
                (self.config / "templates" / service / name).write_text(text + extra)
            self.git("add", "-A")
            self.git("commit", "-qm", f"{service} 1.{version}.0")
            self.git("tag", "-a", "-m", "release", f"{service}/1.{version}.0")
            pin = self.config / f"environments/{rng.choice(ENVS)}/{service}.yaml"
            pin.write_text(re.sub(r"template: [0-9.]+", f"template: 1.{version}.0",
                                  pin.read_text()))  # fmt: skip
        elif kind == "pack":
            self.git("pack-refs", "--all")
        elif kind == "apply":
            if self.git("status", "--porcelain"):
                self.git("commit", "-qam", "before apply")
            applied = self.cc(warm, "apply", rng.choice(ENVS), "--no-build", "--no-rollout")
            assert applied.returncode == 0, applied.stderr
        if kind != "dirty" and self.git("status", "--porcelain"):
            self.git("commit", "-qam", kind)
        return kind


def test_plans_with_kept_caches_are_the_plans_without_any(tmp_path: Path) -> None:
    need_git()
    world = World(tmp_path)
    warm = tmp_path / "cache"
    for env in ENVS:
        first = world.cc(warm, "apply", env, "--no-build", "--no-rollout")
        assert first.returncode == 0, first.stderr
    rng = random.Random(20261202)
    for step in range(STEPS):
        kind = world.edit(rng, warm)
        for env in ENVS:
            kept = world.cc(warm, "plan", env, "--json")
            cold_cache = tmp_path / f"cold-{step}-{env}"
            cold = world.cc(cold_cache, "plan", env, "--json")
            shutil.rmtree(cold_cache, ignore_errors=True)
            assert kept.returncode in (0, 2), kept.stderr
            assert (kept.returncode, kept.stdout) == (cold.returncode, cold.stdout), (
                f"step {step} ({kind}), {env}: the plan with kept caches differs"
            )
