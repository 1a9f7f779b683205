"""One racing user for the race test: its own config clone, cache and state, many applies.

Runs in a child process (multiprocessing "spawn"), so two racers are separate
processes with separate deploy repo caches that really collide on push. A
barrier lines both up before every round to make the collisions likely.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configcenter.usecases.apply import ApplyOptions, Reporter, apply_env
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo
from tests.support.e2e_fixtures import SECRET_ENV


@dataclass(frozen=True)
class Lane:
    """What one racer changes: `key` of `service` in dev, to `<prefix><round>`."""

    name: str
    service: str
    key: str
    prefix: str

    def value(self, round_: int) -> str:
        return f"{self.prefix}{round_}"


class _Counting(Reporter):
    def __init__(self) -> None:
        self.rejected = 0

    def message(self, text: str) -> None:
        if text.startswith("push rejected"):
            self.rejected += 1


def race(
    lane: Lane,
    root: str,
    rounds: int,
    barrier: Any,
    out: str,
) -> None:
    """Change the lane's key and apply that service, `rounds` times; results to `out`."""
    base = Path(root)
    os.environ["XDG_STATE_HOME"] = str(base / "state")
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    os.environ[SECRET_ENV] = "race-secret"  # apply refuses releases whose secrets do not resolve
    config = ConfigRepo(base / "config")
    rel = f"environments/dev/{lane.service}.yaml"
    done: list[dict[str, object]] = []
    for round_ in range(rounds):
        lines = [
            line
            for line in config.read(rel).splitlines()
            if not line.strip().startswith(f"{lane.key}:")
        ]
        if "values:" not in lines:
            lines.append("values:")
        lines.insert(lines.index("values:") + 1, f"  {lane.key}: {lane.value(round_)}")
        config.write(rel, "\n".join(lines) + "\n")
        config.commit(f"{lane.name}: {lane.key}={lane.value(round_)}")
        reporter = _Counting()
        barrier.wait(timeout=120)
        result = apply_env(
            Workspace(config.root),
            "dev",
            ApplyOptions(services=[lane.service], rollout=False, trigger="race", actor=lane.name),
            reporter,
        )
        done.append(
            {
                "round": round_,
                "commit": result.commit,
                "run": result.run_id,
                "rejected": reporter.rejected,
            }
        )
    Path(out).write_text(json.dumps(done))
