#!/usr/bin/env python3
"""Benchmark the config core on a generated repo (default 500 services x 3 environments).

Measures, as medians over repeated runs:
  load+validate   load_config: parse every YAML file, layer values, resolve tags from Git
  render cold     render every service in every env with nothing compiled
  render warm     the same in a new Renderer whose on-disk bytecode cache is populated
  no-op plan      plan all 3 envs against the state a first full plan would have written
  one value       plan one env after one value in one service file changed
Plans are timed alone (config loaded) and with the load, as `configcenter plan` runs them.

    python benchmarks/bench_core.py [--services 500] [--repeat 5] [--repo DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from generate import ENVIRONMENTS, generate, service_names  # noqa: E402

from configcenter.adapters.git_config_repo import GitConfigRepo  # noqa: E402
from configcenter.core.load import load_config  # noqa: E402
from configcenter.core.model import Config  # noqa: E402
from configcenter.core.plan import Plan, make_plan  # noqa: E402
from configcenter.core.render import Renderer  # noqa: E402
from configcenter.core.state import EnvState  # noqa: E402
from configcenter.wiring import open_bytecode_cache  # noqa: E402
from tests.support.configrepo import deploy_files, state_after  # noqa: E402

TARGETS = {"no-op plan, 3 envs": 1.0, "one value changed, 1 env": 0.3}


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def load(root: Path) -> Config:
    return load_config(GitConfigRepo(root))


def load_for(root: Path, envs: tuple[str, ...]) -> Config:
    """As a one-environment command loads: only that env, with the caches kept across runs."""
    source = GitConfigRepo(root)
    try:
        return load_config(source, None, envs)
    finally:
        source.save_caches()


def render_all(config: Config, renderer: Renderer) -> int:
    count = 0
    for environment in config.environments.values():
        for service in environment.services.values():
            ref = service.image.ref if service.image and service.image.ref else ""
            renderer.render(config, service, ref or "")
            count += 1
    return count


def plan_envs(
    config: Config, states: dict[str, EnvState], files: dict[str, bytes], envs: tuple[str, ...]
) -> list[Plan]:
    renderer = Renderer()
    return [make_plan(config, env, states[env], renderer, files.get) for env in envs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repo", type=Path, help="generate here (default: a temporary dir)")
    parser.add_argument("--profile", action="store_true", help="cProfile the no-op plan")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # never the user's caches
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    root = args.repo or tmp / "config"
    start = time.perf_counter()
    generate(root, args.services)
    print(f"generated {args.services} services x 3 envs in {time.perf_counter() - start:.1f} s")
    rows: list[tuple[str, float, str]] = []

    t, config = timed(lambda: load(root), args.repeat)
    assert isinstance(config, Config)
    rows.append(("load+validate", t, f"{3 * args.services} service configs"))

    def cold() -> int:
        return render_all(config, Renderer())

    t, count = timed(cold, args.repeat)
    rows.append(("render cold (no cache)", t, f"{count} services"))
    cache = tmp / "bytecode"
    render_all(config, Renderer(open_bytecode_cache(cache)))  # fill the on-disk cache
    t, _ = timed(lambda: render_all(config, Renderer(open_bytecode_cache(cache))), args.repeat)
    rows.append(("render warm (bytecode cache)", t, f"{count} services"))
    hot = Renderer()
    render_all(config, hot)
    t, _ = timed(lambda: render_all(config, hot), args.repeat)
    rows.append(("render hot (compiled in memory)", t, f"{count} services"))

    empty = {env: EnvState(env) for env in ENVIRONMENTS}
    first = plan_envs(config, empty, {}, ENVIRONMENTS)
    states = {p.env: state_after(p) for p in first}
    files: dict[str, bytes] = {}
    for p in first:
        files.update(deploy_files(p))
    states = {env: EnvState.from_files(env, s.files()) for env, s in states.items()}

    t, plans = timed(lambda: plan_envs(config, states, files, ENVIRONMENTS), args.repeat)
    assert isinstance(plans, list)
    actions = {s.action for p in plans for s in p.services}
    assert actions == {"noop"}, actions
    rows.append(("no-op plan, 3 envs", t, "plan only"))
    t, _ = timed(
        lambda: plan_envs(load(root), states, files, ENVIRONMENTS), max(1, args.repeat // 2)
    )
    rows.append(("no-op plan, 3 envs + full load", t, "load all envs, no caches"))
    load_for(root, ("dev",))  # fill the caches, as any earlier command would have
    t, _ = timed(lambda: plan_envs(load_for(root, ("dev",)), states, files, ("dev",)), args.repeat)
    rows.append(("no-op plan, 1 env + load", t, "as `configcenter plan dev` does"))

    target = service_names(args.services)[args.services // 2]
    rel = root / f"environments/dev/{target}.yaml"
    rel.write_text(rel.read_text().replace("-opt_01", "-opt_01-changed"))
    changed_config = load(root)
    t, plans = timed(lambda: plan_envs(changed_config, states, files, ("dev",)), args.repeat)
    assert isinstance(plans, list)
    changes = [s.service for s in plans[0].changes]
    assert changes == [target], changes
    rows.append(("one value changed, 1 env", t, "plan only"))
    t, _ = timed(lambda: plan_envs(load_for(root, ("dev",)), states, files, ("dev",)), args.repeat)
    rows.append(("one value changed, 1 env + load", t, "as `configcenter plan dev` does"))

    print(f"\n{'step':34} {'median':>9}  {'target':>8}  note")
    for name, seconds, note in rows:
        target_s = TARGETS.get(name)
        mark = "" if target_s is None else (" ok" if seconds <= target_s else " MISSED")
        shown = f"{target_s:.2f} s" if target_s else ""
        print(f"{name:34} {seconds:7.3f} s  {shown:>8}  {note}{mark}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        plan_envs(load(root), states, files, ENVIRONMENTS)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
